"""Benchmark: a knowledge base of a million chunks on one machine, end to end, each figure with its baseline.

    .venv/bin/python scripts/bench_scale.py --chunks 1000000 --dims 768 [--vectors clustered|random]

1. Writes a Markdown corpus: files of 50 sections, one chunk each, words drawn with the word frequencies of
   this repository's own docs (so full-text search meets realistic term statistics).
2. `kb ingest` of it, the whole command in a fresh process (time, chunks/s, peak RSS).
3. Vectors for every task: `scripts/benchdata.py` (clustered like real embeddings, or random). They reach kb
   through the real apply path: each 10,000 tasks become a job recorded as succeeded with its results file
   saved in the Batch API's own format (`scripts/benchjobs.py`), because the HTTP emulator would spend
   hours computing and serving 11 GB of JSON. `kb worker --once` then applies them all (fresh process: time,
   vectors/s, peak RSS). Baseline, same run: orjson-parsing one results file to float32 plus a raw
   `executemany` into a fresh tuned vec0 table.
4. Database bytes per chunk.
5. Search, warm (the Python API, one `KnowledgeBase`, questions' vectors in the query cache so no call is
   made) and cold (`kb search` in a fresh process): text, vector and hybrid p50/p95, the index's memory, and
   recall@10 of the vector search against exact brute force over the same vectors.

Needs ~6 GB of disk per million chunks (`--work`, default a temporary folder, removed unless `--keep`).
"""

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import orjson
from bench_serve import measure_served
from benchdata import clustered, exact_top, random_unit, recall_at
from benchjobs import succeeded_job, vectors_writer

from kb.app import KnowledgeBase
from kb.records import SearchMode
from kb.search import textindex
from kb.search.vectorindex import SpaceIndex
from kb.settings import KbSettings
from kb.store import querycache, vectors
from kb.store.dbapi import configure_sqlite, sqlite_driver
from kb.store.engine import write_transaction

REPO = Path(__file__).resolve().parent.parent
SECTIONS_PER_FILE = 50
JOB_SIZE = 10_000
KB = str(Path(sys.executable).with_name("kb"))


@dataclass(frozen=True, slots=True)
class Run:
    seconds: float
    peak_rss_mb: float


def run(args: Sequence[str], env: dict[str, str]) -> Run:
    """A command in a fresh process: wall time and its own peak RSS. The peak is VmHWM, read while it runs:
    `ru_maxrss` of a child starts at its parent's peak (Linux keeps it across exec), and this process
    holds gigabytes of vectors."""
    started = time.perf_counter()
    with tempfile.TemporaryFile() as errors:
        process = subprocess.Popen(args, env=env, stdout=subprocess.DEVNULL, stderr=errors)
        peak_kib = 0
        status = Path(f"/proc/{process.pid}/status")
        while process.poll() is None:
            try:
                for line in status.read_text().splitlines():
                    if line.startswith("VmHWM:"):
                        peak_kib = max(peak_kib, int(line.split()[1]))
            except (FileNotFoundError, ProcessLookupError):
                pass
            time.sleep(0.02)
        seconds = time.perf_counter() - started
        if process.returncode != 0:
            errors.seek(0)
            message = errors.read().decode(errors="replace")[-2000:]
            raise SystemExit(f"{' '.join(args)} failed:\n{message}")
    return Run(seconds, peak_kib / 1024)


_pinned: dict[str, list[Any]] = {}


def pin_vocabulary(work: Path, reuse: bool) -> None:
    """Keep the vocabulary beside a new knowledge base (a --reuse takes the one kept there): a later reuse
    asks its questions in the words the corpus was written in, though the docs it comes from have changed."""
    saved = work / "vocabulary.json"
    if not (reuse and saved.exists()):
        words, frequencies = vocabulary()
        saved.write_text(json.dumps({"words": words, "frequencies": frequencies.tolist()}))
    _pinned.update(json.loads(saved.read_text()))


def vocabulary() -> tuple[list[str], np.ndarray]:
    """Words and their frequencies in this repository's Markdown (or those pinned for a kept run)."""
    if _pinned:
        return list(_pinned["words"]), np.array(_pinned["frequencies"], dtype=np.float64)
    counts: Counter[str] = Counter()
    for path in [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]:
        counts.update(re.findall(r"[a-z][a-z0-9]+", path.read_text(encoding="utf-8").lower()))
    words = [word for word, _ in counts.most_common()]
    frequencies = np.array([counts[word] for word in words], dtype=np.float64)
    return words, frequencies / frequencies.sum()


def write_corpus(root: Path, chunks: int, words_per_chunk: int, seed: int = 5) -> int:
    rng = np.random.default_rng(seed)
    words, frequencies = vocabulary()
    lexicon = np.array(words, dtype=object)
    files = (chunks + SECTIONS_PER_FILE - 1) // SECTIONS_PER_FILE
    written = 0
    for number in range(files):
        sections = min(SECTIONS_PER_FILE, chunks - written)
        drawn = lexicon[rng.choice(len(words), size=(sections, words_per_chunk), p=frequencies)]
        parts = [f"# Notes {number}\n"]
        parts.extend(
            f"## Part {s} of {number}\n\n{' '.join(row).capitalize()}.\n" for s, row in enumerate(drawn)
        )
        path = root / f"d{number // 1000:03d}" / f"notes{number:06d}.md"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("\n".join(parts), encoding="utf-8")
        written += sections
    return written


def questions(count: int, seed: int = 9) -> list[str]:
    """Questions of 4-8 words of the same vocabulary, the commonest left out as a person would."""
    rng = np.random.default_rng(seed)
    words, frequencies = vocabulary()
    common = set(words[:60])
    usable = [n for n, word in enumerate(words) if word not in common and len(word) > 3]
    weights = frequencies[usable] / frequencies[usable].sum()
    out = []
    for n in range(count):
        picked = rng.choice(usable, size=int(rng.integers(4, 9)), replace=False, p=weights)
        out.append(f"how do I {' '.join(words[i] for i in picked)} ({n})")
    return out


def percentiles(samples: list[float]) -> tuple[float, float]:
    return float(np.percentile(samples, 50)), float(np.percentile(samples, 95))


def ms(pair: tuple[float, float]) -> str:
    return f"p50 {pair[0] * 1000:7.1f} ms   p95 {pair[1] * 1000:7.1f} ms"


def env_for(db: Path) -> dict[str, str]:
    env = {
        name: value for name, value in os.environ.items() if not name.startswith(("KB_", "GEMINI", "GOOGLE"))
    }
    # A Gemini space; nothing below calls the service (the key is never used, the address is closed).
    return env | {
        "KB_DB": str(db),
        "KB_PROVIDER": "gemini",
        "GEMINI_API_KEY": "bench-not-used",
        "GOOGLE_GEMINI_BASE_URL": "http://127.0.0.1:9",
    }


def raw_apply_baseline(results: Path, work: Path, dims: int) -> float:
    """orjson-parse a results file to float32 rows, then one raw executemany into a fresh tuned vec0 table:
    the least any apply can cost. Returns vectors/s."""
    work.mkdir(parents=True, exist_ok=True)
    connection = sqlite_driver().connect(str(work / "raw-apply.sqlite"), isolation_level=None)
    configure_sqlite(connection, 10_000)
    connection.execute(
        f"CREATE VIRTUAL TABLE v USING vec0(embedding float[{dims}] distance_metric=cosine, "
        f"chunk_size={vectors.VEC_CHUNK_SIZE})"
    )
    started = time.perf_counter()
    rows = []
    with results.open("rb") as handle:
        for n, line in enumerate(handle):
            values = orjson.loads(line)["response"]["embedding"]["values"]
            rows.append((n + 1, np.asarray(values, dtype="<f4").tobytes()))
    connection.execute("BEGIN")
    connection.executemany("INSERT INTO v(rowid, embedding) VALUES (?, ?)", rows)
    connection.execute("COMMIT")
    seconds = time.perf_counter() - started
    connection.close()
    return len(rows) / seconds


def make_vectors(kind: str, count: int, dims: int) -> np.ndarray:
    return (clustered if kind == "clustered" else random_unit)(count, dims, seed=21)


def rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--chunks", type=int, default=1_000_000)
    parser.add_argument("--dims", type=int, default=768)
    parser.add_argument("--words", type=int, default=80, help="words per chunk")
    parser.add_argument("--vectors", choices=["clustered", "random"], default="clustered")
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--cold-runs", type=int, default=7)
    parser.add_argument("--work", type=Path, default=None)
    parser.add_argument("--keep", action="store_true", help="keep the work folder")
    parser.add_argument("--json", type=Path, default=None, help="also write the figures here")
    parser.add_argument(
        "--reuse", action="store_true", help="search a knowledge base a kept --work folder already holds"
    )
    args = parser.parse_args()
    if args.reuse and args.work is None:
        parser.error("--reuse needs --work")
    work = args.work or Path(tempfile.mkdtemp(prefix="kb-bench-scale-"))
    work.mkdir(parents=True, exist_ok=True)
    figures: dict[str, Any] = {"chunks": args.chunks, "dims": args.dims, "vectors": args.vectors}
    try:
        bench(args, work, figures)
    finally:
        if args.json:
            args.json.write_text(json.dumps(figures, indent=2))
        if not args.keep and args.work is None:
            shutil.rmtree(work, ignore_errors=True)


def bench(args: argparse.Namespace, work: Path, figures: dict[str, Any]) -> None:
    db, corpus = work / "kb.sqlite", work / "corpus"
    env = env_for(db)
    pin_vocabulary(work, args.reuse)
    if args.reuse:
        reuse(args, work, env, figures)
        return
    started = time.perf_counter()
    chunks = write_corpus(corpus, args.chunks, args.words)
    size = sum(p.stat().st_size for p in corpus.rglob("*.md"))
    print(f"corpus: {chunks:,} chunks, {size / 1e6:,.0f} MB ({time.perf_counter() - started:.0f} s to write)")

    ingest = run([KB, "ingest", str(corpus)], env)
    figures["ingest"] = {"seconds": ingest.seconds, "peak_rss_mb": ingest.peak_rss_mb}
    print(
        f"kb ingest (whole command):  {chunks / ingest.seconds:>9,.0f} chunks/s   {ingest.seconds:6.1f} s   "
        f"peak RSS {ingest.peak_rss_mb:,.0f} MB"
    )

    settings, space_id, task_ids, queries, matrix = stored_space(args, db)
    position = {int(t): n for n, t in enumerate(task_ids)}
    started = time.perf_counter()
    with KnowledgeBase(settings=settings) as kb:
        write = vectors_writer(lambda ids: matrix[[position[i] for i in ids]])
        first_results = None
        while (job_id := succeeded_job(kb, space_id, JOB_SIZE, write)) is not None:
            if first_results is None:
                with kb.engine.connect() as connection:
                    from kb.store import ledger

                    first_results = Path(str(ledger.job(connection, job_id).result_path))
                shutil.copyfile(first_results, work / "baseline.results.jsonl")
    results_bytes = sum(p.stat().st_size for p in (work / "kb.sqlite.results").glob("*.jsonl"))
    print(f"results files: {results_bytes / 1e9:.1f} GB ({time.perf_counter() - started:.0f} s to write)")

    worker = run([KB, "worker", "--once"], env)
    rate = len(task_ids) / worker.seconds
    baseline = raw_apply_baseline(work / "baseline.results.jsonl", work, args.dims)
    figures["apply"] = {
        "seconds": worker.seconds,
        "peak_rss_mb": worker.peak_rss_mb,
        "per_s": rate,
        "baseline_per_s": baseline,
    }
    print(
        f"kb worker --once (apply):   {rate:>9,.0f} vectors/s  {worker.seconds:6.1f} s   "
        f"peak RSS {worker.peak_rss_mb:,.0f} MB"
    )
    print(
        f"orjson parse + raw insert:  {baseline:>9,.0f} vectors/s   ratio kb/baseline {rate / baseline:.2f}"
        "   (target >= 0.7)"
    )

    database_bytes = sum(p.stat().st_size for p in work.glob("kb.sqlite*") if p.is_file())
    figures["bytes_per_chunk"] = database_bytes / chunks
    print(f"database: {database_bytes / 1e9:.2f} GB, {database_bytes / chunks:,.0f} bytes per chunk")

    search(args, work, settings, env, space_id, queries, matrix, task_ids, figures)


def reuse(args: argparse.Namespace, work: Path, env: dict[str, str], figures: dict[str, Any]) -> None:
    """The search half on a knowledge base a previous run kept: the same vectors, made again from the seed."""
    settings, space_id, task_ids, queries, matrix = stored_space(args, work / "kb.sqlite")
    search(args, work, settings, env, space_id, queries, matrix, task_ids, figures)


def stored_space(
    args: argparse.Namespace, db: Path
) -> tuple[KbSettings, int, np.ndarray, np.ndarray, np.ndarray]:
    """The knowledge base's settings, its space, its task ids in order, and the questions' and the tasks'
    vectors (made from the seed, so a --reuse run has the very vectors the build wrote)."""
    settings = KbSettings(db=db, provider="gemini", gemini_api_key="bench-not-used", _env_file=None)  # type: ignore[call-arg]
    with KnowledgeBase(settings=settings) as kb:
        space = kb.status().spaces[0]
        with kb.engine.connect() as connection:
            task_ids = np.array(
                [r[0] for r in connection.exec_driver_sql("SELECT id FROM embedding_tasks ORDER BY id")]
            )
    matrix = make_vectors(args.vectors, len(task_ids) + args.queries, args.dims)
    return settings, space.id, task_ids, matrix[: args.queries], matrix[args.queries :]


def search(
    args: argparse.Namespace,
    work: Path,
    settings: KbSettings,
    env: dict[str, str],
    space_id: int,
    queries: np.ndarray,
    matrix: np.ndarray,
    task_ids: np.ndarray,
    figures: dict[str, Any],
) -> None:
    texts = questions(len(queries))
    with KnowledgeBase(settings=settings) as kb, write_transaction(kb.engine) as connection:
        for text, vector in zip(texts, queries, strict=True):
            querycache.put(connection, space_id, text, vector.reshape(1, -1))
    truth = task_ids[exact_top(queries, matrix, 10)]
    del matrix

    before = rss_mb()
    with KnowledgeBase(settings=settings) as kb:
        started = time.perf_counter()
        kb.search(texts[0], mode=SearchMode.VECTOR)  # a process's first search: signs only
        first = time.perf_counter() - started
        started = time.perf_counter()
        kb.search(texts[1], mode=SearchMode.VECTOR)  # the second loads the levels too
        second = time.perf_counter() - started
        index = kb._indexes[space_id]
        loaded = index._quantized._loaded if index._quantized else None
        index_bytes = sum(
            s.ids.nbytes + s.signs.nbytes + (s.levels.nbytes if s.levels is not None else 0)
            for s in (loaded.segments if loaded else ())
        )
        print(
            f"first search {first * 1000:.0f} ms ({index.last_method}), second {second * 1000:.0f} ms; "
            f"index {index_bytes / 1e6:,.0f} MB of arrays, process RSS +{rss_mb() - before:,.0f} MB"
        )
        figures["index_mb"] = index_bytes / 1e6
        warm: dict[str, tuple[float, float]] = {}
        for mode in (SearchMode.TEXT, SearchMode.VECTOR, SearchMode.HYBRID):
            samples = []
            for text in texts[2:]:
                started = time.perf_counter()
                kb.search(text, mode=mode)
                samples.append(time.perf_counter() - started)
            warm[mode.value] = percentiles(samples)
            print(f"warm {mode.value:<7} (Python API, {index.last_method}):   {ms(warm[mode.value])}")
        figures["warm"] = warm
        corpus = work / "corpus"
        under = f"{corpus}/d00[01]/*"  # 2 of the corpus's folders: 10% of its chunks at a million
        for mode in (SearchMode.TEXT, SearchMode.HYBRID):
            samples = []
            for question in texts[2:]:
                started = time.perf_counter()
                kb.search(question, mode=mode, path=under)
                samples.append(time.perf_counter() - started)
            warm[f"{mode.value} --path"] = percentiles(samples)
            filtered = warm[f"{mode.value} --path"]
            ratio = filtered[0] / warm[mode.value][0]
            print(f"warm {mode.value:<7} --path (10% of chunks):   {ms(filtered)}   {ratio:.2f}x unfiltered")
        text_index_figures(kb, settings, texts, warm, figures)
        recalls: dict[str, float] = {}
        for setting in ("memory", "quantized", "exact"):
            probe = SpaceIndex(space_id, args.dims, setting)
            asked = queries if setting != "exact" else queries[:20]  # the exact scan is slow at scale
            found, samples = [], []
            with kb.open_reader() as reader:
                probe.nearest(reader, queries[0], 10)
                for query in asked:
                    started = time.perf_counter()
                    found.append([i for i, _ in probe.nearest(reader, query, 10)])
                    samples.append(time.perf_counter() - started)
            recalls[setting] = recall_at(found, truth[: len(asked)])
            latency = ms(percentiles(samples))
            print(f"vector index {setting:<9} k=10: recall@10 {recalls[setting]:.3f}   {latency}")
        figures["recall"] = recalls

    served(work / "kb.sqlite", env, texts[2:], warm, figures)

    cold: dict[str, tuple[float, float]] = {}
    for name in ("text", "vector", "hybrid"):
        samples = [run([KB, "search", texts[n], "--mode", name], env).seconds for n in range(args.cold_runs)]
        cold[name] = percentiles(samples)
        print(f"cold kb search --mode {name:<7} (fresh process): {ms(cold[name])}")
    baseline = [
        run([sys.executable, "-c", "import sqlite3, numpy"], env).seconds for _ in range(args.cold_runs)
    ]
    print(f'python -c "import sqlite3, numpy":              {ms(percentiles(baseline))}')
    figures["cold"] = cold


def text_index_figures(
    kb: KnowledgeBase,
    settings: KbSettings,
    texts: list[str],
    warm: dict[str, tuple[float, float]],
    figures: dict[str, Any],
) -> None:
    """The full-text index beside the database: its disk, a rebuild from nothing, and FTS5's latency (the
    baseline it replaces) in the same process."""
    folder = textindex.folder_for(settings.db)
    disk = sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())
    rebuilt = Path(tempfile.mkdtemp(prefix="kb-text-", dir=folder.parent)) / "kb.sqlite.text"
    index = textindex.TextIndex(rebuilt)
    started = time.perf_counter()
    with kb.open_reader() as reader:
        assert index.sync(reader)
    build = time.perf_counter() - started
    shutil.rmtree(rebuilt.parent)
    figures["text_index"] = {"disk_mb": disk / 1e6, "build_s": build}
    print(f"full-text index: {disk / 1e6:,.0f} MB on disk, built from nothing in {build:.0f} s")
    fts5 = KnowledgeBase(settings=settings.model_copy(update={"text_index": "fts5"}))
    with fts5:
        for mode in (SearchMode.TEXT, SearchMode.HYBRID):
            fts5.search(texts[0], mode=mode)
            samples = []
            for question in texts[2:]:
                started = time.perf_counter()
                fts5.search(question, mode=mode)
                samples.append(time.perf_counter() - started)
            warm[f"{mode.value} fts5"] = percentiles(samples)
            print(f"warm {mode.value:<7} with FTS5 (the baseline):   {ms(warm[f'{mode.value} fts5'])}")


def served(
    db: Path,
    env: dict[str, str],
    texts: list[str],
    warm: dict[str, tuple[float, float]],
    figures: dict[str, Any],
) -> None:
    """The same questions through `kb serve` (a fresh process, loopback HTTP), then 4 clients at once."""
    baseline = {mode: warm[mode.value][0] for mode in (SearchMode.TEXT, SearchMode.VECTOR, SearchMode.HYBRID)}
    figures["served"] = measure_served(db, texts, baseline, clients=4, env=env)


if __name__ == "__main__":
    main()
