"""Ingest: files -> documents -> chunks -> embedding tasks, idempotently.

Unchanged files (same size and mtime) are not even read; a file whose bytes did not change costs one read;
a changed file has its chunks replaced, and only texts that no space has seen yet get new tasks.
Writes go in short transactions of a few thousand chunks, so a worker can use the database meanwhile.
A document's `source_path` is its absolute path as `sources.path_to_text` writes it: valid UTF-8 even
when the file name is not, and mapped back to the exact file by `sources.text_to_path`.
"""

import errno
import os
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from sqlalchemy.engine import Connection, Engine

from kb.core import contexts, metadata, sources
from kb.core.chunking import ChunkingOptions, TextChunk, chunk_document, with_pages
from kb.core.inputs import context_line, embedding_input
from kb.records import ChunkInput, IngestReport, SkippedFile, SpaceSpec
from kb.settings import KbSettings
from kb.store import documents as store
from kb.store import spaces, tasks
from kb.store.contexts import situated_rows
from kb.store.engine import write_transaction

ProgressCallback = Callable[[int, int], None]

# A write transaction holds at most about this many chunks: big enough to amortise commits,
# small enough that a concurrent worker waits well under a second for the lock.
_FLUSH_CHUNKS = 5_000
_FLUSH_DOCUMENTS = 500

STDIN_PREFIX = "stdin:"


@dataclass(frozen=True, slots=True)
class IngestOptions:
    include: Sequence[str] = ()
    exclude: Sequence[str] = ()
    prune: bool = False
    dry_run: bool = False
    chunking: ChunkingOptions = field(default_factory=ChunkingOptions)
    max_file_bytes: int = 64 * 1024 * 1024
    context_window_tokens: int = contexts.DEFAULT_WINDOW_TOKENS  # of the requests for chunk contexts
    # `kb ingest --meta`: metadata for every document of the run, under each file's own (kb.core.metadata).
    meta: Mapping[str, object] = field(default_factory=dict)

    @classmethod
    def from_settings(cls, settings: KbSettings, **overrides: object) -> "IngestOptions":
        """The settings' chunk sizes and file limit; `overrides` set the other fields (include, prune ...)."""
        chunking = ChunkingOptions(
            target_tokens=settings.chunk_target_tokens,
            max_tokens=settings.chunk_max_tokens,
            overlap_tokens=settings.chunk_overlap_tokens,
        )
        values: dict[str, object] = {
            "chunking": chunking,
            "max_file_bytes": settings.max_file_bytes,
            "context_window_tokens": settings.context_window_tokens,
        }
        return cls(**{**values, **overrides})  # type: ignore[arg-type]


@dataclass(frozen=True, slots=True)
class _ChunkKeys:
    """A chunk's text key, where it sits, and its headed input's key (kb.core.inputs)."""

    text_sha256: str
    context: str
    input_sha256: str
    context_key: str  # what the chunk's context (kb.core.contexts) is requested and kept under

    @classmethod
    def of(cls, chunk: TextChunk, record: store.DocumentRecord) -> "_ChunkKeys":
        context = context_line(record.title, chunk.heading_path)
        headed = embedding_input(ChunkInput.HEADED, context, chunk.text)
        text_sha = store.text_sha256(chunk.text)
        input_sha = text_sha if headed == chunk.text else store.text_sha256(headed)
        return cls(text_sha, context, input_sha, contexts.context_key(record.content_sha256, text_sha))


@dataclass(slots=True)
class _Change:
    """A document to write: new (existing is None), changed, or only touched (chunks is None)."""

    record: store.DocumentRecord
    existing: store.StoredDocument | None
    chunks: list[TextChunk] | None
    # The chunks' keys, computed while reading: the writer thread is the bottleneck.
    keys: list[_ChunkKeys] = field(default_factory=list)

    def __post_init__(self) -> None:
        if self.chunks and not self.keys:
            self.keys = [_ChunkKeys.of(chunk, self.record) for chunk in self.chunks]

    def rows(self, document_id: int) -> list[store.ChunkRow]:
        return [
            store.ChunkRow(
                document_id, chunk, keys.text_sha256, keys.context, keys.input_sha256, keys.context_key
            )
            for chunk, keys in zip(self.chunks or (), self.keys, strict=True)
        ]


def _estimates(rows: Sequence[store.ChunkRow], chunk_input: str, window_tokens: int) -> dict[str, int]:
    """The task keys of these chunks in a space of `chunk_input`, with their token estimates."""
    if chunk_input == ChunkInput.TEXT:
        return {row.text_sha256: row.chunk.token_estimate for row in rows}
    if chunk_input == ChunkInput.DOCUMENT:  # the request for each chunk's context
        document_tokens: dict[int, int] = {}
        for row in rows:
            document_tokens[row.document_id] = (
                document_tokens.get(row.document_id, 0) + row.chunk.token_estimate
            )
        return {
            row.context_key: contexts.prompt_tokens(
                row.chunk.token_estimate, document_tokens[row.document_id], window_tokens
            )
            for row in rows
        }
    if chunk_input == ChunkInput.SITUATED:  # only chunks whose context is written have an input yet
        return {
            row.situated_sha256: store.input_tokens(
                chunk_input, row.context, row.chunk.token_estimate, row.situation
            )
            for row in rows
            if row.situated_sha256
        }
    return {
        row.input_sha256: store.input_tokens(chunk_input, row.context, row.chunk.token_estimate)
        for row in rows
    }


class _Writer:
    """Buffers document changes and writes them in short transactions, on a thread of its own: while one
    batch is written (SQLite works without the GIL), the next is read and chunked. At most one batch waits,
    so memory stays at two batches; a failed write is raised at the next `add` or `flush`."""

    def __init__(
        self, engine: Engine, spec: SpaceSpec, report: IngestReport, now: float, window_tokens: int
    ) -> None:
        self._engine = engine
        self._spec = spec
        self._report = report
        self._now = now
        self._window_tokens = window_tokens
        self._buffer: list[_Change] = []
        self._buffered_chunks = 0
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="kb-ingest-writer")
        self._writing: Future[None] | None = None

    def add(self, change: _Change) -> None:
        self._buffer.append(change)
        self._buffered_chunks += len(change.chunks or ())
        if self._buffered_chunks >= _FLUSH_CHUNKS or len(self._buffer) >= _FLUSH_DOCUMENTS:
            self._hand_over()

    def flush(self) -> None:
        """Write everything buffered, and wait until it is committed."""
        self._hand_over()
        self._wait()

    def _hand_over(self) -> None:
        if not self._buffer:
            return
        self._wait()
        batch, self._buffer, self._buffered_chunks = self._buffer, [], 0
        self._writing = self._thread.submit(self._commit, batch)

    def _wait(self) -> None:
        if self._writing is not None:
            writing, self._writing = self._writing, None
            writing.result()

    def _commit(self, batch: list[_Change]) -> None:
        with write_transaction(self._engine) as connection:
            self._write(connection, batch)

    def close(self) -> None:
        self._thread.shutdown(wait=True)

    def delete(self, documents: Sequence[store.StoredDocument]) -> None:
        with write_transaction(self._engine) as connection:
            ids = [document.id for document in documents]
            old_hashes = store.chunk_hashes(connection, ids)
            store.delete_documents(connection, ids)
            _forget_unreferenced(connection, old_hashes)

    def _write(self, connection: Connection, changes: Sequence[_Change]) -> None:
        space_ids = self._filling_spaces(connection)
        replaced = [c.existing.id for c in changes if c.existing and c.chunks is not None]
        old_hashes = store.chunk_hashes(connection, replaced)
        new = [change for change in changes if change.existing is None]
        new_ids = dict(
            zip(
                map(id, new),
                store.insert_documents(connection, [c.record for c in new], self._now),
                strict=True,
            )
        )
        rows: list[store.ChunkRow] = []
        for change in changes:
            document_id = (
                new_ids[id(change)] if change.existing is None else self._update_document(connection, change)
            )
            rows.extend(change.rows(document_id))
        rows = situated_rows(connection, rows)
        store.insert_chunks(connection, rows)
        self._report.chunks_written += len(rows)
        kept: set[str] = set()
        active_id = space_ids[0][0]
        for space_id, chunk_input in space_ids:
            estimates = _estimates(rows, chunk_input, self._window_tokens)
            kept.update(estimates)
            queued = tasks.queue(connection, space_id, estimates, self._now)
            self._report.tasks_queued += queued.tasks
            self._report.tokens_queued += queued.tokens
            if space_id == active_id:
                self._report.queued_hashes.extend(queued.hashes)
        _forget_unreferenced(connection, old_hashes - kept)

    def _update_document(self, connection: Connection, change: _Change) -> int:
        assert change.existing is not None
        document_id = change.existing.id
        if change.chunks is None:  # the same text: its metadata may still have changed, its chunks have not
            store.touch_document(connection, document_id, change.record)
        else:
            store.update_document(connection, document_id, change.record, self._now)
            store.delete_chunks(connection, document_id)
        return document_id

    def _filling_spaces(self, connection: Connection) -> list[tuple[int, str]]:
        """(id, what it embeds) of the active space first, then of any being built."""
        active_id = spaces.ensure_active(connection, self._spec)
        filled = [(space.id, space.chunk_input) for space in spaces.being_filled(connection)]
        return sorted(filled, key=lambda space: space[0] != active_id)


def _forget_unreferenced(connection: Connection, hashes: set[str]) -> None:
    if hashes:
        gone = hashes - store.referenced_hashes(connection, hashes)
        tasks.drop_unpaid(connection, sorted(gone))


def ingest_paths(
    engine: Engine,
    paths: Sequence[Path],
    spec: SpaceSpec,
    options: IngestOptions = IngestOptions(),
    on_progress: ProgressCallback | None = None,
    focus: sources.Focus | None = None,
) -> IngestReport:
    """Ingest files and folders; see the module docstring for what is read and written. With a `focus`
    (`kb watch`: the paths that changed), only what it covers is read, and pruned."""
    report = IngestReport(dry_run=options.dry_run)
    candidates: list[sources.Candidate] = []
    found_files = sources.discover(paths, include=options.include, exclude=options.exclude, focus=focus)
    for found in found_files:
        if isinstance(found, sources.Skipped):
            report.skipped.append(SkippedFile(sources.path_to_text(found.path), found.reason))
        else:
            candidates.append(found)
    with engine.connect() as connection:
        stored = store.stored_documents(connection)
    planner = _Planner(stored, options, report)
    sink = (
        _DryRun(engine, spec, report)
        if options.dry_run
        else _Writer(engine, spec, report, time.time(), options.context_window_tokens)
    )
    try:
        for done, candidate in enumerate(candidates, start=1):
            change = planner.plan(candidate)
            if change is not None:
                sink.add(change)
            if on_progress is not None:
                on_progress(done, len(candidates))
        sink.flush()
        gone = _vanished(stored, paths, focus)
        if options.prune:
            report.removed.extend(document.source_path for document in gone)
            if gone and not options.dry_run:
                sink.delete(gone)
        else:
            report.missing.extend(document.source_path for document in gone)
    finally:
        sink.close()
    return report


def ingest_bytes(
    engine: Engine,
    data: bytes,
    name: str,
    spec: SpaceSpec,
    options: IngestOptions = IngestOptions(),
) -> IngestReport:
    """Ingest one document from memory (`kb ingest -`); it is stored as `stdin:<name>`."""
    report = IngestReport(dry_run=options.dry_run)
    source_path = STDIN_PREFIX + sources.path_to_text(name)
    loaded = sources.load_bytes(data, path=Path(name))
    if isinstance(loaded, sources.Skipped):
        report.skipped.append(SkippedFile(source_path, loaded.reason))
        return report
    with engine.connect() as connection:
        stored = store.stored_documents(connection)
    planner = _Planner(stored, options, report)
    sink = (
        _DryRun(engine, spec, report)
        if options.dry_run
        else _Writer(engine, spec, report, time.time(), options.context_window_tokens)
    )
    try:
        change = planner.plan_loaded(loaded, source_path)
        if change is not None:
            sink.add(change)
        sink.flush()
    finally:
        sink.close()
    return report


class _Planner:
    """Decides, per file, whether it is new, changed, unchanged or skipped."""

    def __init__(
        self,
        stored: dict[str, store.StoredDocument],
        options: IngestOptions,
        report: IngestReport,
    ) -> None:
        self._stored = stored
        self._options = options
        self._report = report

    def plan(self, candidate: sources.Candidate) -> _Change | None:
        source_path = sources.path_to_text(candidate.path)
        existing = self._stored.get(source_path)
        if (
            existing is not None
            and existing.size == candidate.size
            and existing.mtime_ns == candidate.mtime_ns
            and not self._options.meta  # with --meta, every file is read: its metadata may change
        ):
            self._report.unchanged.append(source_path)
            return None
        loaded = sources.load_document(candidate, max_bytes=self._options.max_file_bytes)
        if isinstance(loaded, sources.Skipped):
            self._report.skipped.append(SkippedFile(source_path, loaded.reason))
            return None
        return self.plan_loaded(loaded, source_path)

    def plan_loaded(self, loaded: sources.LoadedDocument, source_path: str) -> _Change | None:
        existing = self._stored.get(source_path)
        record = store.DocumentRecord(
            source_path=source_path,
            content_sha256=loaded.content_sha256,
            title=loaded.title,
            source_format=loaded.source_format,
            size=loaded.size,
            mtime_ns=loaded.mtime_ns,
            metadata=metadata.merged(self._options.meta, loaded.metadata),
        )
        if existing is not None and existing.content_sha256 == loaded.content_sha256:
            self._report.unchanged.append(source_path)
            return _Change(record, existing, chunks=None)
        chunks = chunk_document(loaded.text, loaded.fmt, self._options.chunking)
        chunks = with_pages(chunks, loaded.page_starts)
        if not chunks:
            self._report.skipped.append(SkippedFile(source_path, "no text to index"))
            return None
        (self._report.changed if existing else self._report.added).append(source_path)
        return _Change(record, existing, chunks)


class _DryRun:
    """Counts what a real run would queue, writing nothing."""

    def __init__(self, engine: Engine, spec: SpaceSpec, report: IngestReport) -> None:
        self._engine = engine
        self._spec = spec
        self._report = report
        self._rows: list[store.ChunkRow] = []

    def add(self, change: _Change) -> None:
        self._rows.extend(change.rows(0))
        self._report.chunks_written += len(change.chunks or ())

    def flush(self) -> None:
        with self._engine.connect() as connection:
            space = spaces.active(connection) or spaces.find(connection, self._spec)
            chunk_input = space.chunk_input if space else self._spec.chunk_input
            estimates = _estimates(self._rows, chunk_input, contexts.DEFAULT_WINDOW_TOKENS)
            hashes = list(estimates)
            new = tasks.missing(connection, space.id, hashes) if space else hashes
        self._report.tasks_queued = len(new)
        self._report.tokens_queued = sum(estimates[sha] for sha in new)

    def delete(self, documents: Sequence[store.StoredDocument]) -> None:
        return None

    def close(self) -> None:
        return None


def _vanished(
    stored: dict[str, store.StoredDocument], roots: Sequence[Path], focus: sources.Focus | None = None
) -> list[store.StoredDocument]:
    """Stored documents under the given folders (and the focus) whose files no longer exist."""
    folders = [os.path.join(os.path.abspath(root), "") for root in roots if os.path.isdir(root)]
    gone: list[store.StoredDocument] = []
    for source_path, document in sorted(stored.items()):
        path = sources.text_to_path(source_path)
        if focus is not None and not focus.covers(path):
            continue
        if any(path.startswith(folder) for folder in folders) and _is_gone(path):
            gone.append(document)
    return gone


def _is_gone(path: str) -> bool:
    """The file certainly no longer exists. An error such as EACCES or ENAMETOOLONG proves nothing:
    such a document is kept, as an unreadable file's document is."""
    try:
        os.stat(path)
    except OSError as exc:
        return exc.errno in (errno.ENOENT, errno.ENOTDIR, errno.ELOOP)
    except ValueError:  # a NUL character: no file has that name
        return True
    return False
