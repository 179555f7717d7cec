"""Helpers for the crash and concurrency tests: real `kb` subprocesses, ledger snapshots.

The worker runs as `python -m kb ...` in a child process that reaches the in-process emulator over HTTP,
configured only through the environment, as a user would configure it.
"""

import os
import signal
import socket
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kb.store.dbapi import sqlite_driver
from kb.testing.gemini_emulator import GeminiEmulator
from tests.support.settings import EMULATOR_KEY


def kb_env(emu: GeminiEmulator, db: Path, **overrides: object) -> dict[str, str]:
    """The environment of a `kb` child process: the emulator's key and URL, fast intervals, `overrides`
    (`KB_` names without the prefix, e.g. `WORKER_LEASE_S=1`)."""
    env = {
        name: value
        for name, value in os.environ.items()
        if not name.startswith("KB_") and name not in ("GEMINI_API_KEY", "GOOGLE_API_KEY")
    }
    env.update(
        {
            "GEMINI_API_KEY": EMULATOR_KEY,
            "GOOGLE_GEMINI_BASE_URL": emu.base_url,
            "KB_DB": str(db),
            "KB_PROVIDER": "gemini",
            "KB_POLL_INITIAL_S": "0.05",
            "KB_POLL_MAX_S": "0.2",
            "KB_WORKER_IDLE_S": "0.05",
            "KB_RETRY_BASE_DELAY_S": "0.01",
            "KB_RETRY_MAX_DELAY_S": "0.05",
            "KB_TASK_RETRY_BASE_S": "0.05",
            "KB_BATCH_MIN_TEXTS": "1",
            "KB_BATCH_MAX_WAIT_S": "0",
            "PYTHONUNBUFFERED": "1",
        }
    )
    env.update({f"KB_{name}": str(value) for name, value in overrides.items()})
    return env


@dataclass
class KbProcess:
    """A running `kb` command whose output goes to files (no pipe can fill up and block it)."""

    popen: subprocess.Popen[bytes]
    out: Path
    err: Path

    @property
    def pid(self) -> int:
        return self.popen.pid

    def kill(self) -> None:
        self.popen.kill()
        self.popen.wait()

    def terminate(self) -> None:
        self.popen.send_signal(signal.SIGTERM)

    def wait(self, timeout: float) -> int:
        try:
            return self.popen.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise

    @property
    def stdout(self) -> str:
        return self.out.read_text(encoding="utf-8", errors="replace")

    @property
    def stderr(self) -> str:
        return self.err.read_text(encoding="utf-8", errors="replace")


FAILPOINT_KB = Path(__file__).with_name("failpoint_kb.py")


def start_kb(
    args: Sequence[str], env: dict[str, str], logs: Path, name: str, failpoint: str | None = None
) -> KbProcess:
    """`kb ARGS` in a child process; with `failpoint` ("create.after=kill"), that point armed in it."""
    logs.mkdir(parents=True, exist_ok=True)
    out, err = logs / f"{name}.out", logs / f"{name}.err"
    entry = ["-m", "kb"] if failpoint is None else [str(FAILPOINT_KB), failpoint]
    with out.open("wb") as stdout, err.open("wb") as stderr:
        popen = subprocess.Popen(
            [sys.executable, *entry, *args], env=env, stdout=stdout, stderr=stderr, cwd=logs
        )
    return KbProcess(popen, out, err)


def run_kb(
    args: Sequence[str],
    env: dict[str, str],
    logs: Path,
    name: str,
    timeout: float = 60,
    failpoint: str | None = None,
) -> KbProcess:
    process = start_kb(args, env, logs, name, failpoint)
    process.wait(timeout)
    return process


def owner_of(pid: int) -> str:
    """The lease owner name of a worker process (see `kb.store.claims.default_owner`)."""
    return f"{socket.gethostname()}:{pid}"


def _read(db: Path, sql: str) -> list[tuple[Any, ...]]:
    # kb's own driver: two SQLite libraries in one process do not see each other's POSIX locks, and a
    # connection closed by one drops the other's, which can corrupt the file (sqlite.org/howtocorrupt.html).
    connection = sqlite_driver().connect(f"file:{db}?mode=ro", uri=True, timeout=10)
    try:
        return connection.execute(sql).fetchall()
    finally:
        connection.close()


def lease_owner(db: Path) -> str | None:
    rows = _read(db, "SELECT owner FROM worker_leases WHERE name = 'batch'")
    return str(rows[0][0]) if rows else None


def expire_lease(db: Path, owner: str) -> None:
    """Age a dead worker's lease and job claims past their expiry: what waiting `worker_lease_s` would do,
    without the wait.
    The successor then takes it over exactly as it takes over any expired lease."""
    connection = sqlite_driver().connect(db, timeout=10)
    try:
        with connection:
            connection.execute("UPDATE worker_leases SET expires_at = 0 WHERE owner = ?", (owner,))
            connection.execute("UPDATE batch_jobs SET lease_expires_at = 0 WHERE lease_owner = ?", (owner,))
    finally:
        connection.close()


def wait_until(condition: Callable[[], bool], timeout: float, interval: float = 0.005) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(interval)
    return condition()


def wait_for_lease(db: Path, owner: str, timeout: float, process: KbProcess | None = None) -> bool:
    """Wait until `owner` holds the batch lease (False on timeout, or when `process` exited first)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process is not None and process.popen.poll() is not None:
            return False
        try:
            if lease_owner(db) == owner:
                return True
        except sqlite_driver().OperationalError:  # not created yet
            pass
        time.sleep(0.01)
    return False


@dataclass(frozen=True)
class JobRow:
    id: int
    display_name: str
    state: str
    remote_name: str | None
    input_file: str | None


def job_rows(db: Path) -> list[JobRow]:
    rows = _read(db, "SELECT id, display_name, state, remote_name, input_file FROM batch_jobs ORDER BY id")
    return [JobRow(int(a), str(b), str(c), d, e) for a, b, c, d, e in rows]


def task_counts(db: Path) -> Counter[str]:
    return Counter(
        {str(s): int(n) for s, n in _read(db, "SELECT status, count(*) FROM embedding_tasks GROUP BY 1")}
    )


# Where a kill landed, judged from the ledger and the emulator right after it. Jobs are submitted in id order,
# so the lowest-numbered `created` job is the one the worker was submitting when it died.
BEFORE_UPLOAD = "ledger commit .. input uploaded"
BEFORE_CREATE = "input uploaded .. create sent"
AFTER_CREATE = "remote job created .. name recorded"
NOT_ADOPTED = "orphan of an earlier kill not yet adopted"
POLLING = "submitted .. results saved (poll, download)"
BEFORE_APPLY = "results saved .. applied"
QUIET = "no job mid-way (flush, clean-up, drained)"
PHASES = (BEFORE_UPLOAD, BEFORE_CREATE, AFTER_CREATE, NOT_ADOPTED, POLLING, BEFORE_APPLY, QUIET)


def kill_phase(jobs: Sequence[JobRow], remote_now: set[str], remote_before: set[str]) -> str:
    """`remote_now`, `remote_before`: display names of the remote jobs now and after the previous kill."""
    created = [job for job in jobs if job.state == "created"]
    orphans = [job.display_name for job in created if job.display_name in remote_now]
    if any(name not in remote_before for name in orphans):
        return AFTER_CREATE
    if orphans:
        return NOT_ADOPTED
    if created:
        return BEFORE_CREATE if created[0].input_file else BEFORE_UPLOAD
    states = {job.state for job in jobs}
    if "succeeded" in states:
        return BEFORE_APPLY
    if states & {"pending", "running", "cancelling"}:
        return POLLING
    return QUIET
