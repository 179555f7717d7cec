"""`GeminiEmulator`: the in-process entry point. Starts the server and exposes the state to tests."""

from collections.abc import Iterable
from types import TracebackType

import numpy as np
from numpy.typing import NDArray

from .clock import DEFAULT_START, Clock
from .faults import FaultBook
from .files import StoredFile
from .generation import generated_text
from .jobs import BatchJob, JobPlan
from .models import ModelRegistry
from .records import BillingRecord, LoggedRequest, Mode
from .server import ServerThread
from .state import EmulatorState, Settings
from .tokens import count_tokens


class GeminiEmulator:
    """A stateful local Gemini API for the real google-genai SDK.

        with GeminiEmulator(api_key="test-key") as emu:
            client = genai.Client(api_key="test-key", http_options=types.HttpOptions(base_url=emu.base_url))

    `api_key=None` accepts any non-empty key. Time is emulated (`clock`), starting at 2026-01-01T00:00:00Z
    unless `start_time` is given; ids are drawn from a generator seeded with `seed`.
    """

    def __init__(
        self,
        api_key: str | None = "test-key",
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        start_time: float = DEFAULT_START,
        seed: int = 0,
    ) -> None:
        self._state = EmulatorState(api_key, start_time=start_time, seed=seed)
        self._host = host
        self._port = port
        self._server: ServerThread | None = None

    def start(self) -> "GeminiEmulator":
        if self._server is None:
            self._server = ServerThread(self._state, self._host, self._port)
            self._server.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.stop()
            self._server = None

    def __enter__(self) -> "GeminiEmulator":
        return self.start()

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        self.stop()

    @property
    def base_url(self) -> str:
        if self._server is None:
            raise RuntimeError("the emulator is not running: use `with GeminiEmulator() as emu` or start()")
        return self._server.base_url

    # Scripting ---------------------------------------------------------------------------------------------

    @property
    def clock(self) -> Clock:
        return self._state.clock

    @property
    def models(self) -> ModelRegistry:
        return self._state.models

    @property
    def faults(self) -> FaultBook:
        return self._state.faults

    @property
    def settings(self) -> Settings:
        """Limits and quirk switches; change them between calls."""
        return self._state.settings

    @property
    def truncate_long_inputs(self) -> bool:
        return self._state.settings.truncate_long_inputs

    @truncate_long_inputs.setter
    def truncate_long_inputs(self, value: bool) -> None:
        with self._state.lock:
            self._state.settings.truncate_long_inputs = value

    @property
    def job_plan(self) -> JobPlan:
        """The plan of new batch jobs once the plans from `plan_next_jobs` are used up."""
        return self._state.job_plan

    @job_plan.setter
    def job_plan(self, plan: JobPlan) -> None:
        with self._state.lock:
            self._state.job_plan = plan

    def plan_next_jobs(self, plans: Iterable[JobPlan]) -> None:
        with self._state.lock:
            self._state.planned.extend(plans)

    def force_state(self, name: str, state: str) -> BatchJob:
        """E.g. "BATCH_STATE_FAILED" (or "FAILED"): terminal states apply now; others pin the job there."""
        with self._state.lock:
            self._state.refresh()
            return self._state.force_state(name, state)

    # Inspection --------------------------------------------------------------------------------------------

    def jobs(self) -> list[BatchJob]:
        """All batch jobs (deleted ones excluded), newest first, brought up to the current emulated time."""
        with self._state.lock:
            self._state.refresh()
            return self._state.batch_listing()

    def job(self, name: str) -> BatchJob:
        with self._state.lock:
            self._state.refresh()
            return self._state.batch(name)

    def stored_files(self) -> list[StoredFile]:
        with self._state.lock:
            self._state.refresh()
            return self._state.files.listing()

    @property
    def log(self) -> list[LoggedRequest]:
        with self._state.lock:
            return list(self._state.log)

    def reset_log(self) -> None:
        with self._state.lock:
            self._state.log.clear()

    def billing(self, model: str | None = None, mode: Mode | None = None) -> list[BillingRecord]:
        with self._state.lock:
            self._state.refresh()  # jobs that finished by now bill now
            return self._state.billed(model, mode)

    def embedded_texts(
        self, model: str | None = None, mode: Mode | None = None
    ) -> list[tuple[str, str, str]]:
        """(model, mode, text) of every text embedded and delivered, in billing order."""
        return [
            (record.model, record.mode, record.text)
            for record in self.billing(model, mode)
            if record.work == "embed"
        ]

    def generations(self, model: str | None = None, mode: Mode | None = None) -> list[BillingRecord]:
        """Every prompt answered and delivered (online, or in a SUCCEEDED batch job), in billing order."""
        return [record for record in self.billing(model, mode) if record.work == "generate"]

    def generated_text(self, prompt: str) -> str:
        """The text the emulator's model writes for `prompt` (no output limit, no request, no billing)."""
        return generated_text(prompt)

    def billed_tokens(self, model: str | None = None, mode: Mode | None = None) -> int:
        return sum(record.tokens for record in self.billing(model, mode))

    def reset_billing(self) -> None:
        with self._state.lock:
            self._state.billing.clear()

    def count_tokens(self, text: str) -> int:
        """The emulator's token count for `text` (what billing, countTokens and the input limit use)."""
        return count_tokens(text)

    def vector(
        self,
        text: str,
        model: str = "gemini-embedding-001",
        dimensions: int | None = None,
        task_type: str | None = None,
    ) -> NDArray[np.float64]:
        """The vector the emulator answers for `text`, without a request (and without billing)."""
        return self.vectors([text], model, dimensions, task_type)[0]

    def vectors(
        self,
        texts: list[str],
        model: str = "gemini-embedding-001",
        dimensions: int | None = None,
        task_type: str | None = None,
    ) -> list[NDArray[np.float64]]:
        """The vectors the emulator answers for `texts` (no limits, no billing): for expected values."""
        with self._state.lock:
            rule = self._state.models.rule(model)
            if rule is None:
                raise KeyError(f"unknown model {model!r}")
            dims = rule.default_dims if dimensions is None else dimensions
            return self._state.vectors(rule, texts, [dims] * len(texts), [task_type] * len(texts))
