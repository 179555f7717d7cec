"""Embedding spaces: which (provider, model, dimensions, task type) vectors belong to, and which is active."""

import time

from sqlalchemy import select
from sqlalchemy.engine import Connection

from kb.records import ChunkInput, SpaceSpec, SpaceState, spec_label
from kb.settings import LOCAL_DIMENSIONS, LOCAL_MODEL, KbSettings
from kb.store.schema import EmbeddingSpace as EmbeddingSpace  # the row type callers outside the store use
from kb.store.schema import table_of

SPACES = table_of(EmbeddingSpace)


def configured_spec(settings: KbSettings) -> SpaceSpec:
    """The space that the current settings would embed into."""
    chunk_input = ChunkInput.HEADED if settings.chunk_headers else ChunkInput.TEXT
    if settings.resolved_provider() == "local":
        return SpaceSpec("local", LOCAL_MODEL, LOCAL_DIMENSIONS, chunk_input=chunk_input)
    return SpaceSpec(
        "gemini", settings.embedding_model, settings.embedding_dimensions, chunk_input=chunk_input
    )


def find(connection: Connection, spec: SpaceSpec) -> EmbeddingSpace | None:
    row = connection.execute(
        select(SPACES).where(
            SPACES.c.provider == spec.provider,
            SPACES.c.model == spec.model,
            SPACES.c.dimensions == spec.dimensions,
            SPACES.c.task_type == spec.task_type,
            SPACES.c.chunk_input == spec.chunk_input,
        )
    ).one_or_none()
    return None if row is None else EmbeddingSpace(**row._mapping)


def chunk_input_of(connection: Connection, space_id: int) -> ChunkInput:
    """What the space embeds for a chunk."""
    found = connection.execute(select(SPACES.c.chunk_input).where(SPACES.c.id == space_id)).scalar_one()
    return ChunkInput(found)


def active(connection: Connection) -> EmbeddingSpace | None:
    row = connection.execute(select(SPACES).where(SPACES.c.state == SpaceState.ACTIVE)).one_or_none()
    return None if row is None else EmbeddingSpace(**row._mapping)


_FILLING = (SpaceState.ACTIVE, SpaceState.BUILDING, SpaceState.CONTEXTS)


def writes_contexts(space: EmbeddingSpace) -> bool:
    """A space whose tasks write chunk contexts with a generation model (kb.store.contexts), not vectors."""
    return space.chunk_input == ChunkInput.DOCUMENT


def filling(connection: Connection) -> list[int]:
    """Ids of the spaces new texts are queued for: the active one, any being built, and chunk contexts."""
    return [space.id for space in being_filled(connection)]


def being_filled(connection: Connection) -> list[EmbeddingSpace]:
    """The spaces new texts are queued for (and embedded in): the active one, any being built, and the
    space of chunk contexts being written."""
    rows = connection.execute(select(SPACES).where(SPACES.c.state.in_(_FILLING)).order_by(SPACES.c.id))
    return [EmbeddingSpace(**row._mapping) for row in rows]


def create(connection: Connection, spec: SpaceSpec, state: SpaceState) -> int:
    """Create a space and its vector table in the caller's transaction."""
    now = time.time()
    space_id = connection.execute(
        SPACES.insert()
        .values(
            provider=spec.provider,
            model=spec.model,
            dimensions=spec.dimensions,
            task_type=spec.task_type,
            normalized=spec.normalized,
            chunk_input=spec.chunk_input,
            state=state,
            created_at=now,
            activated_at=now if state == SpaceState.ACTIVE else None,
        )
        .returning(SPACES.c.id)
    ).scalar_one()
    from kb.store import vectors

    if spec.chunk_input != ChunkInput.DOCUMENT:  # a context space holds no vectors
        vectors.create_table(connection, space_id, spec.dimensions)
    return int(space_id)


def ensure_active(connection: Connection, spec: SpaceSpec) -> int:
    """The active space's id; the first ingest into an empty database creates it from `spec`."""
    current = active(connection)
    if current is not None:
        return current.id
    existing = find(connection, spec)
    if existing is not None:
        connection.execute(
            SPACES.update()
            .where(SPACES.c.id == existing.id)
            .values(state=SpaceState.ACTIVE, activated_at=time.time())
        )
        return existing.id
    return create(connection, spec, SpaceState.ACTIVE)


def all_spaces(connection: Connection) -> list[EmbeddingSpace]:
    rows = connection.execute(select(SPACES).order_by(SPACES.c.id))
    return [EmbeddingSpace(**row._mapping) for row in rows]


def by_id(connection: Connection, space_id: int) -> EmbeddingSpace | None:
    row = connection.execute(select(SPACES).where(SPACES.c.id == space_id)).one_or_none()
    return None if row is None else EmbeddingSpace(**row._mapping)


def in_state(connection: Connection, state: SpaceState) -> list[EmbeddingSpace]:
    rows = connection.execute(select(SPACES).where(SPACES.c.state == state).order_by(SPACES.c.id))
    return [EmbeddingSpace(**row._mapping) for row in rows]


def set_state(connection: Connection, space_id: int, state: SpaceState, now: float) -> None:
    values: dict[str, object] = {"state": state}
    if state == SpaceState.ACTIVE:
        values["activated_at"] = now
    elif state == SpaceState.RETIRED:
        values["retired_at"] = now
    connection.execute(SPACES.update().where(SPACES.c.id == space_id).values(**values))


def label(space: EmbeddingSpace) -> str:
    return f"space #{space.id} ({spec_label(space)}, {space.state})"


def delete(connection: Connection, space_id: int) -> None:
    """A space and everything of it: vectors and codes, jobs, tasks, cached questions, the space row."""
    from sqlalchemy import text

    from kb.store import vectors

    vectors.drop_table(connection, space_id)
    for table, column in (
        ("batch_jobs", "space_id"),
        ("embedding_tasks", "space_id"),
        ("query_embeddings", "space_id"),
        ("chunk_contexts", "space_id"),
        ("embedding_spaces", "id"),
    ):
        connection.execute(text(f"DELETE FROM {table} WHERE {column} = :id"), {"id": space_id})
