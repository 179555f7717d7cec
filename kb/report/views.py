"""What kb answers to programs: the JSON of `kb search --json` and `kb status --json`, and the Prometheus
metrics, shared by the command line and the HTTP and MCP servers so that every door says the same thing."""

import os
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING

from kb.core.questions import MAX_QUERY_CHARS
from kb.records import SearchResult, StatusReport

if TYPE_CHECKING:  # their module costs a command's start-up a little; only the servers need it at run time
    from kb.report.shapes import SearchHitJson, StatusJson

# What a search's parameters mean, said once for `kb search`, `GET /search` and the MCP `search` tool.
MAX_HITS = 1000
QUERY_HELP = f"The question or words to look for (at most {MAX_QUERY_CHARS:,} characters)."
K_HELP = f"How many chunks to return (1 to {MAX_HITS})."
MODE_HELP = "hybrid (vectors + full text), vector, or text."
PATH_HELP = "Only documents whose path matches this glob, e.g. 'tutorial/*'."
PER_DOCUMENT_HELP = "At most this many chunks of one document (0: no limit; default KB_HITS_PER_DOCUMENT, 2)."
WHERE_HELP = (
    "Only documents whose metadata matches (repeatable, all must hold): key=value (on a list: contains), "
    "key!=value, key>=value, key<=value, key>value, key<value (dates and numbers compare as such), "
    "key=a,b (any of), or key alone (present)."
)
META_HELP = "Metadata for every document of this run, key=value (repeatable); a file's own wins."
SPACE_HELP = "Search this embedding space (id from `kb status`) instead of the active one."


def display_path(path: str) -> str:
    """A stored absolute path shown relative to the working folder when it lies inside it."""
    try:
        relative = os.path.relpath(path) if Path(path).is_absolute() else path
    except ValueError:  # another drive on Windows
        return path
    return path if relative.startswith("..") else relative


def pages_label(page_start: int | None, page_end: int | None) -> str:
    """ "page 2", "pages 2-3", or "" for a chunk of a document without pages."""
    if page_start is None:
        return ""
    if page_end is None or page_end == page_start:
        return f"page {page_start}"
    return f"pages {page_start}-{page_end}"


def search_json(result: SearchResult) -> list["SearchHitJson"]:
    return [
        {
            "rank": hit.rank,
            "score": round(hit.score, 6),
            "path": display_path(hit.path),
            "title": hit.title,
            "heading": hit.heading,
            "text": hit.text,
            "chunk_id": hit.chunk_id,
            "chunk_ids": list(hit.chunk_ids),
            "start": hit.start,
            "end": hit.end,
            "page_start": hit.page_start,
            "page_end": hit.page_end,
            "text_rank": hit.text_rank,
            "vector_rank": hit.vector_rank,
            "context": hit.context,
            "metadata": hit.metadata,
        }
        for hit in result.hits
    ]


def status_json(report: StatusReport) -> "StatusJson":
    """Stable keys, documented in docs/status.md."""
    spend = report.spend
    return {
        "database": str(report.database),
        "revision": report.revision,
        "documents": report.documents,
        "chunks": report.chunks,
        "tasks": report.tasks,
        "chunk_statuses": report.chunk_statuses,
        "spaces": [asdict(space) for space in report.spaces],
        "jobs": [asdict(job) for job in report.jobs],
        "warnings": report.warnings,
        "recent_errors": report.recent_errors,
        "spend": None if spend is None else asdict(spend),
        "worker": None if report.worker is None else asdict(report.worker),
        "workers": [asdict(worker) for worker in report.workers],
        "budget_block": report.budget_block,
    }


def prometheus(report: StatusReport) -> str:
    """Counters and gauges in the Prometheus text exposition format."""
    lines = [
        "# HELP kb_documents Documents stored.",
        "# TYPE kb_documents gauge",
        f"kb_documents {report.documents}",
        "# HELP kb_chunks Chunks stored.",
        "# TYPE kb_chunks gauge",
        f"kb_chunks {report.chunks}",
        "# HELP kb_tasks Embedding tasks by space and status.",
        "# TYPE kb_tasks gauge",
    ]
    for space in report.spaces:
        for status, count in space.tasks.items():
            lines.append(
                f'kb_tasks{{space="{space.id}",model="{space.model}",state="{space.state}",'
                f'status="{status}"}} {count}'
            )
    lines += ["# HELP kb_jobs_in_flight Batch jobs not finished.", "# TYPE kb_jobs_in_flight gauge"]
    lines.append(f"kb_jobs_in_flight {len(report.jobs)}")
    if report.spend is not None:
        spend = report.spend
        lines += [
            "# HELP kb_tokens_total Input tokens paid for.",
            "# TYPE kb_tokens_total counter",
            f"kb_tokens_total {spend.tokens}",
            "# HELP kb_spend_usd_total US dollars spent.",
            "# TYPE kb_spend_usd_total counter",
            f"kb_spend_usd_total {spend.usd:.6f}",
            "# HELP kb_spend_online_equivalent_usd_total What the same tokens would have cost online.",
            "# TYPE kb_spend_online_equivalent_usd_total counter",
            f"kb_spend_online_equivalent_usd_total {spend.usd_online_equivalent:.6f}",
        ]
    lines += [
        "# HELP kb_workers_alive Workers whose heartbeat is recent.",
        "# TYPE kb_workers_alive gauge",
        f"kb_workers_alive {sum(worker.alive for worker in report.workers)}",
    ]
    if report.worker is not None:
        lines += [
            "# HELP kb_worker_heartbeat_age_seconds Seconds since the worker's last heartbeat.",
            "# TYPE kb_worker_heartbeat_age_seconds gauge",
            f"kb_worker_heartbeat_age_seconds {report.worker.heartbeat_age_s:.1f}",
        ]
    return "\n".join(lines) + "\n"
