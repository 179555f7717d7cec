"""Emulated time: batch lifecycles, file expiry and log entries all read this clock, never the wall clock."""

import threading
from datetime import UTC, datetime

# 2026-01-01T00:00:00Z: a fixed start keeps timestamps in responses reproducible.
DEFAULT_START = 1_767_225_600.0


class Clock:
    """Seconds since the Unix epoch, moved only by `advance` or `set`."""

    def __init__(self, lock: threading.RLock, start: float = DEFAULT_START) -> None:
        self._lock = lock
        self._now = start

    def now(self) -> float:
        with self._lock:
            return self._now

    def advance(self, seconds: float) -> float:
        if seconds < 0:
            raise ValueError("the emulated clock only moves forward")
        with self._lock:
            self._now += seconds
            return self._now

    def set(self, timestamp: float) -> float:
        with self._lock:
            if timestamp < self._now:
                raise ValueError("the emulated clock only moves forward")
            self._now = timestamp
            return self._now


def rfc3339(timestamp: float) -> str:
    """RFC 3339 in UTC with 6 fractional digits and a `Z`, as Google's JSON mapping writes timestamps."""
    moment = datetime.fromtimestamp(timestamp, tz=UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
