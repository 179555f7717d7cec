"""The embed stage's policies come from the settings, in one place each."""

from kb.core.retry import Backoff
from kb.embed.policy import BatchPolicy, OnlinePolicy
from kb.settings import KbSettings


def test_policies_read_the_settings() -> None:
    settings = KbSettings(
        task_max_attempts=3,
        task_retry_base_s=7.0,
        task_retry_max_s=70.0,
        job_deadline_h=2,
        worker_lease_s=9.0,
    )
    batch = BatchPolicy.from_settings(settings)
    assert (batch.max_attempts, batch.deadline_s, batch.task_retry) == (3, 7200, Backoff(7.0, 70.0))
    assert batch.submit_retry_s == settings.poll_initial_s
    assert OnlinePolicy.from_settings(settings) == OnlinePolicy(3, Backoff(7.0, 70.0), 9.0)
