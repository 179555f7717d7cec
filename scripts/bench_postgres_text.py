"""Benchmark: PostgreSQL full text (`ts_rank` over the stored tsvector, GIN index) at scale, beside the
cost of merely counting the matches, in one run.

    .venv/bin/python scripts/bench_postgres_text.py --from WORK/kb.sqlite [--chunks 1000000] [--queries 100]

The chunks of a SQLite knowledge base (e.g. the one `scripts/bench_scale.py --keep` leaves) are copied into
a fresh kb schema on a pgserver started in a temporary folder (COPY, then the GIN index built once); then
the same questions as bench_scale.py are asked through kb's own PostgreSQL full-text search
(`kb.store.fulltext.search`, top 50 as hybrid asks), next to `count(*)` of the rows matching the same
tsquery: if ranking costs about what counting does, PostgreSQL ranks every match, as FTS5 does. Then the
tantivy index a host keeps of the database (KB_TEXT_INDEX=tantivy) is built and asked the same.
"""

import argparse
import shutil
import sqlite3
import statistics
import tempfile
import time
import warnings
from pathlib import Path

from bench_scale import questions

from kb.search import textindex
from kb.store import fulltext, migrate
from kb.store.engine import create_engine
from kb.store.reader import ConnectionReader

_COLUMNS = (
    "id, document_id, ordinal, text, text_sha256, token_estimate, heading_path, start_offset, end_offset"
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--from", dest="source", type=Path, required=True)
    parser.add_argument("--chunks", type=int, default=1_000_000)
    parser.add_argument("--queries", type=int, default=100)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="kb-bench-pgtext-"))
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            import pgserver  # type: ignore[import-untyped]

            server = pgserver.get_server(work / "postgres", cleanup_mode="stop")
        url = server.get_uri().replace("postgresql://", "postgresql+psycopg://", 1)
        engine = create_engine(url)
        migrate.ensure_current(engine)
        load(engine, args.source, args.chunks)
        texts = questions(args.queries)
        measure(engine, texts)
        measure_tantivy(engine, texts, work / "text")
    finally:
        shutil.rmtree(work, ignore_errors=True)


def load(engine: object, source: Path, limit: int) -> None:
    from sqlalchemy.engine import Engine

    assert isinstance(engine, Engine)
    sqlite = sqlite3.connect(source)
    started = time.perf_counter()
    with engine.begin() as connection:
        connection.exec_driver_sql("DROP INDEX IF EXISTS ix_chunks_search_vector")
        raw = connection.connection.dbapi_connection
        assert raw is not None
        with raw.cursor() as cursor:  # type: ignore[attr-defined]
            documents = sqlite.execute(
                "SELECT id, source_path, content_sha256, title, source_format, mtime_ns, size, metadata,"
                " created_at, updated_at FROM documents WHERE id IN (SELECT DISTINCT document_id FROM chunks"
                f" WHERE id <= {limit})"
            )
            with cursor.copy(
                "COPY documents (id, source_path, content_sha256, title, source_format, mtime_ns, size,"
                " metadata, created_at, updated_at) FROM STDIN"
            ) as copy:
                for row in documents:
                    copy.write_row(row)
            rows = sqlite.execute(f"SELECT {_COLUMNS} FROM chunks WHERE id <= {limit} ORDER BY id")
            with cursor.copy(f"COPY chunks ({_COLUMNS}) FROM STDIN") as copy:
                for row in rows:
                    copy.write_row(row)
        copied = time.perf_counter() - started
        connection.exec_driver_sql("SET maintenance_work_mem = '1GB'")
        connection.exec_driver_sql("CREATE INDEX ix_chunks_search_vector ON chunks USING gin (search_vector)")
    indexed = time.perf_counter() - started - copied
    with engine.connect() as connection:
        count = connection.exec_driver_sql("SELECT count(*) FROM chunks").scalar_one()
        size = connection.exec_driver_sql("SELECT pg_total_relation_size('chunks')").scalar_one()
    print(
        f"{count:,} chunks copied in {copied:.0f} s, GIN index built in {indexed:.0f} s, {size / 1e9:.2f} GB"
    )


def measure(engine: object, texts: list[str]) -> None:
    from sqlalchemy.engine import Engine

    assert isinstance(engine, Engine)
    ranked, counted, matches = [], [], []
    with engine.connect() as connection:
        reader = ConnectionReader(connection)
        fulltext.search(reader, texts[0], 50)
        for text in texts[1:]:
            started = time.perf_counter()
            fulltext.search(reader, text, 50)
            ranked.append(time.perf_counter() - started)
            expression = fulltext.tsquery_expression(text)
            started = time.perf_counter()
            found = connection.exec_driver_sql(
                "SELECT count(*) FROM chunks WHERE search_vector @@ to_tsquery('english', %(q)s)",
                {"q": expression},
            ).scalar_one()
            counted.append(time.perf_counter() - started)
            matches.append(found)
    print(f"matches per question: median {statistics.median(matches):,.0f}")
    print(f"kb full text, ts_rank top 50:  p50 {_ms(ranked, 50)}  p95 {_ms(ranked, 95)}")
    print(f"count(*) of the same matches:  p50 {_ms(counted, 50)}  p95 {_ms(counted, 95)}")


def measure_tantivy(engine: object, texts: list[str], folder: Path) -> None:
    """The same questions through the tantivy index a host keeps of the database (KB_TEXT_INDEX=tantivy)."""
    from sqlalchemy.engine import Engine

    assert isinstance(engine, Engine)
    index = textindex.TextIndex(folder)
    timings, overlap = [], []
    with engine.connect() as connection:
        reader = ConnectionReader(connection)
        started = time.perf_counter()
        assert index.sync(reader, None, "tantivy"), "the index could not be built"
        built = time.perf_counter() - started
        megabytes = sum(f.stat().st_size for f in folder.rglob("*") if f.is_file()) / 1e6
        # Back to back, as a server answers: the freshness check (a count of the chunks) runs once a second.
        answers = []
        for text in texts[1:]:
            started = time.perf_counter()
            answers.append(index.search(reader, text, 50))
            timings.append(time.perf_counter() - started)
        checks = []
        for _ in range(5):
            started = time.perf_counter()
            fulltext.chunk_watermark(reader)
            checks.append(time.perf_counter() - started)
        for text, ranked in zip(texts[1:20], answers, strict=False):
            assert ranked is not None, "the index did not answer"
            by_ts_rank = {chunk_id for chunk_id, _ in fulltext.search(reader, text, 10)}
            top = {chunk_id for chunk_id, _ in ranked[:10]}
            overlap.append(len(top & by_ts_rank) / max(1, len(by_ts_rank)))
    print(f"tantivy index built in {built:.0f} s, {megabytes:.0f} MB")
    print(f"kb full text, tantivy top 50:  p50 {_ms(timings, 50)}  p95 {_ms(timings, 95)}")
    print(f"its freshness check alone:     p50 {_ms(checks, 50)}")
    print(f"top-10 overlap with ts_rank:   {statistics.mean(overlap):.2f} (19 questions)")


def _ms(samples: list[float], percentile: int) -> str:
    ordered = sorted(samples)
    return f"{ordered[min(len(ordered) - 1, len(ordered) * percentile // 100)] * 1000:7.1f} ms"


if __name__ == "__main__":
    main()
