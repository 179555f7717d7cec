"""How the embed stage paces itself, from the settings: batch jobs (`BatchPolicy`) and online requests
(`OnlinePolicy`)."""

from dataclasses import dataclass, field

from kb.core.retry import Backoff
from kb.settings import KbSettings


@dataclass(frozen=True, slots=True)
class BatchPolicy:
    max_items: int = 10_000
    max_tokens: int = 0  # per job; 0: no limit beyond max_items
    min_batch: int = 100
    max_wait_s: float = 600.0
    poll_initial_s: float = 15.0
    poll_max_s: float = 600.0
    deadline_s: float = 36 * 3600.0
    max_attempts: int = 5
    retry_base_s: float = 60.0
    retry_max_s: float = 6 * 3600.0
    submit_retry_s: float = 15.0  # a refused or failed create is tried again after this, doubling
    # A job whose results cannot be fetched for a reason other than a passing outage (its results file or
    # the job itself is gone, or the service's answer is unusable) is handed back after this many tries.
    max_step_failures: int = 4
    # How long a succeeded job's results can be fetched after it ended (result files expire after 48 h).
    # Until then a refused (403/404) or failing download is not proof they are gone: the job is kept.
    results_kept_s: float = 48 * 3600.0
    context_window_tokens: int = 2000  # how much of its document a chunk's context request carries

    @classmethod
    def from_settings(cls, s: KbSettings) -> "BatchPolicy":
        return cls(
            max_items=s.batch_max_texts,
            max_tokens=s.batch_max_tokens,
            min_batch=s.batch_min_texts,
            max_wait_s=s.batch_max_wait_s,
            poll_initial_s=s.poll_initial_s,
            poll_max_s=s.poll_max_s,
            deadline_s=s.job_deadline_h * 3600,
            max_attempts=s.task_max_attempts,
            retry_base_s=s.task_retry_base_s,
            retry_max_s=s.task_retry_max_s,
            submit_retry_s=s.poll_initial_s,
            max_step_failures=s.job_max_step_failures,
            context_window_tokens=s.context_window_tokens,
        )

    @property
    def task_retry(self) -> Backoff:
        return Backoff(self.retry_base_s, self.retry_max_s)

    @property
    def poll(self) -> Backoff:
        return Backoff(self.poll_initial_s, self.poll_max_s)

    @property
    def submit_retry(self) -> Backoff:
        return Backoff(self.submit_retry_s, self.poll_max_s)

    def task_retry_delay(self, attempts: int) -> float:
        return self.task_retry.delay(attempts)

    def poll_delay(self, polls: int) -> float:
        return self.poll.delay(polls + 1)


@dataclass(frozen=True, slots=True)
class OnlinePolicy:
    """Retries of a text across requests (each request also retries outages itself, `RetryPolicy`), and
    how long a claimed group stays out of everyone else's reach without renewal: the claim is renewed
    before each request, so a process that dies gives its texts back after `hold_s` (KB_WORKER_LEASE_S)."""

    max_attempts: int = 5
    retry: Backoff = field(default_factory=lambda: Backoff(60.0, 6 * 3600.0))
    hold_s: float = 120.0

    @classmethod
    def from_settings(cls, s: KbSettings) -> "OnlinePolicy":
        return cls(s.task_max_attempts, Backoff(s.task_retry_base_s, s.task_retry_max_s), s.worker_lease_s)
