"""Rendering for the CLI: Rich on stderr for people, plain text or JSON on stdout for data."""

import json
import logging
import re
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict
from typing import TYPE_CHECKING, Any

from kb.cli import statusview, terminal
from kb.cli.statusview import age
from kb.core.shares import percent
from kb.records import FailedText, IngestReport, JobInfo, SearchResult
from kb.report.views import display_path, pages_label

if TYPE_CHECKING:  # the types only: importing their modules would load the database layer
    from rich.console import Console

    from kb.core.watching import Burst
    from kb.embed.online import OnlineReport
    from kb.embed.worker import WorkerResult
    from kb.lifecycle import enrich
    from kb.lifecycle.reindex import Estimate, ReindexStatus
    from kb.search.evaluation import ModeScore
    from kb.settings import KbSettings
    from kb.store.usage import Quote

ProgressCallback = Callable[[int, int], None]

_consoles: dict[str, "Console"] = {}


def out() -> "Console":
    """The Rich console on stdout (data), made on first use: a command that prints only JSON never loads
    Rich."""
    if "out" not in _consoles:
        from rich.console import Console

        _consoles["out"] = Console(highlight=False, soft_wrap=True)
    return _consoles["out"]


def err() -> "Console":
    """The Rich console on stderr (messages, progress, logs), made on first use."""
    if "err" not in _consoles:
        from rich.console import Console

        _consoles["err"] = Console(stderr=True, highlight=False)
    return _consoles["err"]


def escape(text: str, keep: str = "") -> str:
    """Text shown as is by Rich: markup escaped, control characters made visible (kb.cli.terminal)."""
    return terminal.escape(text, keep)


@contextmanager
def progress(label: str) -> Iterator[ProgressCallback]:
    """A progress bar on a terminal's stderr; silent when stderr is not a terminal."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    bar = Progress(
        TextColumn(f"[bold]{escape(label)}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
        console=err(),
        transient=True,
        disable=not err().is_terminal,
    )
    task = bar.add_task(label, total=None)

    def advance(done: int, total: int) -> None:
        bar.update(task, completed=done, total=total)

    with bar:
        yield advance


def print_json(data: Any) -> None:
    sys.stdout.write(json.dumps(data, indent=2, default=str) + "\n")


def ingest_json(
    report: IngestReport, embedded: "OnlineReport | None" = None, quote: "Quote | None" = None
) -> dict[str, Any]:
    return {
        "cost": None if quote is None else asdict(quote),
        "embedded_now": None if embedded is None else asdict(embedded),
        **report.counts(),
        "dry_run": report.dry_run,
        "chunks_written": report.chunks_written,
        "tasks_queued": report.tasks_queued,
        "tokens_queued": report.tokens_queued,
        "missing": len(report.missing),
        "files": {
            "added": _shown(report.added),
            "changed": _shown(report.changed),
            "unchanged": _shown(report.unchanged),
            "removed": _shown(report.removed),
            "missing": _shown(report.missing),
            "skipped": [{**asdict(s), "path": display_path(s.path)} for s in report.skipped],
        },
    }


def _shown(paths: list[str]) -> list[str]:
    """Paths as every other output shows them: relative under the working folder, else absolute."""
    return [display_path(path) for path in paths]


def failed_json(item: FailedText) -> dict[str, Any]:
    return {**asdict(item), "documents": _shown(item.documents)}


def render_ingest(
    report: IngestReport, embedded: "OnlineReport | None" = None, quote: "Quote | None" = None
) -> None:
    counts = report.counts()
    files = sum(counts[k] for k in ("added", "changed", "unchanged", "skipped"))
    verb = "Would ingest" if report.dry_run else "Ingested"
    out().print(
        f"{verb} {files:,} file{'s' * (files != 1)}: "
        + ", ".join(f"{n:,} {name}" for name, n in counts.items())
    )
    queued = "would be queued" if report.dry_run else "queued"
    out().print(
        f"  {report.chunks_written:,} chunks {'to write' if report.dry_run else 'written'}; "
        f"{report.tasks_queued:,} new texts {queued} for embedding (~{report.tokens_queued:,} tokens)"
    )
    if quote is not None and report.tasks_queued:
        out().print(
            f"  cost with {escape(quote.model)}: {_usd(quote.usd_batch)} by batch ({quote.jobs} "
            f"job{'s' * (quote.jobs != 1)}), {_usd(quote.usd_online)} online"
        )
    if embedded is not None:
        out().print(
            f"  embedded {embedded.embedded:,} texts online now (~{embedded.tokens:,} tokens at online price)"
        )
        if embedded.left_pending:
            reason = f": {embedded.errors[-1]}" if embedded.errors else ""
            out().print(
                f"  {embedded.left_pending:,} texts left pending for the batch worker{escape(reason)}"
            )
    for path in report.removed:
        out().print(f"  removed  {escape(display_path(path))}")
    if report.missing:
        many = len(report.missing) != 1
        out().print(
            f"  {len(report.missing):,} file{'s' * many} no longer exist{'s' * (not many)} "
            f"(kept; --prune forgets {'them' if many else 'it'})"
        )
        for path in report.missing:
            out().print(f"  missing  {escape(display_path(path))}")
    for skipped in report.skipped:
        out().print(f"  skipped  {escape(display_path(skipped.path))}: {escape(skipped.reason)}")


def render_burst(burst: "Burst", report: IngestReport | None) -> None:
    """One line per burst `kb watch` ingested: what changed, and what the knowledge base made of it."""
    clock = time.strftime("%H:%M:%S")
    for root in burst.vanished:
        err().print(
            f"{clock} {escape(display_path(str(root)))} is gone: its documents are kept, and it is watched "
            "again when it comes back",
            soft_wrap=True,
        )
    for root in burst.returned:
        err().print(f"{clock} {escape(display_path(str(root)))} is back", soft_wrap=True)
    if report is None:
        return
    if burst.catching_up:
        folders = len(burst.roots)
        what = f"watching {folders} folder{'s' * (folders != 1)}"
    else:
        what = f"{burst.events:,} change{'s' * (burst.events != 1)}"
    counts = {name: n for name, n in report.counts().items() if n}
    if report.missing:
        counts["missing (kept; --prune forgets)"] = len(report.missing)
    found = ", ".join(f"{n:,} {name}" for name, n in counts.items())
    out().print(
        f"{clock} {what}: {found}; {report.chunks_written:,} chunks written, "
        f"{report.tasks_queued:,} new texts queued",
        soft_wrap=True,
    )
    for path in report.removed:
        out().print(f"  removed  {escape(display_path(path))}", soft_wrap=True)
    for skipped in report.skipped:
        out().print(
            f"  skipped  {escape(display_path(skipped.path))}: {escape(skipped.reason)}", soft_wrap=True
        )


SNIPPET_CHARS = 320


_FENCE = re.compile(r" {0,3}(```|~~~)")
_ATX_HEADING = re.compile(r" {0,3}#{1,6}(?:[ \t]+|$)(.*?)(?:[ \t]+#+)?[ \t]*$")


def without_heading_marks(text: str) -> str:
    """Markdown's "## Heading" lines shown as "Heading" (a code block's lines as written): hit text read
    in a terminal or a pipe, where rich's Markdown would reflow it."""
    lines, fenced = [], False
    for line in text.split("\n"):
        if _FENCE.match(line):
            fenced = not fenced
        heading = None if fenced else _ATX_HEADING.fullmatch(line)
        lines.append(heading.group(1) if heading else line)
    return "\n".join(lines)


def render_search(result: SearchResult) -> None:
    """Hits for a person: on a terminal a snippet of each, piped the whole chunk text."""
    if not result.hits:
        out().print(f"No results for {escape(repr(result.query))}.")
        return
    for hit in result.hits:
        pages = pages_label(hit.page_start, hit.page_end)
        where = escape(display_path(hit.path)) + (f", {pages}" if pages else "")
        where += f": {escape(hit.heading)}" if hit.heading else ""
        out().print(f"[bold]{hit.rank:>2}.[/bold] [dim]{hit.score:.4f}[/dim]  [cyan]{where}[/cyan]")
        body = without_heading_marks(hit.text)
        if out().is_terminal and len(body) > SNIPPET_CHARS:
            body = body[:SNIPPET_CHARS].rsplit(" ", 1)[0] + " …"
        out().print("    " + escape(body, keep="\n\t").replace("\n", "\n    "))
        out().print()


class _JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        return json.dumps(
            {
                "time": round(record.created, 3),
                "level": record.levelname.lower(),
                "logger": record.name,
                "message": record.getMessage(),
            }
        )


class _VisibleFormatter(logging.Formatter):
    """Log lines for people: a file name's control characters shown, not obeyed (kb.cli.terminal)."""

    def format(self, record: logging.LogRecord) -> str:
        return terminal.visible(super().format(record))


def configure_logging(log_format: str) -> None:
    """kb's logs on stderr: readable lines, or one JSON object per line."""
    handler: logging.Handler
    if log_format == "json":
        handler = logging.StreamHandler()
        handler.setFormatter(_JsonFormatter())
    elif err().is_terminal:
        # Through Rich's console, so that log lines and a progress bar share the terminal cleanly.
        from rich.logging import RichHandler

        handler = RichHandler(console=err(), show_path=False, markup=False, log_time_format="%H:%M:%S")
        handler.setFormatter(_VisibleFormatter("%(message)s"))
    else:
        handler = logging.StreamHandler()
        handler.setFormatter(_VisibleFormatter("%(asctime)s %(levelname)-7s %(message)s", "%H:%M:%S"))
    root = logging.getLogger("kb")
    root.handlers[:] = [handler]
    root.setLevel(logging.INFO)
    root.propagate = False


@contextmanager
def stop_on_signals(
    stop: threading.Event, announce: str = "stopping after the remote call in flight"
) -> Iterator[None]:
    """SIGINT and SIGTERM ask the work to stop after the remote call in flight, whose result is recorded
    (a second SIGINT interrupts at once; the ledger makes that safe too)."""
    previous = {}

    def request_stop(signum: int, _frame: object) -> None:
        if stop.is_set() and signum == signal.SIGINT:
            raise KeyboardInterrupt
        err().print(f"{announce} (Ctrl-C again to interrupt)")
        stop.set()

    for signum in (signal.SIGINT, signal.SIGTERM):
        previous[signum] = signal.signal(signum, request_stop)
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def render_worker(result: "WorkerResult") -> None:
    out().print(
        f"worker {result.reason.value}: {result.jobs_submitted} jobs submitted, "
        f"{result.jobs_applied} applied, {result.embedded:,} texts embedded by batch, "
        f"{result.embedded_online:,} online, {result.failed:,} failed"
    )
    for error in result.errors[-5:]:
        err().print(f"[yellow]error:[/yellow] {escape(error)}")
    left = result.left
    if left is not None and not left.nothing:
        parts = [
            f"{left.jobs_in_flight:,} batch job{'s' * (left.jobs_in_flight != 1)} in flight",
            f"{left.jobs_not_submitted:,} recorded but not yet submitted",
            f"{left.pending_texts:,} text{'s' * (left.pending_texts != 1)} pending",
        ]
        err().print(f"left for the next `kb worker`: {', '.join(parts)} (nothing is lost)")


def render_jobs(jobs: list[JobInfo]) -> None:
    if not jobs:
        out().print("No batch jobs yet.")
        return
    now = time.time()
    for job in jobs:
        deadline = "" if job.deadline_at is None else f"  deadline in {age(max(0, job.deadline_at - now))}"
        live = job.state not in ("applied", "failed", "expired", "cancelled")
        out().print(
            f"#{job.id:<5} {job.state:<10} {job.texts:>6,} texts  age {age(now - job.created_at):>6}"
            f"{deadline if live else ''}  {escape(job.remote_name or '(not submitted)')}"
            f"{'  by ' + escape(job.worker) if job.worker else ''}"
        )
        if job.error:
            out().print(f"       {escape(job.error)}")


def render_errors(items: list[FailedText]) -> None:
    if not items:
        out().print("No failed texts.")
        return
    for item in items:
        out().print(
            f"task {item.task_id} (space #{item.space_id}, {item.attempts} attempts): "
            f"{escape(item.error or '?')}"
        )
        for path in item.documents[:3]:
            out().print(f"    {escape(display_path(path))}")


def announce_provider(settings: "KbSettings") -> None:
    """Say once, on stderr, which embedding provider is in force and why."""
    if settings.resolved_provider() == "local":
        why = "KB_PROVIDER=local" if settings.provider == "local" else "no Gemini API key is set"
        err().print(f"[dim]kb: local embeddings (wordllama, offline, free) because {why}[/dim]")
    else:
        err().print(
            f"[dim]kb: Gemini embeddings ({escape(settings.embedding_model)}, "
            f"{settings.embedding_dimensions} dims)[/dim]"
        )


def announce_space(result: SearchResult, settings: "KbSettings") -> None:
    """Say, on stderr, which space's vectors answered: the database's, whatever the settings choose."""
    if result.space_label is None:
        return  # full text only: the notes say why
    err().print(f"[dim]kb: searched {escape(result.space_label)}[/dim]", soft_wrap=True)
    configured = settings.resolved_provider()
    if result.space_provider and result.space_provider != configured:
        flag = f"--provider {configured}" if settings.provider else f"the {configured} provider"
        err().print(
            f"[dim]kb: {escape(flag)} applies when a space is created; `kb reindex` moves this knowledge "
            "base to another[/dim]",
            soft_wrap=True,
        )


def render_doctor(report: Any) -> None:
    """One line per check: a mark, the step, what was found, its time and cost."""
    marks = {True: "[green]ok[/green]  ", False: "[red]FAIL[/red]", None: "[dim]--[/dim]  "}
    width = max((len(check.step) for check in report.checks), default=0)
    for check in report.checks:
        extra = []
        if check.seconds is not None:
            extra.append(f"{check.seconds:.2f} s")
        if check.usd is not None:
            extra.append(f"${check.usd:.6f}")
        suffix = f"  [dim]({', '.join(extra)})[/dim]" if extra else ""
        out().print(
            f"{marks[check.ok]} {check.step.ljust(width)}  {escape(check.detail)}{suffix}", soft_wrap=True
        )
    verdict = "all checks passed" if report.ok else "some checks failed"
    cost = f"; spent ${report.usd:.6f}" if report.usd else ""
    out().print(f"{verdict}{cost}")


def _usd(value: float | None) -> str:
    return "unknown" if value is None else f"${value:,.2f}"


def estimate_json(plan: "Estimate") -> dict[str, Any]:
    return {
        "provider": plan.spec.provider,
        "model": plan.spec.model,
        "dimensions": plan.spec.dimensions,
        "texts": plan.texts,
        "already_embedded": plan.already_embedded,
        "tokens": plan.tokens,
        "tokens_calibrated": plan.tokens_calibrated,
        "usd_batch": plan.usd_batch,
        "usd_online": plan.usd_online,
        "jobs": plan.jobs,
    }


def render_estimate(plan: "Estimate") -> None:
    how = "counted by the model on a sample" if plan.tokens_calibrated else "estimated"
    headers = {
        "headed": "with chunk headers",
        "situated": "after the chunk contexts kb enrich writes",
    }.get(plan.spec.chunk_input, "chunk text only")
    out().print(f"Reindex to {escape(plan.spec.model)} at {plan.spec.dimensions} dimensions, {headers}:")
    out().print(
        f"  texts to embed   {plan.texts:,} ({plan.already_embedded:,} already embedded there cost nothing)"
    )
    out().print(f"  tokens           {plan.tokens:,} ({how})")
    out().print(f"  cost, batch      {_usd(plan.usd_batch)}   (what kb pays: the worker uses the Batch API)")
    out().print(f"  cost, online     {_usd(plan.usd_online)}   (the same at online prices)")
    out().print(f"  batch jobs       {plan.jobs:,}")


def enrich_estimate_json(plan: "enrich.Estimate") -> dict[str, Any]:
    return {**asdict(plan), "window_share": round(plan.window_share, 4)}


def render_enrich_estimate(plan: "enrich.Estimate") -> None:
    from kb.core.contexts import OUTPUT_ESTIMATE  # here: the chunker it loads costs every command ~10 ms

    out().print(
        f"Chunk contexts by {escape(plan.model)}, each request {plan.window_tokens:,} tokens of its document:"
    )
    out().print(
        f"  contexts to write {plan.to_write:,} of {plan.chunks:,} "
        f"({plan.already_written:,} written already cost nothing)"
    )
    how = "estimated, scaled by the bills so far" if plan.calibrated else "estimated"
    out().print(
        f"  tokens in         {plan.input_tokens:,} ({how}; whole documents would be "
        f"{plan.whole_document_tokens:,}: {percent(plan.window_share, 0)} of that is sent)"
    )
    calibrated = plan.calibrated and plan.to_write
    per_context = plan.output_tokens // plan.to_write if calibrated else OUTPUT_ESTIMATE
    out().print(f"  tokens out        {plan.output_tokens:,} ({how}, about {per_context} a context)")
    out().print(f"  cost, batch       {_usd(plan.usd_batch)}   (what kb pays: the worker uses the Batch API)")
    out().print(f"  cost, online      {_usd(plan.usd_online)}   (the same at online prices)")
    out().print(f"  batch jobs        {plan.jobs:,}")
    if plan.shut_down:
        out().print(f"  [yellow]{escape(plan.model)} shuts down on {plan.shut_down}[/yellow]")


def reindex_status_json(report: "ReindexStatus") -> dict[str, Any]:
    return {**asdict(report), "coverage": round(report.coverage, 6), "complete": report.complete}


def render_reindex_status(report: "ReindexStatus | None") -> None:
    if report is None:
        out().print("No reindex in progress.")
        return
    eta = "unknown" if report.eta_s is None else age(report.eta_s)
    done = f"{report.embedded:,} / {report.total:,} texts embedded ({percent(report.coverage, 1)})"
    out().print(f"{escape(report.label)}: {done}")
    out().print(
        f"  pending {report.pending:,} · submitted {report.submitted:,} · failed {report.failed:,} · "
        f"jobs in flight {report.jobs_in_flight} · ETA {eta}"
    )
    if report.previous:
        out().print(f"  search still uses {escape(report.previous)} until this one is complete")


def watch(read: Callable[[], Any], every_s: float = 2.0) -> None:
    """Redraw the status every `every_s` seconds until Ctrl-C."""
    try:
        while True:
            report = read()
            out().clear()
            statusview.render(report, out())
            out().print(f"[dim]refreshing every {every_s:.0f}s; Ctrl-C to stop[/dim]")
            time.sleep(every_s)
    except KeyboardInterrupt:
        return


def eval_json(scores: "list[ModeScore]") -> dict[str, Any]:
    return {
        "modes": {
            score.mode.value: {
                "recall_at_1": score.recall_at(1),
                "recall_at_5": score.recall_at(5),
                "recall_at_10": score.recall_at(10),
                "mrr": score.mrr,
                "ndcg_at_10": score.ndcg,
                "questions": score.queries,
                "fell_back": score.fell_back,
                "ranks": [{"q": o.question, "ranks": list(o.ranks), "best": o.best} for o in score.outcomes],
            }
            for score in scores
        }
    }


_EVAL_METRICS: "tuple[tuple[str, Callable[[ModeScore], float]], ...]" = (
    ("@1", lambda s: s.recall_at(1)),
    ("@5", lambda s: s.recall_at(5)),
    ("@10", lambda s: s.recall_at(10)),
    ("MRR", lambda s: s.mrr),
    ("nDCG@10", lambda s: s.ndcg),
)


def eval_comparison_json(
    ours: "list[ModeScore]", theirs: "list[ModeScore]", names: tuple[str, str]
) -> dict[str, Any]:
    delta = {
        a.mode.value: {
            key: round(value(b) - value(a), 6)
            for key, value in zip(
                ("recall_at_1", "recall_at_5", "recall_at_10", "mrr", "ndcg_at_10"),
                (m for _, m in _EVAL_METRICS),
                strict=True,
            )
        }
        for a, b in zip(ours, theirs, strict=True)
    }
    return {
        "base": {"name": names[0], **eval_json(ours)},
        "against": {"name": names[1], **eval_json(theirs)},
        "delta": delta,
    }


def render_eval_comparison(
    ours: "list[ModeScore]", theirs: "list[ModeScore]", names: tuple[str, str]
) -> None:
    """Each metric of the base, of the other configuration, and the change (other minus base)."""
    from rich.table import Table

    out().print(f"A: {escape(names[0])}\nB: {escape(names[1])}")
    table = Table(box=None)
    table.add_column("mode")
    for column, _ in _EVAL_METRICS:
        table.add_column(f"{column} A / B (Δ)", justify="right")
    for a, b in zip(ours, theirs, strict=True):
        cells = []
        for _, value in _EVAL_METRICS:
            change = value(b) - value(a)
            colour = "green" if change > 1e-9 else "red" if change < -1e-9 else "dim"
            cells.append(f"{value(a):.2f} / {value(b):.2f} ([{colour}]{change:+.2f}[/{colour}])")
        table.add_row(a.mode.value, *cells)
    out().print(table)
    for a, b in zip(ours, theirs, strict=True):
        fell = [f"{name}: {s.fell_back}" for name, s in (("A", a), ("B", b)) if s.fell_back]
        if fell:
            out().print(f"{a.mode.value}: fell back to full text for some questions ({', '.join(fell)})")


def render_eval(scores: "list[ModeScore]") -> None:
    from rich.table import Table

    table = Table(box=None)
    for column in ("mode", "@1", "@5", "@10", "MRR", "nDCG@10", "fell back"):
        table.add_column(column, justify="left" if column == "mode" else "right")
    for score in scores:
        table.add_row(
            score.mode.value,
            *(f"{value:.2f}" for value in (score.recall_at(1), score.recall_at(5), score.recall_at(10))),
            f"{score.mrr:.3f}",
            f"{score.ndcg:.3f}",
            str(score.fell_back),
        )
    out().print(table)
    for score in scores:
        for outcome in score.failed_at(5)[:5]:
            best = "not in the top files" if outcome.best is None else f"best rank {outcome.best}"
            out().print(f"{score.mode.value}: missed @5 ({best}): {escape(outcome.question)}", soft_wrap=True)
