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
        cap = min(self.max_delay, self.base_delay * 2 ** (attempts - 1))
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
) -> T:
    """Run `call`, retrying retryable provider errors as the policy says; re-raise the last one."""
    attempts = 0
    while True:
        try:
            return call()
        except RetryableProviderError as error:
            attempts += 1
            delay = policy.next_delay(attempts, error.retry_after)
            if delay is None:
                raise
            if on_retry is not None:
                on_retry(error, delay)
            sleep(delay)
