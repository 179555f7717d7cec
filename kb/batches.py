"""BatchManager: texts to batch jobs and vectors back, through a crash-safe ledger.

The sequence for every job (design.md §4):
1. claim due pending tasks and record the job and its manifest in one transaction (state `created`);
2. upload the input, create the remote job, record its name (state `pending`); a crash in between is
   repaired by `reconcile`, which looks the job up by its display name before submitting again;
3. poll with back-off; on success download the results and save them to disk before anything else
   (state `succeeded`), then apply them in one transaction (state `applied`);
4. failed, expired or cancelled jobs hand their unanswered tasks back (pending, attempt counted); a job past
   its deadline is cancelled first, and its tasks are only resubmitted once the cancel is confirmed.
"""

import logging
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import numpy as np
from sqlalchemy import ColumnElement, and_, or_
from sqlalchemy.engine import Connection, Engine

from kb import claims, ledger, spaces, usage, vectors
from kb.db import serialize, write_transaction
from kb.embedder import normalized
from kb.errors import (
    ClaimLostError,
    InvalidResponseError,
    KbError,
    LeaseLostError,
    NotConfiguredError,
    ProviderError,
    RetryableProviderError,
)
from kb.records import JobState, RemoteStatus, TaskStatus
from kb.results import BadLine, ErrorKind, ResultItem, classify, parse_lines
from kb.schema import BatchJob, EmbeddingSpace, table_of

log = logging.getLogger("kb.batches")
JOBS = table_of(BatchJob)


class BatchBackend(Protocol):
    """A batch embedding service (Gemini's Batch API, or kb's in-process local runner)."""

    mode: str

    def upload_input(
        self, display_name: str, model: str, dimensions: int, lines: Sequence[tuple[str, str]], folder: Path
    ) -> str: ...

    def create(self, display_name: str, model: str, input_file: str) -> RemoteStatus: ...

    def get(self, name: str) -> RemoteStatus: ...

    def find(self, display_names: set[str]) -> dict[str, RemoteStatus]: ...

    def cancel(self, name: str) -> None: ...

    def download(self, file_name: str, destination: Path) -> None: ...

    def delete_file(self, file_name: str) -> None: ...


@dataclass(frozen=True, slots=True)
class BatchPolicy:
    max_items: int = 10_000
    max_tokens: int = 0  # per job; 0: no limit beyond max_items
    min_batch: int = 100
    max_wait_s: float = 600.0
    poll_initial_s: float = 15.0
    poll_max_s: float = 600.0
    deadline_s: float = 36 * 3600.0
    max_attempts: int = 5
    retry_base_s: float = 60.0
    retry_max_s: float = 6 * 3600.0
    submit_retry_s: float = 15.0  # a refused or failed create is tried again after this, doubling

    def task_retry_delay(self, attempts: int) -> float:
        return float(min(self.retry_max_s, self.retry_base_s * 2 ** max(0, attempts - 1)))

    def poll_delay(self, polls: int) -> float:
        return float(min(self.poll_max_s, self.poll_initial_s * 2 ** max(0, polls)))


@dataclass(slots=True)
class StepReport:
    """What one manager step did (for progress and logs)."""

    created: list[int] = field(default_factory=list)
    submitted: list[int] = field(default_factory=list)
    applied: list[int] = field(default_factory=list)
    released: list[int] = field(default_factory=list)
    embedded: int = 0
    failed: int = 0
    errors: list[str] = field(default_factory=list)

    @property
    def busy(self) -> bool:
        return bool(self.created or self.submitted or self.applied or self.released)


BackendFor = Callable[[EmbeddingSpace], BatchBackend | None]  # None: not batched (online instead)


class BatchManager:
    def __init__(
        self,
        engine: Engine,
        backend_for: BackendFor,
        results_dir: Path,
        policy: BatchPolicy | None = None,
        clock: Callable[[], float] = time.time,
        prices: usage.PriceBook | None = None,
        budget: usage.Budget | None = None,
        guard: Callable[[], None] | None = None,
        owner: str | None = None,
        claim_s: float = 120.0,
    ) -> None:
        self.engine = engine
        self.backend_for = backend_for
        self.results_dir = results_dir
        self.policy = policy or BatchPolicy()
        self.clock = clock
        self.prices = prices or usage.PriceBook()
        self.budget = budget or usage.Budget()
        # Called before each remote step: the worker renews its lease there, and raises if it lost it.
        self.guard: Callable[[], None] = guard or (lambda: None)
        self.owner = owner or claims.default_owner()
        self.claim_s = claim_s
        self._renewer: claims.Renewer | None = None  # of the job being worked on

    # -- flush -----------------------------------------------------------------------------------------

    def flush(self, force: bool = False) -> list[int]:
        """Record new jobs for due pending tasks (all of them if `force`, else as the flush policy says)."""
        created: list[int] = []
        with self.engine.connect() as connection:
            space_list = [s for s in spaces.all_spaces(connection) if s.state in ("active", "building")]
        for space in space_list:
            if self.backend_for(space) is None:
                continue
            while self._should_flush(space.id, force):
                job_id = self._create_job(space)
                if job_id is None:
                    break
                created.append(job_id)
        return created

    def _should_flush(self, space_id: int, force: bool) -> bool:
        now = self.clock()
        with self.engine.connect() as connection:
            count, oldest = ledger.pending_summary(connection, space_id, now)
        if count == 0:
            return False
        if force or count >= self.policy.min_batch:
            return True
        return oldest is not None and now - oldest >= self.policy.max_wait_s

    def _create_job(self, space: EmbeddingSpace) -> int | None:
        backend = self._backend(space)
        now = self.clock()
        with write_transaction(self.engine) as connection:
            if self.budget.capped:
                # Two workers checking the cap at once could each commit up to it: one at a time.
                serialize(connection, "kb.budget")
            due = ledger.due_pending(connection, space.id, now, self.policy.max_items)
            items = _within_tokens(due, self.policy.max_tokens)
            if not items:
                return None
            cost, _ = self.prices.cost(space.model, sum(i.token_estimate for i in items), batch=True)
            # Jobs in flight will be billed too: count them, or one flush could commit far past the cap.
            models = {s.id: s.model for s in spaces.all_spaces(connection)}
            committed = sum(
                self.prices.cost(models[job.space_id], job.token_estimate, batch=True)[0]
                for job in ledger.live_jobs(connection)
            )
            refusal = self.budget.refusal(connection, cost + committed, now)
            if refusal != usage.block(connection):
                usage.set_block(connection, refusal)
                if refusal:
                    log.warning("not submitting: %s", refusal)
            if refusal:
                return None
            job_id = ledger.create_job(connection, space.id, backend.mode, items, now, self.policy.deadline_s)
        log.info("job %s recorded: %d texts for space %s", job_id, len(items), space.id)
        return job_id

    # -- submit and reconcile ------------------------------------------------------------------------

    def submit_created(self, reconcile_all: bool = False) -> list[int]:
        """Submit recorded jobs that have no remote job yet, each under this worker's claim. Jobs that may
        already exist remotely (an earlier attempt failed ambiguously, another worker died mid-submit, or
        `reconcile_all` after a restart) are looked up by display name first and adopted if found."""
        due = and_(
            JOBS.c.state == JobState.CREATED,
            or_(JOBS.c.next_poll_at.is_(None), JOBS.c.next_poll_at <= self.clock()),
        )
        submitted: list[int] = []
        seen: set[int] = set()
        while (claim := self._claim_next(due, seen)) is not None:
            with self._holding(claim):
                job = claim.job
                check = reconcile_all or claim.taken_over or job.submit_attempts > 0
                adopted = self._adopt_if_remote(job) if check else False
                if adopted or (adopted is False and self._submit(job)):
                    submitted.append(job.id)
        return submitted

    def _adopt_if_remote(self, job: BatchJob) -> bool | None:
        """True: the remote job exists and is now recorded; False: it does not exist; None: unknown."""
        space = self._space(job.space_id)
        try:
            found = self._backend(space).find({job.display_name}).get(job.display_name)
        except KbError as error:
            log.warning("cannot list remote jobs to reconcile job %s: %s", job.id, error.message)
            self._defer_submit(job, error.message)
            return None
        if found is None:
            return False
        log.info("job %s adopted: remote %s already exists", job.id, found.name)
        self._record_remote(job.id, found, job.input_file)
        return True

    def _submit(self, job: BatchJob) -> bool:
        space = self._space(job.space_id)
        backend = self._backend(space)
        self._keep(job.id)
        try:
            input_file = job.input_file
            if input_file is None:
                with write_transaction(self.engine) as connection:
                    dropped = ledger.drop_orphans(connection, job.id)
                    lines = ledger.manifest_texts(connection, job.id)
                    if not lines:
                        ledger.update_job(
                            connection, job.id, state=JobState.CANCELLED, error="no texts left to embed"
                        )
                if dropped:
                    log.info("job %s: %d texts no longer in any document were left out", job.id, dropped)
                if not lines:
                    return False
                self.results_dir.mkdir(parents=True, exist_ok=True)
                input_file = backend.upload_input(
                    job.display_name, space.model, space.dimensions, lines, self.results_dir
                )
                with write_transaction(self.engine) as connection:
                    ledger.update_job(connection, job.id, input_file=input_file)
                self._keep(job.id)
            remote = backend.create(job.display_name, space.model, input_file)
        except RetryableProviderError as error:
            self._defer_submit(job, error.message)
            return False
        except ProviderError as error:
            # The service refuses this job for good (invalid request, model gone): give the tasks back with
            # an attempt counted, so they end failed with this reason instead of cycling forever.
            log.error("job %s refused: %s", job.id, error.message)
            self._release(job.id, JobState.FAILED, f"batch job refused: {error.message}")
            return False
        self._record_remote(job.id, remote, input_file)
        log.info("job %s submitted as %s (%d texts)", job.id, remote.name, job.item_count)
        return True

    def _defer_submit(self, job: BatchJob, reason: str) -> None:
        now = self.clock()
        with write_transaction(self.engine) as connection:
            ledger.update_job(
                connection,
                job.id,
                submit_attempts=job.submit_attempts + 1,
                error=reason,
                next_poll_at=now
                + min(self.policy.poll_max_s, self.policy.submit_retry_s * 2 ** min(job.submit_attempts, 6)),
            )

    def _record_remote(self, job_id: int, remote: RemoteStatus, input_file: str | None) -> None:
        now = self.clock()
        with write_transaction(self.engine) as connection:
            try:
                self._still_held(connection, job_id)
            except ClaimLostError:
                # This process stalled past its claim (frozen, suspended) and the taker may have submitted
                # too: never overwrite its record; say which remote job may be a duplicate.
                log.error(
                    "job %s: claim lost while submitting; remote %s may be a duplicate", job_id, remote.name
                )
                raise
            ledger.update_job(
                connection,
                job_id,
                remote_name=remote.name,
                input_file=input_file,
                state=JobState.PENDING,
                remote_state=remote.raw_state,
                submitted_at=now,
                # A job already finished (the local runner's are) is collected at once.
                next_poll_at=now if remote.state == JobState.SUCCEEDED else now + self.policy.poll_delay(0),
                poll_count=0,
                error=None,
            )

    # -- poll ----------------------------------------------------------------------------------------------

    def poll(self, only_due: bool = True) -> StepReport:
        """Poll live remote jobs whose time has come; download, apply or release as their state says."""
        report = StepReport()
        live = JOBS.c.state.in_([JobState.PENDING, JobState.RUNNING, JobState.CANCELLING, JobState.SUCCEEDED])
        due = or_(
            JOBS.c.state == JobState.SUCCEEDED,
            JOBS.c.next_poll_at.is_(None),
            JOBS.c.next_poll_at <= self.clock(),
        )
        seen: set[int] = set()
        while (claim := self._claim_next(and_(live, due) if only_due else live, seen)) is not None:
            job = claim.job
            with self._holding(claim):
                try:
                    self._poll_one(job, report)
                except (LeaseLostError, ClaimLostError):
                    raise
                except KbError as error:
                    report.errors.append(f"job {job.id}: {error.message}")
                    log.warning("job %s: %s", job.id, error.message)
                    self._reschedule(job, job.remote_state or "", JobState(job.state))
        return report

    def _poll_one(self, job: BatchJob, report: StepReport) -> None:
        self._keep(job.id)
        backend = self._backend(self._space(job.space_id))
        if job.state == JobState.SUCCEEDED:  # saved results not yet applied (a crash, or an apply error)
            if not Path(job.result_path or "").is_file():  # saved on another machine, or lost
                self._download(job, _saved_output(job), backend)
                self._keep(job.id)
                job = ledger_job(self.engine, job.id)
            self._apply(job, report)
            return
        assert job.remote_name is not None
        try:
            remote = backend.get(job.remote_name)
        except ProviderError as error:
            if type(error).__name__ == "BatchJobNotFoundError":
                self._release(job.id, JobState.FAILED, f"remote job {job.remote_name} disappeared")
                report.released.append(job.id)
                return
            raise
        if remote.state == JobState.SUCCEEDED:
            self._download(job, remote, backend)
            self._keep(job.id)
            self._apply(ledger_job(self.engine, job.id), report)
        elif remote.state in (JobState.FAILED, JobState.EXPIRED, JobState.CANCELLED):
            self._release(job.id, remote.state, f"batch job {remote.state.value} ({remote.raw_state})")
            report.released.append(job.id)
        elif self.clock() > (job.deadline_at or float("inf")) and job.state != JobState.CANCELLING:
            log.warning("job %s passed its deadline: cancelling %s", job.id, job.remote_name)
            backend.cancel(job.remote_name)
            self._reschedule(job, remote.raw_state, JobState.CANCELLING)
        else:
            state = JobState(job.state) if job.state == JobState.CANCELLING else remote.state
            if remote.state is None:
                log.warning("job %s: unknown remote state %s; still polling", job.id, remote.raw_state)
            self._reschedule(job, remote.raw_state, state or JobState(job.state))

    def _reschedule(self, job: BatchJob, raw_state: str, state: JobState) -> None:
        now = self.clock()
        with write_transaction(self.engine) as connection:
            ledger.update_job(
                connection,
                job.id,
                state=state,
                remote_state=raw_state,
                poll_count=job.poll_count + 1,
                next_poll_at=now + self.policy.poll_delay(job.poll_count + 1),
            )

    def _download(self, job: BatchJob, remote: RemoteStatus, backend: BatchBackend) -> None:
        """Save the raw results to disk, durably, before parsing anything: a paid result is never lost."""
        if remote.output_file is None:
            raise InvalidResponseError(f"job {job.id} succeeded without a result file")
        self.results_dir.mkdir(parents=True, exist_ok=True)
        destination = self.results_dir / f"{job.display_name}.results.jsonl"
        backend.download(remote.output_file, destination)
        with write_transaction(self.engine) as connection:
            ledger.update_job(
                connection,
                job.id,
                state=JobState.SUCCEEDED,
                remote_state=remote.raw_state,
                output_file=remote.output_file,
                result_path=str(destination),
                finished_at=self.clock(),
            )

    # -- apply ---------------------------------------------------------------------------------------------

    def _apply(self, job: BatchJob, report: StepReport) -> None:
        """Validate and write a job's saved results in one transaction; idempotent."""
        assert job.result_path is not None
        space = self._space(job.space_id)
        with self.engine.connect() as connection:
            keys = ledger.manifest(connection, job.id)
        outcome = _read_results(Path(job.result_path), keys, space.dimensions)
        now = self.clock()
        with write_transaction(self.engine) as connection:
            self._still_held(connection, job.id)  # and the job row stays locked until this commits
            held = dict(ledger.held_tasks(connection, job.id))
            embedded = [(task_id, v) for task_id, v in outcome.vectors if task_id in held]
            vectors.write(connection, space.id, embedded)
            ledger.set_tasks(
                connection,
                [task_id for task_id, _ in embedded],
                status=TaskStatus.EMBEDDED,
                last_error=None,
                updated_at=now,
            )
            answered = {task_id for task_id, _ in embedded}
            failed = self._settle_errors(connection, outcome.errors, held, answered, now)
            missing = [t for t in held if t not in answered and t not in outcome.errors]
            self._requeue(
                connection, [(t, held[t]) for t in missing], "no result returned for this text", now
            )
            reported = outcome.tokens > 0
            tokens = outcome.tokens if reported else ledger.token_estimates(connection, sorted(answered))
            if embedded:
                usage.record(
                    connection,
                    self.prices,
                    kind="batch",
                    model=space.model,
                    texts=len(embedded),
                    tokens=tokens,
                    tokens_reported=reported,
                    space_id=space.id,
                    job_id=job.id,
                    now=now,
                )
            ledger.update_job(
                connection,
                job.id,
                state=JobState.APPLIED,
                applied_at=now,
                tokens_billed=outcome.tokens or None,
                error=_job_summary(outcome, len(missing)),
            )
        self._clean_up(job)
        report.applied.append(job.id)
        report.embedded += len(embedded)
        report.failed += failed
        log.info(
            "job %s applied: %d embedded, %d errors, %d missing",
            job.id,
            len(embedded),
            len(outcome.errors),
            len(missing),
        )

    def _clean_up(self, job: BatchJob) -> None:
        """After a committed apply the saved results and the remote input file are no longer needed."""
        if job.result_path:
            Path(job.result_path).unlink(missing_ok=True)
        if job.input_file:
            try:
                self._backend(self._space(job.space_id)).delete_file(job.input_file)
            except KbError as error:  # remote files expire after 48 h anyway
                log.info("job %s: input file not deleted: %s", job.id, error.message)

    def _settle_errors(
        self,
        connection: Connection,
        errors: dict[int, tuple[ErrorKind, str]],
        held: dict[int, int],
        answered: set[int],
        now: float,
    ) -> int:
        failed = 0
        retry: list[tuple[int, int]] = []
        for task_id, (kind, message) in errors.items():
            if task_id not in held or task_id in answered:
                continue
            if kind == ErrorKind.TRANSIENT and held[task_id] + 1 < self.policy.max_attempts:
                retry.append((task_id, held[task_id]))
                continue
            reason = f"{kind.value}: {message}"
            ledger.set_tasks(
                connection,
                [task_id],
                status=TaskStatus.FAILED,
                attempts=held[task_id] + 1,
                last_error=reason,
                job_id=None,
                updated_at=now,
            )
            failed += 1
        for task_id, attempts in retry:
            message = errors[task_id][1]
            self._requeue(connection, [(task_id, attempts)], message, now)
        return failed

    def _requeue(self, connection: Connection, tasks: list[tuple[int, int]], reason: str, now: float) -> None:
        """Tasks back to pending with an attempt counted and a back-off; failed once attempts run out."""
        for task_id, attempts in tasks:
            if attempts + 1 >= self.policy.max_attempts:
                values: dict[str, object] = {"status": TaskStatus.FAILED}
                reason_text = f"gave up after {attempts + 1} attempts: {reason}"
            else:
                values = {
                    "status": TaskStatus.PENDING,
                    "next_attempt_at": now + self.policy.task_retry_delay(attempts + 1),
                }
                reason_text = reason
            ledger.set_tasks(
                connection,
                [task_id],
                attempts=attempts + 1,
                last_error=reason_text,
                job_id=None,
                updated_at=now,
                **values,
            )

    def _release(self, job_id: int, state: JobState, reason: str) -> None:
        """A job ended without results: its tasks go back to pending (attempt counted) or fail."""
        now = self.clock()
        with write_transaction(self.engine) as connection:
            held = ledger.held_tasks(connection, job_id)
            self._requeue(connection, held, reason, now)
            ledger.update_job(connection, job_id, state=state, error=reason, finished_at=now)
        log.warning("job %s %s: %d texts handed back (%s)", job_id, state.value, len(held), reason)

    # -- claims --------------------------------------------------------------------------------------------

    def _claim_next(self, where: ColumnElement[bool], seen: set[int]) -> claims.Claim | None:
        """The next job matching `where` that no other live worker holds, not in `seen` (which it joins):
        each job comes at most once per pass."""
        with write_transaction(self.engine) as connection:
            claim = claims.claim_next(connection, self.owner, self.clock(), self.claim_s, where, seen)
        if claim is not None:
            seen.add(claim.job.id)
            if claim.taken_over:
                job = claim.job
                log.warning("job %s: taking it over from %s, whose claim expired", job.id, job.lease_owner)
        return claim

    @contextmanager
    def _holding(self, claim: claims.Claim) -> Iterator[None]:
        """Work on a claimed job (the claim renewed in the background), then let it go; a claim lost
        meanwhile leaves the job to its new holder."""
        try:
            with claims.Renewer(self.engine, claim.job.id, self.owner, self.claim_s, self.clock) as renewer:
                self._renewer = renewer
                yield
        except ClaimLostError as error:
            log.warning("job %s: %s", claim.job.id, error.message)
        finally:
            self._renewer = None
            with write_transaction(self.engine) as connection:
                claims.release(connection, claim.job.id, self.owner)

    def _keep(self, job_id: int) -> None:
        """Before every remote step: renew the claim on the job (and the worker's lease, via `guard`)."""
        with write_transaction(self.engine) as connection:
            self._still_held(connection, job_id)
        self.guard()

    def _still_held(self, connection: Connection, job_id: int) -> None:
        """Renew the claim in the caller's transaction, or raise (rolling it back) if it was taken over."""
        lost = self._renewer is not None and self._renewer.lost
        if lost or not claims.renew(connection, job_id, self.owner, self.clock(), self.claim_s):
            raise ClaimLostError(f"another worker took job {job_id} over; leaving it to them")

    # -- helpers -------------------------------------------------------------------------------------------

    def _backend(self, space: EmbeddingSpace) -> BatchBackend:
        backend = self.backend_for(space)
        if backend is None:
            raise NotConfiguredError(f"space #{space.id} ({space.model}) has no batch backend")
        return backend

    def _space(self, space_id: int) -> EmbeddingSpace:
        with self.engine.connect() as connection:
            space = spaces.by_id(connection, space_id)
        assert space is not None, f"space #{space_id} of a recorded job is gone"
        return space


def ledger_job(engine: Engine, job_id: int) -> BatchJob:
    with engine.connect() as connection:
        return ledger.job(connection, job_id)


def _saved_output(job: BatchJob) -> RemoteStatus:
    """The remote state of a job that succeeded, as recorded: enough to download its results again."""
    return RemoteStatus(
        name=job.remote_name or "",
        display_name=job.display_name,
        state=JobState.SUCCEEDED,
        raw_state=job.remote_state or "",
        output_file=job.output_file,
    )


def _within_tokens(items: list[ledger.Claimable], max_tokens: int) -> list[ledger.Claimable]:
    if max_tokens <= 0:
        return items
    chosen: list[ledger.Claimable] = []
    total = 0
    for item in items:
        if chosen and total + item.token_estimate > max_tokens:
            break
        chosen.append(item)
        total += item.token_estimate
    return chosen


@dataclass(slots=True)
class _Outcome:
    vectors: list[tuple[int, np.ndarray]] = field(default_factory=list)
    errors: dict[int, tuple[ErrorKind, str]] = field(default_factory=dict)
    tokens: int = 0
    unknown_keys: int = 0
    bad_lines: int = 0
    invalid: int = 0


def _read_results(path: Path, keys: dict[str, int], dimensions: int) -> _Outcome:
    """Stream the saved result file: join by key, check every vector, normalise.

    Rows go straight into one preallocated float32 matrix, so 10,000 results never exist as Python lists.
    """
    outcome = _Outcome()
    matrix = np.empty((len(keys), dimensions), dtype=np.float32)
    task_ids: list[int] = []
    seen: set[int] = set()
    with path.open("rb") as handle:
        for item in parse_lines(handle):
            if isinstance(item, BadLine):
                outcome.bad_lines += 1
                continue
            task_id = keys.get(item.key)
            if task_id is None:
                outcome.unknown_keys += 1
                continue
            if task_id in seen:
                continue
            seen.add(task_id)
            if item.values is None:
                outcome.errors[task_id] = (classify(item.error_code, item.error_message), _error_text(item))
            elif len(item.values) != dimensions:
                message = f"expected {dimensions} dimensions, got {len(item.values)}"
                outcome.errors[task_id] = (ErrorKind.TRANSIENT, message)
                outcome.invalid += 1
            else:
                matrix[len(task_ids)] = item.values
                task_ids.append(task_id)
                outcome.tokens += item.token_count or 0
    rows = matrix[: len(task_ids)]
    usable = np.isfinite(rows).all(axis=1) & (np.abs(rows).sum(axis=1) > 0)
    for task_id, ok in zip(task_ids, usable, strict=True):
        if not ok:
            outcome.errors[task_id] = (ErrorKind.TRANSIENT, "embedding has NaN, infinite or all-zero values")
            outcome.invalid += 1
    good = rows[usable]
    unit = normalized(good) if len(good) else good
    kept = [task_id for task_id, ok in zip(task_ids, usable, strict=True) if ok]
    outcome.vectors = list(zip(kept, unit, strict=True))
    return outcome


def _error_text(item: ResultItem) -> str:
    code = f"{item.error_code} " if item.error_code is not None else ""
    return f"{code}{item.error_message or 'unknown error'}".strip()


def _job_summary(outcome: _Outcome, missing: int) -> str | None:
    parts = []
    if outcome.errors:
        parts.append(f"{len(outcome.errors)} per-text errors")
    if missing:
        parts.append(f"{missing} texts missing from the results")
    if outcome.unknown_keys:
        parts.append(f"{outcome.unknown_keys} unknown keys ignored")
    if outcome.bad_lines:
        parts.append(f"{outcome.bad_lines} unreadable lines")
    return "; ".join(parts) or None
