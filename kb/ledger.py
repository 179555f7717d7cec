"""The batch job ledger: jobs, their manifests (request key -> task), and task hand-offs between them.

Every function runs in the caller's transaction. The rule that keeps money safe: a task is `submitted` with a
`job_id` for as long as that job is live, so it can never be claimed for a second job.
"""

import secrets
from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy import func, insert, select, update
from sqlalchemy.engine import Connection

from kb.records import LIVE_JOB_STATES, JobState, TaskStatus
from kb.schema import BatchJob, BatchJobItem, Chunk, EmbeddingTask, Meta, table_of
from kb.store import in_batches

JOBS = table_of(BatchJob)
ITEMS = table_of(BatchJobItem)
TASKS = table_of(EmbeddingTask)
CHUNKS = table_of(Chunk)
META = table_of(Meta)


@dataclass(frozen=True, slots=True)
class Claimable:
    task_id: int
    token_estimate: int


def database_id(connection: Connection) -> str:
    """A random id of this database, made on first use: job display names carry it, so two databases that
    share an API key never mistake each other's jobs."""
    found = connection.execute(select(META.c.value).where(META.c.key == "database_id")).scalar()
    if found is not None:
        return str(found)
    value = secrets.token_hex(4)
    connection.execute(insert(META).values(key="database_id", value=value))
    return value


def display_name(database: str, job_id: int) -> str:
    """Unique for ever, even if SQLite reuses the id of a deleted job: a name is how a remote job is found
    again after a crash, so an old remote job must never answer to a new job's name."""
    return f"kb-{database}-{job_id}-{secrets.token_hex(3)}"


def due_pending(connection: Connection, space_id: int, now: float, limit: int) -> list[Claimable]:
    """Due pending tasks, locked until the transaction ends. Rows another worker is putting into its job
    right now are skipped, not waited for (PostgreSQL; SQLite has one writer at a time anyway)."""
    rows = connection.execute(
        select(TASKS.c.id, TASKS.c.token_estimate)
        .where(
            TASKS.c.space_id == space_id,
            TASKS.c.status == TaskStatus.PENDING,
            TASKS.c.next_attempt_at <= now,
        )
        .order_by(TASKS.c.id)
        .limit(limit)
        .with_for_update(skip_locked=True)
    )
    return [Claimable(int(a), int(b)) for a, b in rows]


def pending_summary(connection: Connection, space_id: int, now: float) -> tuple[int, float | None]:
    """(due pending tasks, creation time of the oldest of them) in the space."""
    count, oldest = connection.execute(
        select(func.count(), func.min(TASKS.c.created_at)).where(
            TASKS.c.space_id == space_id,
            TASKS.c.status == TaskStatus.PENDING,
            TASKS.c.next_attempt_at <= now,
        )
    ).one()
    return int(count), None if oldest is None else float(oldest)


def create_job(
    connection: Connection,
    space_id: int,
    mode: str,
    items: Sequence[Claimable],
    now: float,
    deadline_s: float,
) -> int:
    """Record a job and its manifest, and hand its tasks over to it, before any remote call. Only tasks
    still pending are taken (the caller's lock makes that all of them); returns the job id."""
    job_id = int(
        connection.execute(
            insert(JOBS)
            .values(
                space_id=space_id,
                display_name=f"kb-new-{secrets.token_hex(8)}",
                mode=mode,
                state=JobState.CREATED,
                item_count=0,
                token_estimate=0,
                created_at=now,
                deadline_at=now + deadline_s,
                next_poll_at=now,
                poll_count=0,
                submit_attempts=0,
            )
            .returning(JOBS.c.id)
        ).scalar_one()
    )
    estimates = {item.task_id: item.token_estimate for item in items}
    taken: list[int] = []
    for batch in in_batches(list(estimates), 500):
        rows = connection.execute(
            update(TASKS)
            .where(TASKS.c.id.in_(batch), TASKS.c.status == TaskStatus.PENDING)
            .values(status=TaskStatus.SUBMITTED, job_id=job_id, updated_at=now)
            .returning(TASKS.c.id)
        )
        taken.extend(int(task_id) for (task_id,) in rows)
    taken.sort()
    if taken:
        connection.execute(
            insert(ITEMS), [{"job_id": job_id, "key": f"t{task_id}", "task_id": task_id} for task_id in taken]
        )
    update_job(
        connection,
        job_id,
        display_name=display_name(database_id(connection), job_id),
        item_count=len(taken),
        token_estimate=sum(estimates[task_id] for task_id in taken),
    )
    return job_id


def job(connection: Connection, job_id: int) -> BatchJob:
    row = connection.execute(select(JOBS).where(JOBS.c.id == job_id)).one()
    return BatchJob(**row._mapping)


def jobs_in(connection: Connection, states: Sequence[JobState]) -> list[BatchJob]:
    rows = connection.execute(select(JOBS).where(JOBS.c.state.in_(list(states))).order_by(JOBS.c.id))
    return [BatchJob(**row._mapping) for row in rows]


def live_jobs(connection: Connection) -> list[BatchJob]:
    return jobs_in(connection, sorted(LIVE_JOB_STATES))


def all_jobs(connection: Connection, limit: int = 1000) -> list[BatchJob]:
    rows = connection.execute(select(JOBS).order_by(JOBS.c.id.desc()).limit(limit))
    return [BatchJob(**row._mapping) for row in rows]


def manifest_texts(connection: Connection, job_id: int) -> list[tuple[str, str]]:
    """(request key, text) for every item of the job, in key order (one chunk's copy of each text)."""
    one_chunk = (
        select(CHUNKS.c.text_sha256, func.min(CHUNKS.c.id).label("chunk_id"))
        .group_by(CHUNKS.c.text_sha256)
        .subquery()
    )
    rows = connection.execute(
        select(ITEMS.c.key, CHUNKS.c.text)
        .join(TASKS, TASKS.c.id == ITEMS.c.task_id)
        .join(one_chunk, one_chunk.c.text_sha256 == TASKS.c.text_sha256)
        .join(CHUNKS, CHUNKS.c.id == one_chunk.c.chunk_id)
        .where(ITEMS.c.job_id == job_id)
        .order_by(ITEMS.c.task_id)
    )
    return [(str(key), str(text)) for key, text in rows]


def manifest(connection: Connection, job_id: int) -> dict[str, int]:
    rows = connection.execute(select(ITEMS.c.key, ITEMS.c.task_id).where(ITEMS.c.job_id == job_id))
    return {str(key): int(task_id) for key, task_id in rows}


def update_job(connection: Connection, job_id: int, **values: object) -> None:
    connection.execute(update(JOBS).where(JOBS.c.id == job_id).values(**values))


def held_tasks(connection: Connection, job_id: int) -> list[tuple[int, int]]:
    """(task id, attempts) of the tasks this job still holds (submitted, not yet answered)."""
    rows = connection.execute(
        select(TASKS.c.id, TASKS.c.attempts)
        .where(TASKS.c.job_id == job_id, TASKS.c.status == TaskStatus.SUBMITTED)
        .with_for_update()  # PostgreSQL: no concurrent edit of these tasks until the caller commits
    )
    return [(int(a), int(b)) for a, b in rows]


def set_tasks(connection: Connection, task_ids: Sequence[int], **values: object) -> None:
    for batch in in_batches(task_ids, 500):
        connection.execute(update(TASKS).where(TASKS.c.id.in_(batch)).values(**values))


def token_estimates(connection: Connection, task_ids: Sequence[int]) -> int:
    total = 0
    for batch in in_batches(task_ids, 500):
        total += int(
            connection.execute(
                select(func.coalesce(func.sum(TASKS.c.token_estimate), 0)).where(TASKS.c.id.in_(batch))
            ).scalar_one()
        )
    return total


def drop_orphans(connection: Connection, job_id: int) -> int:
    """Remove from a job not yet sent the texts that no chunk holds any more (edited or deleted since the
    job was recorded): there is nothing to embed, and nothing was paid. Returns how many went."""
    orphans = [
        int(task_id)
        for (task_id,) in connection.execute(
            select(ITEMS.c.task_id)
            .join(TASKS, TASKS.c.id == ITEMS.c.task_id)
            .where(
                ITEMS.c.job_id == job_id,
                ~select(CHUNKS.c.id).where(CHUNKS.c.text_sha256 == TASKS.c.text_sha256).exists(),
            )
        )
    ]
    for batch in in_batches(orphans, 500):
        connection.execute(ITEMS.delete().where(ITEMS.c.job_id == job_id, ITEMS.c.task_id.in_(batch)))
        connection.execute(
            TASKS.delete().where(
                TASKS.c.id.in_(batch), TASKS.c.job_id == job_id, TASKS.c.status == TaskStatus.SUBMITTED
            )
        )
    if orphans:
        connection.execute(
            update(JOBS).where(JOBS.c.id == job_id).values(item_count=JOBS.c.item_count - len(orphans))
        )
    return len(orphans)
