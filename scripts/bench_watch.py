"""Benchmark: freshness under `kb worker --watch`, from a file saved to its text, and its vectors, searchable.

    .venv/bin/python scripts/bench_watch.py [--edits 20] [--files 200] [--idle 5] [--debounce 300]

Builds a local knowledge base of `--files` documents (the local provider, offline), starts
`kb worker --watch` on their folder (KB_BATCH_MIN_TEXTS=1, so that a single edit makes a job; KB_WORKER_IDLE_S
`--idle`), then `--edits` times saves one document as editors do (a temporary file renamed over it) with a
word never seen before, and measures until `kb search --mode text` finds the word, and until every text is
embedded (its vector searchable). Prints the p50 and p90 of both, in seconds.
"""

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from kb.app import KnowledgeBase
from kb.settings import KbSettings


def document(number: int, word: str = "") -> str:
    return f"# Page {number}\n\nHarbor pilots read the tide tables before dawn. {word}\n"


def wait_for(condition: object, timeout: float = 120.0) -> float:
    started = time.perf_counter()
    while not condition():  # type: ignore[operator]
        if time.perf_counter() - started > timeout:
            raise TimeoutError("gave up waiting")
        time.sleep(0.005)
    return time.perf_counter()


def percentile(samples: list[float], share: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, round(share * (len(ordered) - 1)))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--edits", type=int, default=20)
    parser.add_argument("--files", type=int, default=200)
    parser.add_argument("--idle", type=float, default=5.0, help="KB_WORKER_IDLE_S of the worker")
    parser.add_argument("--debounce", type=int, default=300, help="KB_WATCH_DEBOUNCE_MS")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="kb-bench-watch-"))
    docs = work / "docs"
    docs.mkdir()
    for number in range(args.files):
        (docs / f"page{number:04d}.md").write_text(document(number), encoding="utf-8")
    env = {name: value for name, value in os.environ.items() if not name.startswith("KB_")}
    env.pop("GEMINI_API_KEY", None)
    env.pop("GOOGLE_API_KEY", None)
    env |= {
        "KB_PROVIDER": "local",
        "KB_DB": str(work / "kb.sqlite"),
        "KB_BATCH_MIN_TEXTS": "1",
        "KB_WORKER_IDLE_S": str(args.idle),
        "KB_POLL_INITIAL_S": "0.05",
        "KB_WATCH_DEBOUNCE_MS": str(args.debounce),
        "PYTHONUNBUFFERED": "1",
    }
    kb_command = str(Path(sys.executable).with_name("kb"))
    log = (work / "worker.log").open("wb")
    worker = subprocess.Popen([kb_command, "worker", "--watch", str(docs)], env=env, stdout=log, stderr=log)
    try:
        with KnowledgeBase(settings=KbSettings(db=work / "kb.sqlite", provider="local")) as kb:

            def embedded() -> bool:
                done, everything = kb.embedding_progress()
                return everything >= args.files and done == everything

            wait_for(embedded)  # the catch-up ingest and its first job
            to_text, to_vector = [], []
            for edit in range(args.edits):
                word = f"zqx{edit}marker"
                number = edit * (args.files // args.edits)
                temporary = docs / f".page{number:04d}.md.swp"
                temporary.write_text(document(number, word), encoding="utf-8")
                saved = time.perf_counter()
                os.replace(temporary, docs / f"page{number:04d}.md")
                found = wait_for(lambda w=word: bool(kb.search(w, mode="text", k=1).hits))
                vectors = wait_for(embedded)
                to_text.append(found - saved)
                to_vector.append(vectors - saved)
    finally:
        worker.terminate()
        worker.wait(60)
        log.close()
    print(f"{args.edits} edits, {args.files} documents, debounce {args.debounce} ms, idle {args.idle} s")
    for name, samples in (("save -> text searchable", to_text), ("save -> vectors searchable", to_vector)):
        p50, p90 = statistics.median(samples), percentile(samples, 0.9)
        print(f"  {name:28} p50 {p50:6.2f} s   p90 {p90:6.2f} s")


if __name__ == "__main__":
    main()
