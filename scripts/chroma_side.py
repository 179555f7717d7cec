"""Chroma's side of the kb-vs-Chroma benchmark: insert, disk, warm and cold queries over one shared data set.

    /work/chroma-venv/bin/python scripts/chroma_side.py --data DIR --work DIR [--queries N]
        [--ef 100,500,2000] [--cold-runs 3]

Chroma is not a dependency of kb: this script imports only the standard library, numpy and chromadb, and runs
with the Python of a separate virtualenv (created with `python3 -m venv /work/chroma-venv` and
`/work/chroma-venv/bin/pip install chromadb==1.5.9 numpy`). DIR holds the data set both sides read:
`vectors.npy` (float32 n x d, unit rows; row i has id str(i)), `texts.jsonl` (one JSON string per line, same
order), `queries.npy` (float32 q x d, unit rows) and `truth.npy` (int64 q x 10, the exact top 10 by cosine).

It builds a persistent collection in WORK/chroma (cosine space, HNSW defaults otherwise, no embedding
function), then reports as one JSON object on stdout (logs go to stderr):
- insert rate of all rows (ids, embeddings, documents) in batches of Chroma's largest allowed size;
- bytes on disk of WORK/chroma after the insert and after the client is gone;
- warm query latency p50/p95 (one vector per `query`, n_results=10, default include) and recall@10,
  at the default ef_search and again at each of --ef values;
- cold query: wall time of a fresh process (this script with --cold-query INDEX) that opens the collection,
  runs one query and exits (median of --cold-runs), beside `python -c "import numpy"` in the same venv.
  The OS page cache stays warm: "cold" means a new process that loads the HNSW index, not a cold disk.

Chroma 1.5.9 persists `collection.modify(configuration={"hnsw": {"ef_search": N}})` but the index already
loaded in the process keeps searching with the old ef; the new value takes effect only when the index is
loaded again. So each ef is measured after dropping the client (`clear_system_cache`) and opening a new one.
"""

import argparse
import gc
import importlib
import json
import os
import sqlite3
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

COLLECTION = "kb-bench"
K = 10
WARMUP = 20
COLD_RUNS = 3
DEFAULT_EF_SEARCH = 100  # Chroma's default (populate_create_hnsw_defaults), restored before the cold runs


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def chroma() -> Any:
    """chromadb, imported at run time: it lives in Chroma's venv only, not in kb's (nor its mypy)."""
    return importlib.import_module("chromadb")


def open_client(work: Path) -> Any:
    settings = importlib.import_module("chromadb.config").Settings(anonymized_telemetry=False)
    # Telemetry off: it would try to send events, and no network call belongs in the timings.
    return chroma().PersistentClient(path=str(work / "chroma"), settings=settings)


def close_client(client: Any) -> None:
    # Chroma caches one System (Rust bindings, HNSW index cache) per path for the process; clearing it is
    # the only way to drop the client and have the next one load the index from disk again.
    client.clear_system_cache()
    gc.collect()


def open_collection(work: Path) -> tuple[Any, Any]:
    client = open_client(work)
    # embedding_function=None: we pass vectors; the default one is an ONNX model fetched on first use.
    return client, client.get_collection(COLLECTION, embedding_function=None)


def dir_bytes(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def dir_allocated(path: Path) -> int:
    """Bytes the filesystem allocated (st_blocks), which differs from file sizes for sparse or tail blocks."""
    return sum(f.stat().st_blocks * 512 for f in path.rglob("*") if f.is_file())


def sqlite_free_bytes(database: Path) -> int:
    """Free pages inside chroma.sqlite3: Chroma purges its write-ahead log table but does not vacuum."""
    with sqlite3.connect(f"file:{database}?mode=ro", uri=True) as db:
        pages = db.execute("PRAGMA freelist_count").fetchone()[0]
        size = db.execute("PRAGMA page_size").fetchone()[0]
    return int(pages) * int(size)


def dir_breakdown(path: Path) -> dict[str, int]:
    """Bytes per top-level entry: chroma.sqlite3 (ids, documents, log) against the HNSW segment folder."""
    out: dict[str, int] = {}
    for entry in sorted(path.iterdir()):
        out[entry.name] = dir_bytes(entry) if entry.is_dir() else entry.stat().st_size
    return out


def percentiles(samples: list[float]) -> tuple[float, float]:
    """The same convention as scripts/bench_search.py, so the two sides' figures compare."""
    ordered = sorted(samples)
    return statistics.median(ordered), ordered[min(len(ordered) - 1, int(len(ordered) * 0.95))]


def recall_at(found: list[list[int]], truth: NDArray[np.int64], k: int = K) -> float:
    hits = [len(set(f[:k]) & set(t[:k].tolist())) / k for f, t in zip(found, truth, strict=True)]
    return float(np.mean(hits)) if hits else 0.0


def hnsw_settings(collection: Any) -> dict[str, Any]:
    return dict(collection.configuration.get("hnsw") or {})


def measure(collection: Any, queries: NDArray[np.float32], truth: NDArray[np.int64]) -> dict[str, Any]:
    """Warm latency and recall@10: WARMUP untimed queries first (the index may load lazily), then all."""
    for q in queries[:WARMUP]:
        collection.query(query_embeddings=[q], n_results=K)
    samples: list[float] = []
    found: list[list[int]] = []
    for q in queries:
        start = time.perf_counter()
        result = collection.query(query_embeddings=[q], n_results=K)
        samples.append(time.perf_counter() - start)
        found.append([int(i) for i in result["ids"][0]])
    p50, p95 = percentiles(samples)
    return {
        "p50_ms": round(p50 * 1000, 3),
        "p95_ms": round(p95 * 1000, 3),
        "mean_ms": round(statistics.fmean(samples) * 1000, 3),
        "recall_at_10": round(recall_at(found, truth), 4),
        "queries": len(samples),
    }


def distance_check(collection: Any, vectors: NDArray[np.float32], query: NDArray[np.float32]) -> float:
    """Largest gap between Chroma's distances and 1 - cosine: near 0 proves the cosine space is in force."""
    result = collection.query(query_embeddings=[query], n_results=K, include=["distances"])
    rows = [int(i) for i in result["ids"][0]]
    expected = 1.0 - vectors[rows] @ query
    return float(np.max(np.abs(np.asarray(result["distances"][0]) - expected)))


def timed_child(command: list[str]) -> tuple[float, str]:
    """Wall seconds and stdout of one child process, from spawn to exit."""
    start = time.perf_counter()
    child = subprocess.run(command, capture_output=True, text=True, check=False)
    wall = time.perf_counter() - start
    if child.returncode != 0:
        raise RuntimeError(f"{command} failed ({child.returncode}): {child.stderr[-2000:]}")
    return wall, child.stdout


def peak_rss_mib() -> float | None:
    """VmHWM of this process. Not ru_maxrss: Linux carries that over from the parent through fork and exec."""
    try:
        status = Path("/proc/self/status").read_text()
    except OSError:
        return None
    for line in status.splitlines():
        if line.startswith("VmHWM:"):
            return round(int(line.split()[1]) / 1024, 1)
    return None


def cold_query(data: Path, work: Path, index: int) -> None:
    """Child mode: open the persisted collection, run one query, print what it took, exit."""
    start = time.perf_counter()
    chromadb = chroma()
    imported = time.perf_counter()
    query = np.load(data / "queries.npy", mmap_mode="r")[index].astype(np.float32)
    _client, collection = open_collection(work)
    opened = time.perf_counter()
    result = collection.query(query_embeddings=[query], n_results=K)
    done = time.perf_counter()
    truth = np.load(data / "truth.npy")[index]
    report = {
        "version": chromadb.__version__,
        "import_chromadb_s": round(imported - start, 4),
        "open_collection_s": round(opened - imported, 4),
        "first_query_s": round(done - opened, 4),
        "recall_at_10": len({int(i) for i in result["ids"][0]} & set(truth.tolist())) / K,
        "ef_search": hnsw_settings(collection).get("ef_search"),
        "peak_rss_mib": peak_rss_mib(),
    }
    print(json.dumps(report), flush=True)


def median_child(command: list[str], runs: int = COLD_RUNS) -> tuple[float, list[float], list[str]]:
    walls: list[float] = []
    outputs: list[str] = []
    for _ in range(runs):
        wall, stdout = timed_child(command)
        walls.append(wall)
        outputs.append(stdout)
    return statistics.median(walls), walls, outputs


def run(
    data: Path, work: Path, query_count: int | None, ef_values: list[int], cold_runs: int = COLD_RUNS
) -> dict[str, Any]:
    chromadb = chroma()
    vectors = np.load(data / "vectors.npy")
    queries = np.load(data / "queries.npy")
    truth = np.load(data / "truth.npy")
    if query_count is not None:
        queries, truth = queries[:query_count], truth[:query_count]
    with (data / "texts.jsonl").open(encoding="utf-8") as lines:
        texts: list[str] = [json.loads(line) for line in lines]
    rows, dimensions = vectors.shape
    if len(texts) != rows:
        raise SystemExit(f"texts.jsonl has {len(texts)} lines for {rows} vectors")
    ids = [str(i) for i in range(rows)]
    store = work / "chroma"
    if store.exists() and any(store.iterdir()):
        raise SystemExit(f"{store} is not empty: give a fresh --work")
    store.mkdir(parents=True, exist_ok=True)
    log(f"chromadb {chromadb.__version__}: {rows} rows x {dimensions} dims, {len(queries)} queries")

    client = open_client(work)
    # The configuration form, Chroma 1.x's API; legacy "hnsw:space" metadata is the older way to say it.
    collection = client.create_collection(
        COLLECTION, configuration={"hnsw": {"space": "cosine"}}, embedding_function=None
    )
    batch = int(client.get_max_batch_size())
    log(f"inserting in batches of {batch}")
    start = time.perf_counter()
    for first in range(0, rows, batch):
        last = min(rows, first + batch)
        collection.add(ids=ids[first:last], embeddings=vectors[first:last], documents=texts[first:last])
    insert_s = time.perf_counter() - start
    count = collection.count()
    if count != rows:
        raise SystemExit(f"collection holds {count} rows after inserting {rows}")
    # Chroma's local mode indexes on add; a slow first query would show work left over from the insert.
    start = time.perf_counter()
    collection.query(query_embeddings=[queries[0]], n_results=K)
    first_query_s = time.perf_counter() - start
    log(f"insert {insert_s:.1f} s ({rows / insert_s:,.0f} rows/s), first query {first_query_s * 1000:.1f} ms")
    disk_after_insert = dir_bytes(store)
    settings_at_create = hnsw_settings(collection)

    warm_default = measure(collection, queries, truth)
    distance_error = distance_check(collection, vectors, queries[0])
    log(f"warm (in-process, ef {settings_at_create.get('ef_search')}): {warm_default}")
    close_client(client)
    del collection, client
    gc.collect()
    disk_after_close = dir_bytes(store)
    allocated_after_close = dir_allocated(store)
    breakdown = dir_breakdown(store)
    sqlite_free = sqlite_free_bytes(store / "chroma.sqlite3")

    sweep: list[dict[str, Any]] = []
    for ef in ef_values:
        client, collection = open_collection(work)
        collection.modify(configuration={"hnsw": {"ef_search": ef}})
        close_client(client)
        del collection, client
        client, collection = open_collection(work)
        in_force = hnsw_settings(collection).get("ef_search")
        figures = measure(collection, queries, truth)
        log(f"warm at ef_search {ef} (reopened, config says {in_force}): {figures}")
        sweep.append({"ef_search": ef, "ef_search_in_config": in_force, **figures})
        close_client(client)
        del collection, client

    # Check the caveat above on this data: a modify without a reload leaves recall where it was.
    client, collection = open_collection(work)
    collection.modify(configuration={"hnsw": {"ef_search": DEFAULT_EF_SEARCH}})
    close_client(client)
    del collection, client
    client, collection = open_collection(work)
    measure(collection, queries[:WARMUP], truth[:WARMUP])  # index now loaded at the default ef
    no_reload_ef = max(ef_values) if ef_values else DEFAULT_EF_SEARCH
    collection.modify(configuration={"hnsw": {"ef_search": no_reload_ef}})
    no_reload = measure(collection, queries, truth)
    log(f"modify to ef {no_reload_ef} without reloading the index: {no_reload}")
    collection.modify(configuration={"hnsw": {"ef_search": DEFAULT_EF_SEARCH}})
    final_settings = hnsw_settings(collection)
    close_client(client)
    del collection, client

    # Flush the insert's writes first, so that their writeback does not land in the cold runs' wall time.
    start = time.perf_counter()
    os.sync()
    log(f"sync {time.perf_counter() - start:.2f} s")
    me = [sys.executable, str(Path(__file__).resolve()), "--data", str(data), "--work", str(work)]
    cold_walls: list[float] = []
    cold_reports: list[dict[str, Any]] = []
    for index in range(cold_runs):
        wall, stdout = timed_child([*me, "--cold-query", str(index % len(queries))])
        cold_walls.append(wall)
        cold_reports.append(json.loads(stdout.strip().splitlines()[-1]))
    log(f"cold query walls {[round(w, 3) for w in cold_walls]}")
    numpy_median, numpy_walls, _ = median_child([sys.executable, "-c", "import numpy"], cold_runs)
    chroma_median, chroma_walls, _ = median_child([sys.executable, "-c", "import chromadb"], cold_runs)
    log(f"python -c 'import numpy' {numpy_walls}, 'import chromadb' {chroma_walls}")

    return {
        "engine": "chroma",
        "chromadb_version": chromadb.__version__,
        "python": sys.version.split()[0],
        "rows": rows,
        "dimensions": dimensions,
        "queries": len(queries),
        "collection": {
            "configuration_at_create": {"hnsw": {"space": "cosine"}},
            "hnsw_in_force": settings_at_create,
            "hnsw_after_run": final_settings,
            "embedding_function": None,
            "query_include": "default (metadatas, documents, distances)",
            "distance_minus_1_minus_cosine_max_abs": distance_error,
        },
        "insert": {
            "batch_size": batch,
            "seconds": round(insert_s, 3),
            "rows_per_s": round(rows / insert_s, 1),
            "first_query_after_insert_ms": round(first_query_s * 1000, 3),
        },
        "disk": {
            "bytes_after_insert": disk_after_insert,
            "bytes_after_close": disk_after_close,
            "mib_after_close": round(disk_after_close / 2**20, 1),
            "allocated_bytes_after_close": allocated_after_close,
            "sqlite_free_page_bytes": sqlite_free,
            "raw_vectors_mib": round(vectors.nbytes / 2**20, 1),
            "breakdown_after_close": breakdown,
        },
        "warm": {"ef_search": settings_at_create.get("ef_search"), **warm_default},
        "ef_sweep": {
            "method": "collection.modify(configuration={'hnsw': {'ef_search': N}}), then a new client",
            "results": sweep,
            "modify_without_reload": {"ef_search_set": no_reload_ef, **no_reload},
        },
        "cold_query": {
            "wall_s_median": round(statistics.median(cold_walls), 4),
            "wall_s": [round(w, 4) for w in cold_walls],
            "inside_child": cold_reports,
            "baseline_import_numpy_s_median": round(numpy_median, 4),
            "baseline_import_numpy_s": [round(w, 4) for w in numpy_walls],
            "import_chromadb_s_median": round(chroma_median, 4),
        },
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument(
        "--data", type=Path, required=True, help="holds vectors.npy, texts.jsonl, queries.npy, truth.npy"
    )
    parser.add_argument("--work", type=Path, required=True, help="Chroma's store goes to WORK/chroma (fresh)")
    parser.add_argument("--queries", type=int, default=None, help="use only the first N queries")
    parser.add_argument("--ef", default="100,500,2000", help="ef_search values to sweep, comma-separated")
    # The cold first query (index load) swings 0.25-1.1 s between identical runs here: more runs on demand.
    parser.add_argument("--cold-runs", type=int, default=COLD_RUNS, help="fresh processes timed (median)")
    parser.add_argument("--cold-query", type=int, default=None, metavar="INDEX", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.cold_query is not None:
        cold_query(args.data, args.work, args.cold_query)
        return
    ef_values = [int(v) for v in args.ef.split(",") if v.strip()]
    print(json.dumps(run(args.data, args.work, args.queries, ef_values, args.cold_runs), indent=2))


if __name__ == "__main__":
    main()
