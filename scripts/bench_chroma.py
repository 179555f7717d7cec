"""Benchmark: kb next to Chroma on the same 100,000 texts and 768-dimension vectors, in one run.

    .venv/bin/python scripts/bench_chroma.py --chroma-python /work/chroma-venv/bin/python \\
        [--rows 100000] [--dims 768] [--vectors clustered|random] [--queries 200]

Chroma is not a kb dependency: it runs from its own virtualenv (`python3 -m venv /work/chroma-venv &&
/work/chroma-venv/bin/pip install chromadb==1.5.9 numpy`) through `scripts/chroma_side.py`, which reads the
same data folder this script writes (vectors, texts, queries and their exact top 10).

kb's side, end to end as a user runs it: `kb ingest` of the texts (one chunk each), the vectors applied by
`kb worker --once` from saved Batch API results (`scripts/benchjobs.py`; writing those files stands for the
provider's work and is not timed, as Chroma is handed ready vectors too). Then the database's size, warm
vector queries (Python API: the index alone, and the whole `kb.search`, whose hits carry their text as
Chroma's do), recall@10 against exact brute force, and a cold `kb search` in a fresh process.
"""

import argparse
import json
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
from bench_scale import KB, env_for, percentiles, run, vocabulary
from benchdata import clustered, exact_top, random_unit, recall_at
from benchjobs import succeeded_job, vectors_writer

from kb.app import KnowledgeBase
from kb.records import SearchMode
from kb.search.vectorindex import SpaceIndex
from kb.settings import KbSettings
from kb.store import querycache
from kb.store.engine import write_transaction

SECTIONS_PER_FILE = 50
HERE = Path(__file__).resolve().parent


def make_data(folder: Path, rows: int, dims: int, kind: str, queries: int) -> None:
    """The shared data set: row i's text starts with the marker `item<i>` (how kb's tasks are matched)."""
    folder.mkdir(parents=True)
    generate = clustered if kind == "clustered" else random_unit
    matrix = generate(rows + queries, dims, seed=31)
    np.save(folder / "queries.npy", matrix[:queries])
    np.save(folder / "vectors.npy", matrix[queries:])
    np.save(folder / "truth.npy", exact_top(matrix[:queries], matrix[queries:], 10))
    rng = np.random.default_rng(33)
    words, frequencies = vocabulary()
    lexicon = np.array(words, dtype=object)
    with (folder / "texts.jsonl").open("w", encoding="utf-8") as handle:
        for start in range(0, rows, 10_000):
            drawn = lexicon[rng.choice(len(words), size=(min(10_000, rows - start), 100), p=frequencies)]
            for n, row in enumerate(drawn):
                handle.write(json.dumps(f"item{start + n} " + " ".join(row)) + "\n")


def write_corpus(texts: list[str], root: Path) -> None:
    for first in range(0, len(texts), SECTIONS_PER_FILE):
        sections = texts[first : first + SECTIONS_PER_FILE]
        body = "\n".join(f"## Part {first + n}\n\n{text}.\n" for n, text in enumerate(sections))
        path = root / f"d{first // 50_000:02d}" / f"notes{first:07d}.md"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(f"# Notes {first}\n\n{body}", encoding="utf-8")


def kb_side(data: Path, work: Path, cold_runs: int) -> dict[str, Any]:
    texts = [json.loads(line) for line in (data / "texts.jsonl").read_text(encoding="utf-8").splitlines()]
    matrix, queries, truth = (np.load(data / f"{name}.npy") for name in ("vectors", "queries", "truth"))
    db, corpus = work / "kb.sqlite", work / "corpus"
    write_corpus(texts, corpus)
    env = env_for(db)
    ingest = run([KB, "ingest", str(corpus)], env)
    settings = KbSettings(db=db, provider="gemini", gemini_api_key="bench-not-used", _env_file=None)  # type: ignore[call-arg]
    with KnowledgeBase(settings=settings) as kb:
        space_id = kb.status().spaces[0].id
        with kb.engine.connect() as connection:
            pairs = connection.exec_driver_sql(
                "SELECT t.id, c.text FROM embedding_tasks t JOIN chunks c ON c.text_sha256 = t.text_sha256"
            ).all()
        row_of = {int(task): int(re.search(r"\bitem(\d+)\b", text).group(1)) for task, text in pairs}  # type: ignore[union-attr]
        task_of = np.empty(len(texts), dtype=np.int64)
        for task, row in row_of.items():
            task_of[row] = task
        while succeeded_job(
            kb, space_id, 10_000, vectors_writer(lambda ids: matrix[[row_of[i] for i in ids]])
        ):
            pass
    apply = run([KB, "worker", "--once"], env)
    size = sum(p.stat().st_size for p in work.glob("kb.sqlite*") if p.is_file())
    figures: dict[str, Any] = {
        "insert": {
            "ingest_s": ingest.seconds,
            "apply_s": apply.seconds,
            "rows_per_s": len(texts) / (ingest.seconds + apply.seconds),
        },
        "disk_mib": size / 2**20,
    }
    questions = [f"question {n}" for n in range(len(queries))]
    with KnowledgeBase(settings=settings) as kb:
        with write_transaction(kb.engine) as connection:
            for question, vector in zip(questions, queries, strict=True):
                querycache.put(connection, space_id, question, vector.reshape(1, -1))
        index = SpaceIndex(space_id, matrix.shape[1], "memory")
        found, alone = [], []
        with kb.open_reader() as reader:
            index.nearest(reader, queries[0], 10)  # loads the index
            for query in queries:
                started = time.perf_counter()
                found.append([row_of[i] for i, _ in index.nearest(reader, query, 10)])
                alone.append(time.perf_counter() - started)
        whole = []
        for question in questions:
            started = time.perf_counter()
            kb.search(question, k=10, mode=SearchMode.VECTOR)
            whole.append(time.perf_counter() - started)
    cold = [run([KB, "search", questions[n], "--mode", "vector"], env).seconds for n in range(cold_runs)]
    baseline = [run([sys.executable, "-c", "import numpy"], env).seconds for _ in range(cold_runs)]
    figures["warm_index"] = {"p50_ms": percentiles(alone)[0] * 1000, "p95_ms": percentiles(alone)[1] * 1000}
    figures["warm_search"] = {"p50_ms": percentiles(whole)[0] * 1000, "p95_ms": percentiles(whole)[1] * 1000}
    figures["recall_at_10"] = recall_at(found, truth)
    figures["cold_s"] = float(np.median(cold))
    figures["numpy_import_s"] = float(np.median(baseline))
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--chroma-python", type=Path, required=True)
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--dims", type=int, default=768)
    parser.add_argument("--vectors", choices=["clustered", "random"], default="clustered")
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--cold-runs", type=int, default=5)
    parser.add_argument("--work", type=Path, default=None)
    args = parser.parse_args()
    work = args.work or Path(tempfile.mkdtemp(prefix="kb-bench-chroma-"))
    try:
        data = work / "data"
        make_data(data, args.rows, args.dims, args.vectors, args.queries)
        (work / "kb").mkdir()
        kb = kb_side(data, work / "kb", args.cold_runs)
        chroma_work = work / "chroma"
        chroma_work.mkdir()
        completed = subprocess.run(
            [
                str(args.chroma_python),
                str(HERE / "chroma_side.py"),
                "--data",
                str(data),
                "--work",
                str(chroma_work),
                "--queries",
                str(args.queries),
                "--cold-runs",
                str(args.cold_runs),
            ],
            check=True,
            capture_output=True,
            text=True,
        )
        chroma = json.loads(completed.stdout)
        report(args, kb, chroma)
    finally:
        if args.work is None:
            shutil.rmtree(work, ignore_errors=True)


def row(label: str, ours: str, theirs: str) -> None:
    print(f"{label:<36}{ours:>14}{theirs:>22}")


def report(args: argparse.Namespace, kb: dict[str, Any], chroma: dict[str, Any]) -> None:
    print(f"{args.rows:,} rows x {args.dims} dims, {args.vectors} vectors, {args.queries} queries, k=10")
    warm, cold = chroma["warm"], chroma["cold_query"]
    row("", "kb", f"Chroma {chroma['chromadb_version']}")
    row(
        "insert, end to end (rows/s)",
        f"{kb['insert']['rows_per_s']:,.0f}",
        f"{chroma['insert']['rows_per_s']:,.0f}",
    )
    row("on disk (MiB)", f"{kb['disk_mib']:,.0f}", f"{chroma['disk']['mib_after_close']:,.0f}")
    row("warm vector query p50 (ms)", f"{kb['warm_index']['p50_ms']:.2f}", f"{warm['p50_ms']:.2f}")
    row("  p95 (ms)", f"{kb['warm_index']['p95_ms']:.2f}", f"{warm['p95_ms']:.2f}")
    row("  whole kb.search, hits' texts (ms)", f"{kb['warm_search']['p50_ms']:.2f}", "")
    row("recall@10", f"{kb['recall_at_10']:.3f}", f"{warm['recall_at_10']:.3f}")
    for step in chroma.get("ef_sweep", {}).get("results", [])[1:]:
        row(
            f"  Chroma at ef_search {step['ef_search']}",
            "",
            f"{step['p50_ms']:.2f} ms, {step['recall_at_10']:.3f}",
        )
    row("cold query, fresh process (s)", f"{kb['cold_s']:.2f}", f"{cold['wall_s_median']:.2f}")
    row(
        '  python -c "import numpy" (s)',
        f"{kb['numpy_import_s']:.2f}",
        f"{cold['baseline_import_numpy_s_median']:.2f}",
    )


if __name__ == "__main__":
    main()
