"""Kill a real `kb worker` process (SIGKILL) at random points, many times, then let one finish.

Whatever the moment of death, no text may be paid for twice: a remote job created just before the kill
must be adopted (found by its display name) by the next worker, never created again. Latency faults on
the emulator widen the interesting windows (upload, create, poll, download) so kills land inside them.
"""

import random
import time
from collections import Counter
from pathlib import Path

import pytest

from kb.app import KnowledgeBase
from kb.settings import KbSettings
from kb.testing.gemini_emulator import Fault, GeminiEmulator
from tests.support.corpora import write_corpus
from tests.support.crash_harness import (
    AFTER_CREATE,
    BEFORE_CREATE,
    BEFORE_UPLOAD,
    PHASES,
    KbProcess,
    expire_lease,
    job_rows,
    kb_env,
    kill_phase,
    owner_of,
    start_kb,
    wait_until,
)
from tests.support.settings import EMULATOR_KEY

SEED = 1234
KILLS = 22
FILES, SECTIONS = 10, 100  # 1,000 distinct texts
MAX_TEXTS = 100  # per job: 10 jobs
DIMENSIONS = 128

LATENCIES = {
    "files.upload": 0.06,  # two calls per upload (start, then the bytes)
    "asyncBatchEmbedContent": 0.25,  # the job exists from the start of this delay: kills here must adopt
    "batches.get": 0.1,
    "files.download": 0.2,
}


@pytest.mark.slow
def test_random_kills_never_pay_twice(emulator: GeminiEmulator, db_path: Path, tmp_path: Path) -> None:
    corpus = tmp_path / "corpus"
    total = write_corpus(corpus, FILES, SECTIONS, seed=SEED)
    settings = KbSettings(
        db=db_path,
        provider="gemini",
        gemini_api_key=EMULATOR_KEY,
        gemini_base_url=emulator.base_url,
        embedding_dimensions=DIMENSIONS,
    )
    with KnowledgeBase(settings=settings) as kb:
        assert kb.ingest([corpus]).tasks_queued == total

    for route, latency in LATENCIES.items():
        emulator.faults.add(Fault(route=route, status=200, latency_s=latency, times=None))
    # A long lease: a worker spawned ahead of time (to hide Python's start-up) must not take over from a
    # live one mid-step; a killed worker's lease is expired by `expire_lease` instead of waited out.
    env = kb_env(
        emulator,
        db_path,
        WORKER_LEASE_S=60,
        BATCH_MAX_TEXTS=MAX_TEXTS,
        EMBEDDING_DIMENSIONS=DIMENSIONS,
    )
    logs = tmp_path / "logs"
    rng = random.Random(SEED)
    histogram: Counter[str] = Counter()
    kills: list[tuple[float, str]] = []
    previous = job_rows(db_path)
    remote_before: set[str] = set()
    last_calls: Counter[str] = Counter()  # the killed worker's last API call (maybe still being answered)
    stalls = 0  # kills after which the ledger had not changed since the previous one
    started = time.monotonic()
    spawned = 0

    def spawn() -> KbProcess:
        nonlocal spawned
        spawned += 1
        return start_kb(["worker", "--once", "--timeout", "900"], env, logs, f"worker-{spawned}")

    waiting = spawn()
    while len(kills) < KILLS:
        worker, seen = waiting, len(emulator.log)
        # The kill delay counts from the worker's first API call, not from its (slow, variable) start-up.
        started_work = wait_until(
            lambda w=worker, n=seen: w.popen.poll() is not None or len(emulator.log) > n,  # type: ignore[misc]
            timeout=300,
        )
        assert started_work, worker.stderr
        waiting = spawn()
        delay = rng.uniform(0.0, 1.1)
        time.sleep(delay)
        if worker.popen.poll() is not None:
            assert worker.popen.returncode == 0, worker.stderr
            break  # drained before the kill
        worker.kill()
        time.sleep(0.02)  # let a request that was being answered settle in the emulator
        rows = job_rows(db_path)
        remote_now = {job.display_name for job in emulator.jobs() if job.display_name}
        phase = kill_phase(rows, remote_now, remote_before)
        stalls += rows == previous
        previous, remote_before = rows, remote_now
        histogram[phase] += 1
        calls = emulator.log[seen:]
        last_calls[calls[-1].route if calls else "(none)"] += 1
        kills.append((round(delay, 2), phase))
        expire_lease(db_path, owner_of(worker.pid))
    kill_time = time.monotonic() - started

    final = waiting  # the last one spawned runs to the end
    assert final.wait(900) == 0, final.stderr

    adopted = {
        line.split(" adopted: ")[0].rsplit(" ", 1)[-1]
        for log in logs.glob("*.err")
        for line in log.read_text(encoding="utf-8").splitlines()
        if " adopted: remote " in line
    }
    print(
        f"\n{len(kills)} kills in {kill_time:.1f}s ({stalls} left the ledger unchanged); jobs adopted: "
        f"{sorted(adopted, key=int)}; (delay, phase) per kill: {kills}; phases:"
    )
    for phase in PHASES:
        print(f"  {histogram[phase]:3d}  {phase}")
    print(f"last API call before each kill: {dict(last_calls.most_common())}")

    _assert_all_embedded_each_paid_once(settings, emulator, total)
    with KnowledgeBase(settings=settings) as kb, kb.engine.connect() as connection:
        assert connection.exec_driver_sql("PRAGMA integrity_check").scalar_one() == "ok"
    assert len(kills) >= 20
    assert histogram[BEFORE_UPLOAD] + histogram[BEFORE_CREATE] >= 1, histogram
    assert histogram[AFTER_CREATE] >= 1, histogram
    assert len(adopted) >= histogram[AFTER_CREATE] - 1  # (a kill may land between adopting and logging it)


PARALLEL_KILLS = 15


@pytest.mark.slow
def test_random_kills_of_parallel_workers_on_postgres(
    emulator: GeminiEmulator, postgres_url: str, tmp_path: Path
) -> None:
    """Three workers at once on one PostgreSQL database; every ~0.5 s one of them, at random, is killed
    (SIGKILL) and replaced. Each job is worked on by one claim holder at a time; a dead worker's claims
    expire and are taken over, its remote jobs found by display name, never created again."""
    corpus = tmp_path / "corpus"
    total = write_corpus(corpus, 20, SECTIONS, seed=SEED)  # 2,000 texts
    settings = KbSettings(
        database_url=postgres_url,
        provider="gemini",
        gemini_api_key=EMULATOR_KEY,
        gemini_base_url=emulator.base_url,
        embedding_dimensions=DIMENSIONS,
        results_dir=tmp_path / "results",
    )
    with KnowledgeBase(settings=settings) as kb:
        assert kb.ingest([corpus]).tasks_queued == total
    for route, latency in LATENCIES.items():
        emulator.faults.add(Fault(route=route, status=200, latency_s=latency, times=None))
    env = kb_env(
        emulator,
        tmp_path / "unused.sqlite",
        DATABASE_URL=postgres_url,
        RESULTS_DIR=tmp_path / "results",
        WORKER_LEASE_S=2,  # claims of the killed expire quickly; live ones are renewed in the background
        BATCH_MAX_TEXTS=MAX_TEXTS // 2,
        EMBEDDING_DIMENSIONS=DIMENSIONS,
    )
    logs = tmp_path / "logs"
    rng = random.Random(SEED)
    spawned = 0

    def spawn() -> KbProcess:
        nonlocal spawned
        spawned += 1
        return start_kb(["worker", "--once", "--timeout", "900"], env, logs, f"worker-{spawned}")

    workers = [spawn() for _ in range(3)]
    kills = 0
    try:
        assert wait_until(lambda: len(emulator.log) > 0, timeout=300)
        while kills < PARALLEL_KILLS:
            time.sleep(rng.uniform(0.1, 0.9))
            alive = [w for w in workers if w.popen.poll() is None]
            if not alive:
                break  # drained before all the kills
            victim = rng.choice(alive)
            victim.kill()
            kills += 1
            workers[workers.index(victim)] = spawn()
        for worker in workers:
            assert worker.wait(900) == 0, worker.stderr
    finally:
        for worker in workers:
            if worker.popen.poll() is None:
                worker.kill()
    stderr = [log.read_text(encoding="utf-8") for log in logs.glob("*.err")]
    taken_over = sum(text.count("whose claim expired") for text in stderr)
    adopted = sum(text.count(" adopted: remote ") for text in stderr)
    print(f"\n{kills} kills of {spawned} workers; claims taken over: {taken_over}; jobs adopted: {adopted}")

    _assert_all_embedded_each_paid_once(settings, emulator, total)
    assert kills >= 10 and taken_over >= 1


def _assert_all_embedded_each_paid_once(settings: KbSettings, emulator: GeminiEmulator, total: int) -> None:
    """Every text embedded with its vector stored, every job applied, no text billed twice, and no
    remote job created twice under one display name."""
    with KnowledgeBase(settings=settings) as kb:
        status = kb.status()
        assert status.tasks == {"pending": 0, "submitted": 0, "embedded": total, "failed": 0}
        jobs = kb.jobs()
        assert all(job.state == "applied" for job in jobs), [(j.id, j.state, j.error) for j in jobs]
        with kb.engine.connect() as connection:
            vectors = connection.exec_driver_sql("SELECT count(*) FROM vec_space_1").scalar_one()
    assert vectors == total
    billed = Counter(text for _, mode, text in emulator.embedded_texts() if mode == "batch")
    assert len(billed) == total
    twice = {text: n for text, n in billed.items() if n > 1}
    assert not twice, f"{len(twice)} texts paid for more than once"
    names = Counter(job.display_name for job in emulator.jobs())
    assert all(n == 1 for n in names.values()), names
    assert len(names) == len(jobs)
