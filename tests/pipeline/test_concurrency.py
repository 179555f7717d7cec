"""Several `kb` processes on one database: ingest beside a worker, two workers at once, a graceful stop.

Every process is a real `python -m kb ...` child reaching the in-process emulator over HTTP.
"""

import time
from collections import Counter
from pathlib import Path

import pytest

from kb.app import KnowledgeBase
from kb.records import FailedText
from kb.settings import KbSettings
from kb.testing.gemini_emulator import Fault, GeminiEmulator, JobPlan
from tests.support.corpora import write_corpus, write_document
from tests.support.crash_harness import (
    KbProcess,
    job_rows,
    kb_env,
    lease_owner,
    owner_of,
    run_kb,
    start_kb,
    task_counts,
    wait_until,
)
from tests.support.settings import EMULATOR_KEY

# Several processes each: minutes in all, so outside the fast tier (scripts/test --fast).
pytestmark = pytest.mark.slow

DIMENSIONS = 128
LOCKED = "database is locked"


def _settings(db: Path, emu: GeminiEmulator) -> KbSettings:
    return KbSettings(
        db=db,
        provider="gemini",
        gemini_api_key=EMULATOR_KEY,
        gemini_base_url=emu.base_url,
        embedding_dimensions=DIMENSIONS,
    )


def _assert_clean(process: KbProcess, code: int = 0) -> None:
    assert process.popen.returncode == code, process.stderr
    assert LOCKED not in process.stderr and LOCKED not in process.stdout
    assert "Traceback" not in process.stderr, process.stderr


def _assert_paid_once(emu: GeminiEmulator) -> Counter[str]:
    billed = Counter(text for _, mode, text in emu.embedded_texts() if mode == "batch")
    twice = {text: n for text, n in billed.items() if n > 1}
    assert not twice, f"{len(twice)} texts paid for more than once, e.g. {next(iter(twice))!r}"
    names = Counter(job.display_name for job in emu.jobs())
    assert all(n == 1 for n in names.values()), f"jobs created twice: {names}"
    return billed


def _assert_consistent(settings: KbSettings) -> dict[str, int]:
    """Every chunk's text embedded once, no task in flight, no live job, vectors = embedded tasks."""
    with KnowledgeBase(settings=settings) as kb:
        status = kb.status()
        assert status.chunk_statuses == {
            "pending": 0,
            "submitted": 0,
            "embedded": status.chunks,
            "failed": 0,
        }
        live = [job for job in kb.jobs() if job.state not in ("applied", "failed", "cancelled", "expired")]
        assert not live, live
        with kb.engine.connect() as connection:
            assert connection.exec_driver_sql("PRAGMA integrity_check").scalar_one() == "ok"
            vectors = connection.exec_driver_sql("SELECT count(*) FROM vec_space_1").scalar_one()
    assert status.tasks["pending"] == status.tasks["submitted"] == 0, status.tasks
    assert vectors == status.tasks["embedded"]
    return status.tasks


def _failed(settings: KbSettings) -> list[FailedText]:
    with KnowledgeBase(settings=settings) as kb:
        return kb.failed_texts()


def _drained(db: Path) -> bool:
    counts = task_counts(db)
    live = [job for job in job_rows(db) if job.state not in ("applied", "failed", "cancelled", "expired")]
    return counts["pending"] == counts["submitted"] == 0 and not live


# -- ingest beside a worker ---------------------------------------------------------------------------


def test_ingest_while_a_worker_runs(emulator: GeminiEmulator, db_path: Path, tmp_path: Path) -> None:
    """`kb ingest` of changing files, again and again, while a `kb worker` daemon embeds: no lock errors,
    and in the end every chunk is embedded exactly once."""
    corpus, logs = tmp_path / "corpus", tmp_path / "logs"
    settings = _settings(db_path, emulator)
    write_corpus(corpus, files=12, sections=25)
    with KnowledgeBase(settings=settings) as kb:
        kb.ingest([corpus])
    # Slow calls keep jobs recorded but not yet uploaded while ingest rewrites their files.
    for route in ("files.upload", "asyncBatchEmbedContent", "files.download"):
        emulator.faults.add(Fault(route=route, status=200, latency_s=0.05, times=None))
    env = kb_env(emulator, db_path, BATCH_MAX_TEXTS=40, EMBEDDING_DIMENSIONS=DIMENSIONS)
    worker = start_kb(["worker"], env, logs, "worker")
    try:
        for round_number in range(1, 9):
            # Rewrite a third of the files (new texts, old ones gone), add one, and delete one.
            for number in range(round_number % 3, 12, 3):
                write_document(corpus / f"doc{number:03d}.md", number, 25, version=round_number)
            write_document(corpus / f"extra{round_number}.md", 100 + round_number, 10, version=round_number)
            if round_number > 1:
                (corpus / f"extra{round_number - 1}.md").unlink()
            ingest = run_kb(["ingest", str(corpus), "--prune", "--json"], env, logs, f"ingest-{round_number}")
            _assert_clean(ingest)
            time.sleep(0.1)
        assert worker.popen.poll() is None, worker.stderr
        assert wait_until(lambda: _drained(db_path), timeout=600), task_counts(db_path)
    finally:
        worker.terminate()
        worker.wait(15)
    _assert_clean(worker)
    tasks = _assert_consistent(settings)
    billed = _assert_paid_once(emulator)
    assert len(billed) == tasks["embedded"]
    # Texts that left their files while their job waited are dropped before upload, never failed.
    assert _failed(settings) == []
    print(f"\n{tasks}")


def test_text_removed_while_its_job_waits(emulator: GeminiEmulator, db_path: Path, tmp_path: Path) -> None:
    """A file edited between a job's ledger commit and its upload: the texts that left it are not worth
    embedding any more: they must be dropped, not fail (nor keep `kb worker --once` busy in back-off)."""
    corpus = tmp_path / "corpus"
    settings = _settings(db_path, emulator).model_copy(
        update={"task_retry_base_s": 0.01, "poll_initial_s": 0.01, "worker_idle_s": 0.01}
    )
    write_document(corpus / "a.md", 0, 10, version=0)
    with KnowledgeBase(settings=settings) as kb:
        kb.ingest([corpus])
        assert kb.batch_manager().flush(force=True) == [1]  # job 1 recorded: its 10 tasks submitted
        write_document(corpus / "a.md", 0, 10, version=1)  # every text of the file changes
        assert kb.ingest([corpus]).tasks_queued == 10
        result = kb.worker().run(once=True, timeout_s=30)
        assert result.reason == "drained"
        creates = [r.item_count for r in emulator.log if r.route == "asyncBatchEmbedContent"]
        failed = kb.failed_texts()
        status = kb.status()
    assert status.chunk_statuses["embedded"] == 10
    assert failed == [], f"{len(failed)} failed ({failed[0].error}); texts per job created: {creates}"
    assert status.tasks["pending"] == status.tasks["submitted"] == status.tasks["failed"] == 0


# -- two workers at once ------------------------------------------------------------------------------


def test_two_workers_at_once(emulator: GeminiEmulator, db_path: Path, tmp_path: Path) -> None:
    """Two `kb worker --once` on one database: one holds the lease and does the work, the other waits,
    then finds nothing left; both exit 0 and no text is paid for twice."""
    corpus, logs = tmp_path / "corpus", tmp_path / "logs"
    settings = _settings(db_path, emulator)
    total = write_corpus(corpus, files=10, sections=60)
    with KnowledgeBase(settings=settings) as kb:
        kb.ingest([corpus])
    for route in ("files.upload", "asyncBatchEmbedContent", "batches.get"):
        emulator.faults.add(Fault(route=route, status=200, latency_s=0.05, times=None))
    env = kb_env(emulator, db_path, BATCH_MAX_TEXTS=100, WORKER_LEASE_S=30, EMBEDDING_DIMENSIONS=DIMENSIONS)
    workers = [start_kb(["worker", "--once", "--timeout", "60"], env, logs, f"worker-{n}") for n in (1, 2)]
    for worker in workers:
        worker.wait(90)
        _assert_clean(worker)
    waited = [w for w in workers if "holds the lease; waiting" in w.stderr]
    assert len(waited) == 1, [w.stderr for w in workers]
    worked = next(w for w in workers if w is not waited[0])
    assert "submitted as" in worked.stderr and "submitted as" not in waited[0].stderr
    assert "worker drained: 0 jobs submitted, 0 applied" in waited[0].stdout
    tasks = _assert_consistent(settings)
    assert tasks == {"pending": 0, "submitted": 0, "embedded": total, "failed": 0}
    assert len(_assert_paid_once(emulator)) == total


# -- graceful stop --------------------------------------------------------------------------------------


def test_sigterm_stops_the_daemon_and_a_new_worker_finishes(
    emulator: GeminiEmulator, db_path: Path, tmp_path: Path
) -> None:
    """SIGTERM while a job is pending remotely: exit 0, the job recorded with its remote
    name; a later `kb worker --once` finishes it without creating it again."""
    corpus, logs = tmp_path / "corpus", tmp_path / "logs"
    settings = _settings(db_path, emulator)
    total = write_corpus(corpus, files=3, sections=40)
    with KnowledgeBase(settings=settings) as kb:
        kb.ingest([corpus])
    emulator.job_plan = JobPlan(pending_s=3600)  # on the emulated clock, which only moves when told
    env = kb_env(emulator, db_path, BATCH_MAX_TEXTS=50, EMBEDDING_DIMENSIONS=DIMENSIONS)
    daemon = start_kb(["worker"], env, logs, "daemon")
    try:
        submitted = wait_until(
            lambda: (rows := job_rows(db_path)) != [] and all(job.state == "pending" for job in rows),
            timeout=300,
        )
        assert submitted, (job_rows(db_path), daemon.stderr)
        time.sleep(0.3)  # a few polls of the pending jobs
        assert lease_owner(db_path) == owner_of(daemon.pid)
        daemon.terminate()
        daemon.wait(120)  # a hang guard, generous for a loaded machine; never the outcome
    finally:
        if daemon.popen.poll() is None:
            daemon.kill()
    _assert_clean(daemon)
    assert "worker stopped" in daemon.stdout
    assert lease_owner(db_path) is None  # released on the way out
    jobs = job_rows(db_path)
    assert len(jobs) == 3 and {job.state for job in jobs} == {"pending"}
    remote = {job.name: job for job in emulator.jobs()}
    assert {job.remote_name for job in jobs} == set(remote)
    assert {job.display_name for job in jobs} == {job.display_name for job in remote.values()}
    assert emulator.embedded_texts() == []

    emulator.clock.advance(3601)
    finisher = run_kb(["worker", "--once", "--timeout", "30"], env, logs, "finisher")
    _assert_clean(finisher)
    assert "0 jobs submitted, 3 applied" in finisher.stdout
    assert len(emulator.jobs()) == 3
    assert sum(r.route == "asyncBatchEmbedContent" for r in emulator.log) == 3
    tasks = _assert_consistent(settings)
    assert tasks == {"pending": 0, "submitted": 0, "embedded": total, "failed": 0}
    assert len(_assert_paid_once(emulator)) == total


def test_two_workers_when_a_step_outlasts_the_lease(
    emulator: GeminiEmulator, db_path: Path, tmp_path: Path
) -> None:
    """One step (12 submissions of ~0.45 s) outlasts a 1 s lease: the second worker must still not create
    jobs the first one is creating."""
    corpus, logs = tmp_path / "corpus", tmp_path / "logs"
    settings = _settings(db_path, emulator)
    total = write_corpus(corpus, files=12, sections=50)
    with KnowledgeBase(settings=settings) as kb:
        kb.ingest([corpus])
    for route in ("files.upload", "asyncBatchEmbedContent"):
        emulator.faults.add(Fault(route=route, status=200, latency_s=0.15, times=None))
    env = kb_env(emulator, db_path, BATCH_MAX_TEXTS=50, WORKER_LEASE_S=1, EMBEDDING_DIMENSIONS=DIMENSIONS)
    first = start_kb(["worker", "--once", "--timeout", "60"], env, logs, "worker-1")
    assert wait_until(lambda: any(r.route == "asyncBatchEmbedContent" for r in emulator.log), timeout=300)
    second = start_kb(["worker", "--once", "--timeout", "60"], env, logs, "worker-2")
    first.wait(90)
    second.wait(90)
    _assert_paid_once(emulator)
    for worker in (first, second):
        _assert_clean(worker)
    tasks = _assert_consistent(settings)
    assert tasks == {"pending": 0, "submitted": 0, "embedded": total, "failed": 0}
