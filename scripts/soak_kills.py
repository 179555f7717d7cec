"""Soak: many random SIGKILLs of `kb worker` over a fault-heavy Gemini emulator, then one worker drains.

    .venv/bin/python scripts/soak_kills.py [--kills 100] [--texts 20000] [--seed 1] [--db sqlite|URL]

The emulator (on 127.0.0.1, no network) answers 30 % of calls with 429 (RetryInfo), 10 % with a 500 or 503,
fails 20 % of batch jobs and expires 5 %, shuffles results, drops 1 % of the results of 15 % of the jobs,
and refuses 1 % of the texts (a marker word in them). Workers (`kb worker --once`, real processes) are
killed at random moments, one after another; after the last kill, one more worker runs to the end. Then the
invariants are checked:

- every good text embedded with its vector stored, every refused text failed with the service's reason;
- nothing stuck: no task pending or submitted, no job live;
- billed == distinct good texts + texts of jobs whose results were lost after the service billed them
  (in this emulator a failed or expired job bills nothing, and dropped results are not billed);
- no display name created twice remotely; the database intact (SQLite `PRAGMA integrity_check`).

Exit status 0 when every invariant holds. Outside the default test tier: it takes minutes.
"""

import argparse
import random
import signal
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

from pydantic import SecretStr
from sqlalchemy import text

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the checkout's tests/ helpers

from kb.app import KnowledgeBase
from kb.settings import KbSettings
from kb.testing.gemini_emulator import Fault, GeminiEmulator, JobPlan
from tests.support.crash_harness import KbProcess, kb_env, owner_of, start_kb, wait_until
from tests.support.settings import EMULATOR_KEY

KEY = EMULATOR_KEY  # the key `kb_env` gives the workers
MARKER = "POISONED"
WORDS = [
    "amber",
    "basalt",
    "cobalt",
    "dune",
    "ember",
    "fjord",
    "garnet",
    "harbor",
    "iris",
    "jade",
    "kelp",
    "lagoon",
    "marble",
    "nectar",
    "onyx",
]
# Calls that carry faults: every route but the upload's byte chunks (the SDK re-posts those after real
# sleeps of 1, 2 and 4 s, which would only slow the soak down).
FAULTED = ("batchEmbedContents", "asyncBatchEmbedContent", "batches.get", "batches.list", "files.download")


def write_corpus(root: Path, texts: int, rng: random.Random) -> tuple[int, int]:
    """`texts` one-chunk sections; about 1 % carry the marker the emulator refuses. Returns (good, bad)."""
    bad = 0
    per_file = 50
    for start in range(0, texts, per_file):
        parts = [f"# File {start // per_file}\n"]
        for n in range(start, min(texts, start + per_file)):
            poisoned = rng.random() < 0.01
            bad += poisoned
            words = " ".join(rng.choices(WORDS, k=12))
            parts.append(f"## Part {n}\n\nText {n}: {words}{' ' + MARKER if poisoned else ''}.\n")
        root.mkdir(parents=True, exist_ok=True)
        (root / f"file{start // per_file:04d}.md").write_text("\n".join(parts), encoding="utf-8")
    return texts - bad, bad


def fault_heavy(emulator: GeminiEmulator, seed: int) -> None:
    for n, route in enumerate(FAULTED):
        emulator.faults.add(
            Fault(route=route, status=429, times=None, probability=0.3, retry_delay="0.01s", seed=seed + n)
        )
        emulator.faults.add(Fault(route=route, status=503, times=None, probability=0.05, seed=seed + 100 + n))
        emulator.faults.add(Fault(route=route, status=500, times=None, probability=0.05, seed=seed + 200 + n))
    for route in FAULTED:  # after the errors: a call that gets no error is slowed a little, as live
        emulator.faults.add(Fault(route=route, status=200, latency_s=0.02, times=None))
    emulator.settings.rejected_texts_containing = MARKER
    rng = random.Random(seed)
    # A lossy job drops 1 % of its results, and at least one: given to some jobs only, or a one-text retry
    # job would lose its one result every time.
    lossy = JobPlan(shuffle=True, drop_fraction=0.01, seed=seed)
    plans = [JobPlan(outcome="FAILED"), JobPlan(outcome="EXPIRED"), JobPlan(shuffle=True, seed=seed), lossy]
    emulator.plan_next_jobs(rng.choices(plans, weights=[20, 5, 60, 15], k=20_000))


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--kills", type=int, default=100)
    parser.add_argument("--texts", type=int, default=20_000)
    parser.add_argument("--batch", type=int, default=100, help="texts per batch job")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--db", default="sqlite", help="sqlite, or a postgresql:// URL of an empty database")
    args = parser.parse_args()
    rng = random.Random(args.seed)
    work = Path(tempfile.mkdtemp(prefix="kb-soak-"))
    good, bad = write_corpus(work / "corpus", args.texts, rng)
    started = time.monotonic()
    with GeminiEmulator(api_key=KEY, seed=args.seed) as emulator:
        overrides: dict[str, object] = {
            "BATCH_MAX_TEXTS": args.batch,
            "EMBEDDING_DIMENSIONS": 128,
            "WORKER_LEASE_S": 30,
            "TASK_MAX_ATTEMPTS": 50,  # a text in a job that failed remotely is retried, not given up
            "MAX_RETRIES": 8,
        }
        database = {"db": work / "kb.sqlite"}
        if args.db != "sqlite":
            overrides["DATABASE_URL"] = args.db
            overrides["RESULTS_DIR"] = work / "results"
            database = {"database_url": args.db, "results_dir": work / "results"}  # type: ignore[dict-item]
        settings = KbSettings(
            provider="gemini",
            gemini_api_key=SecretStr(KEY),
            gemini_base_url=emulator.base_url,
            embedding_dimensions=128,
            task_max_attempts=50,
            **database,  # type: ignore[arg-type]
        )
        with KnowledgeBase(settings=settings) as kb:
            kb.ingest([work / "corpus"])
        fault_heavy(emulator, args.seed)
        env = kb_env(emulator, work / "kb.sqlite", **overrides)
        logs = work / "logs"
        kills = 0
        for number in range(args.kills):
            worker = start_kb(["worker", "--once", "--timeout", "600"], env, logs, f"worker-{number}")
            seen = len(emulator.log)

            def working(process: KbProcess = worker, calls: int = seen) -> bool:
                return process.popen.poll() is not None or len(emulator.log) > calls

            wait_until(working, timeout=60)
            time.sleep(rng.uniform(0.0, 1.5))
            if worker.popen.poll() is not None:
                print(f"worker {number} finished before its kill (exit {worker.popen.returncode})")
                break
            worker.popen.send_signal(signal.SIGKILL)
            worker.popen.wait()
            kills += 1
            with KnowledgeBase(settings=settings) as kb, kb.engine.begin() as connection:
                owner = owner_of(worker.pid)  # what waiting out its lease and claims would do
                connection.execute(
                    text("UPDATE worker_leases SET expires_at = 0 WHERE owner = :o"), {"o": owner}
                )
                connection.execute(
                    text("UPDATE batch_jobs SET lease_expires_at = 0 WHERE lease_owner = :o"), {"o": owner}
                )
        final = start_kb(["worker", "--once", "--timeout", "900"], env, logs, "final")
        code = final.wait(1000)
        elapsed = time.monotonic() - started
        return report(settings, emulator, good, bad, kills, code, elapsed, final.stderr)


def report(
    settings: KbSettings,
    emulator: GeminiEmulator,
    good: int,
    bad: int,
    kills: int,
    code: int,
    elapsed: float,
    err: str,
) -> int:
    problems = []
    with KnowledgeBase(settings=settings) as kb:
        tasks = kb.status().tasks
        jobs = kb.jobs()
        failures = kb.failed_texts(limit=100_000)
        with kb.engine.connect() as connection:
            vectors = connection.execute(text("SELECT count(*) FROM vec_space_1")).scalar_one()
            integrity = (
                connection.execute(text("PRAGMA integrity_check")).scalar_one()
                if connection.dialect.name == "sqlite"
                else "ok"
            )
    states = Counter(job.state for job in jobs)
    lost_after_billing = sum(job.texts for job in jobs if "results unavailable" in (job.error or ""))
    billed = Counter(t for _, _, t in emulator.embedded_texts())
    names = Counter(job.display_name for job in emulator.jobs())
    calls = Counter(r.status for r in emulator.log)
    if code != 0:
        problems.append(f"final worker exited {code}: {err[-500:]}")
    if tasks != {"pending": 0, "submitted": 0, "embedded": good, "failed": bad}:
        problems.append(f"tasks {tasks}, expected {good} embedded and {bad} failed")
    if vectors != good:
        problems.append(f"{vectors} vectors for {good} good texts")
    if not all(MARKER in (f.error or "") or "cannot be embedded" in (f.error or "") for f in failures):
        problems.append("a failed text without the service's reason")
    if sum(billed.values()) > good + lost_after_billing or len(billed) != good:
        paid = sum(billed.values())
        problems.append(
            f"billed {paid} items for {len(billed)} texts; expected {good} (+{lost_after_billing})"
        )
    if any(n > 1 for n in names.values()):
        problems.append("a display name created twice remotely")
    if integrity != "ok":
        problems.append(f"integrity {integrity}")
    live = {
        state: n
        for state, n in states.items()
        if state in ("created", "pending", "running", "cancelling", "succeeded")
    }
    if live:
        problems.append(f"live jobs left: {live}")
    print(f"soak: {kills} SIGKILLs in {elapsed:.0f} s; {len(jobs)} jobs {dict(states)}")
    print(f"  texts: {good} good embedded={tasks['embedded']}, {bad} refused failed={tasks['failed']}")
    print(f"  billed items {sum(billed.values())} for {len(billed)} distinct texts", end="")
    print(f" (+{lost_after_billing} allowed: results lost after billing)")
    once = not any(n > 1 for n in names.values())
    print(
        f"  answers by status: {dict(sorted(calls.items()))}; {len(names)} remote jobs, one per name: {once}"
    )
    print(f"  integrity_check: {integrity}")
    print("  RESULT: " + ("ok" if not problems else "FAILED: " + "; ".join(problems)))
    return 0 if not problems else 1


if __name__ == "__main__":
    sys.exit(main())
