"""Full text at scale: a tantivy index of a knowledge base's chunks, which ranks only the chunks it returns.

FTS5 computes BM25 for every posting of an OR query (480 ms top-10 at a million chunks), PostgreSQL's ts_rank
every match too (docs/postgres.md); tantivy's block-max WAND skips the blocks that cannot reach the top k.
The index is derived data in `<db file>.text/` (PostgreSQL: one per host, in the user's cache folder): the
database's own full text stays the source of truth and answers whenever this index is not fresh, cannot be
opened, or another process holds its writer.

Freshness: a watermark document (chunk id 0) holds (highest chunk id indexed, chunks indexed), written in the
same tantivy commit as the chunks it covers, so a crash leaves both or neither. The index is fresh when it
equals the database's (max(chunks.id), count(chunks)). Catching up adds the chunks above the watermark (each
deleted by id first, so a re-run is idempotent) and, when chunks were deleted, removes the ids the database
no longer has. Hits are hydrated from the database, so an id deleted there is dropped in any case.

Tokens: tantivy's simple tokenizer (split on non-alphanumerics), lowercased and ASCII-folded, as FTS5's
unicode61 with its default diacritic removal; FTS5 folds a few non-Latin diacritics that ASCII folding keeps,
and tantivy drops tokens over 255 bytes.
"""

import hashlib
import logging
import math
import os
import shutil
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from kb import failpoints
from kb.store import fulltext
from kb.store.reader import OpenReader, Reader

if TYPE_CHECKING:
    from kb.settings import KbSettings

log = logging.getLogger(__name__)

# Measured (scripts/bench_textindex.py, docs/search.md): below this many chunks FTS5 is as fast.
CROSSOVER_CHUNKS = 50_000
SEARCH_CATCH_UP = 20_000  # a search adds at most this many chunks itself; more: a thread of a long-lived
# process catches up (kb serve, kb mcp, the library), and a command line leaves it to the next ingest
CATCH_UP_RETRY_S = 30.0
_BATCH = 5_000
_WRITER_HEAP = 64_000_000
_WATERMARK_ID = 0  # chunk ids start at 1
_ANALYZER = "kb_words"
HEADING_COPIES = 2
_FIELDS = ("words",)
_SITUATED_FIELDS = ("words", "situation")
# A search that finds the database files as they were when the index was last found fresh skips counting
# the chunks (30 ms at a million), for at most this long: a commit within one tick of the file system's
# clock could leave a file's size and mtime as they were.
FRESH_FOR_S = 1.0
# A path filter ranks this many times k first (a path holding 5% of the chunks is answered at once), then
# this many times deeper each round: exact, and never the whole ranking of every match up front.
PATH_FIRST_DEPTH = 20
PATH_WIDENING = 10


@dataclass(frozen=True, slots=True)
class Watermark:
    through: int  # highest chunk id indexed
    count: int  # chunks indexed
    updated: float  # the latest documents.updated_at covered


def folder_for(db: Path) -> Path:
    return db.with_name(db.name + ".text")


def postgres_folder(url: str) -> Path:
    """A PostgreSQL database's index on this host: in the user's cache folder, one per database."""
    from sqlalchemy.engine import make_url

    parsed = make_url(url)
    identity = f"{parsed.host or ''}:{parsed.port or ''}/{parsed.database or ''}?{parsed.query}"
    digest = hashlib.sha256(identity.encode()).hexdigest()[:12]
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return cache / "kb" / "text" / f"{parsed.database or 'kb'}-{digest}"


def wanted(setting: str, chunks: int) -> bool:
    """Whether `setting` (`KB_TEXT_INDEX`) searches a knowledge base of `chunks` chunks with tantivy."""
    return setting == "tantivy" or (setting == "auto" and chunks >= CROSSOVER_CHUNKS)


def _tantivy() -> Any:
    import tantivy  # a Rust extension: loaded only when full text at scale is used

    return tantivy


def _schema() -> Any:
    tantivy = _tantivy()
    builder = tantivy.SchemaBuilder()
    builder.add_integer_field("chunk_id", stored=True, indexed=True, fast=True)
    builder.add_integer_field("through", stored=True, fast=True)
    builder.add_integer_field("count", stored=True, fast=True)
    builder.add_float_field("updated", stored=True, fast=True)
    builder.add_text_field("words", tokenizer_name=_ANALYZER, index_option="freq")
    # The context written for the chunk (kb enrich) apart: read only for a space that embeds it.
    builder.add_text_field("situation", tokenizer_name=_ANALYZER, index_option="freq")
    return builder.build()


def _analyzer() -> Any:
    tantivy = _tantivy()
    return (
        tantivy.TextAnalyzerBuilder(tantivy.Tokenizer.simple())
        .filter(tantivy.Filter.remove_long(255))
        .filter(tantivy.Filter.lowercase())
        .filter(tantivy.Filter.ascii_fold())
        .build()
    )


def _words(text: str, heading: str) -> str:
    """One field, as FTS5's bm25 sees a row: its term frequencies summed over the columns, each weighted
    (the heading's by 2: `bm25(chunks_fts, 1, 2)`), so the heading is written twice (1 or 3 copies score
    no better on the labelled corpora)."""
    return "\n".join([text] + [heading] * HEADING_COPIES)


class TextIndex:
    """The tantivy index of one SQLite database, for the life of a process. Safe to share between threads."""

    def __init__(self, folder: Path, database_files: tuple[Path, ...] = ()) -> None:
        self.folder = folder
        # The SQLite file and its WAL, whose stamps change with every commit (none for PostgreSQL: a known
        # outcome is then trusted for FRESH_FOR_S, so another host's commit shows within that).
        self._database_files = database_files
        self._index: Any = None
        self._lock = threading.Lock()
        # The database files when last found fresh, or too small for the index (by `_known_setting`).
        self._known_stamp: tuple[object, ...] | None = None
        self._known_at = 0.0
        self._known_setting = ""
        self._known_fresh = False
        self._behind = False  # the last check found more missing than a search adds itself
        self._catching_up: threading.Thread | None = None
        self._catch_up_lock = threading.Lock()
        self._catch_up_tried = -math.inf  # monotonic time of the last background catch-up started

    # -- searching ---------------------------------------------------------------------------------------

    def search(
        self,
        reader: Reader,
        query: str,
        limit: int,
        setting: str = "tantivy",
        path_glob: str | None = None,
        situated: bool = False,
        catch_up: OpenReader | None = None,
    ) -> list[tuple[int, float]] | None:
        """(chunk id, BM25) best first, like `fulltext.search` (only chunks under `path_glob`, if given; the
        contexts written for them too when `situated`, each field's BM25 summed); None: FTS5 answers
        (`setting` prefers it at this size, or the index is not fresh and too far behind to catch up now,
        or is unusable). `catch_up`: how a long-lived process reads the database in a thread of its own,
        to catch an index that is too far behind up there (a one-shot command leaves that to ingest)."""
        words = fulltext._meaningful_words(query)
        if not words:
            return []
        known = self._known_outcome(setting)
        # Never waits for the lock: while a catch-up holds it, FTS5 answers.
        fresh = known if known is not None else self.sync(reader, SEARCH_CATCH_UP, setting, blocking=False)
        if not fresh:
            if self._behind and catch_up is not None:
                self._catch_up_in_background(catch_up, setting)
            return None
        try:
            fields = _SITUATED_FIELDS if situated else _FIELDS
            if path_glob is None:
                return self._top(words, limit, fields)
            return self._top_under(reader, words, limit, path_glob, fields)
        except Exception as error:  # derived data: whatever went wrong, FTS5 answers
            log.warning("full-text index %s unusable (%s): answering with FTS5", self.folder, error)
            return None

    def _top(
        self, words: list[str], limit: int, fields: tuple[str, ...] = ("words",)
    ) -> list[tuple[int, float]]:
        tantivy = _tantivy()
        index = self._index
        if index is None:  # another thread's update failed just now
            raise ValueError("not open")
        searcher = index.searcher()
        schema = index.schema
        terms = dict.fromkeys(token for word in words for token in self._tokens(word))
        # One flat OR of term queries: tantivy runs block-max WAND over them.
        clauses = [
            (tantivy.Occur.Should, tantivy.Query.term_query(schema, field, term))
            for term in terms
            for field in fields
        ]
        if not clauses:
            return []
        hits = searcher.search(tantivy.Query.boolean_query(clauses), limit, count=False).hits
        ids = searcher.fast_field_values("chunk_id", [address for _, address in hits])
        return [(int(chunk_id), float(score)) for (score, _), chunk_id in zip(hits, ids, strict=True)]

    def _top_under(
        self, reader: Reader, words: list[str], limit: int, path_glob: str, fields: tuple[str, ...]
    ) -> list[tuple[int, float]]:
        """The best `limit` under `path_glob`, exactly: rank `depth` deep, keep those under the path, and rank
        deeper until `limit` are kept or the ranking has run out of matches."""
        depth = limit * PATH_FIRST_DEPTH
        while True:
            ranked = self._top(words, depth, fields)
            kept = fulltext.under_paths(reader, [chunk_id for chunk_id, _ in ranked], path_glob)
            found = [pair for pair in ranked if pair[0] in kept]
            if len(found) >= limit or len(ranked) < depth:
                return found[:limit]
            depth *= PATH_WIDENING

    def _database_stamp(self) -> tuple[object, ...]:
        """The SQLite file's and its WAL's (inode, size, mtime): every commit changes one of them."""
        stamp: list[object] = []
        for path in self._database_files:
            try:
                found = os.stat(path)
            except OSError:
                stamp.append(None)
                continue
            stamp.append((found.st_ino, found.st_size, found.st_mtime_ns))
        return tuple(stamp)

    def _known_outcome(self, setting: str) -> bool | None:
        """Fresh (True) or not wanted at this size (False) as last found, while the database files are as
        they were then (at most FRESH_FOR_S); None: check again."""
        if self._known_stamp is None or setting != self._known_setting:
            return None
        if time.monotonic() - self._known_at > FRESH_FOR_S or self._database_stamp() != self._known_stamp:
            return None
        if self._known_fresh:
            if self._index is None:
                return None
            self._index.reload()
        return self._known_fresh

    def _tokens(self, word: str) -> list[str]:
        # `user_id` is one word to kb's query and two tokens to both FTS5 and tantivy: FTS5 matches the
        # phrase; here either token counts (a phrase needs positions, which double the index).
        return list(_analyzer().analyze(word))

    # -- keeping up --------------------------------------------------------------------------------------

    def _catch_up_in_background(self, open_reader: OpenReader, setting: str) -> None:
        """Start a thread that brings the index up to date, unless one runs or ran in the last
        CATCH_UP_RETRY_S (another process may hold the writer)."""
        with self._catch_up_lock:
            running = self._catching_up is not None and self._catching_up.is_alive()
            if running or time.monotonic() - self._catch_up_tried < CATCH_UP_RETRY_S:
                return
            self._catch_up_tried = time.monotonic()
            log.warning(
                "full-text index %s is behind the database: catching up in the background (FTS5 answers "
                "meanwhile)",
                self.folder,
            )

            def run() -> None:
                try:
                    with open_reader() as reader:
                        self.sync(reader, None, setting)
                except Exception as error:  # derived data: FTS5 goes on answering
                    log.warning("full-text index %s not caught up (%s)", self.folder, error)

            self._catching_up = threading.Thread(target=run, name="kb-text-catch-up", daemon=True)
            self._catching_up.start()

    def wait_for_catch_up(self, timeout_s: float | None = None) -> None:
        """Until the background catch-up, if one was started, has ended."""
        thread = self._catching_up
        if thread is not None:
            thread.join(timeout_s)

    def sync(
        self, reader: Reader, max_gap: int | None = None, setting: str = "tantivy", blocking: bool = True
    ) -> bool:
        """Bring the index up to the database's chunks; True when it is fresh afterwards. Adds at most
        `max_gap` chunks (None: any number); False, never an error, when it cannot (another process holds
        the writer, the folder is unwritable, or, not `blocking`, another thread is updating it) or
        `setting` does not want it at this size."""
        if not self._lock.acquire(blocking=blocking):
            return False
        with _held(self._lock):
            self._behind = False
            try:
                stamp = self._database_stamp()  # before the check: a commit after it changes the stamp
                self._known_stamp = None
                fresh, unwanted = self._sync(reader, max_gap, setting)
                if fresh or unwanted:
                    self._known_stamp, self._known_at = stamp, time.monotonic()
                    self._known_setting, self._known_fresh = setting, fresh
                return fresh
            except Exception as error:  # derived data: whatever went wrong, FTS5 answers
                log.warning("full-text index %s not updated (%s): answering with FTS5", self.folder, error)
                self._index = None
                return False

    def _sync(self, reader: Reader, max_gap: int | None, setting: str) -> tuple[bool, bool]:
        """(fresh afterwards, not wanted at this size)."""
        database = Watermark(*fulltext.chunk_watermark(reader))
        if not wanted(setting, database.count):
            return False, True
        if not self._open():
            return False, False
        mark = self._watermark()
        if mark == database:
            return True, False
        rebuild = mark.through > database.through or mark.updated > database.updated
        missing = (
            database.count if rebuild else max(database.count - mark.count, database.through - mark.through)
        )
        self._behind = max_gap is not None and missing > max_gap
        if self._behind:
            return False, False
        writer = self._index.writer(_WRITER_HEAP, 1)  # ValueError when another process holds it
        try:
            fresh = self._catch_up(reader, writer, Watermark(0, 0, 0.0) if rebuild else mark, database)
        except BaseException:
            writer.rollback()
            raise
        writer.wait_merging_threads()  # and releases the writer's lock file
        return fresh, False

    def _catch_up(self, reader: Reader, writer: Any, mark: Watermark, database: Watermark) -> bool:
        """Add what the database has beyond `mark` (everything from an empty mark), then remove what it no
        longer has; fresh when the result matches the database's watermark after all that."""
        if mark.through == 0:
            writer.delete_all_documents()
        # Chunks of documents changed since (their ids may be reused ones), then the new ids.
        self._add(
            writer,
            lambda after: fulltext.chunk_rows_changed(reader, mark.updated, mark.through, after, _BATCH),
        )
        after = self._add(
            writer, lambda after: fulltext.chunk_rows_after(reader, max(after, mark.through), _BATCH)
        )
        after = max(after, mark.through)
        self._commit(writer, Watermark(after, -1, database.updated))  # -1: counted below, once committed
        indexed = self._index.searcher().num_docs - 1  # the watermark is a document too
        now = Watermark(*fulltext.chunk_watermark(reader))
        if indexed != now.count:  # chunks were deleted: remove the ids the database no longer has
            present = self._indexed_ids()
            gone = present - fulltext.chunk_ids(reader, after)
            for chunk_id in gone:
                writer.delete_documents_by_term("chunk_id", chunk_id)
            indexed = len(present) - len(gone)
        self._commit(writer, Watermark(after, indexed, database.updated))
        return Watermark(after, indexed, database.updated) == now

    def _add(self, writer: Any, batch: Callable[[int], list[fulltext.IndexedRow]]) -> int:
        """Add (or replace) the chunks `batch(after)` gives, batch after batch; returns the last id added."""
        tantivy = _tantivy()
        after = 0
        while rows := batch(after):
            for chunk_id, text, heading, situation in rows:
                writer.delete_documents_by_term("chunk_id", chunk_id)  # a re-run adds it once
                writer.add_document(
                    tantivy.Document(chunk_id=chunk_id, words=_words(text, heading), situation=situation)
                )
            after = rows[-1][0]
            failpoints.hit("textindex.add.after")
        return after

    def _commit(self, writer: Any, mark: Watermark) -> None:
        """The documents added and the watermark saying so, in one tantivy commit (both or neither)."""
        writer.delete_documents_by_term("chunk_id", _WATERMARK_ID)
        writer.add_document(
            _tantivy().Document(
                chunk_id=_WATERMARK_ID, through=mark.through, count=mark.count, updated=mark.updated
            )
        )
        writer.commit()
        self._index.reload()

    def _watermark(self) -> Watermark:
        tantivy = _tantivy()
        searcher = self._index.searcher()
        found = searcher.search(tantivy.Query.term_query(self._index.schema, "chunk_id", _WATERMARK_ID), 1)
        if not found.hits:
            return Watermark(0, 0, 0.0)
        address = [found.hits[0][1]]
        through, count, updated = (
            searcher.fast_field_values(field, address)[0] for field in ("through", "count", "updated")
        )
        return Watermark(int(through or 0), int(count or 0), float(updated or 0.0))

    def _indexed_ids(self) -> set[int]:
        tantivy = _tantivy()
        searcher = self._index.searcher()
        total = searcher.num_docs
        if not total:
            return set()
        hits = searcher.search(tantivy.Query.all_query(), total, count=False).hits
        ids = searcher.fast_field_values("chunk_id", [address for _, address in hits])
        return {int(chunk_id) for chunk_id in ids if chunk_id is not None and chunk_id != _WATERMARK_ID}

    def _open(self) -> bool:
        if self._index is not None:
            self._index.reload()
            return True
        tantivy = _tantivy()
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
            index = tantivy.Index(_schema(), path=str(self.folder), reuse=True)
        except (OSError, ValueError) as error:
            log.warning("full-text index %s unreadable (%s): rebuilding it", self.folder, error)
            try:
                shutil.rmtree(self.folder, ignore_errors=True)
                self.folder.mkdir()
                index = tantivy.Index(_schema(), path=str(self.folder), reuse=True)
            except (OSError, ValueError) as again:
                log.warning("full-text index %s cannot be rebuilt (%s): using FTS5", self.folder, again)
                return False
        index.register_tokenizer(_ANALYZER, _analyzer())
        self._index = index
        return True


@contextmanager
def _held(lock: threading.Lock) -> Iterator[None]:
    """Releases a lock already acquired (`acquire(blocking=False)` has no context manager of its own)."""
    try:
        yield
    finally:
        lock.release()


_OPEN: dict[Path, TextIndex] = {}
_OPEN_LOCK = threading.Lock()


def for_database(db: Path, folder: Path | None = None) -> TextIndex:
    """The process's index of the SQLite file `db` (one per file, shared between searches)."""
    db = db.absolute()
    return _shared(folder or folder_for(db), (db, db.with_name(db.name + "-wal")))


def _shared(folder: Path, database_files: tuple[Path, ...]) -> TextIndex:
    with _OPEN_LOCK:
        index = _OPEN.get(folder)
        if index is None:
            index = _OPEN[folder] = TextIndex(folder, database_files)
        return index


def folder_of(settings: "KbSettings") -> Path:
    """Where a knowledge base's index is kept (KB_TEXT_INDEX_DIR, else beside the SQLite file, else in this
    host's cache folder for a PostgreSQL database)."""
    if settings.text_index_dir is not None:
        return settings.text_index_dir.absolute()
    if settings.database_url:
        return postgres_folder(settings.database_url)
    return folder_for(settings.db.absolute())


def for_settings(settings: "KbSettings") -> TextIndex | None:
    """The index a knowledge base's searches may use: None for the database's own full text only, or an
    in-memory SQLite file."""
    if settings.text_index == "fts5":
        return None
    if settings.database_url:
        return _shared(folder_of(settings), ())
    if str(settings.db) == ":memory:":
        return None
    return for_database(settings.db, folder_of(settings))


def sync_after_write(settings: "KbSettings", reader: Reader) -> bool | None:
    """Bring the index up to date after an ingest committed (None: no index is wanted at this size)."""
    index = for_settings(settings)
    if index is None or not wanted(settings.text_index, fulltext.chunk_watermark(reader)[1]):
        return None
    return index.sync(reader, None, settings.text_index)
