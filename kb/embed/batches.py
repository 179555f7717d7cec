"""BatchManager: texts to batch jobs and vectors back, through a crash-safe ledger.

The sequence for every job (design.md §4):
1. claim due pending tasks and record the job and its manifest in one transaction (state `created`);
2. upload the input, create the remote job, record its name (state `pending`). Before each of the two calls
   its intent is committed; a job found with an intent was interrupted mid-call (Ctrl-C, a crash, SIGKILL),
   so what the call may have created is looked up by display name before anything is sent again;
3. poll with back-off; on success download the results and save them to disk before anything else
   (state `succeeded`), then apply them in one transaction (state `applied`);
4. failed, expired or cancelled jobs hand their unanswered tasks back (pending, attempt counted); a job past
   its deadline is cancelled first, and its tasks are only resubmitted once the cancel is confirmed; a job
   whose results are gone (expired, deleted) is retried a few times, then handed back the same way.

Every remote call runs under this worker's claim on the job, renewed just before the call; every state
change is a guarded transition (`kb.store.ledger`). A stop request ends the work before the next remote call.
"""

import logging
import re
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

import numpy as np
from sqlalchemy.engine import Connection, Engine

from kb import failpoints
from kb.core.contexts import MAX_OUTPUT_TOKENS, OUTPUT_ESTIMATE
from kb.core.results import (
    BadLine,
    ErrorKind,
    GenerationItem,
    ResultItem,
    classify,
    parse_generation_lines,
    parse_lines,
    saved_name,
)
from kb.embed.policy import BatchPolicy
from kb.errors import (
    ClaimLostError,
    InputFileGoneError,
    InvalidResponseError,
    NotConfiguredError,
    ProviderError,
    ProviderUnavailableError,
    RateLimitedError,
    RemoteGoneError,
    RetryableProviderError,
    StopRequested,
)
from kb.providers.base import NO_LOCAL_GENERATION, BatchBackend, GenerationBatchBackend
from kb.records import LIVE_JOB_STATES, JobState, RemoteStatus
from kb.store import claims, contexts, ledger, spaces, tasks, usage, vectors
from kb.store.engine import serialize, write_transaction
from kb.store.ledger import BatchJob
from kb.store.spaces import EmbeddingSpace

log = logging.getLogger("kb.embed.batches")
T = TypeVar("T")


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

_PASSING = (RateLimitedError, ProviderUnavailableError)  # outages: retried with back-off, never given up
_ENDED = (JobState.FAILED, JobState.EXPIRED, JobState.CANCELLED)
_DISPLAY_NAME = re.compile(r"^(kb-[0-9a-f]+-\d+-[0-9a-f]+)\.")


class BatchManager:
    def __init__(
        self,
        engine: Engine,
        backend_for: BackendFor,
        results_dir: Path,
        policy: BatchPolicy | None = None,
        *,
        clock: Callable[[], float] = time.time,
        prices: usage.PriceBook | None = None,
        budget: usage.Budget | None = None,
        owner: str | None = None,
        claim_s: float = 120.0,
        guard: Callable[[], None] | None = None,
        stop: threading.Event | None = None,
    ) -> None:
        self.engine = engine
        self.backend_for = backend_for
        self.results_dir = results_dir
        self.policy = policy or BatchPolicy()
        self.clock = clock
        self.prices = prices or usage.PriceBook()
        self.budget = budget or usage.Budget()
        self.owner = owner or claims.default_owner()
        self.claim_s = claim_s
        # Called before each remote step: the worker renews its lease there, and raises if it lost it.
        self._guard: Callable[[], None] = guard or (lambda: None)
        self._stop = stop or threading.Event()
        self._renewer: claims.Renewer | None = None  # of the job being worked on

    # -- flush -----------------------------------------------------------------------------------------

    def flush(self, force: bool = False) -> list[int]:
        """Record new jobs for due pending tasks (all of them if `force`, else as the flush policy says)."""
        created: list[int] = []
        with self.engine.connect() as connection:
            space_list = spaces.being_filled(connection)
        for space in space_list:
            if self.backend_for(space) is None:
                continue
            while self._should_flush(space.id, force):
                self._check_stop()
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
        with self._commit("record") as connection:
            if self.budget.capped:
                # Two workers checking the cap at once could each commit up to it: one at a time.
                serialize(connection, "kb.budget")
            due = ledger.due_pending(connection, space.id, now, self.policy.max_items)
            items = _within_tokens(due, self.policy.max_tokens)
            if not items:
                return None
            cost = self._estimated_cost(space, sum(i.token_estimate for i in items), len(items))
            # Jobs in flight will be billed too: count them, or one flush could commit far past the cap.
            by_id = {s.id: s for s in spaces.all_spaces(connection)}
            committed = sum(
                self._estimated_cost(by_id[job.space_id], job.token_estimate, job.item_count)
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

    def _estimated_cost(self, space: EmbeddingSpace, tokens: int, texts: int) -> float:
        """The batch price of a job before it is sent: a context space also pays for what it writes."""
        written = texts * OUTPUT_ESTIMATE if spaces.writes_contexts(space) else 0
        return self.prices.cost(space.model, tokens, batch=True, output_tokens=written)[0]

    # -- submit and reconcile ------------------------------------------------------------------------

    def submit_created(self, reconcile_all: bool = False) -> list[int]:
        """Submit recorded jobs that have no remote job yet, each under this worker's claim. Jobs that may
        already exist remotely (a create was interrupted or failed ambiguously, another worker died
        mid-submit, or `reconcile_all` after a restart) are looked up by display name first and adopted."""
        due = claims.to_submit(self.clock())
        submitted: list[int] = []
        seen: set[int] = set()
        while True:
            self._check_stop()
            claim = self._claim_next(due, seen)
            if claim is None:
                return submitted
            with self._holding(claim):
                job = claim.job
                found: bool | None = False
                if reconcile_all or claim.taken_over or job.intent is not None:
                    found = self._look_up(job)
                if found is None:
                    continue  # the lookup failed: deferred
                if found or self._submit(ledger_job(self.engine, job.id)):
                    submitted.append(job.id)

    def _look_up(self, job: BatchJob) -> bool | None:
        """What an earlier, interrupted attempt may have created remotely. True: the remote job exists and
        is now recorded; False: it does not (an orphaned upload is deleted); None: unknown, deferred."""
        backend = self._backend(self._space(job.space_id))
        try:
            found = self._call(job.id, "list", lambda: backend.find({job.display_name}))
        except RetryableProviderError as error:
            log.warning("cannot list remote jobs to reconcile job %s: %s", job.id, error.message)
            self._defer_submit(job, error.message)
            return None
        remote = found.get(job.display_name)
        if remote is not None:
            log.info("job %s adopted: remote %s already exists", job.id, remote.name)
            self._record_remote(job, remote, job.input_file)
            return True
        if job.intent == "upload" and job.input_file is None:
            backend.discard_input(job.display_name)  # an upload cut short: never used, never paid
        if job.intent is not None:
            with self._commit() as connection:
                ledger.clear_intent(connection, job.id, self.owner)
        return False

    def _submit(self, job: BatchJob, upload_again: bool = True) -> bool:
        space = self._space(job.space_id)
        backend = self._backend(space)
        input_file = job.input_file
        try:
            if input_file is None:
                lines = self._lines_to_send(job)
                if not lines:
                    return False
                with self._commit() as connection:
                    ledger.begin_remote_call(connection, job.id, self.owner, "upload")
                self.results_dir.mkdir(parents=True, exist_ok=True)
                uploaded = self._call(job.id, "upload", lambda: self._upload(backend, job, space, lines))
                with self._commit() as connection:
                    ledger.record_upload(connection, job.id, self.owner, uploaded)
                input_file = uploaded
            with self._commit() as connection:
                ledger.begin_remote_call(connection, job.id, self.owner, "create")
            remote = self._call(job.id, "create", lambda: self._create(backend, job, space, input_file))
        except InputFileGoneError as error:
            if upload_again:  # expired or deleted since the upload: nothing was created, no attempt counted
                log.warning("job %s: %s; uploading the input again", job.id, error.message)
                with self._commit() as connection:
                    ledger.forget_input(connection, job.id, self.owner)
                return self._submit(ledger_job(self.engine, job.id), upload_again=False)
            log.error("job %s refused: %s", job.id, error.message)
            self._release(job, JobState.FAILED, f"batch job refused: {error.message}")
            return False
        except RetryableProviderError as error:
            self._defer_submit(job, error.message)
            return False
        except ProviderError as error:
            # The service refuses this job for good (invalid request, model gone): give the tasks back with
            # an attempt counted, so they end failed with this reason instead of cycling forever.
            log.error("job %s refused: %s", job.id, error.message)
            self._release(job, JobState.FAILED, f"batch job refused: {error.message}")
            return False
        self._record_remote(job, remote, input_file)
        log.info("job %s submitted as %s (%d texts)", job.id, remote.name, job.item_count)
        return True

    def _upload(
        self, backend: BatchBackend, job: BatchJob, space: EmbeddingSpace, lines: list[tuple[str, str]]
    ) -> str:
        if spaces.writes_contexts(space):
            return _generating(backend).upload_generation_input(
                job.display_name, space.model, lines, self.results_dir, MAX_OUTPUT_TOKENS
            )
        return backend.upload_input(job.display_name, space.model, space.dimensions, lines, self.results_dir)

    def _create(
        self, backend: BatchBackend, job: BatchJob, space: EmbeddingSpace, input_file: str
    ) -> RemoteStatus:
        if spaces.writes_contexts(space):
            return _generating(backend).create_generation(job.display_name, space.model, input_file)
        return backend.create(job.display_name, space.model, input_file)

    def _lines_to_send(self, job: BatchJob) -> list[tuple[str, str]]:
        """The job's (key, text) lines, without texts no chunk holds any more (nothing to embed, nothing
        paid); a job left with none ends here."""
        with self._commit() as connection:
            dropped = ledger.drop_orphans(connection, job.id)
            lines = ledger.manifest_texts(connection, job.id, self.policy.context_window_tokens)
            if not lines:
                ledger.mark_empty(connection, job.id, self.owner, self.clock())
        if dropped:
            log.info("job %s: %d texts no longer in any document were left out", job.id, dropped)
        return lines

    def _defer_submit(self, job: BatchJob, reason: str) -> None:
        next_at = self.clock() + self.policy.submit_retry.delay(min(job.submit_attempts, 6) + 1)
        with self._commit() as connection:
            ledger.defer_submit(connection, job.id, self.owner, reason, next_at)

    def _record_remote(self, job: BatchJob, remote: RemoteStatus, input_file: str | None) -> None:
        now = self.clock()
        # A job already finished (the local runner's are) is collected at once.
        next_poll = now if remote.state == JobState.SUCCEEDED else now + self.policy.poll_delay(0)
        try:
            with self._commit("submitted") as connection:
                self._still_held(connection, job.id)
                ledger.mark_submitted(connection, job.id, self.owner, remote, input_file, now, next_poll)
        except ClaimLostError:
            # This process stalled past its claim (frozen, suspended) and the taker may have submitted
            # too: never overwrite its record; say which remote job may be a duplicate.
            log.error(
                "job %s: claim lost while submitting; remote %s may be a duplicate", job.id, remote.name
            )
            raise

    # -- poll ----------------------------------------------------------------------------------------------

    def poll(self, only_due: bool = True) -> StepReport:
        """Poll live remote jobs whose time has come; download, apply or release as their state says."""
        report = StepReport()
        to_poll = claims.to_poll(self.clock(), only_due)
        seen: set[int] = set()
        while True:
            self._check_stop()
            claim = self._claim_next(to_poll, seen)
            if claim is None:
                return report
            job = claim.job
            with self._holding(claim):
                try:
                    self._poll_one(job, report)
                except ProviderError as error:
                    report.errors.append(f"job {job.id}: {error.message}")
                    self._step_failed(job.id, error, report)

    def _poll_one(self, job: BatchJob, report: StepReport) -> None:
        backend = self._backend(self._space(job.space_id))
        if job.state == JobState.SUCCEEDED:  # saved results not yet applied (a crash, or an apply error)
            if not Path(job.result_path or "").is_file():  # saved on another machine, or lost
                job = self._download(job, _saved_output(job), backend)
            self._apply(job, report)
            return
        name = job.remote_name
        assert name is not None
        remote = self._call(job.id, "get", lambda: backend.get(name))
        expected = JobState(job.state)
        if remote.state == JobState.SUCCEEDED:
            try:
                downloaded = self._download(job, remote, backend)
            except ProviderError:
                self._note_results_ready(job, remote)
                raise
            self._apply(downloaded, report)
        elif remote.state in _ENDED:
            assert remote.state is not None
            self._release(job, remote.state, f"batch job {remote.state.value} ({remote.raw_state})")
            report.released.append(job.id)
        elif self.clock() > (job.deadline_at or float("inf")) and expected != JobState.CANCELLING:
            log.warning("job %s passed its deadline: cancelling %s", job.id, name)
            self._call(job.id, "cancel", lambda: backend.cancel(name))
            next_poll = self.clock() + self.policy.poll_delay(job.poll_count + 1)
            with self._commit() as connection:
                ledger.mark_cancelling(connection, job.id, self.owner, expected, remote.raw_state, next_poll)
        else:
            if remote.state is None:
                log.warning("job %s: unknown remote state %s; still polling", job.id, remote.raw_state)
            state = expected if expected == JobState.CANCELLING else (remote.state or expected)
            next_poll = self.clock() + self.policy.poll_delay(job.poll_count + 1)
            with self._commit() as connection:
                ledger.record_poll(
                    connection, job.id, self.owner, expected, state, remote.raw_state, next_poll
                )

    def _note_results_ready(self, job: BatchJob, remote: RemoteStatus) -> None:
        """The job succeeded remotely but its results could not be fetched: record when it ended (once)."""
        if job.finished_at is not None:
            return
        now = self.clock()
        ended = min(now, remote.end_time or remote.update_time or now)  # never later than now
        with self._commit() as connection:
            ledger.note_results_ready(connection, job.id, self.owner, JobState(job.state), remote, ended)

    def _step_failed(self, job_id: int, error: ProviderError, report: StepReport) -> None:
        """A poll, download or apply failed. Outages are retried with back-off for as long as they last
        (the job may have succeeded: giving up would pay twice). A job that succeeded remotely keeps
        its results for `results_kept_s` after it ended: until then a refused (403, 404) or failing
        download is retried with growing back-off, however often (a 403 that passes is common: billing,
        a project change). Any other failure (results gone, an unusable answer) is retried a few times,
        then the job's texts are handed back; results paid for but never received are recorded as lost."""
        job = ledger_job(self.engine, job_id)
        state = JobState(job.state)
        if state not in LIVE_JOB_STATES:
            return
        paid = job.finished_at is not None  # the service finished the job: its results were paid for
        waitable = isinstance(error, (RemoteGoneError, *_PASSING))
        kept = paid and waitable and self.clock() < (job.finished_at or 0.0) + self.policy.results_kept_s
        passing = isinstance(error, _PASSING) and not paid
        delay = self.policy.poll.delay(job.step_failures + 1)
        with self._commit() as connection:
            failures = ledger.record_step_failure(
                connection, job.id, self.owner, state, error.message, self.clock() + delay
            )
        log.warning(
            "job %s: %s (failed %d time%s in a row)", job.id, error.message, failures, "s"[: failures != 1]
        )
        if not (kept or passing) and failures >= self.policy.max_step_failures:
            reason = f"results unavailable after {failures} attempts: {error.message}"
            self._release(ledger_job(self.engine, job.id), JobState.FAILED, reason, lost=paid)
            report.released.append(job.id)

    def _download(self, job: BatchJob, remote: RemoteStatus, backend: BatchBackend) -> BatchJob:
        """Save the raw results to disk, durably, before parsing anything: a paid result is never lost."""
        output = remote.output_file
        if output is None:
            raise InvalidResponseError(f"job {job.id} succeeded without a result file")
        self.results_dir.mkdir(parents=True, exist_ok=True)
        destination = self.results_dir / saved_name(job.display_name)
        self._call(job.id, "download", lambda: backend.download(output, destination))
        with self._commit() as connection:
            ledger.mark_downloaded(
                connection, job.id, self.owner, JobState(job.state), remote, str(destination), self.clock()
            )
        return ledger_job(self.engine, job.id)

    # -- apply ---------------------------------------------------------------------------------------------

    def _apply(self, job: BatchJob, report: StepReport) -> None:
        """Validate and write a job's saved results in one transaction; idempotent."""
        assert job.result_path is not None
        failpoints.hit("apply.before")
        space = self._space(job.space_id)
        with self.engine.connect() as connection:
            keys = ledger.manifest(connection, job.id)
        path = Path(job.result_path)
        writes_contexts = spaces.writes_contexts(space)
        outcome = (
            _read_contexts(path, keys) if writes_contexts else _read_results(path, keys, space.dimensions)
        )
        now = self.clock()
        with self._commit("apply") as connection:
            self._still_held(connection, job.id)  # and the job row stays locked until this commits
            held = dict(ledger.held_tasks(connection, job.id))
            kept = [n for n, task_id in enumerate(outcome.task_ids) if task_id in held]
            embedded = [outcome.task_ids[n] for n in kept]
            if writes_contexts:
                self._write_contexts(connection, job, space, outcome, kept, now)
            else:
                unchanged = len(kept) == len(outcome.task_ids)  # the common case: no copy of the vectors
                vectors.write(
                    connection, space.id, embedded, outcome.matrix if unchanged else outcome.matrix[kept]
                )
            tasks.embed_held(connection, job.id, embedded, now)
            answered = set(embedded)
            failed = self._settle_errors(connection, job.id, outcome.errors, held, answered, now)
            missing = [t for t in held if t not in answered and t not in outcome.errors]
            self._hand_back(
                connection, job.id, [(t, held[t]) for t in missing], "no result returned for this text", now
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
                    output_tokens=sum(outcome.output_tokens[n] for n in kept) if writes_contexts else 0,
                )
            note = _job_summary(outcome, len(missing))
            ledger.mark_applied(connection, job.id, self.owner, now, outcome.tokens or None, note)
            if writes_contexts:
                contexts.fall_back(connection, space.id, now)
        self._clean_up(job)
        failpoints.hit("apply.after")
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

    def _write_contexts(
        self,
        connection: Connection,
        job: BatchJob,
        space: EmbeddingSpace,
        outcome: "_Outcome",
        kept: list[int],
        now: float,
    ) -> None:
        """Keep the contexts written, situate the chunks that hold them, and queue what they now embed in
        the spaces that embed situated chunks."""
        keys = ledger.task_keys(connection, job.id)
        written = [
            contexts.Written(
                keys[outcome.task_ids[n]], outcome.texts[n], outcome.input_tokens[n], outcome.output_tokens[n]
            )
            for n in kept
        ]
        contexts.save(connection, space.id, written, now)
        situated = contexts.situate(connection, space.id, [w.key for w in written])
        contexts.queue_situated(connection, situated, now)

    def _clean_up(self, job: BatchJob) -> None:
        """After a committed apply, the saved results and the uploaded input are no longer needed (remote
        files expire after 48 h anyway; deleting keeps the project's 20 GB free). Result files cannot be
        deleted by name: their 42-character ids are refused ("cannot be more than 40 characters")."""
        if job.result_path:
            Path(job.result_path).unlink(missing_ok=True)
        input_file = job.input_file
        if input_file:
            backend = self._backend(self._space(job.space_id))
            try:
                self._call(job.id, "delete", lambda: backend.delete_file(input_file), stoppable=False)
            except ProviderError as error:
                log.info("job %s: input file not deleted: %s", job.id, error.message)

    def _settle_errors(
        self,
        connection: Connection,
        job_id: int,
        errors: dict[int, tuple[ErrorKind, str]],
        held: dict[int, int],
        answered: set[int],
        now: float,
    ) -> int:
        """Per-text errors: transient ones are handed back (attempt counted), the others fail with the
        reason. Returns how many failed for good."""
        retry: dict[str, list[tuple[int, int]]] = defaultdict(list)
        failures: dict[str, list[tuple[int, int]]] = defaultdict(list)
        for task_id, (kind, message) in errors.items():
            if task_id not in held or task_id in answered:
                continue
            if kind == ErrorKind.TRANSIENT:
                retry[message].append((task_id, held[task_id]))
            else:
                failures[f"{kind.value}: {message}"].append((task_id, held[task_id]))
        for reason, failing in failures.items():
            tasks.fail_held(connection, job_id, failing, reason, now)
        gave_up = 0
        for message, retried in retry.items():
            gave_up += sum(1 for _, attempts in retried if attempts + 1 >= self.policy.max_attempts)
            self._hand_back(connection, job_id, retried, message, now)
        return sum(len(failing) for failing in failures.values()) + gave_up

    def _hand_back(
        self, connection: Connection, job_id: int, held: list[tuple[int, int]], reason: str, now: float
    ) -> None:
        """Tasks back to pending with an attempt counted and a back-off; failed once attempts run out."""
        tasks.hand_back_held(
            connection, job_id, held, reason, now, self.policy.max_attempts, self.policy.task_retry
        )

    def _release(self, job: BatchJob, state: JobState, reason: str, *, lost: bool = False) -> None:
        """A job ended without results: its tasks go back to pending (attempt counted) or fail. If `lost`,
        the service had finished it (its results were paid for): that spend is recorded as lost, and the
        texts will be paid again."""
        now = self.clock()
        with self._commit() as connection:
            held = ledger.held_tasks(connection, job.id)
            if lost:
                reason = f"{reason}; its {len(held)} texts are paid again"
                self._record_lost(connection, job, [task_id for task_id, _ in held], now)
            self._hand_back(connection, job.id, held, reason, now)
            ledger.mark_ended(connection, job.id, self.owner, JobState(job.state), state, reason, now)
            if spaces.writes_contexts(self._space(job.space_id)):
                contexts.fall_back(connection, job.space_id, now)
        log.warning("job %s %s: %d texts handed back (%s)", job.id, state.value, len(held), reason)

    def _record_lost(self, connection: Connection, job: BatchJob, task_ids: list[int], now: float) -> None:
        space = self._space(job.space_id)
        usage.record(
            connection,
            self.prices,
            kind=usage.LOST,
            model=space.model,
            texts=len(task_ids),
            tokens=ledger.token_estimates(connection, task_ids),
            space_id=space.id,
            job_id=job.id,
            now=now,
        )

    # -- leftovers -----------------------------------------------------------------------------------------

    def clean_leftovers(self) -> list[Path]:
        """Delete files in the results folder that no live job of this database owns: inputs and partial
        downloads left by killed processes, results of jobs already applied. Returns what was deleted."""
        if not self.results_dir.is_dir():
            return []
        # List first, then read the live jobs: a job's row is committed before any of its files is written,
        # so every file listed belongs to a job that the query sees.
        paths = list(self.results_dir.iterdir())
        with self.engine.connect() as connection:
            prefix = f"kb-{ledger.database_id_if_known(connection)}-"
            live = {job.display_name for job in ledger.live_jobs(connection)}
        removed = []
        for path in paths:
            match = _DISPLAY_NAME.match(path.name)
            if match is None or not match.group(1).startswith(prefix) or match.group(1) in live:
                continue  # another database's file (a shared folder), or a live job's
            if path.is_file():
                path.unlink(missing_ok=True)
                removed.append(path)
        if removed:
            log.info("removed %d leftover files from %s", len(removed), self.results_dir)
        return removed

    # -- claims, commits, remote calls ---------------------------------------------------------------------

    def _check_stop(self) -> None:
        if self._stop.is_set():
            raise StopRequested()

    def _call(self, job_id: int, step: str, call: Callable[[], T], *, stoppable: bool = True) -> T:
        """One remote call on a claimed job: stop here if asked to, renew the claim, call."""
        if stoppable:
            self._check_stop()
        self._keep(job_id)
        failpoints.hit(f"{step}.before")
        result = call()
        failpoints.hit(f"{step}.after")
        return result

    @contextmanager
    def _commit(self, step: str | None = None) -> Iterator[Connection]:
        """A write transaction; `step` names the failpoints around its commit."""
        with write_transaction(self.engine) as connection:
            yield connection
            if step is not None:
                failpoints.hit(f"{step}.commit.before")
        if step is not None:
            failpoints.hit(f"{step}.commit.after")

    def _claim_next(self, where: claims.JobFilter, seen: set[int]) -> claims.Claim | None:
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
        """Before every remote step: renew the claim on the job (and the worker's lease, via the guard)."""
        with write_transaction(self.engine) as connection:
            self._still_held(connection, job_id)
        self._guard()

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


def _generating(backend: BatchBackend) -> GenerationBatchBackend:
    """The backend as a generation service: Gemini's serves both kinds; the local runner only embeds."""
    if not isinstance(backend, GenerationBatchBackend):
        raise NotConfiguredError(NO_LOCAL_GENERATION)
    return backend


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
    task_ids: list[int] = field(default_factory=list)  # the texts embedded, in the order of `matrix`'s rows
    matrix: np.ndarray = field(default_factory=lambda: np.empty((0, 0), dtype=np.float32))
    errors: dict[int, tuple[ErrorKind, str]] = field(default_factory=dict)
    tokens: int = 0
    # Of a generation job, in the order of `task_ids`: what was written, and the tokens each was billed.
    texts: list[str] = field(default_factory=list)
    input_tokens: list[int] = field(default_factory=list)
    output_tokens: list[int] = field(default_factory=list)
    unknown_keys: int = 0
    bad_lines: int = 0
    invalid: int = 0


Item = TypeVar("Item", ResultItem, GenerationItem)


def _joined(
    items: Iterable[Item | BadLine], keys: dict[str, int], outcome: _Outcome
) -> Iterator[tuple[int, Item]]:
    """Each result line's task, once: unreadable lines, unknown keys and repeats are counted, not used."""
    seen: set[int] = set()
    for item in items:
        if isinstance(item, BadLine):
            outcome.bad_lines += 1
            continue
        task_id = keys.get(item.key)
        if task_id is None:
            outcome.unknown_keys += 1
            continue
        if task_id not in seen:
            seen.add(task_id)
            yield task_id, item


def _read_results(path: Path, keys: dict[str, int], dimensions: int) -> _Outcome:
    """Stream the saved result file: join by key, check every vector, normalise.

    Rows go straight into one preallocated float32 matrix, so 10,000 results never exist as Python lists.
    """
    outcome = _Outcome()
    matrix = np.empty((len(keys), dimensions), dtype=np.float32)
    task_ids: list[int] = []
    with path.open("rb") as handle:
        for task_id, item in _joined(parse_lines(handle), keys, outcome):
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
    if not usable.all():
        rows = rows[usable]
        task_ids = [task_id for task_id, ok in zip(task_ids, usable, strict=True) if ok]
    rows /= np.linalg.norm(rows, axis=1, keepdims=True)  # in place: a 10,000-result job is 30 MB a copy
    outcome.task_ids, outcome.matrix = task_ids, rows
    return outcome


def _read_contexts(path: Path, keys: dict[str, int]) -> _Outcome:
    """Stream a generation job's saved results, joined by key; a blocked or empty answer is its error."""
    outcome = _Outcome()
    with path.open("rb") as handle:
        for task_id, item in _joined(parse_generation_lines(handle), keys, outcome):
            generated = item.generated
            if generated is None:
                outcome.errors[task_id] = (classify(item.error_code, item.error_message), _error_text(item))
                continue
            outcome.task_ids.append(task_id)
            outcome.texts.append(generated.text.strip())
            outcome.input_tokens.append(generated.input_tokens)
            outcome.output_tokens.append(generated.output_tokens)
            outcome.tokens += generated.input_tokens
    return outcome


def _error_text(item: ResultItem | GenerationItem) -> str:
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
