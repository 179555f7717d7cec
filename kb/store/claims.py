"""Job claims: which worker may do the next remote step on a batch job (submit, poll, download, apply).

A worker claims one job at a time, renews the claim before each remote call, and lets go when the step is
done. On PostgreSQL the claim is taken with `SELECT ... FOR UPDATE SKIP LOCKED`, so many workers on many
machines pick different jobs without waiting on each other; SQLite serialises writers anyway (the clause
compiles to nothing there). A claim not renewed expires after `lease_s`: a killed worker's jobs are taken
over, and the taker looks the job up remotely before submitting it again (it may already exist).

The holder stays recorded after release (`lease_owner` with no expiry), so `kb jobs` can say who last
worked on a job.
"""

import logging
import os
import socket
import threading
from collections.abc import Callable
from dataclasses import dataclass

from sqlalchemy import ColumnElement, and_, or_, select, update
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import SQLAlchemyError

from kb.errors import DatabaseError
from kb.records import JobState
from kb.store.engine import write_transaction
from kb.store.schema import BatchJob, table_of

log = logging.getLogger("kb.store.claims")
JOBS = table_of(BatchJob)


def default_owner() -> str:
    """This process's name in claims and leases: host and pid."""
    return f"{socket.gethostname()}:{os.getpid()}"


@dataclass(frozen=True, slots=True)
class Claim:
    job: BatchJob
    # Another worker held it and its claim expired mid-step (it died or stalled): what it did remotely is
    # unknown, so the job is looked up by display name before anything is sent again.
    taken_over: bool


JobFilter = ColumnElement[bool]  # which jobs a worker looks for: built here, by the functions below


def to_submit(now: float) -> JobFilter:
    """Recorded jobs with no remote job yet whose (re)submission is due."""
    return and_(
        JOBS.c.state == JobState.CREATED,
        or_(JOBS.c.next_poll_at.is_(None), JOBS.c.next_poll_at <= now),
    )


def to_poll(now: float, only_due: bool = True) -> JobFilter:
    """Remote jobs not yet applied (all of them, or those whose next poll is due)."""
    live = JOBS.c.state.in_([JobState.PENDING, JobState.RUNNING, JobState.CANCELLING, JobState.SUCCEEDED])
    if not only_due:
        return live
    return and_(live, or_(JOBS.c.next_poll_at.is_(None), JOBS.c.next_poll_at <= now))


def claim_next(
    connection: Connection,
    owner: str,
    now: float,
    lease_s: float,
    where: JobFilter,
    exclude: set[int],
) -> Claim | None:
    """Claim the lowest-numbered job matching `where` that no other worker holds, skipping `exclude`."""
    free = or_(JOBS.c.lease_expires_at.is_(None), JOBS.c.lease_expires_at < now, JOBS.c.lease_owner == owner)
    statement = select(JOBS).where(where, free).order_by(JOBS.c.id).limit(1).with_for_update(skip_locked=True)
    if exclude:
        statement = statement.where(JOBS.c.id.not_in(sorted(exclude)))
    row = connection.execute(statement).one_or_none()
    if row is None:
        return None
    job = BatchJob(**row._mapping)
    taken_over = job.lease_expires_at is not None and job.lease_owner not in (None, owner)
    connection.execute(
        update(JOBS).where(JOBS.c.id == job.id).values(lease_owner=owner, lease_expires_at=now + lease_s)
    )
    return Claim(job, taken_over)


def renew(connection: Connection, job_id: int, owner: str, now: float, lease_s: float) -> bool:
    """Extend the claim; False if another worker has taken the job over meanwhile."""
    result = connection.execute(
        update(JOBS)
        .where(JOBS.c.id == job_id, JOBS.c.lease_owner == owner)
        .values(lease_expires_at=now + lease_s)
    )
    return bool(result.rowcount)


def release(connection: Connection, job_id: int, owner: str) -> None:
    connection.execute(
        update(JOBS).where(JOBS.c.id == job_id, JOBS.c.lease_owner == owner).values(lease_expires_at=None)
    )


class Renewer:
    """Renews a claim in the background while one long step runs (a large download, or writing 10,000
    vectors into an HNSW index), so that no step has to fit inside `lease_s`. A claim found taken over
    sets `lost`; the step checks it before its next remote call, and the apply checks it at commit."""

    def __init__(
        self, engine: Engine, job_id: int, owner: str, lease_s: float, clock: Callable[[], float]
    ) -> None:
        self.engine, self.job_id, self.owner, self.lease_s, self.clock = engine, job_id, owner, lease_s, clock
        self.lost = False
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"kb-claim-{job_id}", daemon=True)

    def __enter__(self) -> "Renewer":
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        while not self._stop.wait(self.lease_s / 3):
            try:
                with write_transaction(self.engine) as connection:
                    kept = renew(connection, self.job_id, self.owner, self.clock(), self.lease_s)
            except (SQLAlchemyError, DatabaseError) as error:  # a busy database: the next tick tries again
                log.debug("job %s: claim not renewed this time: %s", self.job_id, error)
                continue
            if not kept:
                self.lost = True
                return
