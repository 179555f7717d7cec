"""The `kb` command line: Typer signatures in, one library call, rendering out.

Errors: every `KbError` becomes one line on stderr and its exit code, here and nowhere else.
"""

import copy
import os
import signal
import sys
import threading
from collections.abc import Callable, Iterator, MutableMapping
from contextlib import contextmanager
from dataclasses import asdict
from enum import StrEnum
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from typer.core import TyperGroup

from kb import __version__
from kb.cli import rendering as ui
from kb.errors import ConfigError, InputError, KbError
from kb.records import SearchMode
from kb.report import views

if TYPE_CHECKING:
    from kb.app import KnowledgeBase
    from kb.settings import KbSettings

# Modules that load the database layer, the providers or Alembic are imported inside the commands that use
# them: `kb --help` then starts in a fraction of the time (scripts/bench_cli.py).


class Provider(StrEnum):
    gemini = "gemini"
    local = "local"


# The exit status of a command whose reader closed the pipe (`kb jobs | head -1`): as if SIGPIPE had ended
# it, the status shells and other CLIs give.
CLOSED_PIPE_EXIT = 141


class _KbGroup(TyperGroup):
    """Maps kb's errors to a message and an exit code for every command, in one place, and renders help as
    written."""

    def make_context(self, *args: Any, **kwargs: Any) -> Any:
        with _closed_pipe_ends():  # `kb --help | head`: help and --version are printed while parsing
            return super().make_context(*args, **kwargs)

    def invoke(self, ctx: Any) -> Any:
        try:
            with _closed_pipe_ends():
                return super().invoke(ctx)
        except KbError as error:
            ui.err().print(f"[red]error:[/red] {ui.escape(error.message)}", soft_wrap=True)
            raise typer.Exit(error.exit_code) from None
        except KeyboardInterrupt:
            ui.err().print("interrupted")
            raise typer.Exit(130) from None

    def get_command(self, ctx: Any, cmd_name: str) -> Any:
        command = super().get_command(ctx, cmd_name)
        if command is not None:
            _plain_help(command, ctx)
        return command

    def list_commands(self, ctx: Any) -> list[str]:
        return list(self.commands)  # Typer's reads the items: it would build every command on demand

    def format_help(self, ctx: Any, formatter: Any) -> None:
        _plain_help(self, ctx)
        super().format_help(ctx, formatter)


def _plain_help(command: Any, ctx: Any) -> None:
    """Option help is plain text, but Typer renders it as Rich markup, which would take "[env: KB_DB]" for a
    tag and drop it: escaped here, once. A flag takes no value, so it shows none (not `<bool>`)."""
    for param in command.get_params(ctx):
        if getattr(param, "_kb_plain", False):
            continue
        if param.help:
            param.help = param.help.replace("[", "\\[")  # Rich's escape, without loading Rich for it
        if getattr(param, "is_flag", False) and param.metavar is None:
            param.metavar = ""
        param._kb_plain = True


@contextmanager
def _closed_pipe_ends() -> Iterator[None]:
    """A reader that closed stdout (`kb search ... | head`) ends the command normally, without a traceback:
    stdout is pointed at /dev/null so that the output still buffered cannot fail again at exit (the way the
    Python documentation describes, in "Note on SIGPIPE")."""
    try:
        yield
    except BrokenPipeError:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        raise typer.Exit(CLOSED_PIPE_EXIT) from None
    except SystemExit as exit_:
        # Rich's own answer to a closed pipe (`Console.on_broken_pipe`, in every console, Typer's help
        # included): stdout pointed at /dev/null, then exit 1, which would read as "other kb error".
        if exit_.code == 1 and _stdout_is_devnull():
            raise typer.Exit(CLOSED_PIPE_EXIT) from None
        raise


def _stdout_is_devnull() -> bool:
    try:
        return os.path.samestat(os.fstat(sys.stdout.fileno()), os.stat(os.devnull))
    except (OSError, ValueError):  # no stdout at all
        return False


app = typer.Typer(
    cls=_KbGroup,
    name="kb",
    help="An embedding batch manager for RAG knowledge bases: ingest, embed at batch prices, search.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,  # tracebacks may show locals, and locals may hold a key
    add_completion=False,
)
db_app = typer.Typer(cls=_KbGroup, help="Inspect and migrate the database schema.", no_args_is_help=True)
app.add_typer(db_app, name="db")


def _version(value: bool) -> None:
    if value:
        ui.out().print(f"kb {__version__}")
        raise typer.Exit()


@app.callback()
def main_options(
    ctx: typer.Context,
    db_text: Annotated[
        str | None,
        typer.Option(
            "--db",
            help="SQLite file, or a postgresql:// URL [env: KB_DB, KB_DATABASE_URL; default: ./kb.sqlite].",
        ),
    ] = None,
    provider: Annotated[
        Provider | None,
        typer.Option("--provider", help="Embedding provider [env: KB_PROVIDER]."),
    ] = None,
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Show the version.")
    ] = False,
) -> None:
    db = None if db_text is None else Path(db_text)
    overrides: dict[str, Any] = {}
    from kb.settings import is_postgres_url, load

    if db is not None and is_postgres_url(str(db_text)):
        overrides["database_url"] = db_text
    elif db is not None:
        overrides["db"] = db
    if provider is not None:
        overrides["provider"] = provider.value
    ctx.obj = load(**overrides)  # a bad KB_* value: ConfigError, one line, exit 3


def _open(ctx: typer.Context, announce: bool = False, *, create: bool = False) -> "KnowledgeBase":
    """The knowledge base; a SQLite file that does not exist is created only by a command that writes
    (`create`): for one that reads, a mistyped `--db` or KB_DB must not look like an empty knowledge base."""
    from kb.app import KnowledgeBase

    settings: KbSettings = ctx.obj
    if not create:
        _require_existing(settings)
    if announce:
        ui.announce_provider(settings)
    kb = KnowledgeBase(settings=settings)
    _hint(settings.legacy_hint(kb.active_model))
    return kb


def _require_existing(settings: "KbSettings") -> None:
    if settings.database_url or settings.db.exists():  # a folder: the engine says it is one
        return
    raise ConfigError(f"no knowledge base at {settings.db} (kb ingest creates one)")


def _hint(hint: str | None) -> None:
    if hint:
        ui.err().print(f"[yellow]hint:[/yellow] {ui.escape(hint)}")


# The file filters `kb ingest` and `kb watch` share.
IncludeOption = Annotated[
    list[str] | None, typer.Option("--include", help="Only files matching this glob (repeatable).")
]
ExcludeOption = Annotated[
    list[str] | None, typer.Option("--exclude", help="Skip files matching this glob (repeatable).")
]


@app.command()
def ingest(
    ctx: typer.Context,
    paths: Annotated[
        list[Path],
        typer.Argument(help="Files and folders to ingest; `-` reads one document from stdin."),
    ],
    include: IncludeOption = None,
    exclude: ExcludeOption = None,
    prune: Annotated[
        bool, typer.Option("--prune", help="Remove stored documents whose files are gone.")
    ] = False,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Show what would change and be queued; write nothing.")
    ] = False,
    stdin_name: Annotated[
        str, typer.Option("--stdin-name", help="Document name for `kb ingest -`.")
    ] = "stdin.md",
    now: Annotated[
        bool,
        typer.Option("--now", help="Embed the new texts right away online (full price) instead of in batch."),
    ] = False,
    meta: Annotated[list[str] | None, typer.Option("--meta", help=views.META_HELP)] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the summary as JSON.")] = False,
) -> None:
    """Read documents, chunk them, and queue new text for embedding. Unchanged files cost nothing."""
    from kb.core.metadata import parse_assignments

    run_meta = parse_assignments(meta or ())  # a malformed --meta fails before anything is opened
    with _open(ctx, announce=True, create=True) as kb:
        if [str(p) for p in paths] == ["-"]:
            report = kb.ingest_text(sys.stdin.buffer.read(), stdin_name, dry_run=dry_run, meta=run_meta)
        else:
            with ui.progress("Ingesting") as on_progress:
                report = kb.ingest(
                    paths,
                    include=include or (),
                    exclude=exclude or (),
                    prune=prune,
                    dry_run=dry_run,
                    on_progress=on_progress,
                    meta=run_meta,
                )
        quote = kb.quote(report.tokens_queued, report.tasks_queued)
        embedded = None
        if now and not dry_run and report.queued_hashes:
            stop = threading.Event()
            with (
                ui.stop_on_signals(stop, "stopping after the request in flight"),
                ui.progress("Embedding") as on_progress,
            ):
                embedded = kb.embed_now(report.queued_hashes, on_progress, stop)
    if as_json:
        ui.print_json(ui.ingest_json(report, embedded, quote))
    else:
        ui.render_ingest(report, embedded, quote)


@app.command("search")
def search_command(
    ctx: typer.Context,
    query: Annotated[str, typer.Argument(help=views.QUERY_HELP)],
    k: Annotated[int, typer.Option("-k", "--top", min=1, max=views.MAX_HITS, help=views.K_HELP)] = 10,
    mode: Annotated[SearchMode, typer.Option("--mode", help=views.MODE_HELP)] = SearchMode.HYBRID,
    path: Annotated[str | None, typer.Option("--path", help=views.PATH_HELP)] = None,
    space: Annotated[int | None, typer.Option("--space", help=views.SPACE_HELP)] = None,
    per_document: Annotated[
        int | None, typer.Option("--per-document", min=0, help=views.PER_DOCUMENT_HELP)
    ] = None,
    where: Annotated[list[str] | None, typer.Option("--where", help=views.WHERE_HELP)] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the hits as JSON.")] = False,
) -> None:
    """Find the chunks that best answer a question."""
    from kb import readonly
    from kb.core.metadata import parse_where

    settings: KbSettings = ctx.obj
    _require_existing(settings)
    parse_where(where)  # a malformed --where fails before anything is opened
    options: dict[str, Any] = {"path": path, "space": space, "per_document": per_document, "where": where}
    # Read-only and without the database layer when nothing must be written (scripts/bench_cli.py), or
    # when nothing can be (read-only media: a new question is paid for, but cannot be remembered).
    result = readonly.search(settings, query, k=k, mode=mode, **options)
    if result is not None:
        _hint(settings.legacy_hint(readonly.active_model(settings)))
    else:
        with _open(ctx) as kb:
            result = kb.search(query, k=k, mode=mode, **options)
    ui.announce_space(result, settings)
    for note in result.notes:
        ui.err().print(f"[yellow]note:[/yellow] {ui.escape(note)}", soft_wrap=True)
    if as_json:
        ui.print_json(views.search_json(result))
    else:
        ui.render_search(result)


@app.command("eval")
def eval_command(
    ctx: typer.Context,
    queries_file: Annotated[
        Path, typer.Argument(help='Labelled questions: [{"q": ..., "relevant": [...]}].')
    ],
    mode: Annotated[
        SearchMode | None, typer.Option("--mode", help="Only this mode (default: all three).")
    ] = None,
    against: Annotated[
        str | None,
        typer.Option(
            "--against",
            help="Compare with another space of this database (its id, e.g. 2) or another database "
            "(a path or URL), side by side.",
        ),
    ] = None,
    as_json: Annotated[
        bool, typer.Option("--json", help="Print scores and per-question ranks as JSON.")
    ] = False,
) -> None:
    """Measure retrieval quality on labelled questions: recall@1/5/10, MRR and nDCG@10 per mode."""
    from kb.search import evaluation

    settings: KbSettings = ctx.obj
    queries = evaluation.load_queries(queries_file)
    _require_existing(settings)
    modes = [mode] if mode else list(SearchMode)
    with _EvalSearcher(settings) as ours:
        scores = [evaluation.score(ours, queries, m) for m in modes]
    if against is None:
        if as_json:
            ui.print_json(ui.eval_json(scores))
        else:
            ui.render_eval(scores)
        return
    other, other_name = _comparison(settings, against)
    with other:
        theirs = [evaluation.score(other, queries, m) for m in modes]
    names = (_location(settings), other_name)
    if as_json:
        ui.print_json(ui.eval_comparison_json(scores, theirs, names))
    else:
        ui.render_eval_comparison(scores, theirs, names)


class _EvalSearcher:
    """The path of `kb search`: read-only unless a paid question must be remembered (then, as `kb search`
    does, it is paid for once and cached)."""

    def __init__(self, settings: "KbSettings", space: int | None = None) -> None:
        self._settings = settings
        self._space = space
        self._kb: KnowledgeBase | None = None  # opened at the first paid question, kept for the others

    def __enter__(self) -> "_EvalSearcher":
        return self

    def __exit__(self, *_: object) -> None:
        if self._kb is not None:
            self._kb.close()

    def search(self, query: str, *, k: int = 10, mode: SearchMode | str = SearchMode.HYBRID) -> Any:
        from kb import readonly

        found = readonly.search(
            self._settings, query, k=k, mode=SearchMode(mode), path=None, space=self._space
        )
        if found is not None:
            return found
        if self._kb is None:
            from kb.app import KnowledgeBase

            self._kb = KnowledgeBase(settings=self._settings)
        return self._kb.search(query, k=k, mode=mode, space=self._space)


def _location(settings: "KbSettings") -> str:
    from kb.store.engine import safe_url

    return safe_url(settings.database)  # no password


def _comparison(settings: "KbSettings", against: str) -> tuple[_EvalSearcher, str]:
    """What `--against` names: a space of this database ("2", "#2"), or another database."""
    space = against.strip().removeprefix("space").strip().removeprefix("#")
    if space.isdigit():
        return _EvalSearcher(settings, int(space)), f"space #{space}"
    if "://" in against:
        other = settings.model_copy(update={"database_url": against})
    else:
        other = settings.model_copy(update={"db": Path(against), "database_url": None})
    _require_existing(other)
    return _EvalSearcher(other), _location(other)


class LogFormat(StrEnum):
    text = "text"
    json = "json"


@app.command()
def worker(
    ctx: typer.Context,
    once: Annotated[
        bool, typer.Option("--once", help="Drain everything (submit, wait, apply), then exit.")
    ] = False,
    timeout: Annotated[
        float | None, typer.Option("--timeout", min=0, help="With --once: give up after this many seconds.")
    ] = None,
    watch_paths: Annotated[
        list[Path] | None,
        typer.Option(
            "--watch",
            help="Also keep this folder's documents fresh, as `kb watch` does, in the same process "
            "(repeatable).",
        ),
    ] = None,
    prune: Annotated[
        bool, typer.Option("--prune", help="With --watch: forget documents whose files are deleted.")
    ] = False,
    log_format: Annotated[
        LogFormat, typer.Option("--log-format", help="text for people, json for machines.")
    ] = LogFormat.text,
) -> None:
    """Run the batch pipeline: flush pending texts into jobs, poll them, write vectors back."""
    if watch_paths and once:
        raise InputError("--watch keeps the worker running: it cannot be combined with --once")
    if prune and not watch_paths:
        raise InputError("--prune applies to the folders given with --watch")
    ui.configure_logging(log_format.value)
    stop = threading.Event()
    with (
        _open(ctx, announce=True, create=True) as kb,
        ui.stop_on_signals(stop),
        ui.progress("Embedding") as advance,
        _watching(kb, watch_paths or [], prune, stop),
    ):
        worker_ = kb.worker(stop=stop, after_step=lambda: advance(*kb.embedding_progress()))
        result = worker_.run(once=once, timeout_s=timeout)
    ui.render_worker(result)
    if result.reason == "timed_out":
        raise typer.Exit(6)


@contextmanager
def _watching(kb: "KnowledgeBase", paths: list[Path], prune: bool, stop: threading.Event) -> Iterator[None]:
    """`kb watch` on a thread of its own beside the worker; an error there stops the worker and is raised."""
    if not paths:
        yield
        return
    from kb.core import watching

    watching.folders(paths)  # a bad path is refused before the worker starts
    failure: list[BaseException] = []

    def watch() -> None:
        try:
            kb.watch(paths, prune=prune, stop=stop, on_burst=ui.render_burst)
        except BaseException as error:
            failure.append(error)
            stop.set()

    thread = threading.Thread(target=watch, name="kb-watch", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()  # the worker ended: so does the watch
        thread.join()
    if failure:
        raise failure[0]


@app.command("watch")
def watch_command(
    ctx: typer.Context,
    paths: Annotated[list[Path], typer.Argument(help="Folders to watch (below them, as `kb ingest` reads).")],
    include: IncludeOption = None,
    exclude: ExcludeOption = None,
    prune: Annotated[
        bool, typer.Option("--prune", help="Forget stored documents whose files are deleted.")
    ] = False,
) -> None:
    """Keep the knowledge base fresh: ingest each burst of file changes below these folders, until Ctrl-C.

    Text is searchable as soon as a burst is ingested; `kb worker` (or `kb worker --watch`) embeds it."""
    from kb.core import watching

    folders = watching.folders(paths)
    ui.configure_logging("text")
    stop = threading.Event()
    with (
        _open(ctx, announce=True, create=True) as kb,
        ui.stop_on_signals(stop, "stopping after the ingest in flight"),
    ):
        shown = ", ".join(ui.escape(str(folder)) for folder in folders)
        ui.err().print(f"[dim]kb: watching {shown}; Ctrl-C to stop[/dim]", soft_wrap=True)
        ingests = kb.watch(
            folders,
            include=include or (),
            exclude=exclude or (),
            prune=prune,
            stop=stop,
            on_burst=ui.render_burst,
        )
    ui.err().print(f"stopped watching ({ingests:,} ingest{'s' * (ingests != 1)})")


@app.command()
def flush(ctx: typer.Context) -> None:
    """Submit every pending text to batch jobs now, without waiting for the flush policy."""
    with _open(ctx, create=True) as kb:
        submitted = kb.flush()
    ui.out().print(f"submitted {len(submitted)} batch job{'s' * (len(submitted) != 1)}")


@app.command()
def jobs(
    ctx: typer.Context,
    as_json: Annotated[bool, typer.Option("--json", help="Print machine-readable JSON.")] = False,
) -> None:
    """List batch jobs: remote name, state, texts, age, deadline."""
    with _open(ctx) as kb:
        found = kb.jobs()
    if as_json:
        ui.print_json([asdict(job) for job in found])
    else:
        ui.render_jobs(found)


@app.command()
def errors(
    ctx: typer.Context,
    as_json: Annotated[bool, typer.Option("--json", help="Print machine-readable JSON.")] = False,
) -> None:
    """List texts that failed for good, with their reasons and documents."""
    with _open(ctx) as kb:
        found = kb.failed_texts()
    if as_json:
        ui.print_json([ui.failed_json(item) for item in found])
    else:
        ui.render_errors(found)


@app.command()
def retry(
    ctx: typer.Context,
    task_ids: Annotated[list[int] | None, typer.Argument(help="Task ids (from `kb errors`).")] = None,
    all_failed: Annotated[bool, typer.Option("--all", help="Requeue every failed text.")] = False,
) -> None:
    """Requeue failed texts for embedding."""
    if not task_ids and not all_failed:
        raise InputError("name task ids to retry, or use --all")
    with _open(ctx) as kb:
        count = kb.retry_failed(None if all_failed else task_ids)
    ui.out().print(f"requeued {count} text{'s' * (count != 1)}")


@app.command("reindex")
def reindex_command(
    ctx: typer.Context,
    model: Annotated[
        str | None, typer.Option("--model", help="Target model [default: KB_EMBEDDING_MODEL].")
    ] = None,
    dimensions: Annotated[
        int | None, typer.Option("--dimensions", min=1, max=3072, help="Target dimensions [default: 768].")
    ] = None,
    headers: Annotated[
        bool | None,
        typer.Option(
            "--headers/--no-headers",
            help="Embed each chunk headed by its title and heading path [default: KB_CHUNK_HEADERS].",
        ),
    ] = None,
    contexts: Annotated[
        bool,
        typer.Option(
            "--contexts",
            help="Embed each chunk after the context `kb enrich` writes for it (contextual retrieval).",
        ),
    ] = False,
    estimate_only: Annotated[
        bool, typer.Option("--estimate", help="Print what the reindex would cost; change nothing.")
    ] = False,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Start without asking for confirmation.")] = False,
    show_status: Annotated[
        bool, typer.Option("--status", help="Coverage of the space being built, jobs, ETA.")
    ] = False,
    activate: Annotated[
        bool, typer.Option("--activate", help="Switch search to the space being built now.")
    ] = False,
    strict: Annotated[
        bool, typer.Option("--strict", help="Refuse to activate while any text failed.")
    ] = False,
    rollback: Annotated[
        bool, typer.Option("--rollback", help="Reactivate the previous (retired) space.")
    ] = False,
    drop_retired: Annotated[
        bool, typer.Option("--drop-retired", help="Delete retired spaces and reclaim their disk space.")
    ] = False,
    as_json: Annotated[bool, typer.Option("--json", help="With --status or --estimate: JSON.")] = False,
) -> None:
    """Move the index to another embedding model (or chunk headers); search keeps working meanwhile."""
    with _open(ctx) as kb:
        if show_status:
            report = kb.reindex_status()
            if as_json:
                ui.print_json(None if report is None else ui.reindex_status_json(report))
            else:
                ui.render_reindex_status(report)
            return
        if activate:
            space_id = kb.activate(strict=strict, force=True)
            ui.out().print(
                f"space #{space_id} is now active; the previous one is retired (--rollback undoes)"
            )
            return
        if rollback:
            space_id = kb.rollback()
            ui.out().print(f"space #{space_id} is active again")
            return
        if drop_retired:
            before = kb.size_bytes()
            dropped = kb.drop_retired()
            after = kb.size_bytes()
            ui.out().print(
                f"dropped {len(dropped)} retired space{'s' * (len(dropped) != 1)}; "
                f"database {before / 1e6:,.1f} MB -> {after / 1e6:,.1f} MB"
            )
            return
        spec = kb.reindex_spec(model, dimensions, headers, contexts)
        plan = kb.reindex_estimate(spec)
        if as_json:
            ui.print_json(ui.estimate_json(plan))
        else:
            ui.render_estimate(plan)
        if estimate_only or (plan.texts == 0 and kb.reindex_status() is not None):
            return
        if not yes:
            if not sys.stdin.isatty():
                raise InputError("not starting a reindex without confirmation: add --yes")
            if not typer.confirm("Start the reindex?", default=False):
                raise typer.Exit(1)
        space_id = kb.reindex_start(spec)
    ui.out().print(
        f"space #{space_id} is being built: `kb worker` fills it through the Batch API and switches search "
        "to it when it is complete (`kb reindex --status` shows progress)"
    )


@app.command()
def enrich(
    ctx: typer.Context,
    model: Annotated[
        str | None, typer.Option("--model", help="Generation model [default: KB_CONTEXT_MODEL].")
    ] = None,
    estimate_only: Annotated[
        bool, typer.Option("--estimate", help="Print what writing the contexts would cost; send nothing.")
    ] = False,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Start without asking for confirmation.")] = False,
    now: Annotated[
        bool, typer.Option("--now", help="Write them online now (generateContent) at the full price.")
    ] = False,
    as_json: Annotated[bool, typer.Option("--json", help="With --estimate: JSON.")] = False,
) -> None:
    """Have a Gemini model write a short context for every chunk, at batch price (then `kb reindex
    --contexts` embeds chunks after them)."""
    with _open(ctx) as kb:
        plan = kb.enrich_estimate(model)
        if as_json:
            ui.print_json(ui.enrich_estimate_json(plan))
        else:
            ui.render_enrich_estimate(plan)
        if estimate_only:
            return
        if plan.to_write and not yes:
            if not sys.stdin.isatty():
                raise InputError("not sending context requests without confirmation: add --yes")
            if not typer.confirm("Write the contexts?", default=False):
                raise typer.Exit(1)
        space_id, queued = kb.enrich_start(model)
        if now:
            report = kb.enrich_now(model)
            ui.out().print(
                f"{report.embedded:,} contexts written online, {report.failed:,} failed, "
                f"{report.left_pending:,} left for `kb worker`"
            )
            for error in report.errors[-3:]:
                ui.err().print(f"[yellow]{ui.escape(error)}[/yellow]")
            return
    ui.out().print(
        f"space #{space_id} collects chunk contexts: {queued:,} requested; `kb worker` sends them through "
        "the Batch API and keeps each as it arrives; `kb reindex --contexts` then embeds chunks after them"
    )


@app.command()
def status(
    ctx: typer.Context,
    as_json: Annotated[bool, typer.Option("--json", help="Print machine-readable JSON.")] = False,
    prometheus: Annotated[
        bool, typer.Option("--prometheus", help="Print metrics in the Prometheus text format.")
    ] = False,
    watch: Annotated[bool, typer.Option("--watch", help="Refresh every 2 seconds until Ctrl-C.")] = False,
) -> None:
    """Show documents, tasks per space, jobs in flight, warnings, errors, spend, and the worker."""
    from kb import readonly
    from kb.cli import statusview

    settings: KbSettings = ctx.obj
    _require_existing(settings)
    report = None if watch else readonly.status(settings)
    if report is not None:
        _hint(settings.legacy_hint(readonly.active_model(settings)))
    else:
        with _open(ctx) as kb:
            if watch:
                ui.watch(kb.status)
                return
            report = kb.status()
    if as_json:
        ui.print_json(views.status_json(report))
    elif prometheus:
        ui.out().out(views.prometheus(report), end="")
    else:
        statusview.render(report, ui.out())


@app.command("serve")
def serve_command(
    ctx: typer.Context,
    host: Annotated[
        str, typer.Option("--host", help="Address to listen on (beyond this machine: set KB_SERVE_TOKEN).")
    ] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", min=0, max=65535, help="Port to listen on.")] = 8000,
) -> None:
    """Answer searches over HTTP from a warm index: JSON API, search page, MCP. Read-only."""
    from kb.serve import require

    require("fastapi", "uvicorn", "mcp")
    from kb.serve import guard, http

    settings: KbSettings = ctx.obj
    guard.check_exposure(host, settings.serve_token)  # before a database is opened, or created
    ui.configure_logging("text")
    with _open(ctx, announce=True) as kb:
        ui.err().print(
            f"[dim]kb: serving {ui.escape(kb.location)}: the search page at /, the API at /search and "
            "/status (described at /docs), MCP at /mcp[/dim]",
            soft_wrap=True,
        )
        with _signal_ends_quietly():
            http.server(kb, settings, host, port).run()


@contextmanager
def _signal_ends_quietly() -> Iterator[None]:
    """uvicorn stops gracefully on SIGINT or SIGTERM, then raises the signal again for the handler it found:
    the default one would kill the process (SIGTERM) or interrupt it (SIGINT) before the knowledge base is
    closed. With this one in place the re-raised signal does nothing, and the command ends normally."""
    previous = {signum: signal.signal(signum, lambda *_: None) for signum in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


@app.command("mcp")
def mcp_command(ctx: typer.Context) -> None:
    """Answer an MCP client (Claude Desktop, an IDE) on stdin/stdout: search and status. Read-only."""
    from kb.serve import require

    require("mcp")
    from kb.serve import mcp

    ui.configure_logging("text")  # stderr: stdout carries the protocol
    if sys.stdin.isatty():
        ui.err().print("kb mcp speaks MCP on stdin and stdout, for an MCP client to start it; Ctrl-C to stop")
    with _open(ctx, announce=True) as kb:
        mcp.serve_stdio(kb)


@app.command()
def doctor(
    ctx: typer.Context,
    live: Annotated[
        bool, typer.Option("--live", help="Also run the smallest real round trip with the configured key.")
    ] = False,
    wait: Annotated[
        float, typer.Option("--wait", min=0, help="With --live: wait this long for the test batch job.")
    ] = 300.0,
    job: Annotated[
        str | None, typer.Option("--job", help="With --live: finish checking this pending test batch job.")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print machine-readable JSON.")] = False,
) -> None:
    """Check this machine and configuration; with --live, a real round trip (well under $0.001)."""
    from kb.report import doctor as checkup

    report = checkup.DoctorReport()
    checkup.offline(ctx.obj, report)
    if live or job:
        checkup.live(ctx.obj, report, wait, job)
    if as_json:
        ui.print_json(checkup.to_json(report))
    else:
        ui.render_doctor(report)
    if not report.ok:
        raise typer.Exit(report.exit_code)


@app.command("migrate-db")
def migrate_db(
    ctx: typer.Context,
    to: Annotated[str, typer.Option("--to", help="The target: a postgresql:// URL or a SQLite file.")],
) -> None:
    """Copy this knowledge base to another database (e.g. PostgreSQL) without re-embedding anything."""
    from kb.lifecycle.transfer import copy_database
    from kb.store.engine import create_engine, safe_url

    settings: KbSettings = ctx.obj
    with _open(ctx) as kb:
        target = create_engine(to, busy_timeout_ms=settings.busy_timeout_ms)
        try:
            report = copy_database(kb.engine, target)
        finally:
            target.dispose()
    rows = ", ".join(f"{n:,} {name}" for name, n in report.rows.items() if n)
    ui.out().print(f"copied to {safe_url(to)}: {rows}")
    vectors = sum(report.vectors.values())
    ui.out().print(f"  {vectors:,} vectors in {len(report.vectors)} spaces; nothing was embedded again")


@db_app.command("upgrade")
def db_upgrade(ctx: typer.Context) -> None:
    """Apply pending schema migrations (kb also does this on open)."""
    from kb.store import migrate

    with _open(ctx, create=True) as kb:
        ui.out().print(f"{kb.location}: schema at {migrate.current_revision(kb.engine)} (head)")


@db_app.command("current")
def db_current(ctx: typer.Context) -> None:
    """Show the database's schema revision and the newest one kb knows."""
    from kb.store import migrate
    from kb.store.engine import create_engine, safe_url

    settings: KbSettings = ctx.obj
    location = safe_url(settings.database)
    if not settings.database_url and not settings.db.exists():
        ui.out().print(f"{location}: no database yet (head {migrate.head_revision()})")
        return
    engine = create_engine(settings.database, busy_timeout_ms=settings.busy_timeout_ms)
    try:
        current = migrate.current_revision(engine)
    finally:
        engine.dispose()
    head = migrate.head_revision()
    if current == head:
        state = "up to date"
    elif current is not None and current not in migrate.REVISIONS:
        state = "written by a newer kb: upgrade kb to use it"
    else:
        state = "behind: run `kb db upgrade`"
    ui.out().print(f"{location}: {current or 'empty'} (head {head}; {state})")


class _CommandsOnDemand(MutableMapping[str, Any]):
    """A group's commands by name, each built by Typer (its parameters read from its signature) when first
    looked up: `kb search` then builds `search` alone, `kb --help` all of them."""

    def __init__(self, group: typer.Typer) -> None:
        short, markup = group.pretty_exceptions_short, group.rich_markup_mode
        self._makers: dict[str, Callable[[], Any]] = {}
        for info in group.registered_commands:
            name = info.name or typer.main.get_command_name(info.callback.__name__)  # type: ignore[union-attr]
            self._makers[name] = partial(
                typer.main.get_command_from_info, info, pretty_exceptions_short=short, rich_markup_mode=markup
            )
        for group_info in group.registered_groups:
            name = typer.main.solve_typer_info_defaults(group_info).name or ""
            self._makers[name] = partial(
                typer.main.get_group_from_info,
                group_info,
                pretty_exceptions_short=short,
                rich_markup_mode=markup,
                suggest_commands=group.suggest_commands,
            )
        self.built: dict[str, Any] = {}

    def __getitem__(self, name: str) -> Any:
        if name not in self.built:
            self.built[name] = self._makers[name]()
        return self.built[name]

    def __setitem__(self, name: str, command: Any) -> None:
        self._makers[name] = lambda: command
        self.built[name] = command

    def __delitem__(self, name: str) -> None:
        del self._makers[name]
        self.built.pop(name, None)

    def __iter__(self) -> Iterator[str]:
        return iter(self._makers)  # in the order they were defined, as Typer lists them

    def __len__(self) -> int:
        return len(self._makers)


def command_line() -> Any:
    """The `kb` group as `typer.main.get_command(app)` builds it (the global options, help and settings),
    but with its commands built on demand: only the one a command line runs."""
    options_only = copy.copy(app)
    options_only.registered_commands = []
    options_only.registered_groups = []
    root = typer.main.get_command(options_only)
    root.commands = _CommandsOnDemand(app)  # type: ignore[attr-defined]
    return root


def main() -> None:
    try:
        with _closed_pipe_ends():
            try:
                command_line()()
            finally:
                sys.stdout.flush()  # JSON is written unflushed: a closed pipe shows here, where it is caught
    except typer.Exit as exit_:
        sys.exit(exit_.exit_code)
