"""Leases and heartbeats in the `worker_leases` table.

On SQLite one worker at a time may submit and apply batch work (the database has one writer anyway): it
holds the `batch` lease, taken in an IMMEDIATE transaction. On PostgreSQL all workers work at once, each job
under its own claim (`kb.store.claims`). Either way every worker keeps a `worker:<owner>` heartbeat row, which
`kb status` reads. A lease that is not renewed expires, so a crashed worker's successor takes over after
`lease_s` seconds.
"""

import time
from collections.abc import Callable

from sqlalchemy import delete, insert, select, update
from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError

from kb.errors import DatabaseError, LeaseLostError
from kb.store import readmodel
from kb.store.engine import write_transaction
from kb.store.reader import ConnectionReader
from kb.store.schema import WorkerLease, table_of

LEASES = table_of(WorkerLease)
BATCH_LEASE = "batch"


def acquire(engine: Engine, owner: str, now: float, lease_s: float, name: str = BATCH_LEASE) -> bool:
    """Take or renew the lease; False while another owner holds an unexpired one."""
    try:
        return _acquire(engine, owner, now, lease_s, name)
    except IntegrityError:  # another worker created the lease row in the same instant
        return False


def _acquire(engine: Engine, owner: str, now: float, lease_s: float, name: str) -> bool:
    with write_transaction(engine) as connection:
        # FOR UPDATE: on PostgreSQL a concurrent taker waits here, then sees this one's lease.
        row = connection.execute(select(LEASES).where(LEASES.c.name == name).with_for_update()).one_or_none()
        if row is None:
            connection.execute(
                insert(LEASES).values(
                    name=name, owner=owner, expires_at=now + lease_s, heartbeat_at=now, acquired_at=now
                )
            )
            return True
        if row.owner != owner and row.expires_at > now:
            return False
        values: dict[str, object] = {"owner": owner, "expires_at": now + lease_s, "heartbeat_at": now}
        if row.owner != owner:
            values["acquired_at"] = now
        connection.execute(update(LEASES).where(LEASES.c.name == name).values(**values))
        return True


def release(engine: Engine, owner: str, name: str = BATCH_LEASE) -> None:
    with write_transaction(engine) as connection:
        connection.execute(delete(LEASES).where(LEASES.c.name == name, LEASES.c.owner == owner))


def holder(engine: Engine, name: str = BATCH_LEASE) -> readmodel.Heartbeat | None:
    with engine.connect() as connection:
        row = connection.execute(select(LEASES).where(LEASES.c.name == name)).one_or_none()
    return None if row is None else readmodel.Heartbeat(row.owner, row.expires_at, row.heartbeat_at)


def heartbeat_name(owner: str) -> str:
    return f"{readmodel.HEARTBEAT_PREFIX}{owner}"


def beat(engine: Engine, owner: str, now: float, lease_s: float) -> None:
    """Record that this worker is alive (its own row: never contended)."""
    acquire(engine, owner, now, lease_s, heartbeat_name(owner))


def heartbeats(engine: Engine) -> list[readmodel.Heartbeat]:
    """Every worker's last heartbeat, newest first."""
    with engine.connect() as connection:
        return readmodel.heartbeats(ConnectionReader(connection))


def forget_silent(engine: Engine, now: float, older_than_s: float) -> None:
    """Drop heartbeats of workers silent for longer than `older_than_s` (killed long ago)."""
    with write_transaction(engine) as connection:
        connection.execute(
            delete(LEASES).where(
                LEASES.c.name.startswith(readmodel.HEARTBEAT_PREFIX, autoescape=True),
                LEASES.c.heartbeat_at < now - older_than_s,
            )
        )


class LeaseKeeper:
    """One worker's presence in the database: its heartbeat, and on SQLite the `batch` lease it works under.

    `renew` runs before every remote step (it is the batch manager's guard): a step must not outlive the
    lease, or a second worker could take over work this one is still doing."""

    def __init__(
        self, engine: Engine, owner: str, lease_s: float, clock: Callable[[], float] = time.time
    ) -> None:
        self.engine, self.owner, self.lease_s, self.clock = engine, owner, lease_s, clock
        # SQLite: one worker at a time (a second one would add only lock waits). PostgreSQL: all at once,
        # each job under its own claim.
        self.exclusive = engine.dialect.name != "postgresql"
        self._beaten_at = float("-inf")

    def beat(self) -> None:
        """Write the heartbeat, at most a few times per lease period."""
        now = self.clock()
        if now - self._beaten_at >= self.lease_s / 4:
            beat(self.engine, self.owner, now, self.lease_s)
            self._beaten_at = now

    def acquire(self) -> bool:
        """Take or renew the batch lease (always True on PostgreSQL, which needs none)."""
        return not self.exclusive or acquire(self.engine, self.owner, self.clock(), self.lease_s)

    def renew(self) -> None:
        if not self.acquire():
            raise LeaseLostError(f"worker {self.owner} lost its lease to another worker; stepping back")
        self.beat()

    def release(self) -> None:
        """Let go of the lease and the heartbeat (best effort: the database may be what failed)."""
        try:
            if self.exclusive:
                release(self.engine, self.owner)
            release(self.engine, self.owner, heartbeat_name(self.owner))
        except DatabaseError:
            pass  # both expire by themselves
