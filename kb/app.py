"""`KnowledgeBase`: the library entry point that wires settings, database and services together."""

import logging
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING

from sqlalchemy.engine import Engine

from kb.core.shares import percent
from kb.errors import ConfigError, DatabaseError, InputError
from kb.records import (
    ChunkInput,
    FailedText,
    IngestReport,
    JobInfo,
    SearchMode,
    SearchResult,
    Space,
    SpaceSpec,
    StatusReport,
    spec_of,
)
from kb.settings import LOCAL_DIMENSIONS, LOCAL_MODEL, KbSettings
from kb.settings import load as load_settings
from kb.store import migrate, readmodel, spaces
from kb.store.engine import create_engine, database_size, safe_url, write_transaction
from kb.store.reader import ConnectionReader, Reader

if TYPE_CHECKING:  # services are imported by the methods that use them: each command loads what it needs
    from kb.core import watching
    from kb.core.metadata import WhereSpec
    from kb.embed import online
    from kb.embed.batches import BatchManager
    from kb.embed.policy import OnlinePolicy
    from kb.embed.worker import Worker
    from kb.ingest import IngestOptions
    from kb.lifecycle import enrich, reindex
    from kb.providers.base import Embedder, Matrix
    from kb.search.vectorindex import SpaceIndex
    from kb.store import usage


class KnowledgeBase:
    """A kb database and what can be done with it.

    >>> with KnowledgeBase("kb.sqlite") as kb:          # doctest: +SKIP
    ...     kb.ingest(["docs"]).counts()
    """

    def __init__(self, db: str | Path | None = None, *, settings: KbSettings | None = None) -> None:
        base = settings or load_settings()
        self.settings = base if db is None else base.model_copy(update={"db": Path(db)})
        self.path = self.settings.db
        self.location = safe_url(self.settings.database)  # for messages: no password
        self.engine: Engine = create_engine(
            self.settings.database, busy_timeout_ms=self.settings.busy_timeout_ms
        )
        try:
            migrate.ensure_current(self.engine)
        except DatabaseError:
            raise
        except Exception as error:  # a file that is not SQLite, a read-only folder, a newer schema ...
            self.engine.dispose()
            raise DatabaseError(f"cannot open database {self.location}: {error}") from error
        from kb.providers.factory import Providers

        self.providers = Providers(self.settings, self.results_dir)  # embedders and batch backends
        self._indexes: dict[int, SpaceIndex] = {}  # kept between searches: the quantized index lives here
        # A server searches from many threads: two first questions at once must not load an index twice.
        self._lock = threading.Lock()

    def __enter__(self) -> "KnowledgeBase":
        return self

    def __exit__(
        self,
        _type: type[BaseException] | None,
        _value: BaseException | None,
        _traceback: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        self.providers.close()
        self.engine.dispose()

    def embedder(self, spec: SpaceSpec) -> "Embedder":
        """The embedder for a space, built on first use (raises ConfigError if it cannot be used)."""
        return self.providers.embedder(spec)

    def embed_now(
        self,
        hashes: Sequence[str] | None = None,
        on_progress: Callable[[int, int], None] | None = None,
        stop: threading.Event | None = None,
    ) -> "online.OnlineReport":
        """Embed pending texts of the active space online, at full price (all of them, or these); `stop`
        ends it after the request in flight, whose vectors are stored."""
        with self.engine.connect() as connection:
            active = spaces.active(connection)
        if active is None:
            from kb.embed.online import OnlineReport

            return OnlineReport()
        from kb.embed import online

        embedder = self.embedder(spec_of(active))
        return online.embed_pending(
            self.engine,
            embedder,
            active.id,
            hashes,
            on_progress,
            self.prices,
            self.budget,
            self.online_policy,
            stop,
        )

    @property
    def online_policy(self) -> "OnlinePolicy":
        from kb.embed.policy import OnlinePolicy

        return OnlinePolicy.from_settings(self.settings)

    def quote(self, tokens: int, texts: int) -> "usage.Quote":
        """What embedding `texts` texts of `tokens` tokens would cost in the active (or configured) space."""
        with self.engine.connect() as connection:
            active = spaces.active(connection)
        model = active.model if active else self.space_spec.model
        from kb.store import usage

        return usage.quote(self.prices, model, tokens, texts, self.settings.batch_max_texts)

    @property
    def prices(self) -> "usage.PriceBook":
        from kb.store.usage import PriceBook

        return PriceBook.from_settings(self.settings)

    @property
    def budget(self) -> "usage.Budget":
        from kb.store.usage import Budget

        return Budget.from_settings(self.settings)

    def search(
        self,
        query: str,
        *,
        k: int = 10,
        mode: SearchMode | str = SearchMode.HYBRID,
        path: str | None = None,
        space: int | None = None,
        per_document: int | None = None,
        where: "WhereSpec | None" = None,
    ) -> SearchResult:
        """The best chunks for a question: vectors and full text fused (hybrid), or either alone.

        Vectors come from the active space (or `space`). If its question cannot be embedded (its model shut
        down, say) the part of a space being built that is already embedded is used instead, and the result's
        notes say so. At most `per_document` chunks of one document (None: the setting
        KB_HITS_PER_DOCUMENT; 0: any); consecutive chunks of a document come back as one hit. `where`: only
        documents whose metadata matches, as `{"tag": "api"}` (a list value: any of) or `kb search --where`
        strings such as `["tag=api", "date>=2024-01-01"]` (docs/search.md)."""
        from kb.search import plan

        with self.open_reader() as reader:
            searched = plan.plan(
                reader,
                plan.candidates(reader, space),
                self.settings,
                embedder_for=self.embedder,
                index_for=self._index,
                on_paid_query=self._record_query,
            )
        return searched.run(
            self.open_reader,
            query,
            k=k,
            mode=SearchMode(mode),
            path=path,
            remember=self._remember_query,
            per_document=self.settings.hits_per_document if per_document is None else per_document,
            where=where,
            long_lived=True,
        )

    @contextmanager
    def open_reader(self) -> Iterator[Reader]:
        """A reader on a connection of its own, for plain SQL reads (kb.store.readmodel)."""
        with self.engine.connect() as connection:
            yield ConnectionReader(connection)

    def _remember_query(self, space_id: int, question: str, vector: "Matrix") -> None:
        from kb.store import querycache

        with write_transaction(self.engine) as connection:
            querycache.put(connection, space_id, question, vector)

    # -- batch pipeline -------------------------------------------------------------------------------

    @property
    def results_dir(self) -> Path:
        """Where raw batch results are saved before they are applied (beside the database)."""
        if self.settings.results_dir is not None:
            return self.settings.results_dir
        if self.settings.database_url:
            return Path("kb-results").absolute()
        return self.path.parent / (self.path.name + ".results")

    def batch_manager(
        self,
        *,
        owner: str | None = None,
        guard: Callable[[], None] | None = None,
        stop: threading.Event | None = None,
    ) -> "BatchManager":
        """The batch pipeline's manager; `owner` names this process in job claims (default: host:pid),
        `guard` runs before every remote step, `stop` ends the work before the next remote call."""
        from kb.embed.batches import BatchManager
        from kb.embed.policy import BatchPolicy

        s = self.settings
        return BatchManager(
            self.engine,
            self.providers.batch_backend,
            self.results_dir,
            BatchPolicy.from_settings(s),
            prices=self.prices,
            budget=self.budget,
            owner=owner,
            claim_s=s.worker_lease_s,
            guard=guard,
            stop=stop,
        )

    def worker(
        self, stop: threading.Event | None = None, after_step: Callable[[], None] | None = None
    ) -> "Worker":
        """The `kb worker` loop; each step ends with the reindex cut-over check, then `after_step` (the
        CLI's progress bar)."""
        from kb.embed.worker import Worker
        from kb.store import claims
        from kb.store.lease import LeaseKeeper

        stop = stop or threading.Event()
        keeper = LeaseKeeper(self.engine, claims.default_owner(), self.settings.worker_lease_s)
        manager = self.batch_manager(owner=keeper.owner, guard=keeper.renew, stop=stop)

        return Worker(
            self.engine,
            manager,
            self.providers.online_embedder,
            keeper=keeper,
            online_policy=self.online_policy,
            idle_s=self.settings.worker_idle_s,
            stop=stop,
            cut_over=self._cut_over,
            after_step=after_step,
        )

    def embedding_progress(self) -> tuple[int, int]:
        """(embedded, all) texts over the spaces being filled, for a progress bar."""
        from kb.store import tasks

        with self.engine.connect() as connection:
            counts = [tasks.counts_by_status(connection, space_id) for space_id in spaces.filling(connection)]
        done = sum(c["embedded"] for c in counts)
        return done, sum(sum(c.values()) for c in counts)

    def _cut_over(self) -> None:
        from kb.lifecycle import reindex

        activated = reindex.activate_if_complete(self.engine, self.settings.reindex_min_coverage)
        if activated is not None:
            report = reindex.status(self.engine, activated)
            share = f"{percent(report.coverage, 1)} of texts embedded" if report else "complete"
            logging.getLogger("kb.lifecycle.reindex").warning(
                "space #%s is complete (%s) and now active; the previous space is retired "
                "(kb reindex --rollback)",
                activated,
                share,
            )

    # -- chunk contexts -------------------------------------------------------------------------------

    def enrich_estimate(self, model: str | None = None) -> "enrich.Estimate":
        """Contexts, tokens in and out, dollars (batch and online) and jobs that `enrich_start` would cost."""
        from kb.lifecycle import enrich

        return enrich.estimate(
            self.engine,
            model or self.settings.context_model,
            self.settings.context_window_tokens,
            self.prices,
            self.settings.batch_max_texts,
        )

    def enrich_start(self, model: str | None = None) -> tuple[int, int]:
        """Make `model`'s context space the one being filled and queue every context it lacks; `kb worker`
        writes them through the Batch API. Returns (space id, contexts queued). Needs a Gemini key."""
        from kb.lifecycle import enrich

        self._require_generation()
        space_id, queued = enrich.start(
            self.engine, model or self.settings.context_model, self.settings.context_window_tokens
        )
        return space_id, queued.tasks

    def enrich_now(
        self, model: str | None = None, stop: threading.Event | None = None
    ) -> "online.OnlineReport":
        """Write the pending contexts of `model`'s context space online now (generateContent, full price),
        each stored as it arrives; `enrich_start` first queues them."""
        from kb.core.contexts import MAX_OUTPUT_TOKENS
        from kb.embed.contexts import write_pending
        from kb.providers.factory import build_generator
        from kb.store import contexts

        self._require_generation()
        chosen = model or self.settings.context_model
        with self.engine.connect() as connection:
            space = contexts.find(connection, chosen)
        if space is None:
            from kb.embed.online import OnlineReport

            return OnlineReport()
        generator = build_generator(self.settings, chosen)
        try:
            return write_pending(
                self.engine,
                generator,
                space,
                window_tokens=self.settings.context_window_tokens,
                max_output_tokens=MAX_OUTPUT_TOKENS,
                prices=self.prices,
                budget=self.budget,
                policy=self.online_policy,
                stop=stop,
            )
        finally:
            generator.close()

    def _require_generation(self) -> None:
        if self.settings.gemini_api_key is None:
            raise ConfigError(
                "chunk contexts are written by a Gemini model: set GEMINI_API_KEY (or KB_GEMINI_API_KEY). "
                "Without one, chunks are still embedded headed by their title and headings (KB_CHUNK_HEADERS)"
            )

    # -- reindex --------------------------------------------------------------------------------------

    def reindex_spec(
        self,
        model: str | None = None,
        dimensions: int | None = None,
        headers: bool | None = None,
        contexts: bool = False,
    ) -> SpaceSpec:
        """The target of a reindex: a Gemini model (default: the configured one) or the local model, its
        chunks headed by title and heading path unless `headers` is False (default: the setting), and
        after the context `kb enrich` wrote for each if `contexts`."""
        model = model or self.settings.embedding_model
        headed = self.settings.chunk_headers if headers is None else headers
        chunk_input = ChunkInput.HEADED if headed else ChunkInput.TEXT
        if contexts:
            chunk_input = ChunkInput.SITUATED
        if model == LOCAL_MODEL:
            return SpaceSpec("local", LOCAL_MODEL, LOCAL_DIMENSIONS, chunk_input=chunk_input)
        return SpaceSpec(
            "gemini", model, dimensions or self.settings.embedding_dimensions, chunk_input=chunk_input
        )

    def reindex_estimate(self, spec: SpaceSpec) -> "reindex.Estimate":
        """Texts, tokens, dollars (batch and online) and jobs that building `spec` would take now."""
        from kb.lifecycle import reindex

        counter = None
        if spec.provider == "gemini":
            try:
                counter = self.embedder(spec).count_tokens
            except ConfigError:  # no key: the estimate counts tokens itself
                counter = None
        prices = self.prices.prices(spec.model)
        return reindex.estimate(self.engine, spec, prices, self.settings.batch_max_texts, counter)

    def reindex_start(self, spec: SpaceSpec) -> int:
        """Create or resume the space for `spec` and queue what it lacks; `kb worker` fills it."""
        from kb.lifecycle import reindex

        return reindex.start(self.engine, spec)

    def reindex_status(self) -> "reindex.ReindexStatus | None":
        from kb.lifecycle import reindex

        return reindex.status(self.engine)

    def activate(self, strict: bool = False, force: bool = False) -> int:
        from kb.lifecycle import reindex

        return reindex.activate(self.engine, strict=strict, force=force)

    def rollback(self) -> int:
        from kb.lifecycle import reindex

        return reindex.rollback(self.engine)

    def size_bytes(self) -> int:
        """The database's size on disk (SQLite file, or PostgreSQL's pg_database_size)."""
        return database_size(self.engine)

    def drop_retired(self) -> list[int]:
        from kb.lifecycle import reindex

        return reindex.drop_retired(self.engine)

    @property
    def active_model(self) -> str | None:
        """The model of the active embedding space (None before the first ingest)."""
        with self.engine.connect() as connection:
            active = spaces.active(connection)
        return None if active is None else active.model

    def legacy_hint(self) -> str | None:
        """A one-line suggestion when the active space uses a retired or batch-incompatible model."""
        with self.engine.connect() as connection:
            active = spaces.active(connection)
        return self.settings.legacy_hint(None if active is None else active.model)

    def flush(self) -> list[int]:
        """Put every due pending text into batch jobs now and submit them (`kb flush`)."""
        manager = self.batch_manager()
        manager.flush(force=True)
        return manager.submit_created()

    def jobs(self, limit: int = 1000) -> list[JobInfo]:
        with self.engine.connect() as connection:
            return readmodel.all_jobs(ConnectionReader(connection), limit)

    def failed_texts(self, limit: int = 1000) -> list[FailedText]:
        with self.engine.connect() as connection:
            return readmodel.failed(ConnectionReader(connection), limit)

    def retry_failed(self, task_ids: Sequence[int] | None = None) -> int:
        """Failed texts (all, or these) back to pending with fresh attempts; returns how many. Ids of no
        task are an InputError, and then nothing is requeued."""
        from kb.store import tasks

        with write_transaction(self.engine) as connection:
            if task_ids is not None:
                unknown = sorted(set(task_ids) - tasks.existing_ids(connection, task_ids))
                if unknown:
                    named = ", ".join(map(str, unknown))
                    raise InputError(f"no task {named} (`kb errors` lists failed texts); nothing requeued")
            return tasks.requeue_failed(connection, task_ids)

    def _record_query(self, space: Space, question: str) -> None:
        """Count the cost of a question just embedded at a price."""
        from kb.core.chunking import estimate_tokens
        from kb.store import usage

        with write_transaction(self.engine) as connection:
            usage.record(
                connection,
                self.prices,
                kind="query",
                model=space.model,
                texts=1,
                tokens=estimate_tokens(question),
                space_id=space.id,
            )

    def _index(self, space: Space) -> "SpaceIndex":
        from kb.search.vectorindex import SpaceIndex

        with self._lock:
            index = self._indexes.get(space.id)
            if index is None or index.dimensions != space.dimensions:
                index = self._indexes[space.id] = SpaceIndex(
                    space.id, space.dimensions, self.settings.search_index
                )
            return index

    def warm_up(self) -> str | None:
        """Load the active space's vector index now, as a long-lived process's searches use it, so that no
        question waits for it; returns how vectors will be searched (None: no active space yet)."""
        with self.open_reader() as reader:
            active = readmodel.active_space(reader)
            return None if active is None else str(self._index(active).warm(reader))

    def schema_revision(self) -> str | None:
        """The database's schema revision, read with one small query: a health check's probe."""
        with self.open_reader() as reader:
            return readmodel.revision(reader)

    @property
    def space_spec(self) -> SpaceSpec:
        """The embedding space the current settings embed into."""
        return spaces.configured_spec(self.settings)

    def ingest_options(self, **overrides: object) -> "IngestOptions":
        from kb.ingest import IngestOptions

        return IngestOptions.from_settings(self.settings, **overrides)

    def ingest(
        self,
        paths: Sequence[str | Path],
        *,
        include: Sequence[str] = (),
        exclude: Sequence[str] = (),
        prune: bool = False,
        dry_run: bool = False,
        on_progress: Callable[[int, int], None] | None = None,
        meta: Mapping[str, object] | None = None,
    ) -> IngestReport:
        """Ingest files and folders; unchanged files cost nothing. `meta` is metadata for every document
        (a file's own front matter or properties win over it); with it, every file is read."""
        from kb.ingest import ingest_paths  # the format readers (HTML, YAML) only when ingesting

        options = self.ingest_options(
            include=tuple(include), exclude=tuple(exclude), prune=prune, dry_run=dry_run, meta=meta or {}
        )
        report = ingest_paths(self.engine, [Path(p) for p in paths], self.space_spec, options, on_progress)
        if not dry_run:
            self.sync_text_index()
        return report

    def watch(
        self,
        paths: Sequence[str | Path],
        *,
        include: Sequence[str] = (),
        exclude: Sequence[str] = (),
        prune: bool = False,
        stop: threading.Event | None = None,
        on_burst: "Callable[[watching.Burst, IngestReport | None], None] | None" = None,
    ) -> int:
        """Keep the knowledge base fresh as files change below the folders `paths`, until `stop` is set.

        Each burst of changes is one ingest of what changed (its text searchable at once, new texts queued
        for the worker); deleted files are forgotten only with `prune`, as by `ingest`. `on_burst` hears each
        burst that found something, with its report (None: a folder only went or came back). Returns the
        number of ingests run. A database busy for longer than its timeout is waited out: the burst is
        tried again at the next poll."""
        from kb.core import sources, watching
        from kb.ingest import ingest_paths

        stop = stop or threading.Event()
        options = self.ingest_options(include=tuple(include), exclude=tuple(exclude), prune=prune)
        pending: frozenset[str] = frozenset()  # a burst that could not be written yet
        ingests = 0
        for burst in watching.bursts([Path(p) for p in paths], stop, self.watch_options, self._own_files()):
            focus = pending | burst.focus
            report = None
            if focus and burst.roots:
                try:
                    report = ingest_paths(
                        self.engine, burst.roots, self.space_spec, options, focus=sources.Focus(focus)
                    )
                except (DatabaseError, InputError) as error:
                    if not _passing(error, burst.roots):
                        raise
                    logging.getLogger("kb.watch").warning("%s; trying again shortly", error.message)
                    pending = focus
                    continue
                pending = frozenset()
                ingests += 1
                self.sync_text_index()
            if on_burst is not None and (burst.vanished or burst.returned or (report and _found(report))):
                on_burst(burst, report)
        return ingests

    @property
    def watch_options(self) -> "watching.WatchOptions":
        from kb.core.watching import WatchOptions

        s = self.settings
        return WatchOptions(s.watch_debounce_ms, s.watch_max_burst_ms, s.watch_poll_s)

    def _own_files(self) -> list[Path]:
        """kb's own files, whose changes a watch of their folder ignores: the database, its journals, the
        batch results and the full-text index beside it."""
        from kb.search import textindex

        derived = [self.results_dir, textindex.folder_of(self.settings)]
        if self.settings.database_url:
            return derived
        journals = [self.path.with_name(self.path.name + suffix) for suffix in ("-wal", "-shm", "-journal")]
        return [self.path, *journals, *derived]

    def ingest_text(
        self,
        data: bytes | str,
        name: str = "stdin.md",
        *,
        dry_run: bool = False,
        meta: Mapping[str, object] | None = None,
    ) -> IngestReport:
        """Ingest one document held in memory, stored under `stdin:<name>`."""
        from kb.ingest import ingest_bytes

        raw = data.encode("utf-8") if isinstance(data, str) else data
        options = self.ingest_options(dry_run=dry_run, meta=meta or {})
        report = ingest_bytes(self.engine, raw, name, self.space_spec, options)
        if not dry_run:
            self.sync_text_index()
        return report

    def sync_text_index(self) -> bool | None:
        """Bring the full-text index beside a SQLite file up to its chunks (kb.search.textindex): True when
        fresh, False when it could not be (FTS5 answers meanwhile), None when none is wanted."""
        from kb.search import textindex

        with self.open_reader() as reader:
            return textindex.sync_after_write(self.settings, reader)

    def status(self) -> StatusReport:
        """Documents, chunks, tasks per space, live jobs, warnings, errors, spend and the worker."""
        from kb.report.status import StatusOptions
        from kb.report.status import collect as collect_status

        options = StatusOptions.from_settings(self.settings)
        with self.engine.connect() as connection:
            return collect_status(ConnectionReader(connection), self.location, options)


def _found(report: IngestReport) -> bool:
    """The ingest of a burst met a document (a burst of ignored files meets none)."""
    return any(report.counts().values()) or bool(report.missing)


def _passing(error: DatabaseError | InputError, roots: Sequence[Path]) -> bool:
    """A watch outlives the database being busy, and a folder vanishing while its burst is ingested (the
    watch notices and says so)."""
    if isinstance(error, DatabaseError):
        return error.transient
    return not all(root.is_dir() for root in roots)
