"""Batch jobs for benchmarks: pending tasks put into a job that has "succeeded", its results saved where a
download would have put them, through the ledger's own transitions. `kb worker` (or `BatchManager.poll`)
then applies it by the real path, with no remote call: the job has no input file left to delete.

The results file is in the format the Gemini Batch API writes (one compact JSON line per key, unnormalised
values with ~10 significant digits, in no particular order).
"""

import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import orjson
from numpy.typing import NDArray

from kb.app import KnowledgeBase
from kb.records import JobState, RemoteStatus
from kb.store import claims, ledger
from kb.store.engine import write_transaction
from kb.store.schema import BatchJob, table_of

OWNER = "bench"
# Gemini's values are not unit length; kb normalises them. About the magnitude of real ones.
_MAGNITUDE = 0.97


def results_lines(keys: list[str], vectors: NDArray[np.float32], tokens: int = 80) -> bytes:
    """The Batch API's output lines for `keys` (one per row of `vectors`)."""
    values = np.round(vectors.astype(np.float64) * _MAGNITUDE, 10)
    lines = [
        b'{"response":{"embedding":{"values":'
        + orjson.dumps(row, option=orjson.OPT_SERIALIZE_NUMPY)
        + b'},"tokenCount":"'
        + str(tokens).encode()
        + b'"},"key":"'
        + key.encode()
        + b'"}\n'
        for key, row in zip(keys, values, strict=True)
    ]
    return b"".join(lines)


# Writes a job's results file: (path, [(key, task id)] in task id order).
ResultsWriter = Callable[[Path, list[tuple[str, int]]], None]


def vectors_writer(vectors_for: Callable[[list[int]], NDArray[np.float32]]) -> ResultsWriter:
    """Results holding `vectors_for(task ids)`, one row per task."""

    def write(path: Path, items: list[tuple[str, int]]) -> None:
        vectors = vectors_for([task_id for _, task_id in items])
        path.write_bytes(results_lines([key for key, _ in items], vectors))

    return write


def succeeded_job(kb: KnowledgeBase, space_id: int, limit: int, write: ResultsWriter) -> int | None:
    """A job of up to `limit` due pending tasks, its results saved by `write`; None if none is pending."""
    now = time.time()
    jobs = table_of(BatchJob)
    with write_transaction(kb.engine) as connection:
        due = ledger.due_pending(connection, space_id, now, limit)
        if not due:
            return None
        job_id = ledger.create_job(connection, space_id, "file", due, now, 36 * 3600.0)
        claims.claim_next(connection, OWNER, now, 3600.0, jobs.c.id == job_id, set())
        job = ledger.job(connection, job_id)
        keys = ledger.manifest(connection, job_id)
    ordered = sorted(keys.items(), key=lambda item: item[1])
    path = kb.results_dir / f"{job.display_name}.results.jsonl"
    path.parent.mkdir(parents=True, exist_ok=True)
    write(path, ordered)
    name = f"batches/{job.display_name}"
    with write_transaction(kb.engine) as connection:
        pending = RemoteStatus(name, job.display_name, JobState.PENDING, "JOB_STATE_PENDING", None)
        ledger.mark_submitted(connection, job_id, OWNER, pending, None, now, now)
        done = RemoteStatus(name, job.display_name, JobState.SUCCEEDED, "JOB_STATE_SUCCEEDED", "files/out")
        ledger.mark_downloaded(connection, job_id, OWNER, JobState.PENDING, done, str(path), now)
        claims.release(connection, job_id, OWNER)
    return job_id


def saved_results(kb: KnowledgeBase, job_id: int) -> Path:
    with kb.engine.connect() as connection:
        found = ledger.job(connection, job_id).result_path
    assert found is not None
    return Path(found)
