"""Benchmark: search latency through `kb serve` at 100,000 chunks, warm, over HTTP, against the same searches
in process (`KnowledgeBase.search`) in the same run.

    .venv/bin/python scripts/bench_serve.py [--chunks 100000] [--dims 768] [--queries 200] [--clients 4]

The knowledge base is built as scripts/bench_search.py builds it (synthetic chunks, random unit vectors in the
active space), and every question's vector is put in the query cache, as scripts/bench_scale.py does, so no
provider is ever called. Then:

1. In process: one `KnowledgeBase`, warmed up as `kb serve` warms up, each question once per mode.
2. `kb serve` in a fresh process, the real command on a loopback port: its start-up (the index loaded
   before it listens), then each question once per mode through `GET /search` on one keep-alive connection,
   the JSON read; then `--clients` clients at once asking the hybrid questions: latency and requests/s.
"""

import argparse
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx2
import numpy as np
from bench_search import _latency as latency
from bench_search import build, percentiles, question

from kb.app import KnowledgeBase
from kb.records import SearchMode
from kb.settings import KbSettings
from kb.store import querycache
from kb.store.engine import write_transaction

SPACE_ID = 1  # the one space `bench_search.build` creates
MODES = (SearchMode.TEXT, SearchMode.VECTOR, SearchMode.HYBRID)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--chunks", type=int, default=100_000)
    parser.add_argument("--dims", type=int, default=768)
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--clients", type=int, default=4, help="clients asking at once, for the last figure")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="kb-bench-serve-"))
    try:
        settings = KbSettings(db=work / "kb.sqlite", provider="local", _env_file=None)  # type: ignore[call-arg]
        texts = prepare(settings, args.chunks, args.dims, args.queries)
        in_process = measure_in_process(settings, texts)
        measure_served(settings.db, texts, in_process, args.clients)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def prepare(settings: KbSettings, chunks: int, dims: int, queries: int) -> list[str]:
    """The knowledge base, and questions whose vectors are already in its query cache."""
    rng = np.random.default_rng(chunks)
    started = time.perf_counter()
    texts = [question(random.Random(n)) for n in range(queries)]
    vectors = rng.standard_normal((queries, dims), dtype=np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    with KnowledgeBase(settings=settings) as kb:
        build(kb, chunks, dims, rng)
        with write_transaction(kb.engine) as connection:
            for text, vector in zip(texts, vectors, strict=True):
                querycache.put(connection, SPACE_ID, text, vector.reshape(1, -1))
    built = time.perf_counter() - started
    print(f"{chunks:,} chunks x {dims} dims, {queries} questions: built in {built:.0f} s")
    return texts


def measure_in_process(settings: KbSettings, texts: list[str]) -> dict[SearchMode, float]:
    """p50 per mode of `kb.search` in this process: the baseline."""
    baseline = {}
    with KnowledgeBase(settings=settings) as kb:
        print(f"  vector search: {kb.warm_up()} (warmed up as kb serve warms up)")
        for mode in MODES:
            kb.search(texts[0], mode=mode)
            samples = []
            for text in texts:
                started = time.perf_counter()
                kb.search(text, k=10, mode=mode)
                samples.append(time.perf_counter() - started)
            p50, p95 = percentiles(samples)
            baseline[mode] = p50
            call = f"kb.search(mode={mode.value!r})"
            print(f"  in process  {call:<30}{latency(p50, p95)}")
    return baseline


def measure_served(
    db: Path,
    texts: list[str],
    baseline: dict[SearchMode, float],
    clients: int,
    env: dict[str, str] | None = None,
) -> dict[str, object]:
    """p50/p95 per mode over HTTP, then `clients` at once; `env`: the server's (default: the local model)."""
    port = free_port()
    if env is None:
        env = {name: value for name, value in os.environ.items() if not name.startswith("KB_")}
        env |= {"KB_DB": str(db), "KB_PROVIDER": "local"}
    figures: dict[str, object] = {}
    started = time.perf_counter()
    with tempfile.TemporaryFile() as log:
        server = subprocess.Popen(
            [sys.executable, "-m", "kb", "serve", "--port", str(port)], env=env, stdout=log, stderr=log
        )
        try:
            url = f"http://127.0.0.1:{port}"
            wait_until_healthy(url, server)
            print(f"  kb serve    ready in {time.perf_counter() - started:.1f} s (vector index loaded)")
            with httpx2.Client(base_url=url) as client:
                for mode in MODES:
                    p50, p95 = percentiles([ask(client, text, mode) for text in [texts[0], *texts]][1:])
                    figures[mode.value] = (p50, p95)
                    print(
                        f"  over HTTP   {'GET /search?mode=' + mode.value:<30}{latency(p50, p95)}   "
                        f"{p50 / baseline[mode]:.2f}x in process, +{(p50 - baseline[mode]) * 1000:.1f} ms"
                    )
            figures["at_once"] = at_once(url, texts, clients)
        finally:
            server.send_signal(signal.SIGINT)
            server.wait(timeout=30)
            if server.returncode not in (0, 130):
                log.seek(0)
                print(log.read().decode(errors="replace")[-2000:])
    return figures


def at_once(url: str, texts: list[str], clients: int) -> dict[str, float]:
    """`clients` keep-alive clients asking the hybrid questions together, each its share."""

    def share(offset: int) -> list[float]:
        with httpx2.Client(base_url=url) as client:
            return [ask(client, text, SearchMode.HYBRID) for text in texts[offset::clients]]

    started = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        samples = [sample for part in pool.map(share, range(clients)) for sample in part]
    rate = len(samples) / (time.perf_counter() - started)
    p50, p95 = percentiles(samples)
    asked = f"{clients} clients   GET /search?mode=hybrid"
    print(f"  {asked:<42}{latency(p50, p95)}   {rate:.0f} requests/s, all at once")
    return {"clients": clients, "p50": p50, "p95": p95, "per_s": rate}


def ask(client: httpx2.Client, text: str, mode: SearchMode) -> float:
    started = time.perf_counter()
    response = client.get("/search", params={"q": text, "mode": mode.value, "k": 10})
    hits = response.json()
    elapsed = time.perf_counter() - started
    assert response.status_code == 200 and hits, (response.status_code, hits)
    return elapsed


def wait_until_healthy(url: str, server: subprocess.Popen[bytes], timeout_s: float = 300) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise SystemExit(f"kb serve exited with {server.returncode}")
        try:
            if httpx2.get(f"{url}/healthz").status_code == 200:
                return
        except httpx2.TransportError:
            pass
        time.sleep(0.1)
    raise SystemExit("kb serve did not become healthy")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


if __name__ == "__main__":
    main()
