"""Retry policy and client-side rate limit: pure decisions, tested with fake clocks (nothing sleeps)."""

import random
import sys
from concurrent.futures import ThreadPoolExecutor

import pytest

from kb.core.ratelimit import RateLimiter
from kb.core.retry import RetryPolicy, call_with_retries
from kb.errors import InvalidRequestError, RateLimitedError


def test_delays_grow_exponentially_within_jitter_and_stop() -> None:
    policy = RetryPolicy(max_attempts=5, base_delay=1.0, max_delay=8.0)
    rng = random.Random(3)
    for attempt, cap in [(1, 1.0), (2, 2.0), (3, 4.0), (4, 8.0)]:
        delay = policy.next_delay(attempt, rng=rng)
        assert delay is not None and cap / 2 <= delay <= cap
    assert policy.next_delay(5) is None


def test_server_retry_delay_is_a_floor() -> None:
    policy = RetryPolicy(max_attempts=3, base_delay=1.0, max_delay=60.0)
    assert policy.next_delay(1, retry_after=26.0) == 26.0


def test_call_with_retries_retries_only_retryable_errors() -> None:
    slept: list[float] = []
    outcomes: list[Exception | str] = [
        RateLimitedError("429", retry_after=2.0),
        RateLimitedError("429"),
        "ok",
    ]

    def call() -> str:
        outcome = outcomes.pop(0)
        if isinstance(outcome, Exception):
            raise outcome
        return outcome

    assert call_with_retries(call, RetryPolicy(max_attempts=5), sleep=slept.append) == "ok"
    assert len(slept) == 2 and slept[0] >= 2.0

    def invalid() -> str:
        raise InvalidRequestError("400")

    with pytest.raises(InvalidRequestError):
        call_with_retries(invalid, RetryPolicy(), sleep=slept.append)
    assert len(slept) == 2


def test_retries_are_bounded() -> None:
    calls = 0

    def always_busy() -> None:
        nonlocal calls
        calls += 1
        raise RateLimitedError("429")

    with pytest.raises(RateLimitedError):
        call_with_retries(always_busy, RetryPolicy(max_attempts=4), sleep=lambda _: None)
    assert calls == 4


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds


def test_rate_limiter_spaces_requests() -> None:
    clock = FakeClock()
    limiter = RateLimiter(requests_per_minute=60, tokens_per_minute=6000, clock=clock, sleep=clock.sleep)
    for _ in range(60):
        limiter.acquire(10)  # 600 tokens of 6,000: only the request budget runs out
    assert clock.now == 0.0  # the first minute's budget is available at once
    limiter.acquire(10)
    assert clock.now == pytest.approx(1.0)  # then one request per second


def test_rate_limiter_spaces_tokens_where_requests_would_not_wait() -> None:
    clock = FakeClock()
    limiter = RateLimiter(requests_per_minute=60, tokens_per_minute=6000, clock=clock, sleep=clock.sleep)
    for _ in range(10):
        limiter.acquire(600)  # the whole token budget in 10 of the 60 requests allowed
    assert clock.now == 0.0
    limiter.acquire(600)  # 50 requests are left, so only the token budget can make this wait
    assert clock.now == pytest.approx(6.0)  # 600 tokens at 100 a second
    limiter.acquire(10**9)  # more than a minute's budget waits for a full bucket instead of forever
    assert clock.now == pytest.approx(66.0)


def test_zero_disables_a_limit() -> None:
    clock = FakeClock()
    limiter = RateLimiter(requests_per_minute=0, tokens_per_minute=0, clock=clock, sleep=clock.sleep)
    for _ in range(10_000):
        limiter.acquire(1000)
    assert clock.now == 0.0


class _WouldWait(Exception):
    pass


def test_threads_sharing_a_limiter_share_its_budget() -> None:
    """A server's concurrent questions: together they get one minute's budget at once, never more (threads
    switching as often as possible make a race between checking the budget and taking from it show)."""

    def refuse(_seconds: float) -> None:
        raise _WouldWait

    def granted_at_once() -> int:
        limiter = RateLimiter(requests_per_minute=50, tokens_per_minute=0, clock=lambda: 0.0, sleep=refuse)

        def ask(_: int) -> bool:
            try:
                limiter.acquire(1)
            except _WouldWait:
                return False
            return True

        with ThreadPoolExecutor(8) as pool:
            return sum(pool.map(ask, range(400)))

    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    try:
        assert [granted_at_once() for _ in range(20)] == [50] * 20
    finally:
        sys.setswitchinterval(interval)
