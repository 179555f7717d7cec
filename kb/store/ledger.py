"""The batch job ledger: jobs, their manifests (request key -> task), and task hand-offs between them.

Every function runs in the caller's transaction. The rule that keeps money safe: a task is `submitted` with a
`job_id` for as long as that job is live, so it can never be claimed for a second job.

Every change of a job's state is a named transition (`mark_submitted`, `mark_applied`, ...) whose UPDATE
names the state it expects and the worker that must hold the job's claim, and raises `ClaimLostError` when
no row matched (procrastinate's `finish_job`): a worker that stalled past its claim can never overwrite the
progress of the worker that took the job over. The same holds for the tasks a job hands back.
"""

import secrets
from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy import ColumnElement, func, insert, select, update
from sqlalchemy.engine import Connection

from kb.errors import ClaimLostError
from kb.records import LIVE_JOB_STATES, ChunkInput, JobState, RemoteStatus, TaskStatus
from kb.store import contexts, spaces
from kb.store.documents import in_batches, inputs_by_key, key_column
from kb.store.engine import insert_ignoring_conflicts
from kb.store.schema import BatchJob as BatchJob  # the row type callers outside the store use
from kb.store.schema import BatchJobItem, Chunk, EmbeddingTask, Meta, table_of

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
    found = database_id_if_known(connection)
    if found is not None:
        return found
    # Workers starting together on a new database race here: the loser's insert waits for the winner's
    # transaction, does nothing, and the loser reads the winner's id.
    connection.execute(
        insert_ignoring_conflicts(connection, META).values(key="database_id", value=secrets.token_hex(4))
    )
    made = database_id_if_known(connection)
    assert made is not None
    return made


def database_id_if_known(connection: Connection) -> str | None:
    """The database's id without making one (read-only callers)."""
    found = connection.execute(select(META.c.value).where(META.c.key == "database_id")).scalar()
    return None if found is None else str(found)


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
    connection.execute(
        update(JOBS)
        .where(JOBS.c.id == job_id)
        .values(
            display_name=display_name(database_id(connection), job_id),
            item_count=len(taken),
            token_estimate=sum(estimates[task_id] for task_id in taken),
        )
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


def live_count(connection: Connection, space_id: int) -> int:
    """The space's jobs not yet ended (created, submitted, running, or results not yet applied)."""
    live = [
        state.value for state in (JobState.CREATED, JobState.PENDING, JobState.RUNNING, JobState.SUCCEEDED)
    ]
    count = connection.execute(
        select(func.count()).where(JOBS.c.space_id == space_id, JOBS.c.state.in_(live))
    ).scalar_one()
    return int(count)


def applied_throughput(connection: Connection, space_id: int) -> tuple[int, float | None, float | None]:
    """(texts, first submission, last apply) over the space's applied jobs: the rate they went at."""
    row = connection.execute(
        select(func.sum(JOBS.c.item_count), func.min(JOBS.c.submitted_at), func.max(JOBS.c.applied_at)).where(
            JOBS.c.space_id == space_id, JOBS.c.state == JobState.APPLIED
        )
    ).one()
    return int(row[0] or 0), row[1], row[2]


def manifest_texts(connection: Connection, job_id: int, window_tokens: int) -> list[tuple[str, str]]:
    """(request key, text) for every item of the job, in key order (one chunk's copy of each text); for a
    context space, the request that asks for each chunk's context (its document `window_tokens` wide)."""
    rows = connection.execute(
        select(ITEMS.c.key, TASKS.c.text_sha256, TASKS.c.space_id)
        .join(TASKS, TASKS.c.id == ITEMS.c.task_id)
        .where(ITEMS.c.job_id == job_id)
        .order_by(ITEMS.c.task_id)
    ).all()
    if not rows:
        return []
    chunk_input = spaces.chunk_input_of(connection, rows[0][2])
    shas = [r[1] for r in rows]
    if chunk_input == ChunkInput.DOCUMENT:
        inputs = contexts.prompts(connection, shas, window_tokens)
    else:
        inputs = inputs_by_key(connection, chunk_input, shas)
    return [(str(key), inputs[sha]) for key, sha, _ in rows if sha in inputs]


def task_keys(connection: Connection, job_id: int) -> dict[int, str]:
    """Task id -> the key it is stored under (its text's sha256, or a context's key), for the job's items."""
    rows = connection.execute(
        select(TASKS.c.id, TASKS.c.text_sha256)
        .join(ITEMS, ITEMS.c.task_id == TASKS.c.id)
        .where(ITEMS.c.job_id == job_id)
    )
    return {int(task_id): str(sha) for task_id, sha in rows}


def manifest(connection: Connection, job_id: int) -> dict[str, int]:
    rows = connection.execute(select(ITEMS.c.key, ITEMS.c.task_id).where(ITEMS.c.job_id == job_id))
    return {str(key): int(task_id) for key, task_id in rows}


# -- job transitions: each guarded by the state it expects and the claim holder --------------------------


def _transition(
    connection: Connection,
    job_id: int,
    owner: str,
    expected: JobState | frozenset[JobState],
    name: str,
    **values: object,
) -> None:
    states = [expected] if isinstance(expected, JobState) else sorted(expected)
    guard: list[ColumnElement[bool]] = [
        JOBS.c.id == job_id,
        JOBS.c.state.in_([state.value for state in states]),
        JOBS.c.lease_owner == owner,
    ]
    if connection.execute(update(JOBS).where(*guard).values(**values)).rowcount != 1:
        found = connection.execute(
            select(JOBS.c.state, JOBS.c.lease_owner).where(JOBS.c.id == job_id)
        ).one_or_none()
        now = "gone" if found is None else f"{found.state}, held by {found.lease_owner}"
        raise ClaimLostError(
            f"job {job_id}: {name} expected it {'/'.join(states)} and held by {owner}, found it {now}; "
            "leaving it to its holder"
        )


_SUBMITTABLE = JobState.CREATED
_POLLED = frozenset({JobState.PENDING, JobState.RUNNING, JobState.CANCELLING})
_DOWNLOADABLE = frozenset({JobState.PENDING, JobState.RUNNING, JobState.CANCELLING, JobState.SUCCEEDED})


def begin_remote_call(connection: Connection, job_id: int, owner: str, intent: str) -> None:
    """Record, before the call, that a remote call that creates something ("upload", "create") starts."""
    _transition(connection, job_id, owner, _SUBMITTABLE, f"begin {intent}", intent=intent)


def record_upload(connection: Connection, job_id: int, owner: str, input_file: str) -> None:
    _transition(connection, job_id, owner, _SUBMITTABLE, "record upload", input_file=input_file, intent=None)


def clear_intent(connection: Connection, job_id: int, owner: str) -> None:
    """What an interrupted call may have created has been looked up (and adopted or cleaned up)."""
    _transition(connection, job_id, owner, _SUBMITTABLE, "clear intent", intent=None)


def forget_input(connection: Connection, job_id: int, owner: str) -> None:
    """The create was refused because the uploaded input is gone: nothing was created, upload it again."""
    _transition(connection, job_id, owner, _SUBMITTABLE, "forget input", input_file=None, intent=None)


def mark_submitted(
    connection: Connection,
    job_id: int,
    owner: str,
    remote: RemoteStatus,
    input_file: str | None,
    now: float,
    next_poll_at: float,
) -> None:
    """created -> pending: the remote job exists and its name is recorded."""
    _transition(
        connection,
        job_id,
        owner,
        _SUBMITTABLE,
        "mark submitted",
        state=JobState.PENDING,
        remote_name=remote.name,
        input_file=input_file,
        remote_state=remote.raw_state,
        submitted_at=now,
        next_poll_at=next_poll_at,
        poll_count=0,
        step_failures=0,
        intent=None,
        error=None,
    )


def defer_submit(connection: Connection, job_id: int, owner: str, reason: str, next_at: float) -> None:
    """A submission failed in a way worth retrying: try again at `next_at` (the intent, if any, stays:
    the failed call may have created something)."""
    _transition(
        connection,
        job_id,
        owner,
        _SUBMITTABLE,
        "defer submit",
        submit_attempts=JOBS.c.submit_attempts + 1,
        error=reason,
        next_poll_at=next_at,
    )


def mark_empty(connection: Connection, job_id: int, owner: str, now: float) -> None:
    """created -> cancelled: none of its texts is left to embed (all edited or deleted since)."""
    _transition(
        connection,
        job_id,
        owner,
        _SUBMITTABLE,
        "mark empty",
        state=JobState.CANCELLED,
        error="no texts left to embed",
        finished_at=now,
        intent=None,
    )


def record_poll(
    connection: Connection,
    job_id: int,
    owner: str,
    expected: JobState,
    state: JobState,
    raw_state: str,
    next_poll_at: float,
) -> None:
    """A poll that found the job still under way (pending, running, or being cancelled)."""
    _transition(
        connection,
        job_id,
        owner,
        expected,
        "record poll",
        state=state,
        remote_state=raw_state,
        poll_count=JOBS.c.poll_count + 1,
        next_poll_at=next_poll_at,
        step_failures=0,
    )


def mark_cancelling(
    connection: Connection, job_id: int, owner: str, expected: JobState, raw_state: str, next_poll_at: float
) -> None:
    """pending/running -> cancelling: past its deadline, a cancel was sent; its texts wait for the answer."""
    _transition(
        connection,
        job_id,
        owner,
        expected,
        "mark cancelling",
        state=JobState.CANCELLING,
        remote_state=raw_state,
        poll_count=JOBS.c.poll_count + 1,
        next_poll_at=next_poll_at,
    )


def note_results_ready(
    connection: Connection,
    job_id: int,
    owner: str,
    expected: JobState,
    remote: RemoteStatus,
    ended_at: float,
) -> None:
    """The remote job succeeded (its results are paid for) but they could not be fetched yet: record when
    it ended (`finished_at`), which bounds how long its results can still be fetched."""
    if expected not in _DOWNLOADABLE:
        raise ClaimLostError(f"job {job_id}: cannot wait for results of a job that is {expected}")
    _transition(
        connection,
        job_id,
        owner,
        expected,
        "note results ready",
        remote_state=remote.raw_state,
        output_file=remote.output_file,
        finished_at=ended_at,
    )


def mark_downloaded(
    connection: Connection,
    job_id: int,
    owner: str,
    expected: JobState,
    remote: RemoteStatus,
    result_path: str,
    now: float,
) -> None:
    """-> succeeded: the paid results are saved on disk, durably, before anything parses them."""
    if expected not in _DOWNLOADABLE:
        raise ClaimLostError(f"job {job_id}: cannot record results of a job that is {expected}")
    _transition(
        connection,
        job_id,
        owner,
        expected,
        "mark downloaded",
        state=JobState.SUCCEEDED,
        remote_state=remote.raw_state,
        output_file=remote.output_file,
        result_path=result_path,
        finished_at=now,
        step_failures=0,
    )


def mark_applied(
    connection: Connection, job_id: int, owner: str, now: float, tokens_billed: int | None, note: str | None
) -> None:
    """succeeded -> applied: every result is written (vectors, task statuses, spend)."""
    _transition(
        connection,
        job_id,
        owner,
        JobState.SUCCEEDED,
        "mark applied",
        state=JobState.APPLIED,
        applied_at=now,
        tokens_billed=tokens_billed,
        error=note,
        intent=None,
    )


def mark_ended(
    connection: Connection,
    job_id: int,
    owner: str,
    expected: JobState,
    state: JobState,
    reason: str,
    now: float,
) -> None:
    """A live job ends without results (failed, expired, cancelled, or refused): its texts go back."""
    if state in LIVE_JOB_STATES:
        raise ValueError(f"{state} is not an end state")
    _transition(
        connection,
        job_id,
        owner,
        expected,
        f"mark {state}",
        state=state,
        error=reason,
        finished_at=now,
        intent=None,
    )


def record_step_failure(
    connection: Connection, job_id: int, owner: str, expected: JobState, reason: str, next_poll_at: float
) -> int:
    """A step on a live job failed (poll, download, apply): retried at `next_poll_at`. Returns the number
    of failures in a row, which bounds the retries of a job whose results are gone."""
    _transition(
        connection,
        job_id,
        owner,
        expected,
        "record step failure",
        step_failures=JOBS.c.step_failures + 1,
        error=reason,
        next_poll_at=next_poll_at,
    )
    return int(connection.execute(select(JOBS.c.step_failures).where(JOBS.c.id == job_id)).scalar_one())


# -- tasks a job holds (their transitions are kb.store.tasks's) ------------------------------------------


def held_tasks(connection: Connection, job_id: int) -> list[tuple[int, int]]:
    """(task id, attempts) of the tasks this job still holds (submitted, not yet answered)."""
    rows = connection.execute(
        select(TASKS.c.id, TASKS.c.attempts)
        .where(TASKS.c.job_id == job_id, TASKS.c.status == TaskStatus.SUBMITTED)
        .with_for_update()  # PostgreSQL: no concurrent edit of these tasks until the caller commits
    )
    return [(int(a), int(b)) for a, b in rows]


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
    space_id = connection.execute(select(JOBS.c.space_id).where(JOBS.c.id == job_id)).scalar_one()
    key = key_column(spaces.chunk_input_of(connection, space_id))
    orphans = [
        int(task_id)
        for (task_id,) in connection.execute(
            select(ITEMS.c.task_id)
            .join(TASKS, TASKS.c.id == ITEMS.c.task_id)
            .where(ITEMS.c.job_id == job_id, ~select(CHUNKS.c.id).where(key == TASKS.c.text_sha256).exists())
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
