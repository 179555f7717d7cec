"""`kb status`: one picture of documents, tasks per space, live jobs, warnings, errors, spend and worker."""

import time
from dataclasses import dataclass

from sqlalchemy import func, select
from sqlalchemy.engine import Connection, Engine

from kb import lease, ledger, migrate, spaces, store, tasks, usage
from kb.records import (
    JobInfo,
    SpaceSummary,
    SpendSummary,
    StatusReport,
    TaskStatus,
    WorkerHeartbeat,
)
from kb.schema import BatchJob, EmbeddingSpace, EmbeddingTask, table_of

TASKS = table_of(EmbeddingTask)


@dataclass(frozen=True, slots=True)
class StatusOptions:
    stuck_after_s: float = 24 * 3600.0
    min_coverage: float = 0.995  # a rebuilt space below this stays building (KB_REINDEX_MIN_COVERAGE)


def collect(engine: Engine, database: object, options: StatusOptions) -> StatusReport:
    now = time.time()
    workers = _workers(engine, now)
    with engine.connect() as connection:
        summaries = [_space_summary(connection, space, now) for space in spaces.all_spaces(connection)]
        active = next((s for s in summaries if s.state == "active"), None)
        live = [job_info(job) for job in ledger.live_jobs(connection)]
        total = usage.spend(connection)
        today = usage.spend(connection, since=now - usage.DAY_S)
        block = usage.block(connection)
        report = StatusReport(
            database=database,  # type: ignore[arg-type]
            revision=migrate.current_revision(engine),
            documents=store.count_documents(connection),
            chunks=store.count_chunks(connection),
            tasks=active.tasks if active else {s.value: 0 for s in TaskStatus},
            chunk_statuses=(
                tasks.chunk_statuses(connection, active.id) if active else {s.value: 0 for s in TaskStatus}
            ),
            spaces=summaries,
            jobs=live,
            warnings=_warnings(live, block, now, options) + _space_warnings(summaries, now, options),
            recent_errors=_recent_errors(connection),
            spend=SpendSummary(
                tokens=total.tokens,
                usd=total.usd,
                usd_online_equivalent=total.usd_online_equivalent,
                saved_usd=total.saved_usd,
                last_24h_usd=today.usd,
                by_kind=total.by_kind,
                tokens_measured=total.tokens_measured,
            ),
            workers=workers,
            budget_block=block,
        )
    return report


def _space_summary(connection: Connection, space: EmbeddingSpace, now: float) -> SpaceSummary:
    counts = tasks.counts_by_status(connection, space.id)
    oldest = connection.execute(
        select(func.min(TASKS.c.created_at)).where(
            TASKS.c.space_id == space.id, TASKS.c.status == TaskStatus.PENDING
        )
    ).scalar()
    total = sum(counts.values())
    held, reason, until = tasks.held_back(connection, space.id, now)
    return SpaceSummary(
        id=space.id,
        provider=space.provider,
        model=space.model,
        dimensions=space.dimensions,
        state=space.state,
        tasks=counts,
        coverage=counts["embedded"] / total if total else 0.0,
        oldest_pending_age_s=None if oldest is None else max(0.0, now - float(oldest)),
        held_back=held,
        held_back_reason=reason,
        held_back_until=until,
    )


def job_info(job: BatchJob) -> JobInfo:
    return JobInfo(
        id=job.id,
        display_name=job.display_name,
        remote_name=job.remote_name,
        state=job.state,
        remote_state=job.remote_state,
        texts=job.item_count,
        tokens=job.token_estimate,
        created_at=job.created_at,
        submitted_at=job.submitted_at,
        finished_at=job.applied_at or job.finished_at,
        deadline_at=job.deadline_at,
        error=job.error,
        worker=job.lease_owner,
    )


def _warnings(live: list[JobInfo], block: str | None, now: float, options: StatusOptions) -> list[str]:
    found = []
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
        if space.state == "building" and not unfinished and space.coverage < options.min_coverage:
            found.append(
                f"{name} is not switched to: only {space.coverage:.1%} of its texts are embedded "
                f"({space.tasks.get('failed', 0):,} failed; at least {options.min_coverage:.1%} needed). "
                "See `kb errors`, then `kb retry --all`; or `kb reindex --activate` to switch anyway"
            )
    return found


def _recent_errors(connection: Connection, limit: int = 5) -> list[str]:
    failed = tasks.failed(connection, limit)
    return [f"task {f.task_id}: {f.error}" for f in failed]


def _workers(engine: Engine, now: float) -> list[WorkerHeartbeat]:
    return [
        WorkerHeartbeat(
            owner=h.owner, heartbeat_age_s=max(0.0, now - h.heartbeat_at), alive=h.expires_at > now
        )
        for h in lease.heartbeats(engine)
    ]
