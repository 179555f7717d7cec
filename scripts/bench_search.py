"""Benchmark: `kb search` latency (p50/p95) at 10k and 100k chunks, next to numpy brute force, in one run.

    .venv/bin/python scripts/bench_search.py [--sizes 10000,100000] [--queries 50] [--db pgserver]

Builds a database per size with synthetic chunks (random prose over a small vocabulary) and random unit
vectors in the active space, then times warm searches in one process for each mode (text, vector, hybrid).
Query vectors come from an in-process function (no API), so this measures kb's search itself: FTS5 BM25,
the sqlite-vec KNN scan, fusion and hydration. The baseline is numpy `X @ q` + argpartition over the same
matrix held in RAM: the memory-bandwidth floor for an exact scan.
"""

import argparse
import itertools
import random
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
from sqlalchemy import text

from kb.app import KnowledgeBase
from kb.records import ChunkInput, SearchMode
from kb.search import textindex
from kb.search.hybrid import SearchSpace, run_search
from kb.search.vectorindex import SpaceIndex
from kb.settings import KbSettings
from kb.store import fulltext, vectors
from kb.store.engine import write_transaction

# A Zipf-distributed vocabulary of 20,000 pseudo-words, so that full-text queries are as selective as in
# real prose (a tiny vocabulary would make every chunk match every query).
_VOCABULARY = [
    "".join(random.Random(n).choices("abcdefghijklmnoprstuvw", k=3 + n % 6)) for n in range(20_000)
]
_CUMULATIVE = list(itertools.accumulate(1.0 / (rank + 1) for rank in range(len(_VOCABULARY))))


def words(rng: random.Random, count: int) -> str:
    return " ".join(rng.choices(_VOCABULARY, cum_weights=_CUMULATIVE, k=count))


def question(rng: random.Random) -> str:
    """Six content words: not the hundred most frequent (a real question's stopwords are dropped)."""
    return " ".join(rng.choice(_VOCABULARY[100:5000]) for _ in range(6))


def build(kb: KnowledgeBase, size: int, dimensions: int, rng: np.random.Generator) -> np.ndarray:
    """Insert `size` chunks (50 per document) with embedded tasks and random unit vectors."""
    prose = random.Random(1)
    with write_transaction(kb.engine) as connection:
        connection.execute(
            text(
                "INSERT INTO embedding_spaces (id, provider, model, dimensions, task_type, normalized, state,"
                " created_at) VALUES (1, 'bench', 'synthetic', :d, 'RETRIEVAL_DOCUMENT', true, 'active', 0)"
            ),
            {"d": dimensions},
        )
        vectors.create_table(connection, 1, dimensions)
        documents = size // 50
        connection.execute(
            text(
                "INSERT INTO documents (id, source_path, content_sha256, title, source_format, mtime_ns,"
                " size, metadata, created_at, updated_at)"
                " VALUES (:id, :path, '', :title, 'markdown', 0, 0, '{}', 0, 0)"
            ),
            [
                {"id": d + 1, "path": f"/bench/dir{d % 10}/doc{d}.md", "title": f"Doc {d}"}
                for d in range(documents)
            ],
        )
        chunk_rows = []
        task_rows = []
        for i in range(size):
            body = words(prose, 60) + f" ({i})"
            chunk_rows.append(
                {
                    "id": i + 1,
                    "doc": i // 50 + 1,
                    "n": i % 50,
                    "text": body,
                    "sha": f"{i:064x}",
                    "heading": f"Doc > Section {i % 50}",
                }
            )
            task_rows.append({"id": i + 1, "sha": f"{i:064x}"})
        connection.execute(
            text(
                "INSERT INTO chunks (id, document_id, ordinal, text, text_sha256, token_estimate,"
                " heading_path, start_offset, end_offset)"
                " VALUES (:id, :doc, :n, :text, :sha, 80, :heading, 0, 0)"
            ),
            chunk_rows,
        )
        fulltext.index_new(connection, 0)
        connection.execute(
            text(
                "INSERT INTO embedding_tasks (id, space_id, text_sha256, token_estimate, status, attempts,"
                " next_attempt_at, created_at, updated_at) VALUES (:id, 1, :sha, 80, 'embedded', 0, 0, 0, 0)"
            ),
            task_rows,
        )
        matrix = rng.standard_normal((size, dimensions), dtype=np.float32)
        matrix /= np.linalg.norm(matrix, axis=1, keepdims=True)
        for start in range(0, size, 10_000):
            block = matrix[start : start + 10_000]
            vectors.write(connection, 1, range(start + 1, start + len(block) + 1), block)
    return matrix


def _latency(p50: float, p95: float) -> str:
    return f"p50 {p50 * 1000:7.1f} ms   p95 {p95 * 1000:7.1f} ms"


def percentiles(samples: list[float]) -> tuple[float, float]:
    ordered = sorted(samples)
    return statistics.median(ordered), ordered[min(len(ordered) - 1, int(len(ordered) * 0.95))]


def bench_size(work: Path, size: int, queries: int, dimensions: int, postgres: str | None = None) -> None:
    rng = np.random.default_rng(size)
    if postgres:
        settings = KbSettings(database_url=postgres, provider="local", _env_file=None)  # type: ignore[call-arg]
    else:
        settings = KbSettings(db=work / f"search-{size}.sqlite", provider="local", _env_file=None)  # type: ignore[call-arg]
    with KnowledgeBase(settings=settings) as kb:
        started = time.perf_counter()
        matrix = build(kb, size, dimensions, rng)
        kb.sync_text_index()  # the chunks went in by SQL: the full-text index catches up as after ingest
        backend = "PostgreSQL + pgvector HNSW" if postgres else "SQLite + sqlite-vec"
        built = time.perf_counter() - started
        print(f"\n{size:,} chunks ({dimensions} dims, {backend}): built in {built:.1f} s")
        query_vectors = rng.standard_normal((queries, dimensions), dtype=np.float32)
        query_vectors /= np.linalg.norm(query_vectors, axis=1, keepdims=True)
        texts = [question(random.Random(q)) for q in range(queries)]
        by_text = {t: query_vectors[n : n + 1] for n, t in enumerate(texts)}
        sqlite_space = SearchSpace(1, "bench", lambda text: by_text[text], chunk_input=ChunkInput.TEXT)
        memory_space = SearchSpace(
            1,
            "bench",
            lambda text: by_text[text],
            index=SpaceIndex(1, dimensions, "memory"),
            chunk_input=ChunkInput.TEXT,  # the tasks above key on text_sha256
        )
        for space in (sqlite_space, memory_space):  # warm caches (and load the in-memory index)
            run_search(kb.open_reader, texts[0], k=10, mode=SearchMode.HYBRID, space=space)
        floor = []
        for q in query_vectors:
            started = time.perf_counter()
            scores = matrix @ q
            top = np.argpartition(-scores, 10)[:10]
            top[np.argsort(-scores[top])]
            floor.append(time.perf_counter() - started)
        floor_p50, floor_p95 = percentiles(floor)
        print(f"  {'numpy brute force (k=10)':<40} {_latency(floor_p50, floor_p95)}")
        runs = [
            (SearchMode.TEXT, "", sqlite_space),
            (SearchMode.VECTOR, "", sqlite_space),
            (SearchMode.HYBRID, "", sqlite_space),
            (SearchMode.VECTOR, " (quantized index, in memory)", memory_space),
            (SearchMode.HYBRID, " (quantized index, in memory)", memory_space),
        ]
        unfiltered: dict[SearchMode, float] = {}
        for mode, label, space in runs:
            p50, p95 = time_searches(kb, texts, mode, space)
            unfiltered.setdefault(mode, p50)
            name = f"kb search --mode {mode.value}{label}"
            print(f"  {name:<40} {_latency(p50, p95)}   ({p50 / floor_p50:.1f}x numpy p50)")
        # --path: one directory of ten (10% of the chunks), then one document in a hundred (1%).
        for glob, share in (("/bench/dir3/*", "10%"), ("/bench/dir3/doc*13.md", "1%")):
            for mode in (SearchMode.TEXT, SearchMode.HYBRID):
                p50, p95 = time_searches(kb, texts, mode, sqlite_space, glob)
                name = f"  --mode {mode.value} --path ({share})"
                print(f"  {name:<40} {_latency(p50, p95)}   ({p50 / unfiltered[mode]:.1f}x unfiltered p50)")


def time_searches(
    kb: KnowledgeBase, texts: list[str], mode: SearchMode, space: SearchSpace, glob: str | None = None
) -> tuple[float, float]:
    samples = []
    for question_text in texts:
        started = time.perf_counter()
        result = run_search(
            kb.open_reader,
            question_text,
            k=10,
            mode=mode,
            space=space,
            path_glob=glob,
            text_index=textindex.for_settings(kb.settings),  # as KnowledgeBase.search: tantivy from 50k
            text_setting=kb.settings.text_index,
        )
        samples.append(time.perf_counter() - started)
        assert result.used == mode, (mode, result.notes)
        assert glob is not None or result.hits, (mode, result.notes)
    return percentiles(samples)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="10000,100000")
    parser.add_argument("--queries", type=int, default=50)
    parser.add_argument("--dimensions", type=int, default=768)
    parser.add_argument(
        "--db",
        help="also run on this empty PostgreSQL database (postgresql://...), or `pgserver` to start one",
    )
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="kb-bench-search-"))
    try:
        for size in (int(s) for s in args.sizes.split(",")):
            bench_size(work, size, args.queries, args.dimensions)
            if args.db:
                bench_size(work, size, args.queries, args.dimensions, fresh_postgres(args.db, work, size))
    finally:
        shutil.rmtree(work, ignore_errors=True)


def fresh_postgres(target: str, work: Path, size: int) -> str:
    """A new database for one size: on the server given, or on a pgserver started in `work`."""
    import sqlalchemy as sa

    from kb.store.engine import create_engine

    if target == "pgserver":
        import warnings

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            import pgserver  # type: ignore[import-untyped]

            target = pgserver.get_server(work / "postgres", cleanup_mode="stop").get_uri()
    name = f"kb_bench_{size}"
    admin = create_engine(target)
    with admin.connect().execution_options(isolation_level="AUTOCOMMIT") as connection:
        connection.exec_driver_sql(f"DROP DATABASE IF EXISTS {name}")
        connection.exec_driver_sql(f"CREATE DATABASE {name}")
    admin.dispose()
    url = sa.engine.make_url(target.replace("postgresql://", "postgresql+psycopg://", 1))
    return url.set(database=name).render_as_string(hide_password=False)


if __name__ == "__main__":
    main()
