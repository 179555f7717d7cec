"""Benchmark: how long cold `kb` command lines take, against Python importing sqlite3 and numpy.

    .venv/bin/python scripts/bench_cli.py [--runs 15] [--chunks 1000]

Builds a local knowledge base of `--chunks` one-section chunks (the local provider, offline), then runs each
command `--runs` times in a fresh process (the commands in turn, round after round) and reports the median
wall time and its ratio to the baseline `python -c "import sqlite3, numpy"`, measured in the same run.
Goals (issue 14): `kb --help` within 2x, `kb status --json` within 3x, `kb search` on a small local index
within 4x.

kb's own modules are compiled to bytecode first, as `pip install` does: a checkout run with
PYTHONDONTWRITEBYTECODE set would otherwise compile every one of them from source in every run (~30 ms of a
cold search), which no installed kb does.
"""

import argparse
import compileall
import importlib.util
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

WORDS = ["harbor", "pilot", "tide", "lantern", "keeper", "signal", "beacon", "storm", "anchor", "compass"]


def corpus(root: Path, chunks: int) -> None:
    rng = random.Random(1)
    per_file = 50
    for number in range(0, chunks, per_file):
        parts = [f"# File {number}\n"]
        for section in range(number, min(chunks, number + per_file)):
            parts.append(f"## Part {section}\n\n" + " ".join(rng.choices(WORDS, k=30)) + ".\n")
        (root / f"f{number:05d}.md").write_text("\n".join(parts), encoding="utf-8")


def medians_s(commands: list[list[str]], runs: int, env: dict[str, str], cwd: Path) -> list[float]:
    """Each command's median wall time, the commands taken in turn in every round: on a shared machine a
    burst of load then slows them all alike instead of one command's block, so the ratios hold."""
    samples: list[list[float]] = [[] for _ in commands]
    for _ in range(runs):
        for command, times in zip(commands, samples, strict=True):
            started = time.perf_counter()
            subprocess.run(
                command, env=env, cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True
            )
            times.append(time.perf_counter() - started)
    return [statistics.median(times) for times in samples]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=15)
    parser.add_argument("--chunks", type=int, default=1000)
    args = parser.parse_args()
    kb = str(Path(sys.executable).with_name("kb"))
    work = Path(tempfile.mkdtemp(prefix="kb-bench-cli-"))
    (work / "docs").mkdir()
    corpus(work / "docs", args.chunks)
    env = {name: value for name, value in os.environ.items() if not name.startswith("KB_")}
    env |= {"KB_PROVIDER": "local", "KB_DB": str(work / "kb.sqlite")}
    env.pop("GEMINI_API_KEY", None)
    env.pop("GOOGLE_API_KEY", None)
    package = importlib.util.find_spec("kb")
    assert package is not None and package.submodule_search_locations
    compileall.compile_dir(next(iter(package.submodule_search_locations)), quiet=1)
    subprocess.run([kb, "ingest", "docs"], env=env, cwd=work, check=True, capture_output=True)
    subprocess.run([kb, "worker", "--once"], env=env, cwd=work, check=True, capture_output=True)
    cases = (
        ("kb --help", [kb, "--help"], 2.0),
        ("kb status --json", [kb, "status", "--json"], 3.0),
        ('kb search "storm beacon"', [kb, "search", "storm beacon"], 4.0),
        ("kb search ... --mode text", [kb, "search", "storm beacon", "--mode", "text"], 4.0),
    )
    python = [sys.executable, "-c", "import sqlite3, numpy"]
    baseline, *timings = medians_s([python, *(command for _, command, _ in cases)], args.runs, env, work)
    print(f"{args.chunks:,} chunks, local provider; median of {args.runs} cold runs each, taken in turn")
    label = 'python -c "import sqlite3, numpy"'
    print(f"  {label:<34} {baseline * 1000:6.0f} ms   1.0x  (baseline)")
    for (label, _, goal), seconds in zip(cases, timings, strict=True):
        ratio = seconds / baseline
        verdict = "ok" if ratio <= goal else "over"
        print(f"  {label:<34} {seconds * 1000:6.0f} ms {ratio:5.1f}x  (goal {goal:.0f}x: {verdict})")


if __name__ == "__main__":
    main()
