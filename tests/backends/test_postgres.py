"""The same end-to-end flows on both backends: SQLite (sqlite-vec, FTS5), PostgreSQL (pgvector)."""

import json
import threading
from collections import Counter
from pathlib import Path

import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from pydantic import SecretStr
from typer.testing import CliRunner

from kb.app import KnowledgeBase
from kb.cli.commands import app
from kb.embed.worker import ExitReason
from kb.records import SearchMode
from kb.settings import KbSettings
from kb.store import migrate, schema
from kb.store.engine import create_engine
from kb.testing.gemini_emulator import GeminiEmulator
from tests.support.corpora import write_corpus
from tests.support.crash_harness import KbProcess
from tests.support.files import HANDBOOK, write
from tests.support.settings import EMULATOR_KEY, FAST_SETTINGS, new_postgres_database


def test_migrations_match_models_and_a_new_database_matches_the_migrations(
    backend: KbSettings, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    """Replaying every migration gives the models' schema; a new database, created at once from the models
    and the DDL they cannot express, gives the same tables, columns, indexes and full-text objects."""
    migrated = create_engine(backend.database)
    migrate.upgrade(migrated)
    assert migrate.current_revision(migrated) == migrate.head_revision()
    with migrated.connect() as connection:
        context = MigrationContext.configure(
            connection, opts={"include_name": _managed, "compare_type": True}
        )
        assert compare_metadata(context, schema.metadata) == []
    other = (
        new_postgres_database(request.getfixturevalue("postgres_server"))
        if backend.database_url
        else tmp_path / "created.sqlite"
    )
    created = create_engine(other)
    migrate.ensure_current(created)
    assert _structure(created) == _structure(migrated)
    created.dispose()
    migrated.dispose()


def _structure(engine: sa.engine.Engine) -> dict[str, object]:
    found: dict[str, object] = {"revision": migrate.current_revision(engine)}
    with engine.connect() as connection:
        inspector = sa.inspect(connection)
        for table in sorted(inspector.get_table_names()):
            columns = {c["name"]: (str(c["type"]), c["nullable"]) for c in inspector.get_columns(table)}
            indexes = sorted(
                (i["name"], tuple(map(str, i["column_names"])), i["unique"])
                for i in inspector.get_indexes(table)
            )
            keys = sorted(str(sorted(k.items())) for k in inspector.get_foreign_keys(table))
            found[table] = (columns, indexes, keys, inspector.get_pk_constraint(table)["constrained_columns"])
        if connection.dialect.name == "sqlite":
            sql = (
                "SELECT type, name, sql FROM sqlite_master WHERE type = 'trigger' OR sql LIKE 'CREATE VIRT%'"
            )
            found["full text"] = sorted(tuple(row) for row in connection.exec_driver_sql(sql))
        else:
            sql = "SELECT indexdef FROM pg_indexes WHERE tablename = 'chunks' ORDER BY indexname"
            found["full text"] = [row[0] for row in connection.exec_driver_sql(sql)]
            found["extensions"] = sorted(
                r[0] for r in connection.exec_driver_sql("SELECT extname FROM pg_extension")
            )
    return found


def _managed(name: str | None, type_: str, _parents: object) -> bool:
    if type_ == "index":
        return name not in ("ix_chunks_fulltext", "ix_chunks_search_vector", "ix_chunks_situation_vector")
    if type_ == "column":
        return name not in ("search_vector", "situation_vector")
    return not (type_ == "table" and name is not None and name.startswith(("vec_", "chunks_fts")))


def test_ingest_is_idempotent_and_text_search_works(backend: KbSettings) -> None:
    with KnowledgeBase(settings=backend) as kb:
        first = kb.ingest([HANDBOOK])
        again = kb.ingest([HANDBOOK])
        assert len(again.unchanged) == len(first.added) and again.chunks_written == 0
        status = kb.status()
        assert status.chunks == first.chunks_written and status.tasks["pending"] == first.tasks_queued
        hits = kb.search("CORS middleware allow origins", mode="text", k=5).hits
        assert any(hit.path.endswith("tutorial/cors.md") for hit in hits)
        only = kb.search("CORS middleware", mode="text", path="advanced/*").hits
        assert only and all("/advanced/" in hit.path for hit in only)


def test_worker_and_hybrid_search_with_local_vectors(backend: KbSettings) -> None:
    with KnowledgeBase(settings=backend) as kb:
        kb.ingest([HANDBOOK / "tutorial"])
        assert kb.worker().run(once=True, timeout_s=60).reason == ExitReason.DRAINED
        status = kb.status()
        assert status.chunk_statuses["embedded"] == status.chunks
        result = kb.search("background tasks after returning a response", k=5)
        assert result.used == SearchMode.HYBRID and not result.notes
        assert any("background-tasks.md" in hit.path for hit in result.hits)
        vector = kb.search("background tasks after returning a response", mode="vector", k=5)
        assert vector.hits and vector.hits[0].vector_rank == 1


def test_gemini_batch_pipeline(backend: KbSettings, emulator: GeminiEmulator) -> None:
    settings = backend.model_copy(
        update={
            "provider": "gemini",
            "gemini_api_key": SecretStr(EMULATOR_KEY),
            "gemini_base_url": emulator.base_url,
        }
    )
    with KnowledgeBase(settings=settings) as kb:
        report = kb.ingest([HANDBOOK / "tutorial" / "security"])
        assert kb.worker().run(once=True, timeout_s=60).reason == ExitReason.DRAINED
        assert kb.status().tasks["embedded"] == report.tasks_queued
        assert kb.search("OAuth2 scopes").space_id is not None
        spend = kb.status().spend
        assert spend is not None and spend.by_kind["batch"]["tokens"] == emulator.billed_tokens(mode="batch")
    billed = Counter(text for _, mode, text in emulator.embedded_texts() if mode == "batch")
    assert set(billed.values()) == {1} and len(billed) == report.tasks_queued


def test_reindex_to_another_space(backend: KbSettings, emulator: GeminiEmulator) -> None:
    with KnowledgeBase(settings=backend) as kb:
        kb.ingest([HANDBOOK / "tutorial" / "security"])
        kb.worker().run(once=True, timeout_s=60)
    settings = backend.model_copy(
        update={"gemini_api_key": SecretStr(EMULATOR_KEY), "gemini_base_url": emulator.base_url}
    )
    with KnowledgeBase(settings=settings) as kb:
        spec = kb.reindex_spec("gemini-embedding-001", 768)
        kb.reindex_start(spec)
        assert kb.worker().run(once=True, timeout_s=60).reason == ExitReason.DRAINED
        assert {s.state for s in kb.status().spaces} == {"active", "retired"}
        assert kb.search("OAuth2 scopes").space_id == 2
        assert kb.drop_retired() == [1]
        assert [s.id for s in kb.status().spaces] == [2]


def test_moving_a_sqlite_knowledge_base_to_postgres_embeds_nothing(
    gemini_settings: KbSettings, emulator: GeminiEmulator, postgres_url: str, runner: CliRunner
) -> None:
    settings = gemini_settings.model_copy(update=FAST_SETTINGS)
    with KnowledgeBase(settings=settings) as kb:
        kb.ingest([HANDBOOK / "tutorial"])
        assert kb.worker().run(once=True, timeout_s=60).reason == ExitReason.DRAINED
        questions = ["How do I enable CORS?", "background tasks after the response", "OAuth2 scopes"]
        before = {q: _top(kb, q) for q in questions}
        embedded = kb.status().tasks["embedded"]
    emulator.reset_log()
    result = runner.invoke(app, ["--db", str(settings.db), "migrate-db", "--to", postgres_url])
    assert result.exit_code == 0, result.output
    assert "nothing was embedded again" in result.stdout
    moved = settings.model_copy(update={"database_url": postgres_url})
    with KnowledgeBase(settings=moved) as kb:
        assert kb.status().tasks["embedded"] == embedded
        with kb.engine.connect() as connection:  # built once, after the vectors were loaded
            assert connection.exec_driver_sql(
                "SELECT indexdef FROM pg_indexes WHERE tablename = 'vec_space_1'"
                " AND indexdef LIKE '%%hnsw%%vector_cosine_ops%%'"
            ).all()
        after = {q: _top(kb, q) for q in questions}
        assert kb.worker().run(once=True, timeout_s=30).reason == ExitReason.DRAINED
        new = kb.ingest_text("# New\n\nA brand new paragraph about PostgreSQL.", "new.md")
        assert new.tasks_queued == 1  # ids continue after the copied ones
    assert [r for r in emulator.log if r.route in ("batchEmbedContents", "asyncBatchEmbedContent")] == []
    for question in questions:
        # The same vectors give the same nearest chunks; full-text ranking differs a little between
        # SQLite's BM25 and PostgreSQL's ts_rank, so hybrid must agree on the best page.
        assert after[question]["vector"] == before[question]["vector"]
        assert after[question]["hybrid"] == before[question]["hybrid"]


def _top(kb: KnowledgeBase, question: str) -> dict[str, object]:
    return {
        "vector": [hit.chunk_id for hit in kb.search(question, k=5, mode="vector").hits],
        "hybrid": kb.search(question, k=5).hits[0].path,
    }


@pytest.mark.slow
def test_three_workers_on_postgres_drain_30000_texts_with_one_killed(
    emulator: GeminiEmulator, postgres_url: str, tmp_path: Path
) -> None:
    """Workers on several machines share one PostgreSQL database and work at once, each job under its own
    claim; a worker killed while it holds a job leaves a claim that expires, and another worker takes the
    job over. Nothing is submitted twice or left stuck, and the work is shared."""
    from tests.support.crash_harness import kb_env, start_kb, wait_until

    texts = write_corpus(tmp_path / "corpus", 300, 100)
    settings = KbSettings(
        database_url=postgres_url,
        provider="gemini",
        gemini_api_key=SecretStr(EMULATOR_KEY),
        gemini_base_url=emulator.base_url,
        results_dir=tmp_path / "results",
    )
    with KnowledgeBase(settings=settings) as kb:
        assert kb.ingest([tmp_path / "corpus"]).tasks_queued == texts == 30_000
    env = kb_env(
        emulator,
        tmp_path / "unused.sqlite",
        DATABASE_URL=postgres_url,
        RESULTS_DIR=tmp_path / "results",
        WORKER_LEASE_S=3,
        BATCH_MAX_TEXTS=1000,
    )
    logs = tmp_path / "logs"
    # Deadlines are generous, never the outcome: a loaded 2-core machine may take many times longer.
    workers = [start_kb(["worker", "--once", "--timeout", "1800"], env, logs, f"w{n}") for n in range(3)]
    try:
        with KnowledgeBase(settings=settings) as kb:
            # All three work at once: each applies jobs before one of them is killed.
            def all_applied_or_one_exited() -> bool:
                exited = any(w.popen.poll() is not None for w in workers)
                return exited or all(" applied: " in w.stderr for w in workers)

            assert wait_until(all_applied_or_one_exited, timeout=1200)
            assert all(" applied: " in w.stderr for w in workers), [w.stderr[-300:] for w in workers]
            victim = _freeze_a_worker_holding_a_claim(kb, workers)
            victim.kill()  # its claimed job is left mid-step
            survivors = [w for w in workers if w is not victim]
            for worker in survivors:
                assert worker.wait(1800) == 0, worker.stderr
            status = kb.status()
            assert status.tasks == {"pending": 0, "submitted": 0, "embedded": 30_000, "failed": 0}
            assert status.jobs == []
    finally:
        for worker in workers:
            if worker.popen.poll() is None:
                worker.kill()
    applied = [worker.stderr.count(" applied: ") for worker in workers]
    print(f"\njobs applied per worker: {applied} (worker {workers.index(victim)} was killed)")
    assert sum(applied) == 30, applied
    assert all("working alongside" in worker.stderr for worker in workers)
    assert any("whose claim expired" in w.stderr for w in survivors)
    billed = Counter(text for _, mode, text in emulator.embedded_texts() if mode == "batch")
    assert len(billed) == 30_000 and set(billed.values()) == {1}
    names = Counter(job.display_name for job in emulator.jobs())
    assert set(names.values()) == {1}


def _freeze_a_worker_holding_a_claim(kb: KnowledgeBase, workers: list[KbProcess]) -> KbProcess:
    """Stop (SIGSTOP) workers in turn until one is caught holding a job claim; that one stays stopped."""
    import signal
    import time

    from tests.support.crash_harness import owner_of

    for _ in range(200):
        for worker in workers:
            worker.popen.send_signal(signal.SIGSTOP)
            with kb.engine.connect() as connection:
                held = connection.exec_driver_sql(
                    "SELECT count(*) FROM batch_jobs WHERE lease_owner = %(owner)s "
                    "AND lease_expires_at IS NOT NULL AND state NOT IN ('applied', 'failed')",
                    {"owner": owner_of(worker.pid)},
                ).scalar_one()
            if held:
                return worker
            worker.popen.send_signal(signal.SIGCONT)
        time.sleep(0.05)
    raise AssertionError("no worker was ever caught holding a claim")


def test_faults_on_both_backends(backend: KbSettings, emulator: GeminiEmulator) -> None:
    """Shuffled and missing results, per-item errors, a FAILED and an EXPIRED job, 429s on create and get."""
    from kb.testing.gemini_emulator import Fault, JobPlan, TextsContaining

    poison = TextsContaining("Security", 3, "Request contains an invalid argument.")
    emulator.job_plan = JobPlan(shuffle=True, item_errors=poison)
    lossy = JobPlan(shuffle=True, drop_fraction=0.02, item_errors=poison, seed=3)
    emulator.plan_next_jobs([JobPlan(outcome="FAILED"), JobPlan(outcome="EXPIRED"), lossy])
    emulator.faults.add(Fault(route="asyncBatchEmbedContent", status=429, times=2, retry_delay="0.01s"))
    emulator.faults.add(Fault(route="batches.get", status=429, times=2, after=1, retry_delay="0.01s"))
    settings = backend.model_copy(
        update={
            "provider": "gemini",
            "gemini_api_key": SecretStr(EMULATOR_KEY),
            "gemini_base_url": emulator.base_url,
            "batch_max_texts": 60,
            "task_retry_base_s": 0.01,
            "retry_base_delay_s": 0.01,
        }
    )
    with KnowledgeBase(settings=settings) as kb:
        report = kb.ingest([HANDBOOK / "tutorial" / "security"])
        assert kb.worker().run(once=True, timeout_s=60).reason == ExitReason.DRAINED
        tasks = kb.status().tasks
        failed = kb.failed_texts()
    assert tasks["pending"] == tasks["submitted"] == 0
    assert tasks["embedded"] + tasks["failed"] == report.tasks_queued and tasks["failed"] > 0
    assert all("invalid argument" in (f.error or "") for f in failed)
    billed = Counter(text for _, mode, text in emulator.embedded_texts() if mode == "batch")
    assert set(billed.values()) == {1} and len(billed) == tasks["embedded"]


def test_workers_starting_together_agree_on_the_database_id(postgres_url: str) -> None:
    """Three workers started at once on a new PostgreSQL database once died on the unique key of
    `database_id`: each saw none and inserted its own. The second must wait, then use the first's."""
    from kb.store import ledger
    from kb.store.engine import create_engine

    engine = create_engine(postgres_url)
    try:
        with KnowledgeBase(settings=KbSettings(database_url=postgres_url, provider="local")):
            pass  # migrated
        found: list[str] = []
        with engine.connect() as first:
            made = ledger.database_id(first)  # inserted, not yet committed
            with engine.connect() as second:
                racer = threading.Thread(target=lambda: found.append(ledger.database_id(second)))
                racer.start()
                racer.join(timeout=1.0)
                assert racer.is_alive(), "the second insert should wait for the first transaction"
                first.commit()
                racer.join(timeout=30)
                second.commit()
        assert found == [made]
    finally:
        engine.dispose()


def test_where_on_metadata_in_every_mode(backend: KbSettings, tmp_path: Path) -> None:
    """Front matter and --meta filter text, vector and hybrid hits alike on both backends."""
    docs = tmp_path / "docs"
    for name, front in (
        ("api", "tags: [api, http]\nreleased: 2024-05-01"),
        ("old", "tags: legacy\nversion: 9"),
    ):
        write(docs / f"{name}.md", f"---\n{front}\n---\n# {name}\n\nThe harbor ferry leaves at dawn.\n")
    write(docs / "plain.md", "# Plain\n\nThe harbor ferry leaves at noon.\n")
    with KnowledgeBase(settings=backend) as kb:
        kb.ingest([docs], meta={"team": "docs"})
        assert kb.worker().run(once=True, timeout_s=60).reason == ExitReason.DRAINED

        def names(*where: str, mode: SearchMode) -> list[str]:
            result = kb.search("harbor ferry", mode=mode, where=list(where))
            assert result.used == mode
            return sorted(Path(hit.path).stem for hit in result.hits)

        for mode in SearchMode:
            assert names("tags=api", mode=mode) == ["api"]
            assert names("tags!=api", "team=docs", mode=mode) == ["old", "plain"]
            assert names("released>=2024-01-01", mode=mode) == ["api"]
            assert names("version>8", mode=mode) == ["old"]
            assert names("tags", mode=mode) == ["api", "old"]
            assert names("owner=x", mode=mode) == []
        hit = kb.search("harbor ferry", mode=SearchMode.TEXT, where={"tags": "legacy"}).hits[0]
        assert hit.metadata == {"team": "docs", "tags": "legacy", "version": 9}


def test_metadata_stored_before_where_is_made_flat_on_both_backends(backend: KbSettings) -> None:
    engine = create_engine(backend.database)
    migrate.upgrade(engine, "0010")
    nested = {"Title": "Guide", "Author": {"Name": "Ada"}, "Tags": ["API", "API"], "Draft": None}
    with engine.begin() as connection:
        connection.execute(
            sa.text(
                "INSERT INTO documents (id, source_path, content_sha256, title, source_format, mtime_ns,"
                " size, metadata, created_at, updated_at)"
                " VALUES (1, '/d/g.md', '', 'Guide', 'markdown', 0, 0, :m, 0, 0)"
            ),
            {"m": json.dumps(nested)},
        )
    migrate.upgrade(engine)
    with engine.connect() as connection:
        stored = connection.execute(sa.text("SELECT metadata FROM documents")).scalar_one()
    engine.dispose()
    assert (json.loads(stored) if isinstance(stored, str) else stored) == {
        "title": "Guide",
        "author.name": "Ada",
        "tags": ["API"],
    }
