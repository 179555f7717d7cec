"""`kb status`: one picture of documents, tasks per space, live jobs, warnings, errors, spend and worker.

Built from `kb.store.readmodel` on any `Reader`: the cold command line reads a SQLite file with the bare
driver, `KnowledgeBase.status()` through SQLAlchemy.
"""

import re
import time
from dataclasses import dataclass

from kb.core.shares import percent
from kb.records import (
    JobInfo,
    Space,
    SpaceState,
    SpaceSummary,
    SpendSummary,
    StatusReport,
    TaskStatus,
    WorkerHeartbeat,
)
from kb.settings import KbSettings
from kb.store import readmodel
from kb.store.reader import Reader


@dataclass(frozen=True, slots=True)
class StatusOptions:
    stuck_after_s: float = 24 * 3600.0
    results_kept_s: float = 48 * 3600.0  # as BatchPolicy.results_kept_s: how long results can be fetched
    min_coverage: float = 0.995  # a rebuilt space below this stays building (KB_REINDEX_MIN_COVERAGE)

    @classmethod
    def from_settings(cls, settings: KbSettings) -> "StatusOptions":
        return cls(stuck_after_s=settings.stuck_after_h * 3600, min_coverage=settings.reindex_min_coverage)


def collect(
    reader: Reader, database: object, options: StatusOptions, now: float | None = None
) -> StatusReport:
    """The status as of `now` (default: this moment)."""
    now = time.time() if now is None else now
    summaries = [_space_summary(reader, space, now) for space in readmodel.spaces(reader)]
    active = next((s for s in summaries if s.state == SpaceState.ACTIVE), None)
    live = readmodel.live_jobs(reader)
    total = readmodel.spend(reader)
    today = readmodel.spend(reader, since=now - readmodel.DAY_S)
    block = readmodel.budget_block(reader)
    empty = {status.value: 0 for status in TaskStatus}
    return StatusReport(
        database=database,  # type: ignore[arg-type]
        revision=readmodel.revision(reader),
        documents=readmodel.count_documents(reader),
        chunks=readmodel.count_chunks(reader),
        tasks=active.tasks if active else empty,
        chunk_statuses=readmodel.chunk_statuses(reader, active.id) if active else empty,
        spaces=summaries,
        jobs=live,
        warnings=_warnings(live, block, now, options) + _space_warnings(summaries, now, options),
        recent_errors=[f"task {f.task_id}: {f.error}" for f in readmodel.failed(reader, 5)],
        spend=SpendSummary(
            tokens=total.tokens,
            usd=total.usd,
            usd_online_equivalent=total.usd_online_equivalent,
            saved_usd=total.saved_usd,
            last_24h_usd=today.usd,
            by_kind=total.by_kind,
            tokens_measured=total.tokens_measured,
        ),
        workers=[
            WorkerHeartbeat(
                owner=h.owner, heartbeat_age_s=max(0.0, now - h.heartbeat_at), alive=h.expires_at > now
            )
            for h in readmodel.heartbeats(reader)
        ],
        budget_block=block,
    )


def _space_summary(reader: Reader, space: Space, now: float) -> SpaceSummary:
    counts = readmodel.task_counts(reader, space.id)
    oldest = readmodel.oldest_pending(reader, space.id)
    total = sum(counts.values())
    held, reason, until = readmodel.held_back(reader, space.id, now)
    return SpaceSummary(
        id=space.id,
        provider=space.provider,
        model=space.model,
        dimensions=space.dimensions,
        state=space.state,
        tasks=counts,
        coverage=counts["embedded"] / total if total else 0.0,
        oldest_pending_age_s=None if oldest is None else max(0.0, now - oldest),
        held_back=held,
        held_back_reason=reason,
        held_back_until=until,
        chunk_input=space.chunk_input,
    )


def _warnings(live: list[JobInfo], block: str | None, now: float, options: StatusOptions) -> list[str]:
    found = [_refused(job, now, options) for job in live if job.finished_at is not None and job.error]
    for job in live:
        age = now - (job.submitted_at or job.created_at)
        if job.state in ("created", "pending", "running") and age > options.stuck_after_s:
            found.append(
                f"job #{job.id} ({job.remote_name or 'not submitted'}) is stuck: {job.state} for "
                f"{age / 3600:.1f} h (deadline cancels it)"
            )
    if block:
        found.append(f"submissions stopped: {block}")
    return found


_HTTP_CODE = re.compile(r"\bGemini API (\d{3})\b")


def _refused(job: JobInfo, now: float, options: StatusOptions) -> str:
    """A job that succeeded remotely whose results kb could not fetch yet (they are paid for)."""
    code = _HTTP_CODE.search(job.error or "")
    what = f"refused ({code.group(1)})" if code else "not downloaded"
    ended = job.finished_at or now
    left = max(0.0, ended + options.results_kept_s - now)
    return (
        f"results of job #{job.id} ({job.remote_name}) {what}, {_duration(now - ended)} after it ended "
        f"— check billing and the key's project; kept {_duration(left)} more, then its {job.texts:,} texts "
        f"are paid again. Last answer: {job.error}"
    )


def _duration(seconds: float) -> str:
    return f"{seconds / 60:.0f} min" if seconds < 7200 else f"{seconds / 3600:.1f} h"


def _space_warnings(summaries: list[SpaceSummary], now: float, options: StatusOptions) -> list[str]:
    found = []
    for space in summaries:
        name = f"space #{space.id} ({space.model})"
        if space.held_back:
            wait = max(0.0, (space.held_back_until or now) - now)
            found.append(
                f"{name}: {space.held_back:,} text{'s' * (space.held_back != 1)} held back after failed "
                f"attempts, next try in {wait / 60:.0f} min: {space.held_back_reason}"
            )
        unfinished = space.tasks.get("pending", 0) + space.tasks.get("submitted", 0)
        if space.state == SpaceState.BUILDING and not unfinished and space.coverage < options.min_coverage:
            found.append(
                f"{name} is not switched to: only {percent(space.coverage, 1)} of its texts are embedded "
                f"({space.tasks.get('failed', 0):,} failed; at least {options.min_coverage:.1%} needed). "
                "See `kb errors`, then `kb retry --all`; or `kb reindex --activate` to switch anyway"
            )
    return found
