"""Scripted faults: which calls fail, how and how often. Pure bookkeeping; `wire` renders the answers."""

import random
import re
import threading
from dataclasses import dataclass, field

from .models import bare_model_name
from .routing import ROUTE_NAMES

_DURATION = re.compile(r"^\d+(\.\d+)?s$")


@dataclass
class Fault:
    """One scripted failure.

    It matches calls to `route` ("*" = any; see `routing.ROUTE_NAMES`), optionally only for `model`. The first
    `after` matching calls pass untouched, the next `times` calls (None = forever) get the fault, each with
    `probability` (drawn from a generator seeded with `seed`: a soak run is repeatable). `status` 200
    means "answer normally", which with `latency_s` makes a slow success. `html_body` (True or the HTML text)
    answers with a non-JSON body, as a Google front end does for 502s. `disconnect` closes the connection
    without an answer. `retry_delay` ("2s") adds google.rpc.RetryInfo and a Retry-After header.
    A fault on an upload chunk answers without X-Goog-Upload-Status, like a front end would: the SDK then
    re-posts the chunk after 1, 2 and 4 s of real sleep.
    """

    route: str = "*"
    status: int = 429
    times: int | None = 1
    after: int = 0
    retry_delay: str | None = None
    message: str | None = None
    html_body: bool | str = False
    latency_s: float = 0.0
    model: str | None = None
    disconnect: bool = False
    probability: float = 1.0
    seed: int = 0
    seen: int = field(default=0, init=False)  # matching calls so far
    fired: int = field(default=0, init=False)  # calls that got this fault

    def __post_init__(self) -> None:
        if self.route != "*" and self.route not in ROUTE_NAMES:
            raise ValueError(f"unknown route {self.route!r}; expected '*' or one of {', '.join(ROUTE_NAMES)}")
        if not 100 <= self.status <= 599:
            raise ValueError(f"status {self.status} is not an HTTP status")
        if self.retry_delay is not None and not _DURATION.match(self.retry_delay):
            raise ValueError(f"retry_delay {self.retry_delay!r} is not a duration like '2s' or '0.5s'")
        if (self.times is not None and self.times < 0) or self.after < 0 or self.latency_s < 0:
            raise ValueError("times, after and latency_s must not be negative")
        if not 0.0 <= self.probability <= 1.0:
            raise ValueError("probability must be between 0 and 1")
        self._rng = random.Random(self.seed)
        if self.model is not None:
            self.model = bare_model_name(self.model)

    @property
    def exhausted(self) -> bool:
        return self.times is not None and self.fired >= self.times

    @property
    def passes_through(self) -> bool:
        """Only delays the normal answer."""
        return self.status == 200 and not self.html_body and not self.disconnect

    def matches(self, route: str, model: str | None) -> bool:
        route_ok = self.route in ("*", route)
        return route_ok and (self.model is None or self.model == model)

    def draw(self) -> bool:
        """Whether this call gets the fault (always, unless a probability below 1 says otherwise)."""
        return self.probability >= 1.0 or self._rng.random() < self.probability

    def retry_delay_seconds(self) -> float | None:
        return None if self.retry_delay is None else float(self.retry_delay[:-1])


class FaultBook:
    """Faults in the order added. Every matching fault counts a call; the first one due fires."""

    def __init__(self, lock: threading.RLock) -> None:
        self._lock = lock
        self._faults: list[Fault] = []

    def add(self, fault: Fault) -> Fault:
        with self._lock:
            self._faults.append(fault)
        return fault

    def remove(self, fault: Fault) -> None:
        with self._lock:
            self._faults = [kept for kept in self._faults if kept is not fault]

    def clear(self) -> None:
        with self._lock:
            self._faults.clear()

    def all(self) -> list[Fault]:
        with self._lock:
            return list(self._faults)

    def pending(self) -> list[Fault]:
        """Faults that can still fire: a test can assert that every scripted fault was used."""
        with self._lock:
            return [fault for fault in self._faults if not fault.exhausted]

    def take(self, route: str, model: str | None) -> Fault | None:
        chosen: Fault | None = None
        with self._lock:
            for fault in self._faults:
                if fault.exhausted or not fault.matches(route, model):
                    continue
                fault.seen += 1
                if chosen is None and fault.seen > fault.after and fault.draw():
                    fault.fired += 1
                    chosen = fault
        return chosen
