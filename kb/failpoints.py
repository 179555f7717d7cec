"""Failpoints: the named places on the money path where a test can make the process fail.

Each remote call that costs or creates something, and each commit that records it, is bracketed by
`hit("<step>.before")` and `hit("<step>.after")`. Nothing is armed in normal use, and then a hit is one
dictionary lookup. Tests arm a point with an action (raise KeyboardInterrupt, raise any exception, SIGKILL
the process) and check that whatever stops the process there, nothing paid for is lost or paid twice
(tests/pipeline/test_fault_matrix.py; `tests/support/failpoint_kb.py` arms them in a `kb` child process).

The idea is the one of FreeBSD's fail(9) and TiKV's `fail` crate: failure injection at named points of the
real code, not a mock of it.
"""

import os
import signal
from collections.abc import Callable, Iterator
from contextlib import contextmanager

Action = Callable[[], None]

# Remote calls of a batch job's life, and the online embedding request.
REMOTE_CALLS = ("upload", "create", "list", "get", "download", "delete", "cancel", "online.request")
# Commits that record what a remote call did: the job and its manifest (before any remote call), the
# remote job's name, the applied results, and an online request's vectors.
COMMITS = ("record.commit", "submitted.commit", "apply.commit", "online.commit")
# Local steps between them: applying saved results (reading the file, then the apply commit); and a
# batch of chunks added to the full-text index (kb.search.textindex), not yet committed there.
LOCAL_STEPS = ("apply", "textindex.add")
POINTS = tuple(
    f"{step}.{when}" for step in (*REMOTE_CALLS, *COMMITS, *LOCAL_STEPS) for when in ("before", "after")
)

_armed: dict[str, Action] = {}


def hit(point: str) -> None:
    """Run the action armed at `point`, if any."""
    action = _armed.get(point)
    if action is not None:
        action()


def arm(point: str, action: Action) -> None:
    if point not in POINTS:
        raise ValueError(f"unknown failpoint {point!r}; known: {', '.join(POINTS)}")
    _armed[point] = action


def disarm(point: str | None = None) -> None:
    """Disarm one point, or all of them."""
    if point is None:
        _armed.clear()
    else:
        _armed.pop(point, None)


@contextmanager
def armed(point: str, action: Action) -> Iterator[None]:
    arm(point, action)
    try:
        yield
    finally:
        disarm(point)


def once(action: Action, skip: int = 0) -> Action:
    """An action that fires once, on the hit after the first `skip` ones (a restarted step then goes
    through)."""
    hits = 0

    def run() -> None:
        nonlocal hits
        hits += 1
        if hits == skip + 1:
            action()

    return run


def interrupt() -> None:
    """What Ctrl-C does between two lines."""
    raise KeyboardInterrupt


def crash() -> None:
    """A bug, or any exception kb does not know."""
    raise RuntimeError("failpoint: an unexpected error")


def kill() -> None:
    """What the OOM killer, a power cut or `kill -9` does: no clean-up of any kind."""
    os.kill(os.getpid(), signal.SIGKILL)


ACTIONS: dict[str, Action] = {"interrupt": interrupt, "crash": crash, "kill": kill}
