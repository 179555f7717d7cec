"""Rendering for the CLI: Rich on stderr for people, plain text or JSON on stdout for data."""

import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.markup import escape as escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from kb.ingest import ProgressCallback
from kb.records import IngestReport, StatusReport

stderr = Console(stderr=True, highlight=False)
stdout = Console(highlight=False, soft_wrap=True)


def display_path(path: str) -> str:
    """A stored absolute path shown relative to the working folder when it lies inside it."""
    try:
        return (
            os.path.relpath(path)
            if Path(path).is_absolute() and not os.path.relpath(path).startswith("..")
            else path
        )
    except ValueError:  # another drive on Windows
        return path


@contextmanager
def progress(label: str) -> Iterator[ProgressCallback]:
    """A progress bar on a terminal's stderr; silent when stderr is not a terminal."""
    bar = Progress(
        TextColumn(f"[bold]{escape(label)}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
        console=stderr,
        transient=True,
        disable=not stderr.is_terminal,
    )
    task = bar.add_task(label, total=None)

    def advance(done: int, total: int) -> None:
        bar.update(task, completed=done, total=total)

    with bar:
        yield advance


def print_json(data: Any) -> None:
    stdout.out(json.dumps(data, indent=2, default=str), highlight=False)


def ingest_json(report: IngestReport) -> dict[str, Any]:
    return {
        **report.counts(),
        "dry_run": report.dry_run,
        "chunks_written": report.chunks_written,
        "tasks_queued": report.tasks_queued,
        "tokens_queued": report.tokens_queued,
        "files": {
            "added": report.added,
            "changed": report.changed,
            "unchanged": report.unchanged,
            "removed": report.removed,
            "skipped": [asdict(s) for s in report.skipped],
        },
    }


def render_ingest(report: IngestReport) -> None:
    counts = report.counts()
    files = sum(counts[k] for k in ("added", "changed", "unchanged", "skipped"))
    verb = "Would ingest" if report.dry_run else "Ingested"
    stdout.print(
        f"{verb} {files:,} file{'s' * (files != 1)}: "
        + ", ".join(f"{n:,} {name}" for name, n in counts.items())
    )
    queued = "would be queued" if report.dry_run else "queued"
    stdout.print(
        f"  {report.chunks_written:,} chunks {'to write' if report.dry_run else 'written'}; "
        f"{report.tasks_queued:,} new texts {queued} for embedding (~{report.tokens_queued:,} tokens)"
    )
    for path in report.removed:
        stdout.print(f"  removed  {escape(display_path(path))}")
    for skipped in report.skipped:
        stdout.print(f"  skipped  {escape(display_path(skipped.path))}: {escape(skipped.reason)}")


def status_json(report: StatusReport) -> dict[str, Any]:
    return {
        "database": str(report.database),
        "revision": report.revision,
        "documents": report.documents,
        "chunks": report.chunks,
        "tasks": report.tasks,
        "chunk_statuses": report.chunk_statuses,
        "spaces": [asdict(space) for space in report.spaces],
    }


def render_status(report: StatusReport) -> None:
    stdout.print(f"Database   {escape(str(report.database))} (schema {report.revision or 'none'})")
    stdout.print(f"Documents  {report.documents:,}")
    breakdown = " · ".join(f"{name} {n:,}" for name, n in report.chunk_statuses.items())
    stdout.print(f"Chunks     {report.chunks:,}  ({breakdown})")
    if not report.spaces:
        stdout.print("Spaces     none yet: `kb ingest PATH` creates one")
        return
    stdout.print("Spaces")
    for space in report.spaces:
        tasks = " · ".join(f"{name} {n:,}" for name, n in space.tasks.items())
        stdout.print(
            f"  #{space.id} {escape(space.provider)}/{escape(space.model)} {space.dimensions}d "
            f"{escape(f'[{space.state}]')}  texts: {tasks}"
        )
