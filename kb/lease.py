"""The worker lease: one worker at a time may submit and apply batch work on a database.

SQLite has no `SELECT ... FOR UPDATE SKIP LOCKED`; a lease row taken in an IMMEDIATE transaction does the job.
A lease that is not renewed expires, so a crashed worker's successor takes over after `lease_s` seconds.
"""

from dataclasses import dataclass

from sqlalchemy import delete, insert, select, update
from sqlalchemy.engine import Engine

from kb.db import write_transaction
from kb.schema import WorkerLease, table_of

LEASES = table_of(WorkerLease)
BATCH_LEASE = "batch"


@dataclass(frozen=True, slots=True)
class LeaseHolder:
    owner: str
    expires_at: float
    heartbeat_at: float


def acquire(engine: Engine, owner: str, now: float, lease_s: float, name: str = BATCH_LEASE) -> bool:
    """Take or renew the lease; False while another owner holds an unexpired one."""
    with write_transaction(engine) as connection:
        row = connection.execute(select(LEASES).where(LEASES.c.name == name)).one_or_none()
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


def holder(engine: Engine, name: str = BATCH_LEASE) -> LeaseHolder | None:
    with engine.connect() as connection:
        row = connection.execute(select(LEASES).where(LEASES.c.name == name)).one_or_none()
    return None if row is None else LeaseHolder(row.owner, row.expires_at, row.heartbeat_at)
