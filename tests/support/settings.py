"""Settings and states the tests share: the emulator's key, intervals that never wait for real time,
a job taken over, a fresh PostgreSQL database."""

import time
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from sqlalchemy.engine import Engine


def take_over(engine: "Engine", job_id: int, owner: str, lease_s: float = 30.0) -> None:
    """Another worker claims the job as the real claim query does once the holder's lease has run out."""
    from kb.store import claims
    from kb.store.engine import write_transaction

    later = time.time() + 86_400  # the holder stalled past its lease, however long
    with write_transaction(engine) as connection:
        claim = claims.claim_next(connection, owner, later, lease_s, claims.JOBS.c.id == job_id, set())
    assert claim is not None, f"job {job_id} could not be claimed"


EMULATOR_KEY = "test-key-0123456789"


# Intervals in hundredths of seconds, so that worker tests never wait for real time.
FAST_SETTINGS: dict[str, object] = {
    "poll_initial_s": 0.01,
    "poll_max_s": 0.05,
    "worker_idle_s": 0.01,
    "task_retry_base_s": 0.01,
    "retry_base_delay_s": 0.01,
    "batch_min_texts": 1,
}


def new_postgres_database(server: str) -> str:
    """A fresh, empty database on the test server; its URL."""
    import uuid

    import sqlalchemy as sa

    from kb.store.engine import create_engine

    name = f"kb_{uuid.uuid4().hex[:12]}"
    admin = create_engine(server)
    with admin.connect().execution_options(isolation_level="AUTOCOMMIT") as connection:
        connection.exec_driver_sql(f"CREATE DATABASE {name}")
    admin.dispose()
    url = sa.engine.make_url(server.replace("postgresql://", "postgresql+psycopg://", 1))
    return url.set(database=name).render_as_string(hide_password=False)
