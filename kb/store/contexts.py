"""Chunk contexts: the space a generation model fills, the contexts it wrote, and the chunks they situate.

A context space is an `embedding_spaces` row in state `contexts` (chunk_input 'document', no vectors): its
tasks are keyed by `chunks.context_key` and go through the same job ledger as embeddings, so a context is
requested once, crash-safely, at batch price. What comes back is kept in `chunk_contexts` and copied to
the chunks it situates (`chunks.situation`), whose `situated_sha256` then keys the tasks of the spaces that
embed it (chunk_input 'situated').
"""

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace

from sqlalchemy import bindparam, func, select, update
from sqlalchemy.engine import Connection

from kb.core import contexts
from kb.core.inputs import embedding_input
from kb.records import ChunkInput, SpaceSpec, SpaceState, TaskStatus
from kb.store import spaces, tasks
from kb.store.documents import CHUNKS, DOCUMENTS, ChunkRow, in_batches, input_tokens, text_sha256
from kb.store.engine import bulk_insert
from kb.store.schema import BatchJob, ChunkContext, EmbeddingSpace, UsageRecord, table_of

CONTEXTS = table_of(ChunkContext)
TASKS = tasks.TASKS


@dataclass(frozen=True, slots=True)
class Written:
    """A context as the service returned it, for one key."""

    key: str
    text: str
    input_tokens: int
    output_tokens: int


def spec(model: str) -> SpaceSpec:
    """The context space of a generation model with this release's prompt."""
    return SpaceSpec("gemini", model, 0, contexts.PROMPT_VERSION, True, ChunkInput.DOCUMENT)


def find(connection: Connection, model: str) -> EmbeddingSpace | None:
    """The context space of `model` with this release's prompt, if there is one."""
    return spaces.find(connection, spec(model))


def current(connection: Connection) -> EmbeddingSpace | None:
    """The context space being filled (there is at most one)."""
    found = spaces.in_state(connection, SpaceState.CONTEXTS)
    return found[-1] if found else None


def start(connection: Connection, model: str) -> int:
    """The context space of `model`, being filled from now on; another one stops (its contexts are kept,
    retired, until `kb reindex --drop-retired`)."""
    wanted = spec(model)
    existing = spaces.find(connection, wanted)
    now = time.time()
    for other in spaces.in_state(connection, SpaceState.CONTEXTS):
        if existing is None or other.id != existing.id:
            spaces.set_state(connection, other.id, SpaceState.RETIRED, now)
    if existing is None:
        return spaces.create(connection, wanted, SpaceState.CONTEXTS)
    if existing.state != SpaceState.CONTEXTS:
        spaces.set_state(connection, existing.id, SpaceState.CONTEXTS, now)
    return existing.id


def request_sizes(connection: Connection) -> dict[str, tuple[int, int]]:
    """Every distinct context key with its chunk's tokens and its document's (one scan of the chunks)."""
    document_tokens = (
        select(CHUNKS.c.document_id, func.sum(CHUNKS.c.token_estimate).label("tokens"))
        .group_by(CHUNKS.c.document_id)
        .subquery()
    )
    rows = connection.execute(
        select(CHUNKS.c.context_key, func.max(CHUNKS.c.token_estimate), func.max(document_tokens.c.tokens))
        .join(document_tokens, document_tokens.c.document_id == CHUNKS.c.document_id)
        .group_by(CHUNKS.c.context_key)
    )
    return {str(key): (int(tokens), int(total)) for key, tokens, total in rows}


def requests(sizes: Mapping[str, tuple[int, int]], window_tokens: int) -> dict[str, int]:
    """The input tokens each key's request is estimated at, with a window of `window_tokens`."""
    return {key: contexts.prompt_tokens(chunk, whole, window_tokens) for key, (chunk, whole) in sizes.items()}


def queue_all(connection: Connection, space_id: int, window_tokens: int) -> tasks.QueueResult:
    """Tasks for every chunk context the space does not have yet (content-addressed: never twice)."""
    return tasks.queue(connection, space_id, requests(request_sizes(connection), window_tokens))


def prompts(connection: Connection, keys: Sequence[str], window_tokens: int) -> dict[str, str]:
    """The request for each key that a chunk still holds, built from one of its chunks' documents."""
    chunk_of: dict[str, tuple[int, int]] = {}  # key -> (document id, ordinal)
    for batch in in_batches(sorted(set(keys)), 500):
        rows = connection.execute(
            select(CHUNKS.c.context_key, CHUNKS.c.document_id, func.min(CHUNKS.c.ordinal))
            .where(CHUNKS.c.context_key.in_(batch))
            .group_by(CHUNKS.c.context_key, CHUNKS.c.document_id)
        )
        for key, document_id, ordinal in rows:
            chunk_of.setdefault(str(key), (int(document_id), int(ordinal)))
    built: dict[str, str] = {}
    for document_id in sorted({document for document, _ in chunk_of.values()}):
        title, sections = _document(connection, document_id)
        for key, (document, ordinal) in chunk_of.items():
            if document == document_id:
                built[key] = contexts.prompt(title, sections, ordinal, window_tokens)
    return built


def _document(connection: Connection, document_id: int) -> tuple[str, list[contexts.Section]]:
    title = connection.execute(select(DOCUMENTS.c.title).where(DOCUMENTS.c.id == document_id)).scalar_one()
    rows = connection.execute(
        select(CHUNKS.c.ordinal, CHUNKS.c.heading_path, CHUNKS.c.text, CHUNKS.c.token_estimate)
        .where(CHUNKS.c.document_id == document_id)
        .order_by(CHUNKS.c.ordinal)
    )
    sections: list[contexts.Section] = []
    for ordinal, heading_path, text, tokens in rows:
        assert ordinal == len(sections), "chunk ordinals are 0, 1, 2 ... within a document"
        sections.append(contexts.Section(str(heading_path), str(text), int(tokens)))
    return str(title), sections


def save(connection: Connection, space_id: int, written: Sequence[Written], now: float) -> None:
    """Keep what the service wrote (a key written twice, by a job applied twice, keeps the first)."""
    bulk_insert(
        connection,
        "chunk_contexts",
        ("space_id", "context_key", "text", "input_tokens", "output_tokens", "created_at"),
        [(space_id, w.key, w.text, w.input_tokens, w.output_tokens, now) for w in written],
        ignore=True,
    )


def written_for(connection: Connection, space_id: int, keys: Sequence[str]) -> dict[str, str]:
    """The contexts the space has for these keys."""
    found: dict[str, str] = {}
    for batch in in_batches(sorted(set(keys)), 500):
        rows = connection.execute(
            select(CONTEXTS.c.context_key, CONTEXTS.c.text).where(
                CONTEXTS.c.space_id == space_id, CONTEXTS.c.context_key.in_(batch)
            )
        )
        found.update({str(key): str(text) for key, text in rows})
    return found


def situate(connection: Connection, space_id: int, keys: Sequence[str]) -> dict[str, int]:
    """Copy the space's contexts for `keys` to the chunks that hold them; returns the situated inputs
    now there to embed (their key -> token estimate)."""
    written = written_for(connection, space_id, keys)
    queued: dict[str, int] = {}
    updates: list[dict[str, object]] = []
    documents: set[int] = set()
    for batch in in_batches(sorted(written), 500):
        rows = connection.execute(
            select(
                CHUNKS.c.id,
                CHUNKS.c.document_id,
                CHUNKS.c.context_key,
                CHUNKS.c.context,
                CHUNKS.c.text,
                CHUNKS.c.token_estimate,
            ).where(CHUNKS.c.context_key.in_(batch))
        )
        for chunk_id, document_id, key, context, text, tokens in rows:
            documents.add(int(document_id))
            situation = written[str(key)]
            sha = text_sha256(embedding_input(ChunkInput.SITUATED, str(context), str(text), situation))
            updates.append({"chunk_id": chunk_id, "situation": situation, "situated_sha256": sha})
            queued[sha] = input_tokens(ChunkInput.SITUATED, str(context), int(tokens), situation)
    if updates:
        connection.execute(
            update(CHUNKS)
            .where(CHUNKS.c.id == bindparam("chunk_id"))
            .values(situation=bindparam("situation"), situated_sha256=bindparam("situated_sha256")),
            updates,
        )
        _touch(connection, documents)
    return queued


def _touch(connection: Connection, document_ids: set[int]) -> None:
    """These documents changed: what a derived full-text index holds of them (the contexts) is stale
    (kb.search.textindex re-reads the chunks of documents changed since its watermark)."""
    now = time.time()
    for batch in in_batches(sorted(document_ids), 500):
        connection.execute(update(DOCUMENTS).where(DOCUMENTS.c.id.in_(batch)).values(updated_at=now))


def situated_rows(connection: Connection, rows: Sequence[ChunkRow]) -> list[ChunkRow]:
    """Ingest's new chunk rows with the contexts already written for them (an unchanged chunk of an
    unchanged document, re-ingested), so nothing is requested again."""
    space = current(connection)
    if space is None or not rows:
        return list(rows)
    written = written_for(connection, space.id, [row.context_key for row in rows])
    if not written:
        return list(rows)
    return [_situated(row, written.get(row.context_key)) for row in rows]


def _situated(row: ChunkRow, situation: str | None) -> ChunkRow:
    if situation is None:
        return row
    sha = text_sha256(embedding_input(ChunkInput.SITUATED, row.context, row.chunk.text, situation))
    return replace(row, situation=situation, situated_sha256=sha)


def queue_situated(connection: Connection, queued: Mapping[str, int], now: float) -> int:
    """Tasks for newly situated inputs in every space being filled that embeds them."""
    made = 0
    for space in spaces.being_filled(connection):
        if space.chunk_input == ChunkInput.SITUATED and queued:
            made += tasks.queue(connection, space.id, queued, now).tasks
    return made


def fall_back(connection: Connection, space_id: int, now: float) -> int:
    """Chunks whose context failed for good are embedded without one (headed, as before): a chunk is never
    left out of a situated space. Returns how many chunks."""
    failed = (
        select(TASKS.c.text_sha256)
        .where(TASKS.c.space_id == space_id, TASKS.c.status == TaskStatus.FAILED)
        .scalar_subquery()
    )
    rows = connection.execute(
        select(CHUNKS.c.id, CHUNKS.c.input_sha256, CHUNKS.c.context, CHUNKS.c.token_estimate).where(
            CHUNKS.c.situated_sha256 == "", CHUNKS.c.context_key.in_(failed)
        )
    ).all()
    if not rows:
        return 0
    for batch in in_batches([int(r[0]) for r in rows], 500):
        connection.execute(
            update(CHUNKS).where(CHUNKS.c.id.in_(batch)).values(situated_sha256=CHUNKS.c.input_sha256)
        )
    queue_situated(
        connection,
        {
            str(sha): input_tokens(ChunkInput.HEADED, str(context), int(tokens))
            for _, sha, context, tokens in rows
        },
        now,
    )
    return len(rows)


def awaiting(connection: Connection) -> dict[str, int]:
    """Chunks with no situated input yet, their context neither written nor given up on: their context
    key -> the estimated tokens of the situated input they will have (headed text and a context)."""
    rows = connection.execute(
        select(CHUNKS.c.context_key, func.max(CHUNKS.c.token_estimate), func.max(CHUNKS.c.context))
        .where(CHUNKS.c.situated_sha256 == "")
        .group_by(CHUNKS.c.context_key)
    )
    return {
        str(key): input_tokens(ChunkInput.HEADED, str(context), int(tokens)) + contexts.OUTPUT_ESTIMATE
        for key, tokens, context in rows
    }


@dataclass(frozen=True, slots=True)
class Billed:
    """What the service billed for a model's contexts so far, beside kb's estimates of the same requests."""

    contexts: int
    estimated_input: int
    input_tokens: int
    output_tokens: int


def billed(connection: Connection, model: str) -> Billed:
    """The contexts of `model` applied so far: their input tokens as estimated and as billed, and output."""
    space = find(connection, model)
    if space is None:
        return Billed(0, 0, 0, 0)
    usage, jobs = table_of(UsageRecord), table_of(BatchJob)
    row = connection.execute(
        select(
            func.coalesce(func.sum(usage.c.texts), 0),
            func.coalesce(func.sum(jobs.c.token_estimate), 0),
            func.coalesce(func.sum(usage.c.tokens), 0),
            func.coalesce(func.sum(usage.c.output_tokens), 0),
        )
        .join(jobs, jobs.c.id == usage.c.job_id)
        .where(usage.c.space_id == space.id, usage.c.kind == "batch", usage.c.tokens_reported)
    ).one()
    return Billed(*(int(value) for value in row))
