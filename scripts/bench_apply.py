"""Benchmark: applying a 10,000-result batch job next to a raw tuned sqlite-vec insert of the same vectors.

    .venv/bin/python scripts/bench_apply.py [--results 10000] [--dimensions 768] [--repeats 3] [--profile]

Builds a fresh database per repeat (untimed): documents, distinct chunks and their tasks inserted with SQL,
one Gemini space (`gemini-embedding-001`) with its vec table, a job recorded with `ledger.create_job` (tasks
`submitted`) and a results file in the exact file-mode output format the Gemini Batch API writes (one compact
JSON line per key, unnormalised values, shuffled order) saved at the job's `result_path`, job `succeeded`.
Then times `BatchManager.poll()`, the public path that applies a succeeded job: manifest, parse, join by key,
validate, normalise, and one transaction writing vectors and task statuses. The backend is a stub whose only
use is `_clean_up`'s best-effort `delete_file`.

The baseline, in the same run: a fresh database with kb's engine (same driver and pragmas) and kb's tuned vec0
table, the same normalised vectors pre-serialised as little-endian float32, one `executemany` in one
transaction. The phase split wraps kb functions for the timed run (kb code is unchanged); parsing alone
(`parse_lines` over the file) is timed separately. Each figure is the median of the repeats.
"""

import argparse
import cProfile
import json
import pstats
import random
import shutil
import statistics
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import numpy as np
from bench_scale import raw_apply_baseline
from benchjobs import saved_results, succeeded_job

from kb.app import KnowledgeBase
from kb.core.results import parse_lines
from kb.embed import batches
from kb.embed.batches import BatchManager
from kb.providers.base import BatchBackend, normalized
from kb.records import JobState, SpaceSpec, SpaceState, TaskStatus
from kb.settings import KbSettings
from kb.store import ledger, spaces, vectors
from kb.store.engine import create_engine, write_transaction
from kb.store.reader import ConnectionReader

TARGET = 0.7  # of the floor: parsing 100 MB of JSON is most of any apply (issue 14)
MODEL = "gemini-embedding-001"
INPUT_FILE = "files/bench-input"


class StubBackend:
    """Only `delete_file` is reached when applying a saved, succeeded job."""

    mode = "file"

    def delete_file(self, file_name: str) -> None:
        pass


@dataclass(frozen=True, slots=True)
class Corpus:
    results: Path  # the Gemini result file, kept as the master copy
    unit: np.ndarray  # task id n + 1 -> row n: the normalised float32 vectors kb should store


@dataclass(slots=True)
class Phases:
    """Seconds spent inside wrapped kb functions during one apply."""

    seconds: dict[str, float] = field(default_factory=dict)

    def wrap(self, name: str, function: Callable[..., Any]) -> Callable[..., Any]:
        def timed(*args: Any, **kwargs: Any) -> Any:
            started = time.perf_counter()
            try:
                return function(*args, **kwargs)
            finally:
                self.seconds[name] = self.seconds.get(name, 0.0) + time.perf_counter() - started

        return timed


# (module, attribute, phase): all looked up through their module at call time by `BatchManager._apply`.
_WRAPPED = [
    (ledger, "manifest", "read manifest"),
    (batches, "_read_results", "parse + validate + normalise"),
    (vectors, "write", "vectors.write (serialise, delete, insert, codes)"),
    (ledger, "settle_tasks", "task statuses (settle_tasks)"),
]


@contextmanager
def timed_phases() -> Iterator[Phases]:
    phases = Phases()
    originals = [(module, name, getattr(module, name)) for module, name, _ in _WRAPPED]
    for (module, name, label), (_, _, original) in zip(_WRAPPED, originals, strict=True):
        setattr(module, name, phases.wrap(label, original))
    try:
        yield phases
    finally:
        for module, name, original in originals:
            setattr(module, name, original)


def make_results(path: Path, count: int, dimensions: int, seed: int = 11) -> Corpus:
    """Unnormalised embeddings as the Batch API returns them, one compact JSON line per key, shuffled."""
    rng = np.random.default_rng(seed)
    # About Gemini's magnitude and precision (~10 significant digits, e.g. -0.0014487637).
    values = np.round(rng.standard_normal((count, dimensions)) * 0.035, 10)
    lines = []
    for n, row in enumerate(values):
        array = json.dumps(row.tolist(), separators=(",", ":"))
        tokens = 60 + n % 90
        lines.append(
            f'{{"response":{{"embedding":{{"values":{array}}},"tokenCount":"{tokens}"}},"key":"t{n + 1}"}}\n'
        )
    random.Random(seed).shuffle(lines)
    with path.open("w", encoding="utf-8") as handle:
        handle.writelines(lines)
    return Corpus(path, normalized(values.astype(np.float32)))


def build(kb: KnowledgeBase, count: int, dimensions: int) -> int:
    """Documents, `count` distinct chunks and pending tasks, one space."""
    with write_transaction(kb.engine) as connection:
        space_id = spaces.create(
            connection, SpaceSpec(provider="gemini", model=MODEL, dimensions=dimensions), SpaceState.ACTIVE
        )
        documents = (count + 49) // 50
        connection.exec_driver_sql(
            "INSERT INTO documents (id, source_path, content_sha256, title, source_format, mtime_ns, size,"
            " metadata, created_at, updated_at) VALUES (?, ?, '', ?, 'markdown', 0, 0, '{}', 0, 0)",
            [(d + 1, f"/bench/doc{d}.md", f"Doc {d}") for d in range(documents)],
        )
        connection.exec_driver_sql(
            "INSERT INTO chunks (id, document_id, ordinal, text, text_sha256, token_estimate, heading_path,"
            " start_offset, end_offset) VALUES (?, ?, ?, ?, ?, 80, '', 0, 0)",
            [(i + 1, i // 50 + 1, i % 50, f"chunk text {i}", f"{i:064x}") for i in range(count)],
        )
        connection.exec_driver_sql(
            "INSERT INTO embedding_tasks (id, space_id, text_sha256, token_estimate, status, attempts,"
            " next_attempt_at, created_at, updated_at) VALUES (?, ?, ?, 80, 'pending', 0, 0, 0, 0)",
            [(i + 1, space_id, f"{i:064x}") for i in range(count)],
        )
    return space_id


def mark_succeeded(kb: KnowledgeBase, space_id: int, count: int, results: Path) -> tuple[int, Path]:
    """A job holding every task, recorded as succeeded with `results` saved where a download puts them."""
    job_id = succeeded_job(kb, space_id, count, lambda path, _items: shutil.copyfile(results, path))
    assert job_id is not None
    return job_id, saved_results(kb, job_id)


def verify(kb: KnowledgeBase, space_id: int, job_id: int, corpus: Corpus, saved: Path) -> None:
    count = len(corpus.unit)
    with kb.engine.connect() as connection:
        embedded = connection.exec_driver_sql(
            "SELECT count(*) FROM embedding_tasks WHERE status = ?", (TaskStatus.EMBEDDED.value,)
        ).scalar()
        rows = connection.exec_driver_sql(f"SELECT count(*) FROM {vectors.table_name(space_id)}").scalar()
        job = ledger.job(connection, job_id)
        ids, matrix = vectors.load_all(ConnectionReader(connection), space_id, corpus.unit.shape[1])
    assert embedded == count, f"{embedded} tasks embedded, expected {count}"
    assert rows == count, f"{rows} vectors stored, expected {count}"
    assert job.state == JobState.APPLIED and job.error is None, (job.state, job.error)
    assert not saved.exists(), "the applied results file was not deleted"
    assert np.array_equal(matrix, corpus.unit[ids - 1]), "stored vectors differ from the normalised input"


def bench_apply(work: Path, n: int, corpus: Corpus, dimensions: int, profile: bool) -> tuple[float, Phases]:
    """One fresh database, one timed apply through `BatchManager.poll()`; returns (seconds, phases)."""
    db = work / f"apply-{n}.sqlite"
    settings = KbSettings(db=db, provider="gemini", gemini_api_key="x", _env_file=None)
    with KnowledgeBase(settings=settings) as kb:
        space_id = build(kb, len(corpus.unit), dimensions)
        job_id, saved = mark_succeeded(kb, space_id, len(corpus.unit), corpus.results)
        stub = cast(BatchBackend, StubBackend())
        manager = BatchManager(kb.engine, lambda _space: stub, kb.results_dir, kb.batch_manager().policy)
        profiler = cProfile.Profile() if profile else None
        with timed_phases() as phases:
            started = time.perf_counter()
            if profiler is not None:
                profiler.enable()
            report = manager.poll()
            if profiler is not None:
                profiler.disable()
            seconds = time.perf_counter() - started
        assert report.applied == [job_id] and not report.errors, report
        assert report.embedded == len(corpus.unit) and report.failed == 0, report
        verify(kb, space_id, job_id, corpus, saved)
    if profiler is not None:
        print("\ncProfile of one apply (top 25 by internal time):")
        pstats.Stats(profiler).sort_stats("tottime").print_stats(25)
    phases.seconds["rest (job/held queries, commit, clean-up)"] = seconds - sum(phases.seconds.values())
    return seconds, phases


def bench_raw(work: Path, n: int, unit: np.ndarray) -> float:
    """Fresh database, kb pragmas and vec0 table; the same vectors in one executemany, one transaction."""
    engine = create_engine(work / f"raw-{n}.sqlite")
    try:
        with write_transaction(engine) as connection:
            vectors.create_table(connection, 1, unit.shape[1])
        payload = [(i + 1, row.astype("<f4").tobytes()) for i, row in enumerate(unit)]
        raw = engine.raw_connection()
        try:
            cursor = raw.cursor()
            started = time.perf_counter()
            cursor.execute("BEGIN")
            cursor.executemany(
                f"INSERT INTO {vectors.table_name(1)}(rowid, embedding) VALUES (?, ?)", payload
            )
            raw.commit()
            seconds = time.perf_counter() - started
            stored = cursor.execute(f"SELECT count(*) FROM {vectors.table_name(1)}").fetchone()[0]
            assert stored == len(unit), stored
            return seconds
        finally:
            raw.close()
    finally:
        engine.dispose()


def bench_parse(results: Path) -> float:
    """Reading and `json.loads`-ing the result file alone (kb's `parse_lines`), nothing else."""
    started = time.perf_counter()
    with results.open("rb") as handle:
        items = sum(1 for _ in parse_lines(handle))
    seconds = time.perf_counter() - started
    assert items > 0
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--results", type=int, default=10_000)
    parser.add_argument("--dimensions", type=int, default=768)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--profile", action="store_true", help="also profile one extra apply (cProfile)")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="kb-bench-apply-"))
    try:
        corpus = make_results(work / "master.results.jsonl", args.results, args.dimensions)
        applies: list[float] = []
        raws: list[float] = []
        parses: list[float] = []
        floors: list[float] = []
        splits: list[Phases] = []
        for n in range(args.repeats):  # interleaved, so both sides see the same machine state
            seconds, phases = bench_apply(work, n, corpus, args.dimensions, profile=False)
            applies.append(seconds)
            splits.append(phases)
            raws.append(bench_raw(work, n, corpus.unit))
            parses.append(bench_parse(corpus.results))
            floors.append(
                args.results / raw_apply_baseline(corpus.results, work / f"floor-{n}", args.dimensions)
            )
        apply_s = statistics.median(applies)
        raw_s = statistics.median(raws)
        count = args.results
        size_mb = corpus.results.stat().st_size / 1e6
        print(f"results file: {count:,} lines x {args.dimensions} dims, {size_mb:,.1f} MB")
        print(f"median of {args.repeats} runs (apply: {', '.join(f'{s:.2f}' for s in applies)} s)")
        apply_label = "kb apply (poll: parse, validate, normalise, write):"
        raw_label = "raw executemany into tuned vec0, same vectors:"
        print(f"{apply_label:<52} {apply_s:6.2f} s {count / apply_s:>9,.0f} results/s")
        print(f"{raw_label:<52} {raw_s:6.2f} s {count / raw_s:>9,.0f} rows/s")
        print(f"ratio apply / raw (raw_time / apply_time): {raw_s / apply_s:.2f}")
        floor_s = statistics.median(floors)
        floor_label = "orjson parse to float32 + raw insert (the floor):"
        print(f"{floor_label:<52} {floor_s:6.2f} s {count / floor_s:>9,.0f} results/s")
        print(f"ratio apply / floor: {floor_s / apply_s:.2f}   (target >= {TARGET})")
        print("apply phases (median seconds, share of apply):")
        labels = list(splits[0].seconds)
        for label in labels:
            phase = statistics.median(p.seconds[label] for p in splits)
            print(f"  {label:<45} {phase:6.2f} s  {phase / apply_s:6.1%}")
        parse_s = statistics.median(parses)
        print(
            f"  {'of which parse alone (parse_lines, json)':<45} {parse_s:6.2f} s  {parse_s / apply_s:6.1%}"
        )
        if args.profile:
            bench_apply(work, args.repeats, corpus, args.dimensions, profile=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
