"""Benchmark: one PostgreSQL database drained by 1 `kb worker` and by several at once, in one run.

    .venv/bin/python scripts/bench_workers.py [--texts 20000] [--workers 1,3] [--batch 1000] [--db pgserver]

For each worker count: a fresh database, the same synthetic corpus ingested, a fresh Gemini emulator on
127.0.0.1 (no network), then that many `kb worker --once` processes started together; the time is from
their start until the last one exits with every text embedded. Each run is checked: every text embedded,
billed once. The emulator, PostgreSQL and the workers share this machine's cores, so the ratio shows how
much of a worker's step is waiting (on the API, on the database) that other workers can fill.
"""

import argparse
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

from pydantic import SecretStr

from kb.app import KnowledgeBase
from kb.settings import KbSettings
from kb.testing.gemini_emulator import GeminiEmulator

KEY = "bench-key-0123456789"
SECTIONS = 100  # per file


def write_corpus(root: Path, texts: int) -> None:
    rng = random.Random(7)
    vocabulary = ["".join(rng.choices("abcdefghiklmnoprstu", k=rng.randint(3, 9))) for _ in range(3000)]
    for number in range(texts // SECTIONS):
        body = [f"# File {number}\n"]
        for section in range(SECTIONS):
            prose = " ".join(rng.choices(vocabulary, k=40))
            body.append(f"## Part {section}\n\n{number}-{section}: {prose}.\n")
        (root / f"file{number:05d}.md").write_text("\n".join(body), encoding="utf-8")


def drain(url: str, corpus: Path, texts: int, workers: int, batch: int, work: Path) -> float:
    with GeminiEmulator(api_key=KEY) as emulator:
        settings = KbSettings(
            database_url=url,
            provider="gemini",
            gemini_api_key=SecretStr(KEY),
            gemini_base_url=emulator.base_url,
            results_dir=work / "results",
        )
        with KnowledgeBase(settings=settings) as kb:
            assert kb.ingest([corpus]).tasks_queued == texts
        env = {name: value for name, value in os.environ.items() if not name.startswith("KB_")}
        env |= {
            "GEMINI_API_KEY": KEY,
            "GOOGLE_GEMINI_BASE_URL": emulator.base_url,
            "KB_DATABASE_URL": url,
            "KB_PROVIDER": "gemini",
            "KB_RESULTS_DIR": str(work / "results"),
            "KB_BATCH_MAX_TEXTS": str(batch),
            "KB_POLL_INITIAL_S": "0.05",
            "KB_POLL_MAX_S": "0.2",
            "KB_WORKER_IDLE_S": "0.05",
        }
        started = time.perf_counter()
        processes = [
            subprocess.Popen(
                [sys.executable, "-m", "kb", "worker", "--once", "--timeout", "1800"],
                env=env,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            for _ in range(workers)
        ]
        codes = [process.wait() for process in processes]
        elapsed = time.perf_counter() - started
        with KnowledgeBase(settings=settings) as kb:
            embedded = kb.status().tasks["embedded"]
        billed = Counter(text for _, mode, text in emulator.embedded_texts() if mode == "batch")
    if codes != [0] * workers or embedded != texts or set(billed.values()) != {1} or len(billed) != texts:
        raise SystemExit(f"run with {workers} workers is wrong: exit codes {codes}, {embedded} embedded")
    return elapsed


def main() -> None:
    sys.path.insert(0, str(Path(__file__).parent))
    from bench_search import fresh_postgres

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--texts", type=int, default=20_000)
    parser.add_argument("--workers", default="1,3")
    parser.add_argument("--batch", type=int, default=1000, help="texts per job (KB_BATCH_MAX_TEXTS)")
    parser.add_argument("--db", default="pgserver", help="a PostgreSQL server URL, or `pgserver`")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="kb-bench-workers-"))
    try:
        corpus = work / "corpus"
        corpus.mkdir()
        write_corpus(corpus, args.texts)
        print(f"{args.texts:,} texts in jobs of {args.batch:,}, emulator on 127.0.0.1, {os.cpu_count()} CPUs")
        first = None
        for count in (int(n) for n in args.workers.split(",")):
            url = fresh_postgres(args.db, work, count)
            elapsed = drain(url, corpus, args.texts, count, args.batch, work)
            first = first or elapsed
            print(
                f"  {count} worker{'s' if count > 1 else ' '}: {elapsed:6.1f} s  "
                f"{args.texts / elapsed:7,.0f} texts/s  ({first / elapsed:.2f}x the first)"
            )
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
