"""The fault matrix: every step of a job's life (before and after each remote call and each commit) is
interrupted in three ways (Ctrl-C, an exception kb does not know, SIGKILL of the process), then a fresh
worker drains. Every cell must end with every text embedded exactly once, paid exactly once, no job or
text stuck, and an intact database. The tests print the matrix.

Ctrl-C and exceptions are raised in-process through `kb.failpoints`; SIGKILL kills a real `kb` child process
(`tests/support/failpoint_kb.py`) at the same point. A killed worker's claims are aged past their expiry (what
waiting KB_WORKER_LEASE_S would do) before the fresh worker starts.
"""

import signal
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from sqlalchemy import text

from kb import failpoints
from kb.app import KnowledgeBase
from kb.embed.worker import ExitReason
from kb.settings import KbSettings
from kb.testing.gemini_emulator import GeminiEmulator, JobPlan
from tests.support.corpora import write_corpus
from tests.support.crash_harness import kb_env, owner_of, run_kb
from tests.support.settings import EMULATOR_KEY, FAST_SETTINGS, new_postgres_database

ACTIONS = ("interrupt", "crash", "kill")
DIMENSIONS = 128
TEXTS_PER_JOB = 4


@dataclass(frozen=True)
class Scenario:
    """What the faulty run does before the failpoint can be reached."""

    name: str
    points: tuple[str, ...]
    prepare: Callable[[GeminiEmulator, KnowledgeBase], None] = lambda _emu, _kb: None
    settings: dict[str, object] = field(default_factory=dict)


def _record_only(_emu: GeminiEmulator, kb: KnowledgeBase) -> None:
    kb.batch_manager().flush(force=True)  # jobs recorded, not submitted: the next worker reconciles them


def _first_job_stuck(emu: GeminiEmulator, _kb: KnowledgeBase) -> None:
    emu.plan_next_jobs([JobPlan(outcome="STUCK")])


def _around(*steps: str) -> tuple[str, ...]:
    return tuple(f"{step}.{when}" for step in steps for when in ("before", "after"))


BATCH_SCENARIOS = (
    Scenario(
        "a job's life",
        _around("record.commit", "upload", "create", "submitted.commit", "get", "download", "apply")
        + _around("apply.commit", "delete"),
    ),
    Scenario("reconcile at start", _around("list"), prepare=_record_only),
    Scenario(
        "past the deadline",
        _around("cancel"),
        prepare=_first_job_stuck,
        settings={"job_deadline_h": 0.5 / 3600},
    ),
)


@dataclass
class Cell:
    point: str
    action: str
    outcome: str = "?"

    @property
    def ok(self) -> bool:
        return self.outcome.startswith("ok")


def _settings(db: Path, emu: GeminiEmulator, extra: dict[str, object]) -> KbSettings:
    values: dict[str, object] = {
        **FAST_SETTINGS,
        "batch_max_texts": TEXTS_PER_JOB,
        "embedding_dimensions": DIMENSIONS,
        "worker_lease_s": 30.0,
        **extra,
    }
    return KbSettings(
        db=db,
        provider="gemini",
        gemini_api_key=EMULATOR_KEY,
        gemini_base_url=emu.base_url,
        **values,  # type: ignore[arg-type]
    )


def _env_overrides(settings: KbSettings, extra: dict[str, object]) -> dict[str, object]:
    names = {**FAST_SETTINGS, "batch_max_texts": 0, "embedding_dimensions": 0, "worker_lease_s": 0, **extra}
    return {name.upper(): getattr(settings, name) for name in names}


def _age_claims(kb: KnowledgeBase, owner: str) -> None:
    """What waiting out a killed process's lease, job claims and online holds would do, without the wait."""
    with kb.engine.begin() as connection:
        connection.execute(text("UPDATE worker_leases SET expires_at = 0 WHERE owner = :o"), {"o": owner})
        connection.execute(
            text("UPDATE batch_jobs SET lease_expires_at = 0 WHERE lease_owner = :o"), {"o": owner}
        )
        connection.execute(text("UPDATE embedding_tasks SET next_attempt_at = 0 WHERE status = 'pending'"))


def _run_batch_cell(cell: Cell, scenario: Scenario, root: Path, database_url: str | None) -> None:
    with GeminiEmulator(api_key=EMULATOR_KEY) as emu:
        db = root / "kb.sqlite"
        settings = _settings(db, emu, scenario.settings)
        if database_url:
            settings = settings.model_copy(
                update={"database_url": database_url, "results_dir": root / "results"}
            )
        total = write_corpus(root / "corpus", 3, 4, seed=len(cell.point))  # 12 texts, 3 jobs
        with KnowledgeBase(settings=settings) as kb:
            kb.ingest([root / "corpus"])
            scenario.prepare(emu, kb)
        reached = _faulty_worker(cell, settings, emu, root, scenario)
        if not reached:
            cell.outcome = "NOT REACHED"
            return
        with KnowledgeBase(settings=settings) as kb:
            result = kb.worker().run(once=True, timeout_s=600)
            cell.outcome = _judge(kb, emu, total, result.reason, result.errors)


def _faulty_worker(
    cell: Cell, settings: KbSettings, emu: GeminiEmulator, root: Path, scenario: Scenario
) -> bool:
    if cell.action == "kill":
        overrides = _env_overrides(settings, scenario.settings)
        if settings.database_url:
            overrides.update(DATABASE_URL=settings.database_url, RESULTS_DIR=settings.results_dir)
        env = kb_env(emu, settings.db, **overrides)
        process = run_kb(
            ["worker", "--once", "--timeout", "600"],
            env,
            root / "logs",
            "faulty",
            failpoint=f"{cell.point}=kill",
        )
        with KnowledgeBase(settings=settings) as kb:
            _age_claims(kb, owner_of(process.pid))
        return process.popen.returncode == -signal.SIGKILL
    fired: list[str] = []

    def action() -> None:
        fired.append(cell.point)
        failpoints.ACTIONS[cell.action]()

    with KnowledgeBase(settings=settings) as kb, failpoints.armed(cell.point, failpoints.once(action)):
        try:
            kb.worker().run(once=True, timeout_s=600)
        except (KeyboardInterrupt, RuntimeError):
            return True
    # An exception inside a step is logged and the worker goes on (issue 20): the fault was reached if it
    # fired, and the drain that follows checks the same invariants.
    return bool(fired)


def _judge(kb: KnowledgeBase, emu: GeminiEmulator, total: int, reason: ExitReason, errors: list[str]) -> str:
    """'ok', or what is wrong: the invariants of the money path after a drain."""
    problems = []
    if reason != ExitReason.DRAINED:
        problems.append(f"drain {reason}: {errors[-1:]}")
    tasks = kb.status().tasks
    if tasks != {"pending": 0, "submitted": 0, "embedded": total, "failed": 0}:
        problems.append(f"tasks {tasks}")
    live = [
        job for job in kb.jobs() if job.state in ("created", "pending", "running", "cancelling", "succeeded")
    ]
    if live:
        problems.append(f"live jobs {[(j.id, j.state) for j in live]}")
    with kb.engine.connect() as connection:
        vectors = connection.execute(text("SELECT count(*) FROM vec_space_1")).scalar_one()
        if connection.dialect.name == "sqlite":
            integrity = connection.execute(text("PRAGMA integrity_check")).scalar_one()
            if integrity != "ok":
                problems.append(f"integrity {integrity}")
    if vectors != total:
        problems.append(f"{vectors} vectors")
    billed = Counter(text for _, _, text in emu.embedded_texts())
    if len(billed) != total or sum(billed.values()) != total:
        problems.append(f"billed {sum(billed.values())} items for {len(billed)} texts")
    names = Counter(job.display_name for job in emu.jobs())
    if any(n > 1 for n in names.values()):
        problems.append("a display name created twice")
    return "; ".join(problems) or "ok"


def _print(title: str, cells: list[Cell]) -> None:
    points = list(dict.fromkeys(cell.point for cell in cells))
    by = {(cell.point, cell.action): cell.outcome for cell in cells}
    width = max(len(p) for p in points)
    print(f"\n{title}\n{'point'.ljust(width)}  " + "  ".join(a.ljust(16) for a in ACTIONS))
    for point in points:
        print(f"{point.ljust(width)}  " + "  ".join(by.get((point, a), "-")[:16].ljust(16) for a in ACTIONS))


def _batch_matrix(
    tmp_path: Path, database_url: Callable[[], str] | None, actions: tuple[str, ...]
) -> list[Cell]:
    cells = []
    for scenario in BATCH_SCENARIOS:
        for point in scenario.points:
            for action in actions:
                cell = Cell(point, action)
                root = tmp_path / f"{point}-{action}"
                try:
                    _run_batch_cell(cell, scenario, root, database_url() if database_url else None)
                except Exception as error:  # a cell that blows up is a finding, not the end of the matrix
                    cell.outcome = f"{type(error).__name__}: {error}"
                cells.append(cell)
    return cells


@pytest.mark.slow
def test_batch_fault_matrix_on_sqlite(tmp_path: Path) -> None:
    started = time.monotonic()
    cells = _batch_matrix(tmp_path, None, ACTIONS)
    _print(f"batch path, SQLite ({time.monotonic() - started:.0f} s)", cells)
    failed = {(c.point, c.action): c.outcome for c in cells if not c.ok}
    assert not failed, failed
    assert len(cells) == 22 * 3


@pytest.mark.slow
def test_batch_fault_matrix_on_postgres(tmp_path: Path, request: pytest.FixtureRequest) -> None:
    """The same on PostgreSQL, where claims are taken with SKIP LOCKED and isolation differs."""
    request.getfixturevalue("postgres_server")
    started = time.monotonic()
    cells = _batch_matrix(tmp_path, lambda: _fresh_postgres(request), ACTIONS)
    _print(f"batch path, PostgreSQL ({time.monotonic() - started:.0f} s)", cells)
    failed = {(c.point, c.action): c.outcome for c in cells if not c.ok}
    assert not failed, failed


def _fresh_postgres(request: pytest.FixtureRequest) -> str:
    """A new empty database per cell (the `postgres_url` fixture gives one per test)."""
    return new_postgres_database(request.getfixturevalue("postgres_server"))


# -- the online path: each request boundary ------------------------------------------------------------------

ONLINE_TEXTS = 250  # three requests: 100, 100, 50
BOUNDARIES = ("online.request.before", "online.commit.after")  # between two requests
WINDOW = ("online.request.after", "online.commit.before")  # a response in hand, not yet committed


def _run_online_cell(cell: Cell, root: Path) -> int:
    """Fire at the second request; returns how many texts were paid twice."""
    with GeminiEmulator(api_key=EMULATOR_KEY) as emu:
        settings = _settings(root / "kb.sqlite", emu, {})
        total = write_corpus(root / "corpus", 5, 50, seed=len(cell.point))
        if cell.action == "kill":
            env = kb_env(emu, settings.db, **_env_overrides(settings, {}))
            process = run_kb(
                ["ingest", "--now", str(root / "corpus")],
                env,
                root / "logs",
                "faulty",
                failpoint=f"{cell.point}=kill@1",
            )
            reached = process.popen.returncode == -signal.SIGKILL
            with KnowledgeBase(settings=settings) as kb:
                _age_claims(kb, owner_of(process.pid))
        else:
            with KnowledgeBase(settings=settings) as kb:
                queued = kb.ingest([root / "corpus"])
                action = failpoints.once(failpoints.ACTIONS[cell.action], skip=1)
                with failpoints.armed(cell.point, action):
                    try:
                        kb.embed_now(queued.queued_hashes)
                        reached = False
                    except (KeyboardInterrupt, RuntimeError):
                        reached = True
        if not reached:
            cell.outcome = "NOT REACHED"
            return 0
        with KnowledgeBase(settings=settings) as kb:
            report = kb.embed_now()
            problems = []
            if kb.status().tasks != {"pending": 0, "submitted": 0, "embedded": total, "failed": 0}:
                problems.append(f"tasks {kb.status().tasks} {report.errors[-1:]}")
            with kb.engine.connect() as connection:
                if connection.execute(text("SELECT count(*) FROM vec_space_1")).scalar_one() != total:
                    problems.append("vectors")
        billed = Counter(text for _, _, text in emu.embedded_texts())
        twice = sum(n - 1 for n in billed.values())
        if len(billed) != total:
            problems.append(f"billed {len(billed)} of {total} texts")
        cell.outcome = "; ".join(problems) or ("ok" if not twice else f"ok, {twice} re-paid")
        return twice


@pytest.mark.slow
def test_online_fault_matrix(tmp_path: Path) -> None:
    """At a request boundary nothing is lost or paid twice. Between a response arriving and its commit
    (microseconds of Python) the one request in hand is lost and paid again: the only window left, and
    bounded by the request size (100 texts)."""
    cells, repaid = [], {}
    for point in BOUNDARIES + WINDOW:
        for action in ACTIONS:
            cell = Cell(point, action)
            try:
                repaid[(point, action)] = _run_online_cell(cell, tmp_path / f"{point}-{action}")
            except Exception as error:
                cell.outcome = f"{type(error).__name__}: {error}"
            cells.append(cell)
    _print("online path (`kb ingest --now`), fired at the second of three requests", cells)
    failed = {(c.point, c.action): c.outcome for c in cells if not c.ok}
    assert not failed, failed
    assert all(repaid[(point, action)] == 0 for point in BOUNDARIES for action in ACTIONS), repaid
    assert all(repaid[(point, action)] <= 100 for point in WINDOW for action in ACTIONS), repaid


# -- chunk contexts: the same job's life, for generation jobs ------------------------------------------------

CONTEXT_POINTS = _around(
    "record.commit", "upload", "create", "submitted.commit", "get", "download", "apply", "apply.commit"
)


def _run_context_cell(cell: Cell, root: Path) -> None:
    """The corpus embedded first (no fault), then its contexts written by a faulty worker and a drain."""
    with GeminiEmulator(api_key=EMULATOR_KEY) as emu:
        settings = _settings(root / "kb.sqlite", emu, {})
        write_corpus(root / "corpus", 3, 4, seed=len(cell.point))
        with KnowledgeBase(settings=settings) as kb:
            kb.ingest([root / "corpus"])
            kb.worker().run(once=True, timeout_s=600)
            _, wanted = kb.enrich_start()
        scenario = Scenario("contexts", CONTEXT_POINTS)
        if not _faulty_worker(cell, settings, emu, root, scenario):
            cell.outcome = "NOT REACHED"
            return
        with KnowledgeBase(settings=settings) as kb:
            result = kb.worker().run(once=True, timeout_s=600)
            cell.outcome = _judge_contexts(kb, emu, wanted, result.reason, result.errors)


def _judge_contexts(
    kb: KnowledgeBase, emu: GeminiEmulator, wanted: int, reason: ExitReason, errors: list[str]
) -> str:
    problems = []
    if reason != ExitReason.DRAINED:
        problems.append(f"drain {reason}: {errors[-1:]}")
    with kb.engine.connect() as connection:
        written = connection.execute(text("SELECT count(*) FROM chunk_contexts")).scalar_one()
        unsituated = connection.execute(text("SELECT count(*) FROM chunks WHERE situation = ''")).scalar_one()
        states = dict(
            connection.execute(
                text("SELECT status, count(*) FROM embedding_tasks WHERE space_id = 2 GROUP BY status")
            ).all()
        )
        integrity = connection.execute(text("PRAGMA integrity_check")).scalar_one()
    if written != wanted or unsituated:
        problems.append(f"{written} of {wanted} contexts written, {unsituated} chunks without one")
    if states != {"embedded": wanted}:
        problems.append(f"context tasks {states}")
    if integrity != "ok":
        problems.append(f"integrity {integrity}")
    billed = Counter(record.text for record in emu.generations())
    if len(billed) != wanted or sum(billed.values()) != wanted:
        problems.append(f"billed {sum(billed.values())} generations for {len(billed)} prompts")
    if any(n > 1 for n in Counter(job.display_name for job in emu.jobs()).values()):
        problems.append("a display name created twice")
    return "; ".join(problems) or "ok"


@pytest.mark.slow
def test_context_fault_matrix_on_sqlite(tmp_path: Path) -> None:
    """Every step of a generation job's life interrupted three ways: each chunk's context is written and
    paid for exactly once after a fresh worker drains."""
    started = time.monotonic()
    cells = []
    for point in CONTEXT_POINTS:
        for action in ACTIONS:
            cell = Cell(point, action)
            try:
                _run_context_cell(cell, tmp_path / f"{point}-{action}")
            except Exception as error:
                cell.outcome = f"{type(error).__name__}: {error}"
            cells.append(cell)
    _print(f"chunk contexts (generation jobs), SQLite ({time.monotonic() - started:.0f} s)", cells)
    failed = {(c.point, c.action): c.outcome for c in cells if not c.ok}
    assert not failed, failed
