"""Benchmark: `kb serve` answering clients while `kb ingest` and `kb worker` write to one SQLite database,
the worker SIGKILLed and restarted mid-run; then a check that nothing was lost.

    .venv/bin/python scripts/bench_serve_under_write.py [--provider local|gemini] [--files 4000]
        [--sections 10] [--seconds 60] [--clients 4] [--rounds 12] [--kills 1] [--quiet 20]

A synthetic Markdown corpus (`--files` files of `--sections` one-chunk sections, Zipf prose as in
scripts/bench_search.py) is ingested in `--rounds` + 1 rounds: the first before `kb serve` starts, the rest
spread over the `--seconds` of load, each `kb ingest` (the real command) adding new files and editing a few
earlier ones. Meanwhile one `kb worker` embeds (local model, or `--provider gemini`: the Gemini emulator on
127.0.0.1 through the real SDK, Batch API in file mode), is SIGKILLed `--kills` times and restarted at once
(its successor takes over when the killed one's lease expires: `KB_WORKER_LEASE_S`, 10 s here), and
`--clients` keep-alive clients in a separate process ask `GET /search` (hybrid) and every fifth time
`GET /status`, counting every answer that is not a 200 (5xx, "database is locked") and every connection
error. When the last round is ingested and the worker has drained, the same clients ask for `--quiet` seconds
with no writer: the baseline. Then the database is checked: `PRAGMA integrity_check`, FTS5's integrity check,
documents and chunks as written, every chunk's text embedded with its vector and code, no task pending or
submitted, no job live, `kb status --json` agreeing; with the emulator, every text billed once.

Exit status 0 when every answer was a 200 and every check holds. Offline: loopback only.
"""

import argparse
import json
import multiprocessing
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx2
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the checkout's tests/ helpers

from bench_search import percentiles, question, words
from bench_serve import free_port, wait_until_healthy

from kb.records import LIVE_JOB_STATES
from kb.store.dbapi import load_vec, sqlite_driver
from kb.testing.gemini_emulator import GeminiEmulator
from tests.support.crash_harness import KbProcess, kb_env, start_kb

LEASE_S = 10  # KB_WORKER_LEASE_S: how long a SIGKILLed worker's lease blocks its successor
STATUS_EVERY = 5  # every fifth request of a client asks /status, the others /search


@dataclass
class Corpus:
    """The files written so far: their number, each file's current version, every distinct text."""

    root: Path
    sections: int
    versions: dict[int, int] = field(default_factory=dict)
    texts: int = 0

    def write(self, number: int) -> None:
        version = self.versions.get(number, -1) + 1
        rng = random.Random(f"{number}-{version}")
        parts = [f"# Document {number}\n"]
        for section in range(self.sections):
            parts.append(
                f"## Part {section}\n\n{words(rng, 60)} (file {number} part {section} v{version}).\n"
            )
        path = self.root / f"dir{number % 20:02d}" / f"doc{number:05d}.md"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("\n".join(parts), encoding="utf-8")
        self.versions[number] = version
        self.texts += self.sections


@dataclass
class Run:
    """What the writers did while the clients asked."""

    ingests: list[tuple[int, float]] = field(default_factory=list)  # (exit code, seconds)
    ingest_output: list[str] = field(default_factory=list)
    kills: list[float] = field(default_factory=list)  # seconds into the load
    workers: list[KbProcess] = field(default_factory=list)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--provider", choices=("local", "gemini"), default="local")
    parser.add_argument("--files", type=int, default=4000)
    parser.add_argument("--sections", type=int, default=10, help="one chunk each")
    parser.add_argument("--seconds", type=float, default=60.0, help="of load with writers")
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=12, help="`kb ingest` runs during the load")
    parser.add_argument("--kills", type=int, default=1, help="worker SIGKILLs during the load")
    parser.add_argument("--quiet", type=float, default=20.0, help="seconds of the baseline, no writers")
    parser.add_argument("--keep", action="store_true", help="keep the work folder")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="kb-bench-serve-write-"))
    emulator = GeminiEmulator(api_key=None).start() if args.provider == "gemini" else None
    try:
        return bench(args, work, emulator)
    finally:
        if emulator is not None:
            emulator.stop()
        if args.keep:
            print(f"work folder kept: {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)


def bench(args: argparse.Namespace, work: Path, emulator: GeminiEmulator | None) -> int:
    corpus = Corpus(work / "corpus", args.sections)
    db, logs = work / "kb.sqlite", work / "logs"
    env = environment(db, emulator)
    first = args.files // (args.rounds + 1)
    for number in range(first):
        corpus.write(number)
    run = Run()
    ingest(env, corpus, logs, run, "ingest-0")
    print(
        f"{args.provider} provider; {args.files:,} files x {args.sections} chunks, "
        f"{args.rounds + 1} ingests, "
        f"{args.clients} clients, {os.cpu_count()} CPUs"
    )
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    server = start_kb(["serve", "--port", str(port)], env, logs, "serve")
    problems: list[str] = []
    try:
        wait_until_healthy(url, server.popen)
        with multiprocessing.get_context("spawn").Pool(1) as pool:
            loaded = pool.apply_async(ask_for, (url, args.seconds, args.clients, 1))
            started = time.monotonic()
            writers = threading.Thread(
                target=write_while_asked, args=(args, env, corpus, logs, run, started, first)
            )
            writers.start()
            load = loaded.get(timeout=args.seconds + 120)
            writers.join()
            drained = drain(db, run, started, args.seconds)
            stop(run.workers[-1], problems, "worker")
            quiet = pool.apply_async(ask_for, (url, args.quiet, args.clients, 2)).get(
                timeout=args.quiet + 120
            )
    finally:
        stop(server, problems, "kb serve")
    print_load("with writers", load, args.seconds)
    print_load("baseline, no writer", quiet, args.quiet)
    ratio(load, quiet)
    print(
        f"  ingests: {len(run.ingests)}, exit codes {sorted(Counter(c for c, _ in run.ingests).items())}, ",
        end="",
    )
    print(f"longest {max(s for _, s in run.ingests):.1f} s")
    print(
        f"  worker SIGKILLed at {', '.join(f'{t:.0f} s' for t in run.kills)}; "
        f"drained {drained:.0f} s after the load"
    )
    problems += [f"{name}: {count} answers not 200" for name, count in bad_answers(load, quiet).items()]
    problems += [f"ingest exited {code}" for code, _ in run.ingests if code != 0]
    problems += scan_logs(logs)
    problems += check(db, corpus, env, emulator)
    print("  RESULT: " + ("ok" if not problems else "FAILED: " + "; ".join(problems)))
    return 0 if not problems else 1


def environment(db: Path, emulator: GeminiEmulator | None) -> dict[str, str]:
    """The `kb` processes' environment: fast intervals, a short lease, the emulator if any."""
    overrides: dict[str, object] = {"WORKER_LEASE_S": LEASE_S, "BATCH_MAX_TEXTS": 2000}
    if emulator is not None:
        return kb_env(emulator, db, **overrides)
    env = {name: value for name, value in os.environ.items() if not name.startswith("KB_")}
    env |= {"KB_DB": str(db), "KB_PROVIDER": "local", "PYTHONUNBUFFERED": "1"}
    env |= {"KB_BATCH_MAX_WAIT_S": "1", "KB_WORKER_IDLE_S": "0.2"}
    return env | {f"KB_{name}": str(value) for name, value in overrides.items()}


def write_while_asked(
    args: argparse.Namespace,
    env: dict[str, str],
    corpus: Corpus,
    logs: Path,
    run: Run,
    started: float,
    first: int,
) -> None:
    """The worker, started with the load; the ingests spread over it; the worker's kills and restarts."""
    run.workers.append(start_kb(["worker"], env, logs, "worker-0"))
    kill_at = [args.seconds * (n + 1) / (args.kills + 1) for n in range(args.kills)]
    per_round = (args.files - first) / args.rounds
    rng = random.Random(3)
    for round_ in range(1, args.rounds + 1):
        due = started + args.seconds * (round_ - 1) / args.rounds
        while time.monotonic() < due:
            if kill_at and time.monotonic() - started >= kill_at[0]:
                kill_and_restart(run, env, logs, started)
                kill_at.pop(0)
            time.sleep(0.05)
        written = len(corpus.versions)
        for number in range(written, first + round(per_round * round_)):
            corpus.write(number)
        for number in rng.sample(range(written), min(written, 20)):  # edits: chunks replaced
            corpus.write(number)
        ingest(env, corpus, logs, run, f"ingest-{round_}")
    while kill_at:
        time.sleep(max(0.0, started + kill_at[0] - time.monotonic()))
        kill_and_restart(run, env, logs, started)
        kill_at.pop(0)


def kill_and_restart(run: Run, env: dict[str, str], logs: Path, started: float) -> None:
    worker = run.workers[-1]
    worker.popen.send_signal(signal.SIGKILL)
    worker.popen.wait()
    run.kills.append(time.monotonic() - started)
    run.workers.append(start_kb(["worker"], env, logs, f"worker-{len(run.workers)}"))


def ingest(env: dict[str, str], corpus: Corpus, logs: Path, run: Run, name: str) -> None:
    began = time.monotonic()
    process = start_kb(["ingest", str(corpus.root)], env, logs, name)
    code = process.wait(600)
    run.ingests.append((code, time.monotonic() - began))


def drain(db: Path, run: Run, started: float, seconds: float, timeout_s: float = 600) -> float:
    """Seconds after the load until no task waits and no job is live (the worker still running)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if run.workers[-1].popen.poll() is not None:
            raise SystemExit(f"the worker exited with {run.workers[-1].popen.returncode} before draining")
        with closing_connection(db) as connection:
            waiting = connection.execute(
                "SELECT count(*) FROM embedding_tasks WHERE status IN ('pending', 'submitted')"
            ).fetchone()[0]
            live = connection.execute(
                f"SELECT count(*) FROM batch_jobs WHERE state IN ({marks(LIVE_JOB_STATES)})",
                sorted(LIVE_JOB_STATES),
            ).fetchone()[0]
        if waiting == 0 and live == 0:
            return max(0.0, time.monotonic() - started - seconds)
        time.sleep(0.5)
    raise SystemExit(f"not drained {timeout_s:.0f} s after the load: a text or job is stuck")


def stop(process: KbProcess, problems: list[str], name: str) -> None:
    process.popen.send_signal(signal.SIGINT)
    try:
        code = process.popen.wait(60)
    except subprocess.TimeoutExpired:
        process.kill()
        code = process.popen.returncode
    if code not in (0, 130):
        problems.append(f"{name} exited {code} on SIGINT: {process.stderr[-500:]}")


def ask_for(url: str, seconds: float, clients: int, seed: int) -> dict[str, object]:
    """In a child process: `clients` keep-alive clients asking until `seconds` have passed. Returns the
    latencies by route and every answer that was not a 200, by kind."""
    deadline = time.monotonic() + seconds

    def client(number: int) -> tuple[dict[str, list[float]], Counter[str]]:
        rng = random.Random(seed * 1000 + number)
        samples: dict[str, list[float]] = {"search": [], "status": []}
        errors: Counter[str] = Counter()
        with httpx2.Client(base_url=url, timeout=60) as http:
            asked = 0
            while time.monotonic() < deadline:
                asked += 1
                route = "status" if asked % STATUS_EVERY == 0 else "search"
                params = {"q": question(rng), "k": 10} if route == "search" else None
                began = time.perf_counter()
                try:
                    response = http.get(f"/{route}", params=params)
                    body = response.text
                except httpx2.TransportError as error:
                    errors[f"{route}: {type(error).__name__}"] += 1
                    continue
                elapsed = time.perf_counter() - began
                if response.status_code != 200:
                    locked = " (database is locked)" if "locked" in body.lower() else ""
                    errors[f"{route}: HTTP {response.status_code}{locked}"] += 1
                else:
                    samples[route].append(elapsed)
        return samples, errors

    with ThreadPoolExecutor(clients) as pool:
        threads = list(pool.map(client, range(clients)))
    return {
        "search": [s for part, _ in threads for s in part["search"]],
        "status": [s for part, _ in threads for s in part["status"]],
        "errors": dict(sum((errors for _, errors in threads), Counter())),
    }


def print_load(name: str, result: dict[str, object], seconds: float) -> None:
    print(f"  {name}:")
    for route in ("search", "status"):
        samples = result[route]
        assert isinstance(samples, list)
        if samples:
            p50, p95 = percentiles(samples)
            print(
                f"    GET /{route:<7} {len(samples):6,} answers  {len(samples) / seconds:6.1f}/s   "
                f"p50 {p50 * 1000:7.1f} ms   p95 {p95 * 1000:7.1f} ms"
            )
    print(f"    not answered 200: {result['errors'] or 'none'}")


def ratio(load: dict[str, object], quiet: dict[str, object]) -> None:
    for route in ("search", "status"):
        loaded, baseline = load[route], quiet[route]
        assert isinstance(loaded, list) and isinstance(baseline, list)
        if loaded and baseline:
            (lp50, lp95), (qp50, qp95) = percentiles(loaded), percentiles(baseline)
            print(f"  /{route} with writers / without: p50 {lp50 / qp50:.2f}x, p95 {lp95 / qp95:.2f}x")


def bad_answers(*results: dict[str, object]) -> Counter[str]:
    total: Counter[str] = Counter()
    for result in results:
        errors = result["errors"]
        assert isinstance(errors, dict)
        total.update(errors)
    return total


def scan_logs(logs: Path) -> list[str]:
    """Tracebacks and lock errors in any kb process's output (a killed worker's log may end mid-line)."""
    found = []
    for log in sorted(logs.glob("*.err")):
        text = log.read_text(encoding="utf-8", errors="replace")
        for needle in ("Traceback", "database is locked", " ERROR "):
            if needle in text:
                found.append(f"{log.stem}: {text.count(needle)} x {needle.strip()!r}")
    return found


def check(db: Path, corpus: Corpus, env: dict[str, str], emulator: GeminiEmulator | None) -> list[str]:
    """Nothing lost: the database intact, every chunk's text embedded, nothing waiting, status agreeing."""
    problems = []
    files, chunks = len(corpus.versions), len(corpus.versions) * corpus.sections
    with closing_connection(db) as connection:
        integrity = connection.execute("PRAGMA integrity_check").fetchone()[0]
        try:
            connection.execute("INSERT INTO chunks_fts(chunks_fts, rank) VALUES ('integrity-check', 1)")
            fts = "ok"
        except Exception as error:  # the driver's DatabaseError: the index disagrees with the chunks
            fts = str(error)
        (space,) = connection.execute("SELECT id FROM embedding_spaces WHERE state = 'active'").fetchone()
        stored = (
            one(connection, "SELECT count(*) FROM documents"),
            one(connection, "SELECT count(*) FROM chunks"),
        )
        tasks = dict(connection.execute("SELECT status, count(*) FROM embedding_tasks GROUP BY status"))
        unembedded = one(
            connection,
            "SELECT count(*) FROM chunks c WHERE NOT EXISTS (SELECT 1 FROM embedding_tasks t "
            f"JOIN vec_space_{space}_rowids v ON v.rowid = t.id WHERE t.space_id = ? "
            "AND t.text_sha256 = c.text_sha256 AND t.status = 'embedded')",
            space,
        )
        vectors = {row[0] for row in connection.execute(f"SELECT rowid FROM vec_space_{space}_rowids")}
        coded = set()
        for (rowids,) in connection.execute(f"SELECT rowids FROM vec_codes_{space}"):
            coded.update(np.frombuffer(rowids, dtype="<i8").tolist())
        jobs = dict(connection.execute("SELECT state, count(*) FROM batch_jobs GROUP BY state"))
    status = subprocess.run(
        [sys.executable, "-m", "kb", "status", "--json"], env=env, capture_output=True, text=True, check=False
    )
    shown = json.loads(status.stdout) if status.returncode == 0 else {}
    print(f"  integrity_check: {integrity}; FTS5 integrity-check: {fts}")
    print(f"  documents {stored[0]:,} (written {files:,}), chunks {stored[1]:,} (written {chunks:,})")
    print(f"  tasks {tasks} (texts written {corpus.texts:,}); vectors {len(vectors):,}, coded {len(coded):,}")
    print(f"  jobs {jobs}; chunks without an embedded vector: {unembedded}")
    if integrity != "ok" or fts != "ok":
        problems.append(f"integrity {integrity}, FTS5 {fts}")
    if stored != (files, chunks):
        problems.append(f"{stored} documents and chunks stored, {(files, chunks)} written")
    # Texts edited away before they were sent are forgotten (nothing was paid for them): at most all written.
    if set(tasks) != {"embedded"} or tasks["embedded"] > corpus.texts:
        problems.append(f"tasks {tasks}: expected up to {corpus.texts} embedded, none waiting or failed")
    if unembedded or vectors != {i for (i,) in embedded_ids(db)} or not vectors <= coded:
        problems.append("a chunk without a vector, a vector without a task or a code")
    if any(state in LIVE_JOB_STATES for state in jobs):
        problems.append(f"live jobs left: {jobs}")
    if (shown.get("documents"), shown.get("chunks")) != (files, chunks) or shown.get(
        "chunk_statuses", {}
    ).get("embedded") != chunks:
        problems.append(f"kb status --json disagrees (exit {status.returncode}): {status.stdout[:300]}")
    if emulator is not None:
        billed = Counter(text for _, mode, text in emulator.embedded_texts() if mode == "batch")
        paid_twice = sum(1 for n in billed.values() if n > 1)
        print(
            f"  billed by batch: {sum(billed.values()):,} items for {len(billed):,} texts; "
            f"{paid_twice} paid twice"
        )
        if paid_twice or len(billed) != tasks.get("embedded"):
            problems.append(f"billing: {len(billed)} texts billed, {paid_twice} twice; {tasks} stored")
    return problems


def embedded_ids(db: Path) -> list[tuple[int]]:
    with closing_connection(db) as connection:
        return connection.execute("SELECT id FROM embedding_tasks WHERE status = 'embedded'").fetchall()


@contextmanager
def closing_connection(db: Path) -> Iterator[Any]:
    """A plain connection to the database (sqlite-vec loaded), closed on exit."""
    connection = sqlite_driver().connect(str(db), timeout=30)
    try:
        load_vec(connection)
        yield connection
    finally:
        connection.close()


def one(connection: Any, query: str, *parameters: object) -> int:
    return int(connection.execute(query, parameters).fetchone()[0])


def marks(values: object) -> str:
    return ", ".join("?" * len(values))  # type: ignore[arg-type]


if __name__ == "__main__":
    sys.exit(main())
