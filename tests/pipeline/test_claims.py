"""Job claims and task claims: who may work on what, on both backends (SKIP LOCKED on PostgreSQL)."""

import time
from pathlib import Path

import pytest
from sqlalchemy import select

from kb import failpoints
from kb.app import KnowledgeBase
from kb.core.retry import Backoff
from kb.embed import online
from kb.embed.worker import ExitReason, Worker
from kb.errors import ClaimLostError
from kb.records import JobState, TaskStatus, spec_of
from kb.settings import KbSettings
from kb.store import claims, ledger, spaces, tasks
from kb.store.engine import write_transaction
from tests.support.files import write
from tests.support.settings import take_over

LEASE_S = 30.0
CREATED = claims.JOBS.c.state == JobState.CREATED


def _queue(kb: KnowledgeBase, tmp_path: Path, sections: int = 6) -> None:
    parts = [
        f"## Part {n}\n\nParagraph {n} about claims and workers, number {n}, a chunk of its own.\n"
        for n in range(sections)
    ]
    write(tmp_path / "docs" / "notes.md", "# Notes\n\n" + "\n".join(parts))
    assert kb.ingest([tmp_path / "docs"]).tasks_queued == sections


def _active_space(kb: KnowledgeBase) -> int:
    with kb.engine.connect() as connection:
        active = spaces.active(connection)
    assert active is not None
    return active.id


def _record_jobs(kb: KnowledgeBase, count: int) -> list[int]:
    """`count` created jobs of the pending tasks, split evenly (recorded, not submitted)."""
    now = time.time()
    space_id = _active_space(kb)
    with write_transaction(kb.engine) as connection:
        due = ledger.due_pending(connection, space_id, now, 1000)
        size = len(due) // count
        return [
            ledger.create_job(connection, space_id, "local", due[n * size : (n + 1) * size], now, 3600)
            for n in range(count)
        ]


def _claim(kb: KnowledgeBase, owner: str, now: float, exclude: set[int] | None = None) -> claims.Claim | None:
    with write_transaction(kb.engine) as connection:
        return claims.claim_next(connection, owner, now, LEASE_S, CREATED, exclude or set())


def test_workers_claim_different_jobs_and_take_over_expired_claims(
    backend: KbSettings, tmp_path: Path
) -> None:
    with KnowledgeBase(settings=backend) as kb:
        _queue(kb, tmp_path)
        first_job, second_job = _record_jobs(kb, 2)
        now = time.time()
        a, b = _claim(kb, "host:1", now), _claim(kb, "host:2", now)
        assert a is not None and b is not None
        assert {a.job.id, b.job.id} == {first_job, second_job}
        assert not a.taken_over and not b.taken_over
        assert _claim(kb, "host:3", now) is None  # both held

        later = now + LEASE_S + 1  # host:1 died: its claim expired
        taken = _claim(kb, "host:3", later)
        assert taken is not None and taken.job.id == a.job.id and taken.taken_over
        assert taken.job.lease_owner == "host:1"  # who it was taken from
        with write_transaction(kb.engine) as connection:
            assert not claims.renew(connection, a.job.id, "host:1", later, LEASE_S)
            assert claims.renew(connection, b.job.id, "host:2", later, LEASE_S)

        with write_transaction(kb.engine) as connection:
            claims.release(connection, b.job.id, "host:2")
        again = _claim(kb, "host:3", later, exclude={taken.job.id})
        assert again is not None and again.job.id == b.job.id
        assert not again.taken_over  # released, not abandoned: no need to look it up remotely


def test_display_names_never_repeat(backend: KbSettings, tmp_path: Path) -> None:
    with KnowledgeBase(settings=backend) as kb:
        _queue(kb, tmp_path)
        jobs = _record_jobs(kb, 3)
        with kb.engine.connect() as connection:
            names = [ledger.job(connection, job_id).display_name for job_id in jobs]
    assert len(set(names)) == 3
    assert all(
        name.startswith("kb-") and f"-{job_id}-" in name for name, job_id in zip(names, jobs, strict=True)
    )


def test_a_flush_skips_texts_another_worker_is_putting_into_a_job(postgres_url: str, tmp_path: Path) -> None:
    """PostgreSQL: two flushes at the same moment; the second neither waits for the first nor takes its
    texts (SQLite has one writer at a time, so there they cannot overlap)."""
    settings = KbSettings(database_url=postgres_url, provider="local", results_dir=tmp_path / "results")
    with KnowledgeBase(settings=settings) as kb:
        _queue(kb, tmp_path)
        space_id = _active_space(kb)
        now = time.time()
        with kb.engine.connect() as first, first.begin():
            mine = ledger.due_pending(first, space_id, now, 4)  # locked until this transaction ends
            with kb.engine.connect() as second, second.begin():
                second.exec_driver_sql("SET LOCAL lock_timeout = '2s'")  # would fail if it waited
                theirs = ledger.due_pending(second, space_id, now, 100)
    assert len(mine) == 4 and len(theirs) == 2
    assert not {c.task_id for c in mine} & {c.task_id for c in theirs}


def test_texts_claimed_for_online_embedding_are_not_flushed(backend: KbSettings, tmp_path: Path) -> None:
    with KnowledgeBase(settings=backend) as kb:
        _queue(kb, tmp_path)
        space_id = _active_space(kb)
        now = time.time()
        with write_transaction(kb.engine) as connection:
            online = tasks.claim_due(connection, space_id, now, 600, limit=4)
        assert len(online) == 4 and all(item.text for item in online)
        assert kb.flush()  # the batch path gets only the other two
        with kb.engine.connect() as connection:
            in_jobs = set(connection.scalars(select(ledger.ITEMS.c.task_id)))
            statuses = tasks.counts_by_status(connection, space_id)
    assert in_jobs.isdisjoint(item.task_id for item in online) and len(in_jobs) == 2
    assert statuses[TaskStatus.PENDING] == 4


def test_an_apply_after_the_claim_was_taken_over_writes_nothing(backend: KbSettings, tmp_path: Path) -> None:
    """Worker A stalls past its claim between download and apply; B takes the job over. A's apply must roll
    back (the claim is checked in its transaction), and B applies the job once."""
    with KnowledgeBase(settings=backend) as kb:
        _queue(kb, tmp_path)
        stalled = kb.batch_manager(owner="host:a")
        [job_id] = stalled.flush(force=True)
        assert stalled.submit_created()  # the local runner finishes at once

        def stall_then_lose_the_job() -> None:  # results downloaded; A stalls before applying, B takes over
            take_over(kb.engine, job_id, "host:b")

        with failpoints.armed("apply.before", stall_then_lose_the_job):
            report = stalled.poll(only_due=False)
        assert report.applied == [] and report.embedded == 0
        with kb.engine.connect() as connection:
            (job,) = ledger.all_jobs(connection)
            assert job.state == "succeeded" and job.lease_owner == "host:b"

        taker = kb.batch_manager(owner="host:b")
        assert taker.poll(only_due=False).embedded == 6
        assert kb.status().tasks["embedded"] == 6


def test_a_text_gives_up_alike_online_and_in_a_job(backend: KbSettings, tmp_path: Path) -> None:
    """One give-up rule for task state: the last allowed attempt fails a text with the same reason whether
    a batch job handed it back or an online request failed; a job hands back only the texts it holds."""
    with KnowledgeBase(settings=backend) as kb:
        _queue(kb, tmp_path, sections=2)
        [job_id] = _record_jobs(kb, 1)
        space_id, now, retry = _active_space(kb), time.time(), Backoff(60.0, 3600.0)
        with write_transaction(kb.engine) as connection:
            held = ledger.held_tasks(connection, job_id)
            tasks.hand_back_held(connection, job_id, held[:1], "outage", now, 1, retry)
            tasks.hand_back_held(connection, job_id, held[1:], "outage", now, 2, retry)
            [online] = tasks.claim_due(connection, space_id, now + 61, 600, limit=1)
            assert tasks.record_attempt_failure(connection, [(online.task_id, 1)], "outage", now, 2, retry)
        with pytest.raises(ClaimLostError), write_transaction(kb.engine) as connection:
            tasks.embed_held(connection, job_id, [task_id for task_id, _ in held], now)
        errors = {text.error for text in kb.failed_texts()}
        assert errors == {"gave up after 1 attempts: outage", "gave up after 2 attempts: outage"}
        assert kb.status().tasks["failed"] == 2


def test_online_embedding_tells_the_time_by_its_clock(settings: KbSettings, tmp_path: Path) -> None:
    """Texts queued now are not yet due by a clock an hour behind; by the real clock they are embedded."""
    with KnowledgeBase(settings=settings) as kb:
        _queue(kb, tmp_path, sections=3)
        with kb.engine.connect() as connection:
            active = spaces.active(connection)
        assert active is not None
        embedder = kb.embedder(spec_of(active))
        early = online.embed_pending(kb.engine, embedder, active.id, clock=lambda: time.time() - 3600)
        assert (early.embedded, kb.status().tasks["pending"]) == (0, 3)
        assert online.embed_pending(kb.engine, embedder, active.id).embedded == 3


def test_a_worker_built_directly_runs_its_cut_over_phase_each_step(settings: KbSettings) -> None:
    """The reindex cut-over is a phase of the worker, not of a progress callback: a Worker built without
    the app runs it, and a cut-over that fails is logged like any phase while the worker goes on."""
    calls: list[int] = []

    def cut_over() -> None:
        calls.append(len(calls))
        raise RuntimeError("cut-over failed")

    with KnowledgeBase(settings=settings) as kb:
        worker = Worker(kb.engine, kb.batch_manager(), lambda _space: None, idle_s=0.0, cut_over=cut_over)
        result = worker.run(once=True, timeout_s=30)
    assert result.reason == ExitReason.DRAINED and calls == [0]
    assert any("cut_over_phase: cut-over failed" in error for error in result.errors)
