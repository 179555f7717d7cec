"""Benchmark: full-text top-k, FTS5 BM25 against the tantivy index (kb.search.textindex), per size.

    .venv/bin/python scripts/bench_textindex.py [--sizes 1000,10000,100000,300000] [--queries 50]

Builds a SQLite database per size with bench_scale.py's synthetic prose (80 words a chunk, drawn by their
frequency in this repository's Markdown, and a heading each), builds the tantivy index beside it, then
times warm searches of bench_scale.py's questions (4-8 words OR-ed, as kb asks them): `fulltext.search`
(FTS5) and `TextIndex.search` (its freshness check included) at kb's search depth (50). Also reports the
top-10 overlap of the two rankings. Sets `textindex.CROSSOVER_CHUNKS` (docs/search.md).
"""

import argparse
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
from bench_scale import questions, vocabulary
from sqlalchemy import text

from kb.app import KnowledgeBase
from kb.search import textindex
from kb.settings import KbSettings
from kb.store import fulltext
from kb.store.engine import write_transaction
from kb.store.reader import ConnectionReader

DEPTH = 50  # run_search's full-text depth for k=10
WORDS_PER_CHUNK = 80  # bench_scale.py's


def build(kb: KnowledgeBase, size: int) -> None:
    rng = np.random.default_rng(5)
    vocabulary_words, frequencies = vocabulary()
    lexicon = np.array(vocabulary_words, dtype=object)
    with write_transaction(kb.engine) as connection:
        connection.execute(
            text(
                "INSERT INTO documents (id, source_path, content_sha256, title, source_format, mtime_ns,"
                " size, metadata, created_at, updated_at)"
                " VALUES (:id, :path, '', :title, 'markdown', 0, 0, '{}', 0, 0)"
            ),
            [{"id": d + 1, "path": f"/bench/doc{d}.md", "title": f"Doc {d}"} for d in range(size // 50 + 1)],
        )
        for start in range(0, size, 50_000):
            end = min(size, start + 50_000)
            drawn = lexicon[rng.choice(len(lexicon), size=(end - start, WORDS_PER_CHUNK), p=frequencies)]
            rows = [
                {
                    "id": i + 1,
                    "doc": i // 50 + 1,
                    "n": i % 50,
                    "text": " ".join(drawn[i - start]),
                    "sha": f"{i:064x}",
                    "heading": f"Notes {i // 50} > Part {i % 50} of {i // 50}",
                }
                for i in range(start, end)
            ]
            connection.execute(
                text(
                    "INSERT INTO chunks (id, document_id, ordinal, text, text_sha256, token_estimate,"
                    " heading_path, start_offset, end_offset)"
                    " VALUES (:id, :doc, :n, :text, :sha, 80, :heading, 0, 0)"
                ),
                rows,
            )
        fulltext.index_new(connection, 0)


def percentiles(samples: list[float]) -> str:
    ordered = sorted(samples)
    p95 = ordered[min(len(ordered) - 1, int(len(ordered) * 0.95))]
    return f"p50 {statistics.median(ordered) * 1000:7.1f} ms  p95 {p95 * 1000:7.1f} ms"


def bench_size(work: Path, size: int, queries: int) -> None:
    db = work / f"text-{size}.sqlite"
    settings = KbSettings(db=db, provider="local", text_index="tantivy", _env_file=None)  # type: ignore[call-arg]
    with KnowledgeBase(settings=settings) as kb:
        build(kb, size)
        started = time.perf_counter()
        assert kb.sync_text_index()
        built = time.perf_counter() - started
        megabytes = sum(f.stat().st_size for f in textindex.folder_for(db).rglob("*") if f.is_file()) / 1e6
        index = textindex.for_database(db)
        asked = questions(queries)
        fts5: list[float] = []
        tantivy: list[float] = []
        overlap = 0.0
        with kb.engine.connect() as connection:
            reader = ConnectionReader(connection)
            for q in asked[:3]:  # warm both
                fulltext.search(reader, q, DEPTH)
                index.search(reader, q, DEPTH)
            for q in asked:
                started = time.perf_counter()
                by_fts5 = fulltext.search(reader, q, DEPTH)
                fts5.append(time.perf_counter() - started)
                started = time.perf_counter()
                by_tantivy = index.search(reader, q, DEPTH)
                tantivy.append(time.perf_counter() - started)
                assert by_tantivy is not None
                overlap += len({c for c, _ in by_fts5[:10]} & {c for c, _ in by_tantivy[:10]}) / 10
        print(
            f"{size:>9,} chunks  FTS5 {percentiles(fts5)}   tantivy {percentiles(tantivy)}   "
            f"top-10 overlap {overlap / queries:.2f}   index built in {built:.1f} s, {megabytes:.0f} MB"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="1000,10000,100000,300000")
    parser.add_argument("--queries", type=int, default=50)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="kb-bench-text-"))
    try:
        for size in (int(s) for s in args.sizes.split(",")):
            bench_size(work, size, args.queries)
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
