"""Embedding tasks: one per (space, distinct text). Queueing is content-addressed, so a text already
queued or embedded in a space costs nothing more."""

import time
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass

from sqlalchemy import delete, func, select, update
from sqlalchemy.engine import Connection

from kb.core.retry import Backoff
from kb.errors import ClaimLostError
from kb.records import TaskStatus
from kb.store import readmodel, spaces
from kb.store.documents import in_batches, inputs_by_key
from kb.store.engine import bulk_insert, insert_ignoring_conflicts
from kb.store.reader import ConnectionReader
from kb.store.schema import EmbeddingTask, table_of

TASKS = table_of(EmbeddingTask)


@dataclass(frozen=True, slots=True)
class QueueResult:
    hashes: list[str]
    tokens: int

    @property
    def tasks(self) -> int:
        return len(self.hashes)


def missing(connection: Connection, space_id: int, hashes: Sequence[str]) -> list[str]:
    """The hashes that have no task in the space yet, in the order given."""
    known: set[str] = set()
    for batch in in_batches(hashes, 500):
        rows = connection.execute(
            select(TASKS.c.text_sha256).where(TASKS.c.space_id == space_id, TASKS.c.text_sha256.in_(batch))
        )
        known.update(row[0] for row in rows)
    return [sha for sha in hashes if sha not in known]


_TASK_COLUMNS = (
    "space_id",
    "text_sha256",
    "token_estimate",
    "status",
    "attempts",
    "next_attempt_at",
    "created_at",
    "updated_at",
)


def queue(
    connection: Connection,
    space_id: int,
    token_estimates: Mapping[str, int],
    now: float | None = None,
) -> QueueResult:
    """Create pending tasks for the texts (sha256 -> token estimate) that the space lacks.

    SQLite writers take turns, so the texts found missing are exactly the ones this call creates. PostgreSQL
    writers do not: INSERT ... ON CONFLICT DO NOTHING RETURNING lets two ingests queueing the same text at
    once both succeed, the text gets one task, and only the one that created it counts it as queued."""
    stamp = time.time() if now is None else now
    new = missing(connection, space_id, list(token_estimates))
    rows = [
        (space_id, sha, token_estimates[sha], TaskStatus.PENDING.value, 0, stamp, stamp, stamp) for sha in new
    ]
    if connection.dialect.name == "postgresql" and rows:
        created = connection.execute(
            insert_ignoring_conflicts(connection, TASKS).returning(TASKS.c.text_sha256),
            [dict(zip(_TASK_COLUMNS, row, strict=True)) for row in rows],
        )
        kept = {str(sha) for sha in created.scalars()}
        new = [sha for sha in new if sha in kept]
    else:
        bulk_insert(connection, "embedding_tasks", _TASK_COLUMNS, rows, ignore=True)
    return QueueResult(hashes=new, tokens=sum(token_estimates[sha] for sha in new))


def embedded_among(connection: Connection, space_id: int, hashes: Collection[str]) -> set[str]:
    """Those of `hashes` whose text the space has a vector for."""
    found: set[str] = set()
    for batch in in_batches(sorted(hashes), 500):
        rows = connection.execute(
            select(TASKS.c.text_sha256).where(
                TASKS.c.space_id == space_id,
                TASKS.c.status == TaskStatus.EMBEDDED,
                TASKS.c.text_sha256.in_(batch),
            )
        )
        found.update(row[0] for row in rows)
    return found


def pending_in(connection: Connection, space_ids: Sequence[int]) -> int:
    """Texts waiting to be embedded in these spaces."""
    if not space_ids:
        return 0
    count = connection.execute(
        select(func.count()).where(TASKS.c.space_id.in_(space_ids), TASKS.c.status == TaskStatus.PENDING)
    ).scalar_one()
    return int(count)


def drop_unpaid(connection: Connection, hashes: Sequence[str]) -> int:
    """Delete pending tasks for texts no chunk holds any more: nothing was paid for them yet.

    Embedded tasks stay, so a text that comes back later costs nothing; submitted ones stay until their
    job answers."""
    dropped = 0
    for batch in in_batches(hashes, 500):
        result = connection.execute(
            delete(TASKS).where(TASKS.c.text_sha256.in_(batch), TASKS.c.status == TaskStatus.PENDING)
        )
        dropped += result.rowcount
    return dropped


def counts_by_status(connection: Connection, space_id: int) -> dict[str, int]:
    return readmodel.task_counts(ConnectionReader(connection), space_id)


@dataclass(frozen=True, slots=True)
class PendingText:
    task_id: int
    text_sha256: str
    text: str
    token_estimate: int
    attempts: int = 0


def claim_due(
    connection: Connection,
    space_id: int,
    now: float,
    hold_s: float,
    limit: int,
    hashes: Sequence[str] | None = None,
) -> list[PendingText]:
    """Take due pending tasks of the space (optionally only these texts) for online embedding, with a
    chunk's copy of their text.

    They stay pending but are not due again for `hold_s`: no batch flush and no other online embedder picks
    them up meanwhile (on PostgreSQL rows another worker is claiming are skipped, not waited for), and if
    this process dies they come back by themselves."""
    statement = (
        select(TASKS.c.id)
        .where(
            TASKS.c.space_id == space_id, TASKS.c.status == TaskStatus.PENDING, TASKS.c.next_attempt_at <= now
        )
        .order_by(TASKS.c.id)
        .limit(limit)
        .with_for_update(skip_locked=True)
    )
    if hashes is not None:
        statement = statement.where(TASKS.c.text_sha256.in_(hashes))
    task_ids = [int(task_id) for (task_id,) in connection.execute(statement)]
    if not task_ids:
        return []
    connection.execute(update(TASKS).where(TASKS.c.id.in_(task_ids)).values(next_attempt_at=now + hold_s))
    rows = connection.execute(
        select(TASKS.c.id, TASKS.c.text_sha256, TASKS.c.token_estimate, TASKS.c.attempts)
        .where(TASKS.c.id.in_(task_ids))
        .order_by(TASKS.c.id)
    ).all()
    inputs = inputs_by_key(connection, spaces.chunk_input_of(connection, space_id), [row[1] for row in rows])
    return [
        PendingText(int(task_id), str(sha), inputs[sha], int(tokens), int(attempts))
        for task_id, sha, tokens, attempts in rows
        if sha in inputs  # a text no chunk holds any more has nothing to embed
    ]


def due_count(connection: Connection, space_id: int, now: float, hashes: Sequence[str] | None = None) -> int:
    statement = select(func.count()).where(
        TASKS.c.space_id == space_id, TASKS.c.status == TaskStatus.PENDING, TASKS.c.next_attempt_at <= now
    )
    if hashes is not None:
        statement = statement.where(TASKS.c.text_sha256.in_(hashes))
    return int(connection.execute(statement).scalar_one())


def mark_embedded(connection: Connection, space_id: int, task_ids: Sequence[int], now: float) -> list[int]:
    """pending -> embedded (online); returns the ids that were still pending (the ones to write): a task
    another process settled meanwhile keeps what that process wrote."""
    changed: list[int] = []
    for batch in in_batches(task_ids, 500):
        rows = connection.execute(
            update(TASKS)
            .where(
                TASKS.c.space_id == space_id,
                TASKS.c.id.in_(batch),
                TASKS.c.status == TaskStatus.PENDING,
            )
            .values(status=TaskStatus.EMBEDDED, last_error=None, updated_at=now)
            .returning(TASKS.c.id)
        )
        changed.extend(int(row[0]) for row in rows)
    return changed


def hold(connection: Connection, task_ids: Sequence[int], until: float) -> None:
    """pending -> pending, not due before `until`: an online claim renewed."""
    for batch in in_batches(task_ids, 500):
        connection.execute(
            update(TASKS)
            .where(TASKS.c.id.in_(batch), TASKS.c.status == TaskStatus.PENDING)
            .values(next_attempt_at=until)
        )


def make_due(connection: Connection, task_ids: Sequence[int], now: float) -> None:
    """pending -> pending, due now: an online claim given back unused (a stop, the budget, an error
    before these texts were sent)."""
    for batch in in_batches(task_ids, 500):
        connection.execute(
            update(TASKS)
            .where(TASKS.c.id.in_(batch), TASKS.c.status == TaskStatus.PENDING)
            .values(next_attempt_at=now)
        )


def record_attempt_failure(
    connection: Connection,
    tasks: Sequence[tuple[int, int]],
    reason: str,
    now: float,
    max_attempts: int,
    retry: Backoff,
) -> int:
    """pending -> pending after a back-off, or -> failed once attempts run out (online): a failed attempt
    counted on each (task id, attempts so far), with its reason. Returns how many failed for good."""
    failed = 0
    for attempts, task_ids in _by_attempts(tasks).items():
        status, values = _attempt_counted(attempts, max_attempts, reason, retry, now)
        for batch in in_batches(task_ids, 500):
            changed = connection.execute(
                update(TASKS)
                .where(TASKS.c.id.in_(batch), TASKS.c.status == TaskStatus.PENDING)
                .values(status=status, **values)
            ).rowcount
            failed += changed if status == TaskStatus.FAILED else 0
    return failed


def mark_failed(connection: Connection, task_ids: Sequence[int], reason: str, now: float) -> int:
    """pending -> failed (online): the service refused this very text; retrying cannot help."""
    failed = 0
    for batch in in_batches(task_ids, 500):
        failed += connection.execute(
            update(TASKS)
            .where(TASKS.c.id.in_(batch), TASKS.c.status == TaskStatus.PENDING)
            .values(
                status=TaskStatus.FAILED, attempts=TASKS.c.attempts + 1, last_error=reason, updated_at=now
            )
        ).rowcount
    return failed


def existing_ids(connection: Connection, task_ids: Sequence[int]) -> set[int]:
    """Those of `task_ids` that name a task."""
    found: set[int] = set()
    for batch in in_batches(sorted(set(task_ids)), 500):
        found.update(connection.execute(select(TASKS.c.id).where(TASKS.c.id.in_(batch))).scalars())
    return found


def requeue_failed(connection: Connection, task_ids: Sequence[int] | None = None) -> int:
    """Failed tasks (all, or these) back to pending, attempts reset."""
    statement = update(TASKS).where(TASKS.c.status == TaskStatus.FAILED)
    if task_ids is not None:
        statement = statement.where(TASKS.c.id.in_(list(task_ids)))
    now = time.time()
    result = connection.execute(
        statement.values(
            status=TaskStatus.PENDING, attempts=0, next_attempt_at=now, updated_at=now, job_id=None
        )
    )
    return int(result.rowcount)


# -- tasks a batch job holds (submitted, with its job_id): guarded by the job, like its own transitions ------


def embed_held(connection: Connection, job_id: int, task_ids: Sequence[int], now: float) -> None:
    """submitted -> embedded: the job's results for these texts are written."""
    _settle_held(connection, job_id, task_ids, status=TaskStatus.EMBEDDED, last_error=None, updated_at=now)


def fail_held(
    connection: Connection, job_id: int, tasks: Sequence[tuple[int, int]], reason: str, now: float
) -> None:
    """submitted -> failed (attempt counted): the service answered these texts with an error that
    retrying cannot help."""
    for attempts, task_ids in _by_attempts(tasks).items():
        _settle_held(
            connection,
            job_id,
            task_ids,
            status=TaskStatus.FAILED,
            attempts=attempts,
            last_error=reason,
            job_id=None,
            updated_at=now,
        )


def hand_back_held(
    connection: Connection,
    job_id: int,
    tasks: Sequence[tuple[int, int]],
    reason: str,
    now: float,
    max_attempts: int,
    retry: Backoff,
) -> None:
    """submitted -> pending after a back-off, or -> failed once attempts run out: the job gave these texts
    (task id, attempts so far) no result, an attempt counted on each."""
    for attempts, task_ids in _by_attempts(tasks).items():
        status, values = _attempt_counted(attempts, max_attempts, reason, retry, now)
        _settle_held(connection, job_id, task_ids, status=status, job_id=None, **values)


def _settle_held(connection: Connection, held_by: int, task_ids: Sequence[int], **values: object) -> None:
    """Change tasks this job holds; raises `ClaimLostError` (rolling back) if any of them is no longer the
    job's to settle."""
    changed = 0
    for batch in in_batches(task_ids, 500):
        changed += connection.execute(
            update(TASKS)
            .where(TASKS.c.id.in_(batch), TASKS.c.job_id == held_by, TASKS.c.status == TaskStatus.SUBMITTED)
            .values(**values)
        ).rowcount
    if changed != len(task_ids):
        raise ClaimLostError(
            f"job {held_by}: {len(task_ids) - changed} of its {len(task_ids)} texts were settled elsewhere"
        )


def _by_attempts(tasks: Sequence[tuple[int, int]]) -> dict[int, list[int]]:
    """(task id, attempts so far) grouped by the attempts they will have with this one counted."""
    grouped: dict[int, list[int]] = {}
    for task_id, attempts in tasks:
        grouped.setdefault(attempts + 1, []).append(task_id)
    return grouped


def _attempt_counted(
    attempts: int, max_attempts: int, reason: str, retry: Backoff, now: float
) -> tuple[TaskStatus, dict[str, object]]:
    """The give-up rule, online and in batch jobs alike: a text that failed `attempts` times (this one
    counted) waits out a back-off, and fails for good once they reach `max_attempts`."""
    if attempts >= max_attempts:
        return TaskStatus.FAILED, {
            "attempts": attempts,
            "last_error": f"gave up after {attempts} attempts: {reason}",
            "updated_at": now,
        }
    return TaskStatus.PENDING, {
        "attempts": attempts,
        "last_error": reason,
        "next_attempt_at": now + retry.delay(attempts),
        "updated_at": now,
    }
