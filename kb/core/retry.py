"""Retry policy: exponential back-off with full jitter, honouring a server's requested delay.

The policy is a pure decision (`next_delay`); `call_with_retries` applies it with an injected sleep, so tests
never wait.
"""

import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

from kb.errors import RetryableProviderError

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Backoff:
    """Exponential back-off: `base_s` after the first failure, doubling, at most `max_s`. Every delay in kb
    (retries of a call, of a text, of a job's poll or submission) is one of these."""

    base_s: float
    max_s: float

    def delay(self, failures: int) -> float:
        """Seconds to wait after `failures` failures in a row (1 = the first)."""
        return float(min(self.max_s, self.base_s * 2 ** min(max(0, failures - 1), 62)))


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    max_attempts: int = 6
    base_delay: float = 1.0
    max_delay: float = 60.0

    def next_delay(
        self, attempts: int, retry_after: float | None = None, rng: random.Random | None = None
    ) -> float | None:
        """Seconds to wait after `attempts` failed attempts, or None to give up.

        Full jitter (a random delay up to the exponential cap) spreads out clients that failed together; a
        server's RetryInfo delay is a floor, because retrying earlier only earns another 429.
        """
        if attempts >= self.max_attempts:
            return None
        cap = Backoff(self.base_delay, self.max_delay).delay(attempts)
        delay = (rng or random).uniform(cap / 2, cap)
        if retry_after is not None:
            delay = max(delay, min(retry_after, self.max_delay * 5))
        return delay


def call_with_retries(
    call: Callable[[], T],
    policy: RetryPolicy,
    *,
    sleep: Callable[[float], None] = time.sleep,
    on_retry: Callable[[RetryableProviderError, float], None] | None = None,
    retries: Callable[[RetryableProviderError], bool] = lambda _error: True,
) -> T:
    """Run `call`, retrying retryable provider errors (those `retries` accepts) as the policy says;
    re-raise the last one."""
    attempts = 0
    while True:
        try:
            return call()
        except RetryableProviderError as error:
            attempts += 1
            delay = policy.next_delay(attempts, error.retry_after)
            if delay is None or not retries(error):
                raise
            if on_retry is not None:
                on_retry(error, delay)
            sleep(delay)
