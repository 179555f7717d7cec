"""The money path under interruption, faults and bad input: no paid vector discarded, no job paid twice,
nothing stuck. One test (or a few) per failure mode; each failed on the code before it was fixed."""

import logging
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from pydantic import SecretStr
from typer.testing import CliRunner

from kb import failpoints
from kb.app import KnowledgeBase
from kb.cli.commands import app
from kb.embed.worker import ExitReason
from kb.errors import AuthenticationError, ClaimLostError, DatabaseFullError
from kb.records import JobState, RemoteStatus
from kb.settings import KbSettings
from kb.store import ledger, tasks
from kb.store.dbapi import sqlite_driver
from kb.store.engine import write_transaction
from kb.store.reader import ConnectionReader
from kb.testing.gemini_emulator import Fault, GeminiEmulator, JobPlan, TextsContaining
from tests.support.corpora import write_sections
from tests.support.crash_harness import kb_env, run_kb
from tests.support.files import write
from tests.support.settings import EMULATOR_KEY, FAST_SETTINGS, take_over


@pytest.fixture
def fast(gemini_settings: KbSettings) -> KbSettings:
    return gemini_settings.model_copy(update=FAST_SETTINGS)


def _billed(emulator: GeminiEmulator, mode: str | None = None) -> Counter[str]:
    return Counter(text for _, m, text in emulator.embedded_texts() if mode is None or m == mode)


def _vectors(kb: KnowledgeBase, space_id: int = 1) -> int:
    with kb.engine.connect() as connection:
        return int(connection.exec_driver_sql(f"SELECT count(*) FROM vec_space_{space_id}").scalar_one())


# -- 1. the online path keeps every paid vector, isolates a refused text, and retries with a dead letter ----


def test_one_refused_text_costs_the_others_nothing(
    fast: KbSettings, emulator: GeminiEmulator, tmp_path: Path
) -> None:
    """300 texts online, one of which the service refuses (its 100-text request fails with 400): the
    request is split until the bad text is alone; 299 are stored and billed once, the bad one fails with
    the service's message."""
    total = write_sections(tmp_path / "corpus", 300, poison=(150,))
    emulator.settings.rejected_texts_containing = "POISON"
    with KnowledgeBase(settings=fast) as kb:
        queued = kb.ingest([tmp_path / "corpus"])
        report = kb.embed_now(queued.queued_hashes)
        assert (report.embedded, report.failed) == (total - 1, 1)
        assert kb.status().tasks == {"pending": 0, "submitted": 0, "embedded": total - 1, "failed": 1}
        [failure] = kb.failed_texts()
        assert "cannot be embedded" in (failure.error or "") and failure.documents
        assert _vectors(kb) == total - 1
    billed = _billed(emulator, "online")
    assert len(billed) == total - 1 and set(billed.values()) == {1}
    assert all(r.status == 400 for r in emulator.log if r.route == "batchEmbedContents" and r.status != 200)


def test_online_failures_back_off_then_dead_letter_and_status_says_why(
    fast: KbSettings, emulator: GeminiEmulator, tmp_path: Path
) -> None:
    """A model that cannot use the Batch API, and a service that keeps failing: each round counts an attempt
    and waits the configured back-off (status shows the texts held back and why); after the configured
    attempts the texts fail for good, and `kb worker --once` ends instead of re-sending them forever."""
    write_sections(tmp_path / "corpus", 20)
    settings = fast.model_copy(
        update={
            "embedding_model": "text-embedding-004",
            "task_retry_base_s": 3600.0,
            "task_max_attempts": 3,
            "max_retries": 2,
        }
    )
    emulator.faults.add(Fault(route="batchEmbedContents", status=503, times=None))
    with KnowledgeBase(settings=settings) as kb:
        kb.ingest([tmp_path / "corpus"])
        kb.embed_now()
        status = kb.status()
        assert status.tasks["pending"] == 20
        assert status.spaces[0].held_back == 20
        [warning] = [w for w in status.warnings if "held back" in w]
        assert "20 texts held back" in warning and "503" in warning and "next try in 60 min" in warning
    with KnowledgeBase(settings=settings.model_copy(update={"task_retry_base_s": 0.01})) as kb:
        with write_transaction(kb.engine) as connection:  # the hour has passed
            tasks.make_due(connection, list(range(1, 21)), time.time())
        result = kb.worker().run(once=True, timeout_s=600)
        assert result.reason == ExitReason.DRAINED
        assert kb.status().tasks == {"pending": 0, "submitted": 0, "embedded": 0, "failed": 20}
        assert all("gave up after 3 attempts" in (f.error or "") for f in kb.failed_texts())
    calls = [r for r in emulator.log if r.route == "batchEmbedContents"]
    assert len(calls) == 3 * 2  # 3 attempts of one request, each tried twice by the call's own retries


# -- 2. a reindex that mostly failed never replaces the index ----------------------------------------------


def test_a_reindex_whose_texts_all_failed_is_not_switched_to(
    fast: KbSettings, emulator: GeminiEmulator, tmp_path: Path
) -> None:
    total = write_sections(tmp_path / "corpus", 30)
    with KnowledgeBase(settings=fast) as kb:
        kb.ingest([tmp_path / "corpus"])
        assert kb.worker().run(once=True, timeout_s=300).reason == ExitReason.DRAINED
        emulator.job_plan = JobPlan(
            item_errors=TextsContaining("Paragraph", 3, "Request contains an invalid argument.")
        )
        kb.reindex_start(kb.reindex_spec("gemini-embedding-2", 768))
        assert kb.worker().run(once=True, timeout_s=300).reason == ExitReason.DRAINED
        status = kb.status()
        states = {space.id: space.state for space in status.spaces}
        assert states == {1: "active", 2: "building"}
        [warning] = [w for w in status.warnings if "not switched to" in w]
        assert "only 0.0% of its texts are embedded" in warning and "kb retry --all" in warning
        hits = kb.search("lighthouse keeper", k=3, mode="vector")
        assert hits.space_id == 1 and hits.hits
    assert len(_billed(emulator, "batch")) == total


# -- 3. an interrupted create is looked up, never sent twice ----------------------------------------------


@pytest.mark.parametrize("action", [failpoints.interrupt, failpoints.crash], ids=["ctrl-c", "exception"])
def test_an_interrupted_create_is_looked_up_before_anything_is_sent_again(
    fast: KbSettings, emulator: GeminiEmulator, tmp_path: Path, action: failpoints.Action
) -> None:
    """The remote job was created, then Ctrl-C (or any exception) stopped the process before its name was
    recorded. `kb flush` (no start-up reconciliation of its own) must adopt it, not create a second one."""
    total = write_sections(tmp_path / "corpus", 20)
    with KnowledgeBase(settings=fast) as kb:
        kb.ingest([tmp_path / "corpus"])
        with failpoints.armed("create.after", action), pytest.raises((KeyboardInterrupt, RuntimeError)):
            kb.flush()
        [job] = kb.jobs()
        assert job.state == "created" and job.remote_name is None
        assert kb.flush() == [job.id]
        assert kb.worker().run(once=True, timeout_s=300).reason == ExitReason.DRAINED
        assert kb.status().tasks["embedded"] == total
    creates = [r for r in emulator.log if r.route == "asyncBatchEmbedContent" and r.status == 200]
    assert len(creates) == 1
    assert set(_billed(emulator).values()) == {1}


def test_an_interrupted_upload_leaves_no_file_behind(
    fast: KbSettings, emulator: GeminiEmulator, tmp_path: Path
) -> None:
    write_sections(tmp_path / "corpus", 20)
    with KnowledgeBase(settings=fast) as kb:
        kb.ingest([tmp_path / "corpus"])
        with failpoints.armed("upload.after", failpoints.interrupt), pytest.raises(KeyboardInterrupt):
            kb.flush()
        assert len(emulator.stored_files()) == 1  # uploaded, not recorded
        assert kb.worker().run(once=True, timeout_s=300).reason == ExitReason.DRAINED
    # The orphan was deleted, and the job's own input after the apply: only the service's result file is left.
    assert [stored.source for stored in emulator.stored_files()] == ["GENERATED"]


# -- 4. a job whose results are gone is retried a few times, then handed back -----------------------------


def test_a_job_whose_results_expired_is_handed_back_and_the_worker_ends(
    fast: KbSettings, emulator: GeminiEmulator, tmp_path: Path
) -> None:
    total = write_sections(tmp_path / "corpus", 20)
    with KnowledgeBase(settings=fast) as kb:
        kb.ingest([tmp_path / "corpus"])
        [job_id] = kb.flush()
        emulator.clock.advance(49 * 3600)  # the job succeeded; its result file expired after 48 h
        result = kb.worker().run(once=True, timeout_s=600)
        assert result.reason == ExitReason.DRAINED
        jobs = {job.id: job for job in kb.jobs()}
        assert jobs[job_id].state == "failed"
        assert "results unavailable after 4 attempts" in (jobs[job_id].error or "")
        assert "gone" in (jobs[job_id].error or "")
        assert kb.status().tasks == {"pending": 0, "submitted": 0, "embedded": total, "failed": 0}
    downloads = [r for r in emulator.log if r.route == "files.download"]
    assert [r.status for r in downloads].count(404) == 4


@pytest.mark.slow
def test_an_outage_is_waited_out_without_giving_the_job_up(fast: KbSettings, tmp_path: Path) -> None:
    """503s on download for longer than the give-up count: the job succeeded (its results are paid for and
    kept 48 h after it ended), so it is retried with back-off until the service is back; nothing is paid
    twice. The emulator's clock runs at kb's: the job ended just now, not months ago."""
    total = write_sections(tmp_path / "corpus", 20)
    with GeminiEmulator(api_key=EMULATOR_KEY, start_time=time.time()) as emulator:
        emulator.faults.add(Fault(route="files.download", status=503, times=6 * 6))  # 6 steps of 6 tries
        settings = fast.model_copy(update={"max_retries": 6, "gemini_base_url": emulator.base_url})
        with KnowledgeBase(settings=settings) as kb:
            kb.ingest([tmp_path / "corpus"])
            assert kb.worker().run(once=True, timeout_s=600).reason == ExitReason.DRAINED
            assert [job.state for job in kb.jobs()] == ["applied"]
            assert kb.status().tasks["embedded"] == total
        assert set(_billed(emulator).values()) == {1}


# -- 5. every job transition is guarded by the state it expects and the claim holder -----------------------


def test_a_worker_that_lost_its_claim_cannot_overwrite_the_takers_progress(
    settings: KbSettings, tmp_path: Path
) -> None:
    write_sections(tmp_path / "corpus", 6)
    with KnowledgeBase(settings=settings) as kb:
        kb.ingest([tmp_path / "corpus"])
        [job_id] = kb.batch_manager(owner="host:a").flush(force=True)
        remote = RemoteStatus("batches/x", None, JobState.PENDING, "BATCH_STATE_PENDING", None)
        take_over(kb.engine, job_id, "host:b")
        with write_transaction(kb.engine) as connection:
            ledger.mark_submitted(connection, job_id, "host:b", remote, "files/in", time.time(), 0.0)
        for owner, expected in (("host:a", JobState.PENDING), ("host:b", JobState.RUNNING)):
            with pytest.raises(ClaimLostError), write_transaction(kb.engine) as connection:
                ledger.record_poll(connection, job_id, owner, expected, JobState.RUNNING, "X", 0.0)
        with pytest.raises(ClaimLostError), write_transaction(kb.engine) as connection:
            tasks.embed_held(connection, job_id + 1, [1], time.time())
        [job] = kb.jobs()
        assert (job.state, job.remote_name, job.remote_state, job.worker) == (
            "pending",
            "batches/x",
            "BATCH_STATE_PENDING",
            "host:b",
        )
        assert kb.status().tasks["submitted"] == 6


# -- 6. concurrent queueing of the same text on PostgreSQL ------------------------------------------------


def test_two_ingests_queueing_the_same_text_at_once_both_succeed(postgres_url: str, tmp_path: Path) -> None:
    settings = KbSettings(database_url=postgres_url, provider="local", results_dir=tmp_path / "r")
    with KnowledgeBase(settings=settings) as kb:
        kb.ingest_text("# one\n\nfirst text\n", "a.md")
        space_id = 1
        texts = {"f" * 64: 3, "e" * 64: 5}
        outcome: list[object] = []
        first = kb.engine.connect()
        transaction = first.begin()
        assert tasks.queue(first, space_id, texts).tasks == 2  # not committed yet

        def second() -> None:
            try:
                with write_transaction(kb.engine) as connection:
                    outcome.append(tasks.queue(connection, space_id, texts).tasks)
            except Exception as error:
                outcome.append(error)

        thread = threading.Thread(target=second)
        thread.start()
        time.sleep(0.5)  # the second insert now waits on the first's uncommitted rows
        transaction.commit()
        first.close()
        thread.join(30)
        assert outcome == [0]


# -- 7. database failures are one-line kb errors; the daemon backs off on a busy database --------------------


def test_a_corrupt_database_stops_the_worker_with_one_line(runner: CliRunner, tmp_path: Path) -> None:
    db = tmp_path / "kb.sqlite"
    with KnowledgeBase(settings=KbSettings(db=db, provider="local")) as kb:
        kb.ingest_text("# a\n\nsome text\n", "a.md")
    data = bytearray(db.read_bytes())
    data[65536:] = b"\xff" * (len(data) - 65536)  # damage every page but the first (header and schema)
    db.write_bytes(bytes(data))
    for wal in tmp_path.glob("kb.sqlite-*"):
        wal.unlink()
    result = runner.invoke(app, ["--db", str(db), "--provider", "local", "worker", "--once"])
    assert result.exit_code == 4, result.output
    assert "Traceback" not in result.output
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and ("malformed" in result.stderr or "not a database" in result.stderr)


def _writer_holding_the_lock(db: Path) -> Any:
    """Another process in the middle of a write transaction (its own SQLite connection)."""
    holder = sqlite_driver().connect(str(db), isolation_level=None, check_same_thread=False)
    holder.execute("BEGIN IMMEDIATE")
    return holder


def test_a_locked_database_is_a_one_line_error(runner: CliRunner, tmp_path: Path) -> None:
    db = tmp_path / "kb.sqlite"
    with KnowledgeBase(settings=KbSettings(db=db, provider="local")) as kb:
        kb.ingest_text("# a\n\nsome text\n", "a.md")
    write(tmp_path / "more.md", "# b\n\nother text\n")
    holder = _writer_holding_the_lock(db)
    try:
        result = runner.invoke(
            app,
            ["--db", str(db), "--provider", "local", "ingest", str(tmp_path / "more.md")],
            env={"KB_BUSY_TIMEOUT_MS": "50"},
        )
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    assert result.exit_code == 4
    [line] = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert "database is locked" in line and "try again" in line and str(db) in line
    assert "Traceback" not in result.output


def test_a_full_disk_is_a_one_line_error(tmp_path: Path) -> None:
    """SQLITE_FULL, made by capping the database's size on this connection (as a full disk would)."""
    settings = KbSettings(db=tmp_path / "kb.sqlite", provider="local")
    with (
        KnowledgeBase(settings=settings) as kb,
        pytest.raises(DatabaseFullError) as caught,
        kb.engine.connect() as connection,
    ):
        pages = connection.exec_driver_sql("PRAGMA page_count").scalar_one()
        connection.exec_driver_sql(f"PRAGMA max_page_count = {pages + 1}")
        connection.exec_driver_sql("CREATE TABLE filler(x)")
        connection.exec_driver_sql(
            "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 20) "
            "INSERT INTO filler SELECT randomblob(100000) FROM n"
        )
    assert "full" in caught.value.message and "free some disk space" in caught.value.message
    assert "\n" not in caught.value.message


def test_the_daemon_waits_out_a_busy_database(
    settings: KbSettings, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    write_sections(tmp_path / "corpus", 10)
    settings = settings.model_copy(update={**FAST_SETTINGS, "busy_timeout_ms": 20})
    with KnowledgeBase(settings=settings) as kb:
        kb.ingest([tmp_path / "corpus"])
        holder = _writer_holding_the_lock(settings.db)
        release = threading.Timer(1.0, lambda: holder.execute("ROLLBACK"))
        release.start()
        with caplog.at_level(logging.WARNING, logger="kb.embed.worker"):
            result = kb.worker().run(once=True, timeout_s=600)
        release.join()
        holder.close()
        assert result.reason == ExitReason.DRAINED
        assert any(
            "database is locked" in record.message and "trying again" in record.message
            for record in caplog.records
        )
        assert kb.status().tasks["embedded"] == 10


# -- 8. a refused key is a configuration error: the worker stops at once ------------------------------------


def test_a_refused_key_stops_the_worker_with_exit_3(emulator: GeminiEmulator, tmp_path: Path) -> None:
    """`--once` and the daemon alike: a refused key is a configuration error, not an outage to wait out."""
    write_sections(tmp_path / "corpus", 5)
    db = tmp_path / "kb.sqlite"
    env = kb_env(emulator, db)
    assert (
        run_kb(["ingest", str(tmp_path / "corpus")], env, tmp_path / "logs", "ingest").popen.returncode == 0
    )
    env["GEMINI_API_KEY"] = "wrong-key-0123"
    for args in (["worker", "--once"], ["worker"]):
        process = run_kb(args, env, tmp_path / "logs", args[-1].strip("-"), timeout=600)
        assert process.popen.returncode == 3, process.stderr
        assert "refused the key" in process.stderr and "wrong-key-0123" not in process.stderr + process.stdout
        assert "Traceback" not in process.stderr
    with KnowledgeBase(settings=KbSettings(db=db, provider="local")) as kb, kb.engine.connect() as connection:
        attempts = connection.exec_driver_sql("SELECT attempts FROM embedding_tasks").scalars().all()
        [job] = kb.jobs()
    assert attempts == [0] * 5  # no attempt burned: with the right key, the recorded job goes on
    assert job.state == "created" and emulator.jobs() == []


def test_a_refused_key_on_the_online_path_burns_no_attempt(
    fast: KbSettings, emulator: GeminiEmulator, tmp_path: Path
) -> None:
    write_sections(tmp_path / "corpus", 5)
    with KnowledgeBase(settings=fast.model_copy(update={"gemini_api_key": SecretStr("wrong")})) as kb:
        queued = kb.ingest([tmp_path / "corpus"])
        with pytest.raises(AuthenticationError):
            kb.embed_now(queued.queued_hashes)
        with kb.engine.connect() as connection:
            rows = connection.exec_driver_sql("SELECT attempts, next_attempt_at FROM embedding_tasks").all()
        assert all(attempts == 0 and due <= time.time() for attempts, due in rows)


# -- 9. a local job run by another process is collected, not lost ---------------------------------------


def test_a_local_job_flushed_by_one_process_is_applied_by_the_next(runner: CliRunner, tmp_path: Path) -> None:
    write_sections(tmp_path / "corpus", 30)
    base = ["--db", str(tmp_path / "kb.sqlite"), "--provider", "local"]
    assert runner.invoke(app, [*base, "ingest", str(tmp_path / "corpus")]).exit_code == 0
    assert runner.invoke(app, [*base, "flush"]).exit_code == 0
    result = runner.invoke(app, [*base, "worker", "--once"])
    assert result.exit_code == 0, result.output
    with KnowledgeBase(settings=KbSettings(db=tmp_path / "kb.sqlite", provider="local")) as kb:
        assert [(job.state, job.error) for job in kb.jobs()] == [("applied", None)]
        assert kb.status().tasks["embedded"] == 30
        assert list(kb.results_dir.iterdir()) == []


# -- 11. leftovers of killed processes are cleaned on start -------------------------------------------------


def test_leftover_files_no_live_job_owns_are_removed_on_start(
    fast: KbSettings, emulator: GeminiEmulator, tmp_path: Path
) -> None:
    write_sections(tmp_path / "corpus", 10)
    with KnowledgeBase(settings=fast) as kb:
        kb.ingest([tmp_path / "corpus"])
        [job_id] = kb.batch_manager().flush(force=True)
        [live] = kb.jobs()
        database = live.display_name.split("-")[1]
        folder = kb.results_dir
        folder.mkdir(parents=True, exist_ok=True)
        dead = [
            folder / f"kb-{database}-99-abcdef.111.0a0b0c0d.input.jsonl",
            folder / f"kb-{database}-98-abcdef.results.jsonl.222.0a0b0c0d.part",
            folder / f"kb-{database}-97-abcdef.results.jsonl",
        ]
        kept = [
            folder / f"{live.display_name}.333.0a0b0c0d.input.jsonl",  # a live job's
            folder / "kb-0000ffff-5-abcdef.results.jsonl",  # another database's, in a shared folder
            folder / "notes.txt",
        ]
        for path in dead + kept:
            path.write_text("x")
        removed = kb.batch_manager().clean_leftovers()
        assert sorted(removed) == sorted(dead)
        assert all(path.exists() for path in kept) and not any(path.exists() for path in dead)
        assert job_id == live.id


# -- 12. a stop request ends the work after the remote call in flight --------------------------------------


@pytest.mark.slow
def test_a_stop_request_ends_after_the_remote_call_in_flight(
    fast: KbSettings, emulator: GeminiEmulator, tmp_path: Path
) -> None:
    write_sections(tmp_path / "corpus", 100, per_file=10)
    emulator.faults.add(Fault(route="asyncBatchEmbedContent", status=200, latency_s=0.5, times=None))
    with KnowledgeBase(settings=fast.model_copy(update={"batch_max_texts": 10})) as kb:
        kb.ingest([tmp_path / "corpus"])
        stop = threading.Event()
        worker = kb.worker(stop=stop)
        results = []
        thread = threading.Thread(target=lambda: results.append(worker.run()))
        thread.start()
        first_create = lambda: any(r.route == "asyncBatchEmbedContent" for r in emulator.log)  # noqa: E731
        while not first_create() and thread.is_alive():
            time.sleep(0.01)
        stop.set()
        thread.join(60)
        [result] = results
        creates = [r for r in emulator.log if r.route == "asyncBatchEmbedContent"]
        assert result.reason == ExitReason.STOPPED and len(creates) <= 2
        assert result.left is not None and result.left.jobs_not_submitted >= 8
        assert kb.worker().run(once=True, timeout_s=600).reason == ExitReason.DRAINED
        assert kb.status().tasks["embedded"] == 100
    assert set(_billed(emulator).values()) == {1}


# -- 13. memory does not grow with the corpus ----------------------------------------------------------------


def test_loading_a_space_into_memory_streams_its_vectors(settings: KbSettings) -> None:
    import tracemalloc

    import numpy as np

    from kb.store import vectors

    count, dims = 20_000, 256
    with KnowledgeBase(settings=settings) as kb:
        kb.ingest_text("# a\n\nx\n", "a.md")
        rng = np.random.default_rng(0)
        with write_transaction(kb.engine) as connection:
            rows = rng.standard_normal((count, dims)).astype(np.float32)
            vectors.write(connection, 1, range(1, count + 1), rows)
        matrix_bytes = count * dims * 4
        with kb.engine.connect() as connection:
            tracemalloc.start()
            _, matrix = vectors.load_all(ConnectionReader(connection), 1, dims)
            _, peak = tracemalloc.get_traced_memory()
            tracemalloc.stop()
        assert matrix.shape == (count, dims) and np.array_equal(matrix[0], rows[0])
        assert peak < matrix_bytes * 1.5, (  # reading all rows first, then copying: 2.2x
            f"peak {peak / 1e6:.1f} MB for a {matrix_bytes / 1e6:.1f} MB matrix"
        )
