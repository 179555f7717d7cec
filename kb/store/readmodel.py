"""Every read that `kb status` and `kb search` make, as plain SQL on a `Reader` (see kb.store.reader).

Written once and used everywhere: by the cold command line on the bare SQLite driver, and through SQLAlchemy
by `KnowledgeBase`, the worker and the budget guard. Only `:name` parameters and SQL that SQLite and
PostgreSQL both speak; lists of ids are inlined as integers.
"""

import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

from kb.records import LIVE_JOB_STATES, ChunkInput, FailedText, JobInfo, Space, SpaceState, TaskStatus
from kb.store.reader import Reader, scalar

DAY_S = 86_400.0
# Keys of rows other store modules write: why submissions stopped (kb_meta), a worker's heartbeat lease.
BUDGET_BLOCK_KEY = "budget_block"
HEARTBEAT_PREFIX = "worker:"


@dataclass(frozen=True, slots=True)
class Spend:
    tokens: int
    usd: float
    usd_online_equivalent: float
    by_kind: dict[str, dict[str, float]]
    tokens_measured: int = 0  # of `tokens`, those the service counted (the rest are kb's estimates)

    @property
    def saved_usd(self) -> float:
        return self.usd_online_equivalent - self.usd


@dataclass(frozen=True, slots=True)
class Heartbeat:
    owner: str
    expires_at: float
    heartbeat_at: float


def revision(reader: Reader) -> str | None:
    """The schema revision, or None for a database without one (empty, or not kb's)."""
    if reader.dialect == "postgresql":
        exists = scalar(reader, "SELECT to_regclass('alembic_version') IS NOT NULL")
    else:
        exists = scalar(
            reader, "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'alembic_version'"
        )
    if not exists:
        return None
    found = scalar(reader, "SELECT version_num FROM alembic_version")
    return None if found is None else str(found)


def count_documents(reader: Reader) -> int:
    return int(scalar(reader, "SELECT count(*) FROM documents"))


def count_chunks(reader: Reader) -> int:
    return int(scalar(reader, "SELECT count(*) FROM chunks"))


_SPACE_COLUMNS = (
    "id, provider, model, dimensions, task_type, normalized, state, created_at, activated_at, retired_at, "
    "chunk_input"
)


def spaces(reader: Reader) -> list[Space]:
    rows = reader.rows(f"SELECT {_SPACE_COLUMNS} FROM embedding_spaces ORDER BY id")
    return [_space(row) for row in rows]


def _space(row: Sequence[object]) -> Space:
    id_, provider, model, dimensions, task_type, normalized, state, created, activated, retired, chunks = row
    return Space(
        int(id_),  # type: ignore[call-overload]
        str(provider),
        str(model),
        int(dimensions),  # type: ignore[call-overload]
        str(task_type),
        bool(normalized),
        str(state),
        float(created),  # type: ignore[arg-type]
        None if activated is None else float(activated),  # type: ignore[arg-type]
        None if retired is None else float(retired),  # type: ignore[arg-type]
        str(chunks),
    )


def active_space(reader: Reader) -> Space | None:
    return next((space for space in spaces(reader) if space.state == SpaceState.ACTIVE), None)


# The chunk column a space's tasks are keyed by: the sha256 of what the space embeds for a chunk.
KEY_COLUMNS = {
    ChunkInput.TEXT: "text_sha256",
    ChunkInput.HEADED: "input_sha256",
    ChunkInput.SITUATED: "situated_sha256",
    ChunkInput.DOCUMENT: "context_key",
}


def _key(reader: Reader, space_id: int) -> str:
    found = reader.rows("SELECT chunk_input FROM embedding_spaces WHERE id = :space", {"space": space_id})
    return KEY_COLUMNS[ChunkInput(found[0][0])] if found else "text_sha256"


def task_counts(reader: Reader, space_id: int) -> dict[str, int]:
    """The space's tasks by status (every status present, zero or not)."""
    rows = reader.rows(
        "SELECT status, count(*) FROM embedding_tasks WHERE space_id = :space GROUP BY status",
        {"space": space_id},
    )
    found = {str(status): int(n) for status, n in rows}
    return {status.value: found.get(status.value, 0) for status in TaskStatus}


def chunk_statuses(reader: Reader, space_id: int) -> dict[str, int]:
    """Chunks counted by the status of their text's task in the space (no task counts as pending)."""
    rows = reader.rows(
        "SELECT coalesce(t.status, 'pending'), count(*) FROM chunks c "
        f"LEFT JOIN embedding_tasks t ON t.text_sha256 = c.{_key(reader, space_id)} AND t.space_id = :space "
        "GROUP BY coalesce(t.status, 'pending')",
        {"space": space_id},
    )
    found = {str(status): int(n) for status, n in rows}
    return {status.value: found.get(status.value, 0) for status in TaskStatus}


def oldest_pending(reader: Reader, space_id: int) -> float | None:
    """When the space's oldest pending task was queued."""
    found = scalar(
        reader,
        "SELECT min(created_at) FROM embedding_tasks WHERE space_id = :space AND status = 'pending'",
        {"space": space_id},
    )
    return None if found is None else float(found)


def held_back(reader: Reader, space_id: int, now: float) -> tuple[int, str | None, float | None]:
    """Pending texts waiting out a back-off after failed attempts: (how many, the latest reason, when the
    first of them is due again)."""
    waiting = (
        "FROM embedding_tasks WHERE space_id = :space AND status = 'pending' AND attempts > 0 "
        "AND next_attempt_at > :now"
    )
    params = {"space": space_id, "now": now}
    [(count, due)] = reader.rows(f"SELECT count(*), min(next_attempt_at) {waiting}", params)
    if not count:
        return 0, None, None
    reason = scalar(reader, f"SELECT last_error {waiting} ORDER BY updated_at DESC LIMIT 1", params)
    return int(count), None if reason is None else str(reason), float(due)


_JOB_COLUMNS = (
    "id, display_name, remote_name, state, remote_state, item_count, token_estimate, created_at, "
    "submitted_at, coalesce(applied_at, finished_at), deadline_at, error, lease_owner"
)


def live_jobs(reader: Reader) -> list[JobInfo]:
    states = ", ".join(f"'{state.value}'" for state in sorted(LIVE_JOB_STATES))
    return [
        JobInfo(*row)
        for row in reader.rows(f"SELECT {_JOB_COLUMNS} FROM batch_jobs WHERE state IN ({states}) ORDER BY id")
    ]


def all_jobs(reader: Reader, limit: int = 1000) -> list[JobInfo]:
    rows = reader.rows(
        f"SELECT {_JOB_COLUMNS} FROM batch_jobs ORDER BY id DESC LIMIT :limit", {"limit": limit}
    )
    return [JobInfo(*row) for row in rows]


def spend(reader: Reader, since: float | None = None) -> Spend:
    """Tokens, dollars and texts recorded (since a moment, or ever), by kind: batch, online, query, and
    lost (results paid for that the service never handed over: their texts were paid again)."""
    where = "WHERE created_at >= :since" if since is not None else ""
    rows = reader.rows(
        "SELECT kind, coalesce(sum(tokens), 0), coalesce(sum(usd), 0.0), "
        "coalesce(sum(usd_online_equivalent), 0.0), "
        "coalesce(sum(CASE WHEN tokens_reported THEN tokens ELSE 0 END), 0), coalesce(sum(texts), 0) "
        f"FROM usage_records {where} GROUP BY kind",
        {"since": since} if since is not None else None,
    )
    by_kind = {
        str(kind): {
            "tokens": int(tokens),
            "usd": float(usd),
            "usd_online_equivalent": float(online),
            "texts": int(texts),
        }
        for kind, tokens, usd, online, _, texts in rows
    }
    return Spend(
        tokens=sum(int(v["tokens"]) for v in by_kind.values()),
        usd=sum(v["usd"] for v in by_kind.values()),
        usd_online_equivalent=sum(v["usd_online_equivalent"] for v in by_kind.values()),
        by_kind=by_kind,
        tokens_measured=sum(int(row[4]) for row in rows),
    )


def budget_block(reader: Reader) -> str | None:
    """Why submissions are stopped (a budget cap), or None."""
    found = scalar(reader, "SELECT value FROM kb_meta WHERE key = :key", {"key": BUDGET_BLOCK_KEY})
    return None if found is None else str(found)


def heartbeats(reader: Reader) -> list[Heartbeat]:
    """Every worker's last heartbeat, newest first."""
    rows = reader.rows(
        "SELECT owner, expires_at, heartbeat_at FROM worker_leases WHERE name LIKE :prefix "
        "ORDER BY heartbeat_at DESC",
        {"prefix": HEARTBEAT_PREFIX + "%"},
    )
    return [Heartbeat(str(owner), float(expires), float(beat)) for owner, expires, beat in rows]


def failed(reader: Reader, limit: int = 1000) -> list[FailedText]:
    """Failed tasks with their reasons and the documents holding their text (dead letters), newest first."""
    rows = reader.rows(
        "SELECT id, space_id, attempts, last_error, text_sha256 FROM embedding_tasks WHERE status = 'failed' "
        "ORDER BY updated_at DESC LIMIT :limit",
        {"limit": limit},
    )
    paths: dict[str, list[str]] = {}
    hashes = sorted({str(row[4]) for row in rows})
    for start in range(0, len(hashes), 500):
        batch = {f"h{n}": sha for n, sha in enumerate(hashes[start : start + 500])}
        names = ", ".join(f":{name}" for name in batch)
        for key in KEY_COLUMNS.values():  # a task's key is its text's or its headed input's
            for sha, path in reader.rows(
                f"SELECT DISTINCT c.{key}, d.source_path FROM chunks c "
                f"JOIN documents d ON d.id = c.document_id WHERE c.{key} IN ({names})",
                batch,
            ):
                if str(path) not in paths.setdefault(str(sha), []):
                    paths[str(sha)].append(str(path))
    return [
        FailedText(int(a), int(b), int(c), d, sorted(paths.get(str(sha), []))) for a, b, c, d, sha in rows
    ]


# -- search: chunks behind vectors, and what a hit shows ------------------------------------------------


def chunks_of_tasks(
    reader: Reader, task_ids: Sequence[int], chunk_input: ChunkInput | str
) -> dict[int, list[tuple[int, int, str]]]:
    """Per embedding task of a space of `chunk_input`, the chunks holding its input, as (chunk id, document
    id, document path) in chunk order."""
    found: dict[int, list[tuple[int, int, str]]] = {}
    key = KEY_COLUMNS[ChunkInput(chunk_input)]
    for start in range(0, len(task_ids), 500):
        listed = ",".join(str(int(task_id)) for task_id in task_ids[start : start + 500])
        rows = reader.rows(
            "SELECT t.id, c.id, d.id, d.source_path FROM embedding_tasks t "
            f"JOIN chunks c ON c.{key} = t.text_sha256 "
            f"JOIN documents d ON d.id = c.document_id WHERE t.id IN ({listed}) ORDER BY c.id"
        )
        for task_id, chunk_id, document_id, path in rows:
            found.setdefault(int(task_id), []).append((int(chunk_id), int(document_id), str(path)))
    return found


def documents_metadata(reader: Reader, keys: Sequence[str]) -> Iterator[tuple[int, dict[str, object]]]:
    """(id, metadata) of the documents whose metadata has every one of `keys` (none: of every document)."""
    params = {f"k{n}": key for n, key in enumerate(keys)}
    if reader.dialect == "postgresql":
        tests = [f"(metadata::jsonb -> :{name}) IS NOT NULL" for name in params]
    else:
        tests = [
            f"EXISTS (SELECT 1 FROM json_each(documents.metadata) WHERE key = :{name})" for name in params
        ]
    where = f" WHERE {' AND '.join(tests)}" if tests else ""
    for block in reader.blocks(f"SELECT id, metadata FROM documents{where}", 10_000, params):
        for document_id, metadata in block:
            yield int(document_id), json_object(metadata)


def json_object(value: object) -> dict[str, object]:
    """A stored JSON object as a dict (SQLite hands back its text, PostgreSQL's driver the object)."""
    if isinstance(value, str | bytes):
        value = json.loads(value)
    return value if isinstance(value, dict) else {}


@dataclass(frozen=True, slots=True)
class HitChunk:
    text: str
    heading: str
    start: int
    end: int
    document_id: int
    path: str
    title: str
    page_start: int | None
    page_end: int | None
    ordinal: int = 0  # its place in its document: consecutive hits are merged (kb.search.shaping)
    situation: str = ""  # the context a generation model wrote for it (kb enrich), if any
    metadata: dict[str, object] = field(default_factory=dict)  # its document's


def chunks_for_hits(reader: Reader, chunk_ids: Sequence[int]) -> dict[int, HitChunk]:
    """What a search hit shows of each chunk (those still there), by chunk id."""
    if not chunk_ids:
        return {}
    listed = ",".join(str(int(chunk_id)) for chunk_id in chunk_ids)
    rows = reader.rows(
        "SELECT c.id, c.text, c.heading_path, c.start_offset, c.end_offset, d.id, d.source_path, d.title, "
        "c.page_start, c.page_end, c.ordinal, c.situation, d.metadata "
        "FROM chunks c JOIN documents d ON d.id = c.document_id "
        f"WHERE c.id IN ({listed})"
    )
    return {
        int(row[0]): HitChunk(
            row[1],
            row[2],
            int(row[3]),
            int(row[4]),
            int(row[5]),
            row[6],
            row[7],
            row[8],
            row[9],
            int(row[10]),
            row[11] or "",
            json_object(row[12]),
        )
        for row in rows
    }
