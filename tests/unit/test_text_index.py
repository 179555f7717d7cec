"""The tantivy full-text index beside a SQLite file: answers like FTS5, stays fresh, never returns a chunk the
database no longer has, and gives way to FTS5 when it is stale, locked, corrupt or killed mid-update."""

import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from kb.app import KnowledgeBase
from kb.records import SearchMode
from kb.search import textindex
from kb.settings import KbSettings
from kb.store import fulltext
from kb.store.reader import ConnectionReader
from tests.support.files import HANDBOOK

# Questions whose words say where the answer is (the labelled paraphrases agree less: docs/search.md).
CLEAR_QUESTIONS = [
    "CORS middleware allow origins",
    "mount a directory of static files",
    "hash passwords with bcrypt",
    "lifespan startup shutdown events",
    "SQLAlchemy session dependency",
    "background tasks after the response",
]


@pytest.fixture(autouse=True)
def fresh_process_cache() -> None:
    textindex._OPEN.clear()  # each test's database is new: no index object is shared between them


def _settings(db: Path, setting: str) -> KbSettings:
    return KbSettings(db=db, provider="local", text_index=setting)


def _state(kb: KnowledgeBase) -> tuple[textindex.Watermark, textindex.Watermark, set[int]]:
    """The database's watermark, the index's, and the chunk ids the index holds."""
    index = textindex.for_settings(kb.settings)
    assert index is not None
    with kb.engine.connect() as connection:
        database = textindex.Watermark(*fulltext.chunk_watermark(ConnectionReader(connection)))
    assert index._open()
    return database, index._watermark(), index._indexed_ids()


def _db_ids(kb: KnowledgeBase) -> set[int]:
    with kb.engine.connect() as connection:
        return fulltext.chunk_ids(ConnectionReader(connection), 10**12)


def _tantivy_ranking(kb: KnowledgeBase, query: str) -> list[int] | None:
    index = textindex.for_database(kb.settings.db)
    with kb.engine.connect() as connection:
        ranked = index.search(ConnectionReader(connection), query, 10)
    return None if ranked is None else [chunk_id for chunk_id, _ in ranked]


def test_the_index_answers_like_fts5_and_is_fresh_after_ingest(db_path: Path) -> None:
    with KnowledgeBase(settings=_settings(db_path, "tantivy")) as kb:
        kb.ingest([HANDBOOK])
        database, mark, ids = _state(kb)
        assert mark == database and ids == _db_ids(kb)
        for question in CLEAR_QUESTIONS:
            assert _tantivy_ranking(kb, question)  # answered by tantivy, not FTS5
            tantivy_hits = kb.search(question, mode="text", k=3).hits
            with KnowledgeBase(settings=_settings(db_path, "fts5")) as fts5:
                fts5_hits = fts5.search(question, mode="text", k=3).hits
            assert tantivy_hits[0].path == fts5_hits[0].path, question
        cors = kb.search("CORS middleware allow origins", mode="text", k=3)
        assert cors.used == SearchMode.TEXT and cors.hits[0].path.endswith("tutorial/cors.md")


def test_edited_and_pruned_chunks_are_never_returned(db_path: Path, tmp_path: Path) -> None:
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "a.md").write_text("# Zebras\n\nZebras graze the savanna in herds.\n")
    (docs / "b.md").write_text("# Walruses\n\nWalruses haul out on the ice.\n")
    with KnowledgeBase(settings=_settings(db_path, "tantivy")) as kb:
        kb.ingest([docs])
        assert _tantivy_ranking(kb, "zebras walruses")
        (docs / "a.md").write_text("# Okapis\n\nOkapis hide in the rainforest.\n")
        (docs / "b.md").unlink()
        kb.ingest([docs], prune=True)
        database, mark, ids = _state(kb)
        assert mark == database and ids == _db_ids(kb)
        assert _tantivy_ranking(kb, "zebras walruses") == []
        assert [hit.path for hit in kb.search("okapis", mode="text").hits] == [str(docs / "a.md")]


def test_chunks_added_behind_its_back_are_caught_up_by_a_search(db_path: Path, tmp_path: Path) -> None:
    with KnowledgeBase(settings=_settings(db_path, "tantivy")) as kb:
        kb.ingest([HANDBOOK])
    late = tmp_path / "late.md"
    late.write_text("# Capybaras\n\nCapybaras are the largest rodents.\n")
    with KnowledgeBase(settings=_settings(db_path, "fts5")) as behind:
        behind.ingest([late])  # FTS5 only: the tantivy index is now one document behind
    textindex._OPEN.clear()
    with KnowledgeBase(settings=_settings(db_path, "tantivy")) as kb:
        hits = kb.search("capybaras rodents", mode="text").hits
        assert hits[0].path == str(late)
        database, mark, _ = _state(kb)
        assert mark == database


def test_a_writer_killed_mid_update_leaves_a_consistent_index_that_catches_up(db_path: Path) -> None:
    with KnowledgeBase(settings=_settings(db_path, "fts5")) as kb:
        kb.ingest([HANDBOOK])
    script = textwrap.dedent(
        f"""
        from kb import failpoints
        from kb.app import KnowledgeBase
        from kb.search import textindex
        from kb.settings import KbSettings

        textindex._BATCH = 5  # several batches, so that the kill lands between two of them
        failpoints.arm("textindex.add.after", failpoints.once(failpoints.kill, skip=2))
        with KnowledgeBase(settings=KbSettings(db={str(db_path)!r}, provider="local",
                                               text_index="tantivy")) as kb:
            kb.sync_text_index()
        """
    )
    child = subprocess.run([sys.executable, "-c", script], capture_output=True, timeout=120)
    assert child.returncode == -9, child.stderr.decode()
    with KnowledgeBase(settings=_settings(db_path, "tantivy")) as kb:
        index = textindex.for_database(db_path)
        assert index._open()
        assert index._watermark() == textindex.Watermark(0, 0, 0.0)  # nothing of the killed update committed
        cors = kb.search("CORS middleware allow origins", mode="text", k=3)
        assert cors.hits[0].path.endswith("tutorial/cors.md")
        database, mark, ids = _state(kb)
        assert mark == database and ids == _db_ids(kb)
        assert index._index.searcher().num_docs == mark.count + 1  # each chunk once, and the watermark


def test_a_corrupt_index_folder_is_rebuilt_and_fts5_answers_meanwhile(db_path: Path) -> None:
    with KnowledgeBase(settings=_settings(db_path, "tantivy")) as kb:
        kb.ingest([HANDBOOK])
    folder = textindex.folder_for(db_path.absolute())
    (folder / "meta.json").write_text("{ not json")
    textindex._OPEN.clear()
    with KnowledgeBase(settings=_settings(db_path, "tantivy")) as kb:
        cors = kb.search("CORS middleware allow origins", mode="text", k=3)
        assert cors.hits[0].path.endswith("tutorial/cors.md")
        database, mark, ids = _state(kb)
        assert mark == database and ids == _db_ids(kb)


def test_an_index_of_an_older_schema_is_rebuilt_with_the_fields_of_this_release(db_path: Path) -> None:
    import tantivy

    with KnowledgeBase(settings=_settings(db_path, "fts5")) as kb:
        kb.ingest([HANDBOOK])
    folder = textindex.folder_for(db_path.absolute())
    older = tantivy.SchemaBuilder()  # before contexts were indexed: no `situation` field
    older.add_integer_field("chunk_id", stored=True, indexed=True, fast=True)
    older.add_text_field("words")
    folder.mkdir()
    writer = tantivy.Index(older.build(), path=str(folder)).writer(15_000_000, 1)
    writer.add_document(tantivy.Document(chunk_id=1, words="stale"))
    writer.commit()
    writer.wait_merging_threads()
    with KnowledgeBase(settings=_settings(db_path, "tantivy")) as kb:
        assert _tantivy_ranking(kb, "CORS middleware allow origins")  # rebuilt, and answering
        database, mark, ids = _state(kb)
        assert mark == database and ids == _db_ids(kb)


def test_another_process_holding_the_writer_leaves_fts5_to_answer(db_path: Path, tmp_path: Path) -> None:
    with KnowledgeBase(settings=_settings(db_path, "tantivy")) as kb:
        kb.ingest([HANDBOOK])
    folder = textindex.folder_for(db_path.absolute())
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, tantivy; index = tantivy.Index.open(sys.argv[1]);"
            " writer = index.writer(15_000_000, 1); print('holding', flush=True); sys.stdin.read()",
            str(folder),
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == b"holding"
        late = tmp_path / "late.md"
        late.write_text("# Capybaras\n\nCapybaras are the largest rodents.\n")
        with KnowledgeBase(settings=_settings(db_path, "tantivy")) as kb:
            kb.ingest([late])  # cannot update the index: the other process has its writer
            assert _tantivy_ranking(kb, "capybaras") is None  # stale, so not used ...
            hits = kb.search("capybaras rodents", mode="text").hits
            assert hits[0].path == str(late)  # ... and FTS5 answers
    finally:
        holder.communicate(b"", timeout=30)
    with KnowledgeBase(settings=_settings(db_path, "tantivy")) as kb:
        assert _tantivy_ranking(kb, "capybaras")  # the writer is free again: caught up


def test_no_index_for_fts5_or_small_knowledge_bases(db_path: Path) -> None:
    assert textindex.for_settings(_settings(db_path, "fts5")) is None
    postgres = KbSettings(database_url="postgresql://u@h/kb", provider="local", text_index="fts5")
    assert textindex.for_settings(postgres) is None
    assert textindex.wanted("auto", textindex.CROSSOVER_CHUNKS - 1) is False
    assert textindex.wanted("auto", textindex.CROSSOVER_CHUNKS) is True
    with KnowledgeBase(settings=_settings(db_path, "auto")) as kb:
        kb.ingest([HANDBOOK])
        assert kb.sync_text_index() is None
    assert not textindex.folder_for(db_path.absolute()).exists()
    shutil.rmtree(textindex.folder_for(db_path.absolute()), ignore_errors=True)


def test_an_edited_last_document_whose_chunks_reuse_their_ids_is_reindexed(
    db_path: Path, tmp_path: Path
) -> None:
    """SQLite gives a new row the highest id + 1: the chunks replacing the newest ones get the same ids (and
    the same count), so (max id, count) alone would call a stale index fresh."""
    note = tmp_path / "note.md"
    note.write_text("# Zebras\n\nZebras graze the savanna in herds.\n")
    with KnowledgeBase(settings=_settings(db_path, "tantivy")) as kb:
        kb.ingest([note])
        before = _db_ids(kb)
        note.write_text("# Okapis\n\nOkapis hide in the rainforest.\n")
        kb.ingest([note])
        assert _db_ids(kb) == before  # the same ids, now other text
        assert _tantivy_ranking(kb, "zebras") == []
        assert _tantivy_ranking(kb, "okapis") == sorted(before)


def test_a_path_filter_is_answered_by_the_index_with_the_best_matches_under_the_path(
    db_path: Path, tmp_path: Path
) -> None:
    docs = tmp_path / "docs"
    for folder in ("guide", "api"):
        (docs / folder).mkdir(parents=True)
    # Many strong matches outside the path, one weak match inside: the filter must rank deeper to find it.
    for n in range(60):
        (docs / "guide" / f"g{n}.md").write_text(f"# Otters {n}\n\nOtters otters otters float on kelp.\n")
    (docs / "api" / "weak.md").write_text("# Reference\n\nA note that names otters once, among much else.\n")
    with KnowledgeBase(settings=_settings(db_path, "tantivy")) as kb:
        kb.ingest([docs])
        index = textindex.for_database(kb.settings.db)
        with kb.engine.connect() as connection:
            reader = ConnectionReader(connection)
            under_api = index.search(reader, "otters", 3, path_glob="*/api/*")
            fts5_under_api = fulltext.search(reader, "otters", 3, "*/api/*")
            under_guide = index.search(reader, "otters", 5, path_glob="*/guide/*")
        assert under_api is not None and under_guide is not None  # tantivy answered, not FTS5
        assert [chunk_id for chunk_id, _ in under_api] == [chunk_id for chunk_id, _ in fts5_under_api]
        assert len(under_api) == 1 and len(under_guide) == 5
        hits = kb.search("otters", mode="text", k=3, path="*/api/*").hits
        assert [hit.path for hit in hits] == [str(docs / "api" / "weak.md")]


def test_on_postgresql_a_host_keeps_an_index_that_answers_like_ts_rank_and_keeps_up(
    postgres_url: str, tmp_path: Path
) -> None:
    folder = tmp_path / "text"
    settings = KbSettings(
        database_url=postgres_url,
        provider="local",
        text_index="tantivy",
        text_index_dir=folder,
        results_dir=tmp_path / "results",
    )
    docs = tmp_path / "docs"
    (docs / "api").mkdir(parents=True)
    (docs / "zebras.md").write_text("# Zebras\n\nZebras graze the savanna in herds.\n")
    (docs / "api" / "otters.md").write_text("# Otters\n\nOtters float on kelp in the savanna of the sea.\n")
    with KnowledgeBase(settings=settings) as kb:
        kb.ingest([docs])
        index = textindex.for_settings(settings)
        assert index is not None and index.folder == folder
        with kb.engine.connect() as connection:
            reader = ConnectionReader(connection)
            ranked = index.search(reader, "savanna zebras", 10)
            by_ts_rank = fulltext.search(reader, "savanna zebras", 10)
            under_api = index.search(reader, "savanna", 10, path_glob="*/api/*")
        assert ranked is not None and [i for i, _ in ranked] == [i for i, _ in by_ts_rank]  # tantivy answered
        assert under_api is not None and len(under_api) == 1
        assert [Path(h.path).name for h in kb.search("savanna", mode="text").hits] == [
            "zebras.md",
            "otters.md",
        ]
        (docs / "zebras.md").unlink()
        (docs / "okapis.md").write_text("# Okapis\n\nOkapis hide in the rainforest.\n")
        kb.ingest([docs], prune=True)
        assert [Path(h.path).name for h in kb.search("savanna zebras okapis", mode="text").hits] == [
            "okapis.md",
            "otters.md",
        ]
        database, mark, ids = _state(kb)
        assert mark == database and ids == _db_ids(kb)


def test_an_index_too_far_behind_is_caught_up_in_the_background_of_a_long_lived_process(
    db_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """After an upgrade that rebuilds the index, a server's searches must not wait for the next ingest."""
    with KnowledgeBase(settings=_settings(db_path, "fts5")) as kb:
        kb.ingest([HANDBOOK])  # no index yet: every chunk is missing from it
    monkeypatch.setattr(textindex, "SEARCH_CATCH_UP", 1)  # more than a search adds itself
    with KnowledgeBase(settings=_settings(db_path, "tantivy")) as kb:
        first = kb.search("CORS middleware allow origins", mode="text", k=3)
        assert first.hits[0].path.endswith("tutorial/cors.md")  # FTS5 answered meanwhile
        index = textindex.for_settings(kb.settings)
        assert index is not None
        index.wait_for_catch_up(timeout_s=120)
        database, mark, ids = _state(kb)
        assert mark == database and ids == _db_ids(kb)
        assert _tantivy_ranking(kb, "CORS middleware allow origins")
