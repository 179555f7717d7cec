"""Benchmark: the local embedding provider's throughput, and the README main job end to end, in one run.

    .venv/bin/python scripts/bench_local.py [--texts 10000]

1. Throughput: paragraphs from the shared FastAPI corpus (repeated to `--texts`), embedded with
   `LocalEmbedder.embed_documents` after the model is loaded, as texts/s and MB/s; next to the cost of merely
   tokenising the same texts (the floor of any wordllama embedding), as a ratio.
2. The README's first command without its install step: `kb ingest docs`, `kb worker --once`, `kb search ...`
   as subprocesses on a fresh database, each step timed (process start-up included, as a user sees it).
"""

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# Real prose: the FastAPI docs beside the project's CI checkout, else this repository's own docs/.
SHARED = ROOT.parent / "shared" / "corpus" / "fastapi-docs"
CORPUS = SHARED if SHARED.is_dir() else ROOT / "docs"


def paragraphs(count: int, corpus: Path = CORPUS) -> list[str]:
    found = [
        block.strip()
        for path in sorted(corpus.rglob("*.md"))
        for block in path.read_text(encoding="utf-8").split("\n\n")
        if len(block.strip()) > 80
    ]
    if not found:
        raise SystemExit(f"no paragraphs found under {corpus}")
    return [found[i % len(found)] + f" ({i})" for i in range(count)]


def throughput(count: int, corpus: Path = CORPUS) -> None:
    from kb.providers.local import LocalEmbedder, load_model

    started = time.perf_counter()
    load_model()
    print(f"model load: {time.perf_counter() - started:.2f} s")
    texts = paragraphs(count, corpus)
    megabytes = sum(len(t.encode()) for t in texts) / 1e6
    embedder = LocalEmbedder()
    started = time.perf_counter()
    matrix = embedder.embed_documents(texts)
    seconds = time.perf_counter() - started
    assert matrix.shape == (count, 256)
    from kb.providers.local import _get_model

    tokenizer = _get_model().tokenizer
    started = time.perf_counter()
    tokenizer.encode_batch(texts, add_special_tokens=False)
    tokenize = time.perf_counter() - started
    print(
        f"local embedding: {count / seconds:,.0f} texts/s ({megabytes / seconds:.1f} MB/s) over {count:,} "
        f"paragraphs; tokenising alone: {count / tokenize:,.0f} texts/s; ratio {tokenize / seconds:.2f}"
    )


def readme_job() -> None:
    work = Path(tempfile.mkdtemp(prefix="kb-bench-local-"))
    env = {**os.environ, "KB_DB": str(work / "demo.sqlite"), "KB_PROVIDER": "local"}
    kb = [sys.executable, "-m", "kb"]
    steps = [
        ("kb ingest docs", [*kb, "ingest", "docs"]),
        ("kb worker --once", [*kb, "worker", "--once", "--timeout", "600"]),
        ("kb search ...", [*kb, "search", "How does kb avoid paying twice for the same text?", "-k", "3"]),
    ]
    total = 0.0
    try:
        for label, command in steps:
            started = time.perf_counter()
            subprocess.run(command, cwd=ROOT, env=env, check=True, capture_output=True)
            seconds = time.perf_counter() - started
            total += seconds
            print(f"  {label:<18} {seconds:6.2f} s")
        print(f"README main job (without install): {total:.2f} s")
    finally:
        shutil.rmtree(work, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--texts", type=int, default=10_000)
    parser.add_argument(
        "--corpus", type=Path, default=CORPUS, help="a folder of Markdown to take paragraphs from"
    )
    args = parser.parse_args()
    throughput(args.texts, args.corpus)
    readme_job()


if __name__ == "__main__":
    main()
