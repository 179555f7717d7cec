"""What the emulator records: every request (`LoggedRequest`) and every billed embedding (`BillingRecord`)."""

from dataclasses import dataclass
from typing import Any, Literal

Mode = Literal["online", "batch"]
Work = Literal["embed", "generate"]
REDACTED = "REDACTED"


@dataclass(frozen=True)
class LoggedRequest:
    """One request as the emulator saw it. API keys are never stored: their values read "REDACTED".

    `texts`, `task_types` and `dimensions` have one entry per embedded item (per part for countTokens; for a
    file-mode batch, per line of the input file); a missing taskType reads "TASK_TYPE_UNSPECIFIED".
    `time` is the emulated clock when the request arrived.
    """

    method: str
    path: str
    route: str
    model: str | None
    status: int
    api_version: str | None
    body: Any
    texts: list[str]
    task_types: list[str]
    dimensions: list[int | None]
    item_count: int
    headers: dict[str, str]
    time: float
    query: dict[str, str]


@dataclass(frozen=True)
class BillingRecord:
    """One text embedded, or one prompt answered, and delivered: online when answered, batch when its job
    SUCCEEDED. `tokens` are input tokens; a generation also bills `output_tokens`, and `output` is its
    text."""

    model: str
    mode: Mode
    text: str
    tokens: int
    time: float
    job: str | None = None
    work: Work = "embed"
    output_tokens: int = 0
    output: str = ""
