"""Benchmark: `kb ingest` throughput next to raw SQLite inserts of the same rows, in one run.

    .venv/bin/python scripts/bench_ingest.py [--files 2000] [--sections 50]

Generates a Markdown corpus (files x sections, one chunk of `--words` words per section), ingests it into a
fresh database with kb (the whole command: read, chunk, hash, store, full-text index, queue), then inserts
the very rows kb stored with a raw `executemany` (same driver, same pragmas, one transaction), twice: into
a bare table with the same columns (the floor), and into kb's own schema followed by one bulk FTS5 insert of
the same rows (what storing and indexing them costs at all). Prints chunks/s and ratios.

    .venv/bin/python scripts/bench_ingest.py --files 400 --sections 50 --words 300   # 20,000 chunks, 40 MB
"""

import argparse
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from kb.app import KnowledgeBase
from kb.settings import KbSettings
from kb.store import migrate
from kb.store.engine import create_engine

WORDS = [
    "embedding",
    "batch",
    "vector",
    "search",
    "index",
    "chunk",
    "token",
    "model",
    "query",
    "document",
    "section",
    "paragraph",
    "database",
    "worker",
    "retry",
    "job",
    "result",
    "space",
    "cost",
    "price",
    "gemini",
    "sqlite",
    "migration",
    "heading",
    "text",
    "the",
    "a",
    "of",
    "and",
    "to",
    "in",
    "is",
    "for",
    "on",
    "with",
    "as",
    "by",
    "at",
    "from",
    "that",
    "this",
    "it",
    "be",
    "are",
    "or",
    "an",
]

COLUMNS = "document_id, ordinal, text, text_sha256, token_estimate, heading_path, start_offset, end_offset"


def make_corpus(root: Path, files: int, sections: int, words_per_section: int = 70, seed: int = 7) -> None:
    rng = random.Random(seed)
    for f in range(files):
        parts = [f"# Document {f}\n"]
        for s in range(sections):
            words = " ".join(rng.choice(WORDS) for _ in range(words_per_section))
            parts.append(f"## Section {s}\n\n{words.capitalize()}.\n")
        path = root / f"dir{f % 20:02d}" / f"doc{f:05d}.md"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("\n".join(parts), encoding="utf-8")


def raw_insert(db: Path, rows: list[tuple[object, ...]], *, kb_schema: bool) -> float:
    engine = create_engine(db)
    if kb_schema:
        migrate.upgrade(engine)
    connection = engine.raw_connection()
    try:
        cursor = connection.cursor()
        if kb_schema:
            document_ids = sorted({int(row[0]) for row in rows})  # type: ignore[call-overload]
            cursor.executemany(
                "INSERT INTO documents (id, source_path, content_sha256, title, source_format,"
                " mtime_ns, size, metadata, created_at, updated_at)"
                " VALUES (?, 'p' || ?, '', '', 'markdown', 0, 0, '{}', 0, 0)",
                [(i, i) for i in document_ids],
            )
        else:
            cursor.execute(f"CREATE TABLE chunks (id INTEGER PRIMARY KEY, {COLUMNS})")
        connection.commit()
        started = time.perf_counter()
        cursor.execute("BEGIN")
        placeholders = ", ".join("?" * 8)
        cursor.executemany(f"INSERT INTO chunks ({COLUMNS}) VALUES ({placeholders})", rows)
        if kb_schema:
            cursor.execute(
                "INSERT INTO chunks_fts(rowid, text, heading_path) SELECT id, text, heading_path FROM chunks"
            )
        connection.commit()
        return time.perf_counter() - started
    finally:
        connection.close()
        engine.dispose()


def whole_command(corpus: Path, db: Path) -> float:
    """`kb ingest` as a user runs it: a fresh process and a new database (schema created)."""
    env = {name: value for name, value in os.environ.items() if not name.startswith("KB_")}
    env |= {"KB_PROVIDER": "local", "KB_DB": str(db)}
    started = time.perf_counter()
    subprocess.run(
        [str(Path(sys.executable).with_name("kb")), "ingest", str(corpus)],
        env=env,
        check=True,
        capture_output=True,
    )
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=2000)
    parser.add_argument("--sections", type=int, default=50)
    parser.add_argument("--words", type=int, default=70, help="words per section (one chunk each)")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="kb-bench-ingest-"))
    try:
        corpus = work / "corpus"
        make_corpus(corpus, args.files, args.sections, args.words)
        settings = KbSettings(db=work / "kb.sqlite", provider="local", _env_file=None)  # type: ignore[call-arg]
        with KnowledgeBase(settings=settings) as kb:
            started = time.perf_counter()
            report = kb.ingest([corpus])
            kb_seconds = time.perf_counter() - started
            with kb.engine.connect() as connection:
                rows = [tuple(r) for r in connection.exec_driver_sql(f"SELECT {COLUMNS} FROM chunks")]
            started = time.perf_counter()
            again = kb.ingest([corpus])
            noop_seconds = time.perf_counter() - started
        chunks = len(rows)
        assert chunks == report.chunks_written and len(again.unchanged) == args.files
        if chunks < 100_000:
            print(
                f"note: only {chunks:,} chunks; the target is measured at >= 100,000",
                file=sys.stderr,
            )
        cli_seconds = whole_command(corpus, work / "cli.sqlite")
        bare = raw_insert(work / "bare.sqlite", rows, kb_schema=False)
        schema = raw_insert(work / "schema.sqlite", rows, kb_schema=True)
        size = sum(p.stat().st_size for p in corpus.rglob("*.md")) / 1e6
        print(
            f"corpus: {args.files:,} files, {size:.0f} MB, {chunks:,} chunks, {report.tasks_queued:,} tasks"
        )
        print(f"kb ingest (read, chunk, hash, store, FTS, tasks): {chunks / kb_seconds:>10,.0f} chunks/s")
        print(f"raw executemany + one bulk FTS5 insert, kb schema: {chunks / schema:>9,.0f} rows/s")
        print(f"raw executemany, same rows, bare table:           {chunks / bare:>10,.0f} rows/s")
        print(f"kb ingest, the whole command in a fresh process:   {chunks / cli_seconds:>9,.0f} chunks/s")
        print(
            f"ratio kb / raw (kb schema): {schema / kb_seconds:.2f} in-process, "
            f"{schema / cli_seconds:.2f} whole command   (target >= 0.5)"
        )
        print(f"ratio kb / raw (bare table): {bare / kb_seconds:.2f}")
        files_per_second = args.files / noop_seconds
        print(f"re-ingest of the unchanged corpus: {noop_seconds:.3f} s ({files_per_second:,.0f} files/s)")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
