"""`kb status` for people (a screen under 100 columns), for programs (JSON) and for Prometheus."""

import time
from typing import TYPE_CHECKING

from kb.cli import terminal
from kb.core.shares import percent
from kb.records import SpaceSummary, StatusReport

if TYPE_CHECKING:
    from rich.console import Console


def escape(text: str) -> str:
    return terminal.escape(text)


WIDTH = 100


def age(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    if seconds < 120:
        return f"{seconds:.0f}s"
    if seconds < 7200:
        return f"{seconds / 60:.0f}m"
    if seconds < 172_800:
        return f"{seconds / 3600:.1f}h"
    return f"{seconds / 86_400:.1f}d"


def render(report: StatusReport, console: "Console") -> None:
    """The whole picture; every line fits in 100 columns."""
    console.print(f"[bold]kb[/bold]  {escape(str(report.database))}  (schema {report.revision or 'none'})")
    console.print(f"Documents {report.documents:,}   Chunks {report.chunks:,}")
    _spaces(report, console)
    _jobs(report, console)
    _spend(report, console)
    _worker(report, console)
    for warning in report.warnings:
        console.print(f"[yellow]warning:[/yellow] {escape(warning)}")
    if report.recent_errors:
        console.print("Last errors")
        for error in report.recent_errors:
            console.print(f"  {escape(error[: WIDTH - 4])}")


def _spaces(report: StatusReport, console: "Console") -> None:
    if not report.spaces:
        console.print("Spaces: none yet (`kb ingest PATH` creates one)")
        return
    from rich.table import Table

    table = Table(title="Embedding spaces (texts by status)", title_justify="left", box=None, width=WIDTH)
    for column in ("space", "model", "state", "pending", "submitted", "embedded", "failed", "oldest"):
        table.add_column(column, justify="right" if column not in ("space", "model", "state") else "left")
    for space in report.spaces:
        counts = space.tasks
        table.add_row(
            f"#{space.id}",
            escape(_model_cell(space)[:34]),
            f"{space.state} {percent(space.coverage)}",
            f"{counts['pending']:,}",
            f"{counts['submitted']:,}",
            f"{counts['embedded']:,}",
            f"{counts['failed']:,}",
            age(space.oldest_pending_age_s),
        )
    console.print(table)


def _jobs(report: StatusReport, console: "Console") -> None:
    if not report.jobs:
        console.print("Jobs in flight: none")
        return
    now = time.time()
    from rich.table import Table

    table = Table(title="Jobs in flight", title_justify="left", box=None, width=WIDTH)
    for column in ("job", "state", "texts", "age", "deadline in", "remote"):
        table.add_column(column)
    for job in report.jobs:
        deadline = None if job.deadline_at is None else max(0.0, job.deadline_at - now)
        table.add_row(
            f"#{job.id}",
            job.state,
            f"{job.texts:,}",
            age(now - job.created_at),
            age(deadline),
            escape((job.remote_name or "(not submitted)")[:44]),
        )
    console.print(table)


def _spend(report: StatusReport, console: "Console") -> None:
    spend = report.spend
    if spend is None:
        return
    console.print(
        f"Spend   {spend.tokens:,} tokens · ${spend.usd:,.4f} paid · "
        f"${spend.usd_online_equivalent:,.4f} at online prices · [green]${spend.saved_usd:,.4f} saved[/green]"
    )
    measured = percent(spend.tokens_measured / spend.tokens) if spend.tokens else "-"
    console.print(
        f"        last 24 h: ${spend.last_24h_usd:,.4f} · tokens counted by the service: {measured} "
        "(the rest estimated)"
    )
    lost = spend.by_kind.get("lost")
    if lost:
        console.print(
            f"        [yellow]re-paid:[/yellow] {lost.get('texts', 0):,.0f} texts (${lost['usd']:,.4f}) "
            "whose paid results the service never handed over"
        )


def _worker(report: StatusReport, console: "Console") -> None:
    """Live workers one per line; of the silent (killed) ones only the latest, or a count when others live."""
    alive = [worker for worker in report.workers if worker.alive]
    silent = [worker for worker in report.workers if not worker.alive]
    for worker in alive:
        console.print(f"Worker: alive ({escape(worker.owner)}, heartbeat {age(worker.heartbeat_age_s)} ago)")
    if silent and not alive:
        console.print(
            f"[yellow]Worker: silent[/yellow] ({escape(silent[0].owner)}, last heartbeat "
            f"{age(silent[0].heartbeat_age_s)} ago; presumed dead, its jobs are taken over)"
        )
    elif silent:
        console.print(f"        and {len(silent)} silent (presumed dead; their jobs are taken over)")
    if not report.workers:
        console.print("Worker: none running (start `kb worker`)")


_NOTES = {"text": " text only", "situated": " +contexts"}


def _model_cell(space: SpaceSummary) -> str:
    """The model and what its space holds: vectors (dimensions; what is embedded) or chunk contexts."""
    if space.chunk_input == "document":
        return f"{space.model} contexts"
    return f"{space.model} {space.dimensions}d{_NOTES.get(space.chunk_input, '')}"
