"""Scripted faults: which calls fail, how and how often. Pure bookkeeping; `wire` renders the answers."""

import random
import re
import threading
from dataclasses import dataclass, field

from .models import bare_model_name
from .routing import ROUTE_NAMES

_DURATION = re.compile(r"^\d+(\.\d+)?s$")
QUIRKS = ("upload_without_file", "upload_not_final", "empty_page")


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
    re-posts the chunk after 1, 2 and 4 s of real sleep. `for_s` keeps the fault firing for that many
    emulated seconds after it first fired (then it is spent), e.g. a 403 on result files that passes.

    A `quirk` is an odd 200 answer instead of an error, taken only where it applies (`QUIRKS`):
    "upload_without_file" stores the upload but answers the finalize without `file` (the SDK raises
    KeyError('file'), python-genai #1248), "upload_not_final" answers the finalize with upload status
    `active` (ValueError "Upload status is not finalized"), "empty_page" answers a list with an empty page
    that carries a nextPageToken (the SDK pager raises IndexError).
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
    for_s: float | None = None
    quirk: str | None = None
    seen: int = field(default=0, init=False)  # matching calls so far
    fired: int = field(default=0, init=False)  # calls that got this fault
    first_fired_at: float | None = field(default=None, init=False)  # emulated time

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
        if self.for_s is not None and self.for_s < 0:
            raise ValueError("for_s must not be negative")
        if self.quirk is not None and self.quirk not in QUIRKS:
            raise ValueError(f"unknown quirk {self.quirk!r}; expected one of {', '.join(QUIRKS)}")
        self._rng = random.Random(self.seed)
        if self.model is not None:
            self.model = bare_model_name(self.model)

    @property
    def exhausted(self) -> bool:
        return self.times is not None and self.fired >= self.times

    def over(self, now: float) -> bool:
        """Spent: fired `times` times, or its `for_s` window has passed."""
        window_passed = (
            self.for_s is not None
            and self.first_fired_at is not None
            and now >= self.first_fired_at + self.for_s
        )
        return self.exhausted or window_passed

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

    def take(self, route: str, model: str | None, now: float = 0.0, quirk: str | None = None) -> Fault | None:
        """The fault this call gets, if any. Quirk faults are taken only by the code where their quirk
        applies (it passes `quirk`), plain faults only where none is asked for."""
        chosen: Fault | None = None
        with self._lock:
            for fault in self._faults:
                if fault.quirk != quirk or fault.over(now) or not fault.matches(route, model):
                    continue
                fault.seen += 1
                if chosen is None and fault.seen > fault.after and fault.draw():
                    fault.fired += 1
                    if fault.first_fired_at is None:
                        fault.first_fired_at = now
                    chosen = fault
        return chosen
