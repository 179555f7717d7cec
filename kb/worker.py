"""`kb worker`: the loop that flushes pending texts into batch jobs, polls them, and applies their results.

Small injectable parts (engine, manager, clock, stop event) so tests drive it without sleeping or signals;
only the CLI installs signal handlers, which set `stop`: the worker then finishes its current step and exits.
"""

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import StrEnum

from sqlalchemy import func, select
from sqlalchemy.engine import Engine

from kb import claims, lease, ledger, online, spaces
from kb.batches import BatchManager
from kb.embedder import Embedder
from kb.errors import KbError, LeaseLostError
from kb.records import TaskStatus
from kb.schema import EmbeddingSpace, EmbeddingTask, table_of

log = logging.getLogger("kb.worker")
TASKS = table_of(EmbeddingTask)

# A worker silent this long is gone for good: its heartbeat row is dropped.
_FORGET_SILENT_S = 24 * 3600.0

OnlineEmbedderFor = Callable[[EmbeddingSpace], Embedder | None]


class ExitReason(StrEnum):
    DRAINED = "drained"  # --once: nothing pending, nothing in flight
    STOPPED = "stopped"  # SIGINT/SIGTERM
    TIMED_OUT = "timed_out"  # --once hit its time limit


@dataclass(slots=True)
class WorkerResult:
    reason: ExitReason
    steps: int = 0
    jobs_submitted: int = 0
    jobs_applied: int = 0
    embedded: int = 0
    embedded_online: int = 0
    failed: int = 0
    errors: list[str] = field(default_factory=list)


class Worker:
    def __init__(
        self,
        engine: Engine,
        manager: BatchManager,
        online_embedder_for: OnlineEmbedderFor,
        *,
        owner: str | None = None,
        lease_s: float = 120.0,
        idle_s: float = 5.0,
        clock: Callable[[], float] = time.time,
        stop: threading.Event | None = None,
        after_step: Callable[[], None] | None = None,
    ) -> None:
        self.engine = engine
        self.manager = manager
        self.online_embedder_for = online_embedder_for
        self.owner = owner or claims.default_owner()
        self.lease_s = lease_s
        self.idle_s = idle_s
        self.clock = clock
        self.stop = stop or threading.Event()
        self.after_step = after_step
        self._warned_online: set[int] = set()
        self._beaten_at = float("-inf")
        # SQLite: one worker at a time, under the batch lease (a second one adds only lock waits).
        # PostgreSQL: every worker works at once, each job under its own claim.
        self.exclusive = engine.dialect.name != "postgresql"
        manager.owner = self.owner
        manager.claim_s = lease_s
        manager.guard = self._renew_lease if self.exclusive else self._beat

    def run(self, once: bool = False, timeout_s: float | None = None) -> WorkerResult:
        """Work until stopped; with `once`, until nothing is pending or in flight (or `timeout_s` passes)."""
        result = WorkerResult(ExitReason.STOPPED)
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        reconciled = False
        waiting_logged = False
        lease.forget_silent(self.engine, self.clock(), _FORGET_SILENT_S)
        if not self.exclusive:
            now = self.clock()
            others = [
                h for h in lease.heartbeats(self.engine) if h.owner != self.owner and h.expires_at > now
            ]
            log.info("working alongside %d other live workers, each job claimed by one of us", len(others))
        try:
            while not self.stop.is_set():
                if deadline is not None and time.monotonic() > deadline:
                    result.reason = ExitReason.TIMED_OUT
                    break
                self._beat()
                if self.exclusive and not lease.acquire(self.engine, self.owner, self.clock(), self.lease_s):
                    if not waiting_logged:
                        holder = lease.holder(self.engine)
                        log.info(
                            "another worker (%s) holds the lease; waiting", holder.owner if holder else "?"
                        )
                        waiting_logged = True
                    self.stop.wait(self.idle_s)
                    continue
                if not reconciled:
                    self.manager.submit_created(reconcile_all=True)
                    reconciled = True
                self._step(result, force=once)
                result.steps += 1
                if once and self.drained():
                    result.reason = ExitReason.DRAINED
                    break
                self.stop.wait(self._pause())
        finally:
            if self.exclusive:
                lease.release(self.engine, self.owner)
            lease.release(self.engine, self.owner, lease.heartbeat_name(self.owner))
        return result

    def _beat(self) -> None:
        """Write the heartbeat, at most a few times per lease period: it runs before every remote step."""
        now = self.clock()
        if now - self._beaten_at >= self.lease_s / 4:
            lease.beat(self.engine, self.owner, now, self.lease_s)
            self._beaten_at = now

    def _renew_lease(self) -> None:
        """Renew before every job submitted or applied: a long step must not outlive the lease, or a
        second worker could take over work this one is still doing."""
        if not lease.acquire(self.engine, self.owner, self.clock(), self.lease_s):
            raise LeaseLostError(f"worker {self.owner} lost its lease to another worker; stepping back")
        self._beat()

    def _step(self, result: WorkerResult, force: bool) -> None:
        for phase in (self._online_phase, self._batch_phase, self._after_phase):
            if self.stop.is_set():
                return
            try:
                phase(result, force)
            except KbError as error:  # recorded and retried on the next step; the loop never dies of it
                result.errors.append(error.message)
                log.error("%s", error.message)

    def _online_phase(self, result: WorkerResult, _force: bool) -> None:
        with self.engine.connect() as connection:
            filling = [s for s in spaces.all_spaces(connection) if s.state in ("active", "building")]
        for space in filling:
            embedder = self.online_embedder_for(space)
            if embedder is None:
                continue
            if space.id not in self._warned_online:
                log.warning(
                    "model %s does not support the Batch API: its texts are embedded online at full price",
                    space.model,
                )
                self._warned_online.add(space.id)
            report = online.embed_pending(
                self.engine, embedder, space.id, prices=self.manager.prices, budget=self.manager.budget
            )
            result.embedded_online += report.embedded
            result.errors.extend(report.errors)

    def _batch_phase(self, result: WorkerResult, force: bool) -> None:
        self.manager.flush(force=force)
        result.jobs_submitted += len(self.manager.submit_created())
        report = self.manager.poll()
        result.jobs_applied += len(report.applied)
        result.embedded += report.embedded
        result.failed += report.failed
        result.errors.extend(report.errors)

    def _after_phase(self, _result: WorkerResult, _force: bool) -> None:
        if self.after_step is not None:
            self.after_step()

    def drained(self) -> bool:
        """Nothing pending in any space being filled, and no job in flight."""
        with self.engine.connect() as connection:
            filling = [s.id for s in spaces.all_spaces(connection) if s.state in ("active", "building")]
            pending = connection.execute(
                select(func.count()).where(
                    TASKS.c.space_id.in_(filling), TASKS.c.status == TaskStatus.PENDING
                )
            ).scalar_one()
            live = ledger.live_jobs(connection)
        return pending == 0 and not live

    def _pause(self) -> float:
        """Until the next job poll is due, at most the idle interval."""
        with self.engine.connect() as connection:
            due = [j.next_poll_at for j in ledger.live_jobs(connection) if j.next_poll_at is not None]
        if not due:
            return self.idle_s
        return max(0.01, min(self.idle_s, min(due) - self.clock()))
