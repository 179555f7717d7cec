"""The quantized vector index: it finds what the exact scan finds, its codes are written with the vectors
(so no crash can leave it behind the database), and a long-lived index catches up with new writes."""

from pathlib import Path

import numpy as np
import pytest
from numpy.typing import NDArray

from kb.app import KnowledgeBase
from kb.core.quantize import FIT_SAMPLE
from kb.records import SpaceSpec, SpaceState
from kb.search.vectorindex import EXACT_BELOW, FIRST_EXACT_BELOW, Method, QuantizedIndex, SpaceIndex, choose
from kb.settings import KbSettings
from kb.store import spaces, vectors
from kb.store.engine import write_transaction
from kb.store.reader import ConnectionReader
from kb.testing.gemini_emulator import GeminiEmulator
from tests.support.crash_harness import expire_lease, kb_env, owner_of, run_kb
from tests.support.files import write
from tests.support.settings import EMULATOR_KEY

Matrix = NDArray[np.float32]


def clustered(count: int, dims: int, seed: int = 3) -> Matrix:
    """Unit vectors around 100 centers and a shared offset: neighbours as real embeddings have them."""
    rng = np.random.default_rng(seed)
    centers = rng.standard_normal((100, dims)).astype(np.float32)
    common = rng.standard_normal(dims).astype(np.float32) * 0.5
    points = centers[rng.integers(0, 100, count)] + rng.standard_normal((count, dims)).astype(np.float32)
    points += common
    return points / np.linalg.norm(points, axis=1, keepdims=True)


def new_space(kb: KnowledgeBase, dims: int) -> int:
    with write_transaction(kb.engine) as connection:
        return spaces.create(connection, SpaceSpec("gemini", "gemini-embedding-001", dims), SpaceState.ACTIVE)


def store(kb: KnowledgeBase, space_id: int, first_id: int, matrix: Matrix) -> None:
    with write_transaction(kb.engine) as connection:
        ids = range(first_id, first_id + len(matrix))
        vectors.write(connection, space_id, ids, matrix)


def nearest(kb: KnowledgeBase, index: SpaceIndex | None, space_id: int, query: Matrix, k: int) -> list[int]:
    with kb.open_reader() as reader:
        if index is None:
            return [i for i, _ in vectors.nearest(reader, space_id, query, k)]
        return [i for i, _ in index.nearest(reader, query, k)]


def assert_codes_match_vectors(kb: KnowledgeBase, space_id: int, dims: int) -> None:
    """Every stored vector has a code (no more, no fewer), and its code is that vector's."""
    with kb.engine.connect() as connection:
        reader = ConnectionReader(connection)
        ids, matrix = vectors.load_all(reader, space_id, dims)
        fitted = vectors.quantizer(reader, space_id)
        coded: dict[int, bytes] = {}
        through = vectors.codes_state(reader, space_id).through
        for block_ids, signs, _levels in vectors.code_blocks(reader, space_id, 0, through, levels=False):
            width = len(signs) // len(block_ids)
            for n, rowid in enumerate(block_ids.tolist()):
                coded[rowid] = signs[n * width : (n + 1) * width]
    assert set(coded) == set(ids.tolist())
    if len(ids):
        assert fitted is not None
        expected = fitted.encode(matrix).signs
        assert all(coded[int(rowid)] == expected[n].tobytes() for n, rowid in enumerate(ids))


def test_the_method_follows_the_setting_and_the_size_of_the_space() -> None:
    assert choose("exact", 10**7, 5, "sqlite") is Method.EXACT
    assert choose("memory", 10, 0, "sqlite") is Method.MEMORY
    assert choose("quantized", 10, 0, "sqlite") is Method.QUANTIZED
    assert choose("memory", 10**7, 5, "postgresql") is Method.EXACT  # pgvector's HNSW index there
    assert choose("auto", EXACT_BELOW - 1, 5, "sqlite") is Method.EXACT
    assert choose("auto", FIRST_EXACT_BELOW - 1, 0, "sqlite") is Method.EXACT
    assert choose("auto", FIRST_EXACT_BELOW, 0, "sqlite") is Method.QUANTIZED
    assert choose("auto", EXACT_BELOW, 1, "sqlite") is Method.MEMORY


def test_a_warmed_up_index_answers_the_first_question_from_memory(kb: KnowledgeBase) -> None:
    """`kb serve` warms the index up before it listens: with `auto`, even its first search then uses the
    levels in memory, where a cold process's first search scans exactly."""
    dims = 16
    matrix = clustered(EXACT_BELOW, dims)
    space_id = new_space(kb, dims)
    store(kb, space_id, 1, matrix)
    cold, warm = SpaceIndex(space_id, dims), SpaceIndex(space_id, dims)
    with kb.open_reader() as reader:
        assert warm.warm(reader) is Method.MEMORY
    for index, method in ((cold, Method.EXACT), (warm, Method.MEMORY)):
        assert nearest(kb, index, space_id, matrix[7], 1) == [8]
        assert index.last_method is method
    assert kb.warm_up() == "memory"  # the active space's own index


def test_the_former_setting_name_still_means_the_exact_scan() -> None:
    assert KbSettings(search_index="sqlite").search_index == "exact"  # type: ignore[arg-type]


@pytest.mark.parametrize("setting", ["quantized", "memory"])
def test_the_quantized_index_finds_the_exact_neighbours(kb: KnowledgeBase, setting: str) -> None:
    dims, count = 128, 12_000
    matrix = clustered(count + 40, dims)
    queries, matrix = matrix[:40], matrix[40:]
    space_id = new_space(kb, dims)
    store(kb, space_id, 1, matrix)
    index = SpaceIndex(space_id, dims, setting)
    recalls = []
    for query in queries:
        exact = nearest(kb, None, space_id, query, 10)
        found = nearest(kb, index, space_id, query, 10)
        recalls.append(len(set(exact) & set(found)) / 10)
    assert index.last_method == setting
    assert np.mean(recalls) >= 0.97, recalls
    # Distances are exact, read from the stored vectors.
    with kb.open_reader() as reader:
        pairs = index.nearest(reader, matrix[5], 3)
    assert pairs[0][0] == 6 and pairs[0][1] == pytest.approx(0.0, abs=1e-5)


def test_a_deep_search_reads_only_the_best_exactly_and_estimates_the_rest_closely(kb: KnowledgeBase) -> None:
    """Hybrid search asks 100 neighbours: the best EXACT_SHORTLIST are re-scored from the stored vectors,
    the rest keep the levels' order, with similarities within a level step of the exact ones."""
    dims, count = 128, 12_000
    matrix = clustered(count + 20, dims)
    queries, matrix = matrix[:20], matrix[20:]
    space_id = new_space(kb, dims)
    store(kb, space_id, 1, matrix)
    index = SpaceIndex(space_id, dims, "memory")
    overlaps = []
    for query in queries:
        with kb.open_reader() as reader:
            found = index.nearest(reader, query, 100)
        exact = [
            i for i, _ in sorted(enumerate((matrix @ query).tolist(), start=1), key=lambda p: -p[1])[:100]
        ]
        assert len(found) == 100 and len({i for i, _ in found}) == 100
        for rowid, distance in found:
            assert distance == pytest.approx(1.0 - float(matrix[rowid - 1] @ query), abs=0.02)
        overlaps.append(len({i for i, _ in found} & set(exact)) / 100)
    assert index.last_method == "memory" and np.mean(overlaps) >= 0.9, overlaps


def test_a_long_lived_index_catches_up_with_every_write_and_refit(kb: KnowledgeBase) -> None:
    """The quantizer is refitted while the space is small (its codes all rewritten, under a new token);
    the index in memory reloads then, and otherwise loads just the blocks written since."""
    dims = 64
    matrix = clustered(2 * FIT_SAMPLE + 600, dims, seed=5)
    space_id = new_space(kb, dims)
    index = SpaceIndex(space_id, dims, "memory")
    written = 0
    tokens = []
    for size in (1, 2, 5, 40, 300, FIT_SAMPLE, FIT_SAMPLE, 250):
        store(kb, space_id, written + 1, matrix[written : written + size])
        written += size
        assert_codes_match_vectors(kb, space_id, dims)
        newest = matrix[written - 1]
        assert nearest(kb, index, space_id, newest, 1) == [written]  # found by a stale index's refresh
        assert index.last_method == Method.MEMORY
        with kb.open_reader() as reader:
            fitted = vectors.quantizer(reader, space_id)
        assert fitted is not None
        tokens.append((fitted.token, fitted.fitted_on))
    fitted_on = [on for _, on in tokens]
    assert fitted_on == [
        1,
        3,
        8,
        48,
        348,
        FIT_SAMPLE,
        FIT_SAMPLE,
        FIT_SAMPLE,
    ]  # refitted as the space doubled
    assert tokens[-1][0] == tokens[-2][0] == tokens[-3][0]  # a space fitted on enough keeps its quantizer


def test_a_replaced_vector_is_found_by_its_new_value(kb: KnowledgeBase) -> None:
    dims = 64
    matrix = clustered(3_000, dims, seed=7)
    space_id = new_space(kb, dims)
    store(kb, space_id, 1, matrix[:2_000])
    index = SpaceIndex(space_id, dims, "memory")
    assert nearest(kb, index, space_id, matrix[99], 1) == [100]
    store(kb, space_id, 100, matrix[2_500:2_501])  # row 100 now holds another vector
    with kb.open_reader() as reader:
        (rowid, distance), *_ = index.nearest(reader, matrix[2_500], 5)
        after = [i for i, _ in index.nearest(reader, matrix[99], 5)]
    assert rowid == 100 and distance == pytest.approx(0.0, abs=1e-5)
    assert 100 not in after[:1]
    assert len(after) == len(set(after))  # the old code left behind never shows twice


def test_a_space_gone_and_made_again_under_the_same_id_is_reloaded(kb: KnowledgeBase) -> None:
    dims = 32
    matrix = clustered(400, dims, seed=9)
    space_id = new_space(kb, dims)
    store(kb, space_id, 1, matrix[:200])
    index = SpaceIndex(space_id, dims, "memory")
    assert nearest(kb, index, space_id, matrix[10], 1) == [11]
    with write_transaction(kb.engine) as connection:
        vectors.drop_table(connection, space_id)
        vectors.create_table(connection, space_id, dims)
    store(kb, space_id, 1, matrix[200:400])
    assert nearest(kb, index, space_id, matrix[210], 1) == [11]


def test_loading_the_index_streams_its_blocks(kb: KnowledgeBase) -> None:
    """The peak while loading is the index's own arrays and a block in flight, not a copy of them all."""
    import tracemalloc

    dims, count = 256, 60_000
    space_id = new_space(kb, dims)
    matrix = clustered(count, dims, seed=11)
    for start in range(0, count, 2_000):
        store(kb, space_id, start + 1, matrix[start : start + 2_000])
    index = QuantizedIndex(space_id, dims, levels=True)
    with kb.open_reader() as reader:
        tracemalloc.start()
        assert index.refresh(reader, vectors.count(reader, space_id))
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
    per_vector = 8 + 32 + dims  # id, signs, levels
    largest_block = FIT_SAMPLE * per_vector  # the refit's blocks; the others hold 2,000
    assert peak < count * per_vector + 2 * largest_block, f"peak {peak / 1e6:.1f} MB"


def test_a_database_from_before_the_codes_gets_them_when_migrated(tmp_path: Path) -> None:
    from kb.store import migrate
    from kb.store.engine import create_engine

    dims = 48
    matrix = clustered(500, dims, seed=13)
    engine = create_engine(tmp_path / "old.sqlite")
    try:
        migrate.upgrade(engine, "0007")
        with write_transaction(engine) as connection:
            space_id = 1  # the space row as kb 0007 wrote it, and its vectors alone
            connection.exec_driver_sql(
                "INSERT INTO embedding_spaces (id, provider, model, dimensions, task_type, normalized, state,"
                " created_at) VALUES (1, 'gemini', 'gemini-embedding-001', ?, 'RETRIEVAL_DOCUMENT', 1,"
                " 'active', 0)",
                (dims,),
            )
            vectors.create_table(connection, space_id, dims)
            for name in (vectors.codes_table(space_id), vectors.quantizer_table(space_id)):
                connection.exec_driver_sql(f"DROP TABLE IF EXISTS {name}")
            connection.exec_driver_sql(
                f"INSERT INTO {vectors.table_name(space_id)}(rowid, embedding) VALUES (?, ?)",
                [(n + 1, vectors.serialize(row)) for n, row in enumerate(matrix)],
            )
        migrate.upgrade(engine)
    finally:
        engine.dispose()
    with KnowledgeBase(settings=KbSettings(db=tmp_path / "old.sqlite")) as kb:
        assert_codes_match_vectors(kb, space_id, dims)
        assert nearest(kb, SpaceIndex(space_id, dims, "memory"), space_id, matrix[42], 1) == [43]


@pytest.mark.slow
def test_the_index_agrees_with_the_database_after_workers_killed_around_the_apply(
    emulator: GeminiEmulator, tmp_path: Path
) -> None:
    """A worker SIGKILLed just before, then just after, committing an apply: the codes cover exactly the
    stored vectors each time, and an index kept in memory across it answers as the exact scan does."""
    db, corpus = tmp_path / "kb.sqlite", tmp_path / "corpus"
    env = kb_env(emulator, db)
    settings = KbSettings(
        db=db,
        provider="gemini",
        gemini_api_key=EMULATOR_KEY,  # type: ignore[arg-type]
        gemini_base_url=emulator.base_url,
    )

    def add(batch: int) -> None:
        for n in range(40):
            write(
                corpus / f"b{batch}-{n}.md", f"# Note {batch}-{n}\n\nlighthouse {batch * 97 + n} keeper log\n"
            )
        with KnowledgeBase(settings=settings) as kb:
            kb.ingest([corpus])

    add(0)
    assert run_kb(["worker", "--once"], env, tmp_path / "logs", "first", timeout=120).popen.returncode == 0
    with KnowledgeBase(settings=settings) as kb:
        space = kb.status().spaces[0]
        space_id, dims = space.id, space.dimensions
        index = SpaceIndex(space_id, dims, "memory")
        for batch, failpoint in ((1, "apply.commit.before=kill"), (2, "apply.commit.after=kill"), (3, None)):
            add(batch)
            process = run_kb(["worker", "--once"], env, tmp_path / "logs", f"w{batch}", 120, failpoint)
            assert process.popen.returncode == (0 if failpoint is None else -9), process.stderr
            if failpoint is not None:
                expire_lease(db, owner_of(process.popen.pid))  # what waiting out its lease would do
            assert_codes_match_vectors(kb, space_id, dims)
            with kb.engine.connect() as connection:
                _, matrix = vectors.load_all(ConnectionReader(connection), space_id, dims)
            for query in matrix[:: max(1, len(matrix) // 10)]:
                assert nearest(kb, index, space_id, query, 5) == nearest(kb, None, space_id, query, 5)
        assert kb.status().tasks["embedded"] == 160


def test_a_question_already_paid_for_is_answered_from_the_index_without_a_key(tmp_path: Path) -> None:
    """No API key, so no embedder: a cached question's vector still goes through the configured index (it
    used to fall back silently to the scan)."""
    from kb.records import SearchMode
    from kb.store import querycache

    dims = 64
    settings = KbSettings(db=tmp_path / "kb.sqlite", provider="gemini", search_index="memory", _env_file=None)  # type: ignore[call-arg]
    with KnowledgeBase(settings=settings) as kb:
        kb.ingest_text("# a\n\nlighthouse keeper\n", "a.md")
        with kb.engine.connect() as connection:
            (task_id,) = connection.exec_driver_sql("SELECT id FROM embedding_tasks").one()
        space_id = new_space(kb, dims)  # the space searched: active, with the only vector
        with write_transaction(kb.engine) as connection:
            connection.exec_driver_sql(
                "UPDATE embedding_spaces SET state = 'retired' WHERE id != ?", (space_id,)
            )
            connection.exec_driver_sql("UPDATE embedding_tasks SET space_id = ?", (space_id,))
        matrix = clustered(1, dims)
        with write_transaction(kb.engine) as connection:
            vectors.write(connection, space_id, [task_id], matrix)
            querycache.put(connection, space_id, "where is the keeper", matrix)
        result = kb.search("where is the keeper", mode=SearchMode.VECTOR)
    assert result.used == SearchMode.VECTOR and not result.notes
    assert result.vector_index == "memory"
    assert [hit.chunk_id for hit in result.hits] == [1] and "lighthouse keeper" in result.hits[0].text
