"""A client-side rate limit on requests and tokens per minute (two token buckets)."""

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field


@dataclass(slots=True)
class _Bucket:
    per_minute: float
    level: float = field(init=False)
    stamp: float = field(init=False, default=0.0)

    def __post_init__(self) -> None:
        self.level = self.per_minute

    def refill(self, now: float) -> None:
        self.level = min(self.per_minute, self.level + (now - self.stamp) * self.per_minute / 60.0)
        self.stamp = now

    def wait_for(self, amount: float) -> float:
        """Seconds until `amount` is available (an amount above capacity waits for a full bucket)."""
        missing = min(amount, self.per_minute) - self.level
        return 0.0 if missing <= 0 else missing * 60.0 / self.per_minute


class RateLimiter:
    """Blocks (through the injected sleep) until a request of `tokens` fits both per-minute budgets.

    A limit of 0 disables that budget.
    """

    def __init__(
        self,
        requests_per_minute: float,
        tokens_per_minute: float,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self._clock = clock
        self._sleep = sleep
        self._lock = threading.Lock()
        now = clock()
        self._buckets: list[tuple[_Bucket, bool]] = []
        for limit, counts_tokens in ((requests_per_minute, False), (tokens_per_minute, True)):
            if limit > 0:
                bucket = _Bucket(limit)
                bucket.stamp = now
                self._buckets.append((bucket, counts_tokens))

    def acquire(self, tokens: int) -> float:
        """Wait until one request of `tokens` tokens may go; returns the seconds waited. Threads sharing
        the limiter (a server's concurrent questions) share its budgets."""
        waited = 0.0
        while True:
            with self._lock:
                wait = self._take(tokens)
            if wait <= 0:
                return waited
            self._sleep(wait)
            waited += wait

    def _take(self, tokens: int) -> float:
        """Take one request of `tokens` from the budgets and return 0, or return how long to wait first."""
        now = self._clock()
        for bucket, _ in self._buckets:
            bucket.refill(now)
        wait = max(
            (bucket.wait_for(tokens if counts_tokens else 1) for bucket, counts_tokens in self._buckets),
            default=0.0,
        )
        if wait <= 0:
            for bucket, counts_tokens in self._buckets:
                bucket.level -= min(tokens, bucket.per_minute) if counts_tokens else 1
        return wait
