"""Batch jobs: the plan a job follows, its items and results, and where its lifecycle stands at a given time.

The lifecycle is lazy: `BatchJob.scheduled` says which state the plan puts a job in at an emulated time;
`state.EmulatorState` applies the transition (embedding, billing, output file) when someone looks.
"""

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
from numpy.typing import NDArray

from .generation import Generation
from .parsing import EmbedItem, GenerateItem
from .records import Work

PENDING = "BATCH_STATE_PENDING"
RUNNING = "BATCH_STATE_RUNNING"
SUCCEEDED = "BATCH_STATE_SUCCEEDED"
FAILED = "BATCH_STATE_FAILED"
CANCELLED = "BATCH_STATE_CANCELLED"
EXPIRED = "BATCH_STATE_EXPIRED"
TERMINAL_STATES = frozenset({SUCCEEDED, FAILED, CANCELLED, EXPIRED})
OUTCOMES = ("SUCCEEDED", "FAILED", "EXPIRED", "CANCELLED", "STUCK")
JOB_TTL_S = 48 * 3600.0  # a job still pending or running after 48 h expires (batch-api docs)

ItemErrorRule = Callable[[str], tuple[int, str] | None]


@dataclass(frozen=True)
class TextsContaining:
    """An `item_errors` rule: items whose text contains `marker` fail with (code, message)."""

    marker: str
    code: int = 3
    message: str = "Request contains an invalid argument."

    def __call__(self, text: str) -> tuple[int, str] | None:
        return (self.code, self.message) if self.marker in text else None


@dataclass(frozen=True)
class JobPlan:
    """How a batch job behaves, on the emulated clock.

    PENDING for `pending_s`, RUNNING for `running_s`, then `outcome`: SUCCEEDED, FAILED, EXPIRED, CANCELLED,
    or STUCK (never finishes, so EXPIRED 48 h after creation like any job not done by then).
    Results: `item_errors(text)` -> (code, message) fails an item; `drop_fraction` of the results go missing
    and `shuffle` scrambles their order (both deterministic with `seed`). Quirks seen live: `stats_lag` leaves
    batchStats at "all pending" after success; `output_only_in_response` omits metadata.output (the SDK then
    shows no dest); `echo_metadata=False` drops the per-request metadata echo; `usage_metadata` adds
    usageMetadata.promptTokenCount next to tokenCount (gemini-embedding-2 style); `item_error_details` are
    put in every item error (as objects they make the SDK's `batches.get` raise a pydantic ValidationError).
    """

    pending_s: float = 0.0
    running_s: float = 0.0
    outcome: str = "SUCCEEDED"
    shuffle: bool = False
    drop_fraction: float = 0.0
    item_errors: ItemErrorRule | None = None
    seed: int = 0
    error_code: int = 13
    error_message: str = "An internal error occurred while processing the batch."
    stats_lag: bool = False
    output_only_in_response: bool = False
    echo_metadata: bool = True
    usage_metadata: bool = False
    item_error_details: tuple[Any, ...] | None = None

    def __post_init__(self) -> None:
        if self.outcome not in OUTCOMES:
            raise ValueError(f"outcome {self.outcome!r} is not one of {', '.join(OUTCOMES)}")
        if not 0.0 <= self.drop_fraction <= 1.0:
            raise ValueError("drop_fraction must be between 0 and 1")
        if self.pending_s < 0 or self.running_s < 0:
            raise ValueError("pending_s and running_s must not be negative")


@dataclass(frozen=True)
class BatchEntry:
    """A job's request: `key` (file mode) or `metadata` (inline); the request (`item` to embed, `prompt`
    to answer) or why it is unreadable."""

    item: EmbedItem | None
    key: Any = None
    metadata: Any = None
    error: str | None = None
    prompt: GenerateItem | None = None

    @property
    def text(self) -> str:
        """What the entry bills as input: the text to embed, or the prompt (system instruction too)."""
        request = self.item or self.prompt
        return "" if request is None else request.text


@dataclass
class ItemResult:
    """The outcome of one entry: a vector, a generation, or an error (code, message)."""

    entry: BatchEntry
    values: NDArray[np.float64] | None = None
    token_count: int = 0
    error: tuple[int, str] | None = None
    generation: Generation | None = None

    @property
    def text(self) -> str:
        return self.entry.text


@dataclass
class BatchJob:
    job_id: str
    model: str
    mode: Literal["inline", "file"]
    entries: list[BatchEntry]
    plan: JobPlan
    create_time: float
    display_name: str | None = None
    input_file: str | None = None
    state: str = PENDING
    update_time: float = 0.0
    end_time: float | None = None
    error: tuple[int, str] | None = None  # the operation error of FAILED and CANCELLED jobs
    pinned_state: str | None = None  # set by force_state: the plan no longer applies
    processed: list[ItemResult] | None = None  # one result per entry, in input order, when SUCCEEDED
    results: list[ItemResult] | None = None  # what is delivered: after dropping and shuffling
    output: dict[str, Any] | None = None  # the EmbedContentBatchOutput JSON, built once when SUCCEEDED
    output_file: str | None = None
    reports_usage: bool = False  # the model's result lines carry usageMetadata (gemini-embedding-2)
    work: Work = "embed"  # an embedding batch (asyncBatchEmbedContent) or a generation batch

    def __post_init__(self) -> None:
        self.update_time = self.update_time or self.create_time

    @property
    def name(self) -> str:
        return f"batches/{self.job_id}"

    @property
    def done(self) -> bool:
        return self.state in TERMINAL_STATES

    @property
    def run_start(self) -> float:
        return self.create_time + self.plan.pending_s

    def scheduled(self, now: float) -> tuple[str, float]:
        """The state the plan puts this job in at `now`, and when it entered it."""
        if self.pinned_state is not None or self.done:
            return self.state, self.update_time
        deadline = self.create_time + JOB_TTL_S
        finish = self.run_start + self.plan.running_s
        if self.plan.outcome == "STUCK" or finish > deadline:
            finish = float("inf")
        if now >= deadline and finish == float("inf"):
            return EXPIRED, deadline
        if now >= finish:
            return f"BATCH_STATE_{self.plan.outcome}", finish
        if now >= self.run_start:
            return RUNNING, self.run_start
        return PENDING, self.create_time
