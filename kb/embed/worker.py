"""`kb worker`: the loop that flushes pending texts into batch jobs, polls them, and applies their results.

Small injectable parts (engine, manager, lease keeper, clock, stop event) so tests drive it without sleeping
or signals; only the CLI installs signal handlers, which set `stop`: the worker then ends after the remote
call in flight (the ledger makes stopping there safe) and says what is left.

What stops it, and what does not:
- a provider failing (outage, quota, a refused job): recorded on the job or its texts, retried later;
- an unexpected exception in one phase of a step (a bug, a library's surprise): logged with its traceback,
  and the next step goes on (KeyboardInterrupt and SystemExit still end the worker);
- the database busy (locked by another process, its server restarting): the step is retried with back-off;
- a configuration error (the API key refused) or a database that cannot be used (corrupt, full, read-only):
  the worker stops with the reason. Retrying cannot help, and burning attempts would fail every text.
"""

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import StrEnum

from sqlalchemy.engine import Engine

from kb.core.retry import Backoff
from kb.embed import online
from kb.embed.batches import BatchManager
from kb.embed.policy import OnlinePolicy
from kb.errors import ConfigError, DatabaseError, KbError, StopRequested
from kb.providers.base import Embedder
from kb.records import JobState
from kb.store import lease, ledger, spaces, tasks
from kb.store.lease import LeaseKeeper
from kb.store.spaces import EmbeddingSpace

log = logging.getLogger("kb.embed.worker")

# A worker silent this long is gone for good: its heartbeat row is dropped.
_FORGET_SILENT_S = 24 * 3600.0
_DATABASE_BACKOFF_MAX_S = 60.0

OnlineEmbedderFor = Callable[[EmbeddingSpace], Embedder | None]


class ExitReason(StrEnum):
    DRAINED = "drained"  # --once: nothing pending, nothing in flight
    STOPPED = "stopped"  # SIGINT/SIGTERM
    TIMED_OUT = "timed_out"  # --once hit its time limit


@dataclass(frozen=True, slots=True)
class Remaining:
    """What a stopped worker leaves for the next one."""

    pending_texts: int
    jobs_not_submitted: int
    jobs_in_flight: int

    @property
    def nothing(self) -> bool:
        return not (self.pending_texts or self.jobs_not_submitted or self.jobs_in_flight)


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
    left: Remaining | None = None


class Worker:
    def __init__(
        self,
        engine: Engine,
        manager: BatchManager,
        online_embedder_for: OnlineEmbedderFor,
        *,
        keeper: LeaseKeeper | None = None,
        online_policy: OnlinePolicy | None = None,
        idle_s: float = 5.0,
        clock: Callable[[], float] = time.time,
        stop: threading.Event | None = None,
        cut_over: Callable[[], None] | None = None,
        after_step: Callable[[], None] | None = None,
    ) -> None:
        """`cut_over` runs each step after the batch phase (the reindex cut-over: a rebuilt space that is
        complete becomes active); `after_step` runs last (the CLI's progress)."""
        self.engine = engine
        self.manager = manager
        self.online_embedder_for = online_embedder_for
        self.keeper = keeper or LeaseKeeper(engine, manager.owner, manager.claim_s, clock)
        self.online_policy = online_policy or OnlinePolicy()
        self.idle_s = idle_s
        self.clock = clock
        self.stop = stop or threading.Event()
        self.cut_over = cut_over
        self.after_step = after_step
        self._warned_online: set[int] = set()

    @property
    def owner(self) -> str:
        return self.keeper.owner

    def run(self, once: bool = False, timeout_s: float | None = None) -> WorkerResult:
        """Work until stopped; with `once`, until nothing is pending or in flight (or `timeout_s` passes).

        Raises ConfigError or a non-transient DatabaseError when it cannot go on (see the module doc)."""
        result = WorkerResult(ExitReason.STOPPED)
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        started = False
        busy = 0  # database-busy failures in a row
        try:
            while not self.stop.is_set():
                if deadline is not None and time.monotonic() > deadline:
                    result.reason = ExitReason.TIMED_OUT
                    break
                try:
                    if not self._hold_lease(started):
                        self.stop.wait(self.idle_s)
                        continue
                    if not started:
                        self._start()
                        started = True
                    self._step(result, force=once)
                    busy = 0
                except DatabaseError as error:
                    if not error.transient:
                        raise
                    busy += 1
                    self._back_off(error, busy, result)
                    continue
                result.steps += 1
                if once and self.drained():
                    result.reason = ExitReason.DRAINED
                    break
                self.stop.wait(self._pause())
        except StopRequested:
            result.reason = ExitReason.STOPPED
        finally:
            self.keeper.release()
        if result.reason != ExitReason.DRAINED:
            result.left = self._remaining()
        return result

    def _hold_lease(self, started: bool) -> bool:
        self.keeper.beat()
        if self.keeper.acquire():
            return True
        if not started:
            holder = lease.holder(self.engine)
            log.info("another worker (%s) holds the lease; waiting", holder.owner if holder else "?")
        return False

    def _start(self) -> None:
        """Once the worker may work: forget long-dead workers, clear leftovers of killed ones, and look up
        every job that was being submitted when a worker stopped (it may exist remotely)."""
        lease.forget_silent(self.engine, self.clock(), _FORGET_SILENT_S)
        if not self.keeper.exclusive:
            now = self.clock()
            others = [
                h for h in lease.heartbeats(self.engine) if h.owner != self.owner and h.expires_at > now
            ]
            log.info("working alongside %d other live workers, each job claimed by one of us", len(others))
        self.manager.clean_leftovers()
        self.manager.submit_created(reconcile_all=True)

    def _back_off(self, error: DatabaseError, failures: int, result: WorkerResult) -> None:
        delay = Backoff(max(self.idle_s, 0.1), _DATABASE_BACKOFF_MAX_S).delay(failures)
        log.warning("%s; trying again in %.1f s", error.message, delay)
        result.errors.append(error.message)
        self.stop.wait(delay)

    def _step(self, result: WorkerResult, force: bool) -> None:
        for phase in (self._online_phase, self._batch_phase, self._cut_over_phase, self._after_phase):
            if self.stop.is_set():
                return
            try:
                phase(result, force)
            except (ConfigError, DatabaseError, StopRequested):
                raise
            except KbError as error:  # recorded and retried on the next step; the loop never dies of it
                result.errors.append(error.message)
                log.error("%s", error.message)
            except Exception as error:  # a bug, or a library's surprise: the same, with the traceback
                message = f"unexpected {type(error).__name__} in the {phase.__name__.strip('_')}: {error}"
                result.errors.append(message)
                log.error("%s", message, exc_info=True)

    def _online_phase(self, result: WorkerResult, _force: bool) -> None:
        with self.engine.connect() as connection:
            filling = spaces.being_filled(connection)
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
                self.engine,
                embedder,
                space.id,
                prices=self.manager.prices,
                budget=self.manager.budget,
                policy=self.online_policy,
                stop=self.stop,
                clock=self.clock,
            )
            result.embedded_online += report.embedded
            result.failed += report.failed
            result.errors.extend(report.errors)

    def _batch_phase(self, result: WorkerResult, force: bool) -> None:
        self.manager.flush(force=force)
        result.jobs_submitted += len(self.manager.submit_created())
        report = self.manager.poll()
        result.jobs_applied += len(report.applied)
        result.embedded += report.embedded
        result.failed += report.failed
        result.errors.extend(report.errors)

    def _cut_over_phase(self, _result: WorkerResult, _force: bool) -> None:
        if self.cut_over is not None:
            self.cut_over()

    def _after_phase(self, _result: WorkerResult, _force: bool) -> None:
        if self.after_step is not None:
            self.after_step()

    def drained(self) -> bool:
        """Nothing pending in any space being filled, and no job in flight."""
        remaining = self._remaining()
        return remaining.pending_texts == 0 and remaining.jobs_in_flight + remaining.jobs_not_submitted == 0

    def _remaining(self) -> Remaining:
        with self.engine.connect() as connection:
            filling = spaces.filling(connection)
            pending = tasks.pending_in(connection, filling)
            live = ledger.live_jobs(connection)
        created = sum(1 for job in live if job.state == JobState.CREATED)
        return Remaining(int(pending), created, len(live) - created)

    def _pause(self) -> float:
        """Until the next job poll is due, at most the idle interval."""
        with self.engine.connect() as connection:
            due = [j.next_poll_at for j in ledger.live_jobs(connection) if j.next_poll_at is not None]
        if not due:
            return self.idle_s
        return max(0.01, min(self.idle_s, min(due) - self.clock()))
