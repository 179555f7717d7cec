"""The emulator's backend (moto's `models.py`): models, files, batch jobs, billing and the request log.

No HTTP here. Methods take parsed requests and return state objects or raise `ApiError`; the caller holds
`lock` (one lock around every mutation). Batch lifecycles advance lazily in `refresh`, on the emulated clock.
"""

import hashlib
import hmac
import math
import random
import string
import threading
from collections import deque
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from numpy.typing import NDArray

from . import wire
from .clock import DEFAULT_START, Clock
from .errors import (
    ApiError,
    api_key_invalid,
    api_key_missing,
    failed_precondition,
    fault_error,
    invalid_argument,
    model_not_found,
    not_found,
    resource_exhausted,
)
from .faults import FaultBook
from .files import FileStore, StoredFile
from .generation import Generation, generate
from .jobs import (
    CANCELLED,
    EXPIRED,
    FAILED,
    PENDING,
    RUNNING,
    SUCCEEDED,
    TERMINAL_STATES,
    BatchEntry,
    BatchJob,
    ItemResult,
    JobPlan,
)
from .models import ModelRegistry, ModelRule, bare_model_name
from .parsing import BatchSpec, EmbedItem, GenerateBatchSpec, GenerateItem, parse_generate_jsonl, parse_jsonl
from .records import BillingRecord, LoggedRequest, Mode, Work
from .tokens import count_tokens, truncate_to_tokens
from .vectors import Vectorizer

BATCH_ID_LENGTH = 36
TOO_MANY_ITEMS = "* BatchEmbedContentsRequest.requests: at most 100 requests can be in one batch"
_ID_ALPHABET = string.ascii_lowercase + string.digits

Vector = NDArray[np.float64]


@dataclass
class Settings:
    """Switches for limits and live quirks. The defaults are the live service's, as far as known."""

    truncate_long_inputs: bool = False  # over max_input_tokens: truncate instead of 400
    max_items_per_call: int = 100
    max_payload_bytes: int = 4_194_304
    max_inline_batch_bytes: int = 20 * 1024 * 1024
    max_batch_requests: int = 10_000
    max_concurrent_batches: int = 100
    strict_fields: bool = True  # unknown request fields are a 400, as for proto3 JSON
    check_request_model: bool = True  # requests[].model must name the model in the URL
    cancel_terminal_fails: bool = True  # cancelling a finished job: 400 FAILED_PRECONDITION
    bad_jsonl_fails_job: bool = False  # unreadable input lines: FAILED job instead of per-line errors
    download_uploaded_files: bool = False  # live, only generated files can be downloaded
    limit_file_id_length: bool = True  # files.get of a 42-char `batch-...` id: 400, as live
    api_versions: tuple[str, ...] = ("v1", "v1beta")
    # Routes served on some versions only (route name -> versions): a request on another version gets the
    # front end's HTML 404 for an unknown URL, as a method a version lacks would.
    route_versions: dict[str, tuple[str, ...]] = field(default_factory=dict)
    # Texts containing this marker are refused as invalid, like a text the live service cannot embed: the
    # whole online request fails with 400 INVALID_ARGUMENT, and in a batch job that one item errs (code 3).
    rejected_texts_containing: str | None = None
    # Prompts containing this marker are blocked (promptFeedback.blockReason SAFETY, no candidates); those
    # containing the other stop with finishReason SAFETY and no content. Online and in batch lines alike.
    blocked_prompts_containing: str | None = None
    safety_stops_containing: str | None = None
    # Quotas per model on the emulated clock (None = unlimited): online calls and their tokens per minute,
    # and the tokens of a model's pending and running batch jobs (the "enqueued tokens" limit).
    requests_per_minute: int | None = None
    tokens_per_minute: int | None = None
    batch_enqueued_tokens: int | None = None


class _ItemFailure(Exception):
    """One batch item fails with a google.rpc code (not an HTTP status)."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def _digest(key: str) -> bytes:
    return hashlib.sha256(key.encode()).digest()


class EmulatorState:
    def __init__(
        self, api_key: str | None = "test-key", *, start_time: float = DEFAULT_START, seed: int = 0
    ) -> None:
        self.lock = threading.RLock()
        self.clock = Clock(self.lock, start_time)
        self.models = ModelRegistry(self.lock)
        self.faults = FaultBook(self.lock)
        self.settings = Settings()
        self.files = FileStore(self.clock, self.new_id)
        self.batches: dict[str, BatchJob] = {}
        self.log: list[LoggedRequest] = []
        self.billing: list[BillingRecord] = []
        self.job_plan = JobPlan()
        self.planned: deque[JobPlan] = deque()
        self._rng = random.Random(seed)
        # Only a digest of the key is kept: the key itself is never stored.
        self._key_digest = None if api_key is None else _digest(api_key.strip())
        self._vectorizers: dict[tuple[str, int], Vectorizer] = {}
        self._usage: deque[tuple[float, str, int]] = deque()  # (time, model, tokens) of online calls

    def new_id(self, length: int) -> str:
        return "".join(self._rng.choice(_ID_ALPHABET) for _ in range(length))

    def check_api_key(self, key: str | None) -> None:
        """Missing: 403; wrong: 400 API_KEY_INVALID. With no configured key any non-empty key passes."""
        if not key or not key.strip():
            raise api_key_missing()
        if self._key_digest is not None and not hmac.compare_digest(_digest(key.strip()), self._key_digest):
            raise api_key_invalid()

    def served_model(self, name: str, api_version: str, method: str) -> ModelRule:
        """A served model that serves `method` (an embedding model does not generate, and vice versa)."""
        rule = self.models.get(name)
        if rule is None or not rule.serves(method):
            raise model_not_found(bare_model_name(name), api_version, method)
        return rule

    # Embeddings -------------------------------------------------------------------------------------------

    def batch_embed(self, rule: ModelRule, items: list[EmbedItem]) -> list[Vector]:
        if not items:
            raise invalid_argument(
                "* BatchEmbedContentsRequest.requests: requests must not be empty", "requests"
            )
        if len(items) > self.settings.max_items_per_call:
            raise invalid_argument(TOO_MANY_ITEMS, "requests")
        labels = [f"BatchEmbedContentsRequest.requests[{index}]" for index in range(len(items))]
        return self._embed_online(rule, items, labels)

    def embed_one(self, rule: ModelRule, item: EmbedItem) -> Vector:
        return self._embed_online(rule, [item], ["EmbedContentRequest"])[0]

    def _embed_online(self, rule: ModelRule, items: list[EmbedItem], labels: list[str]) -> list[Vector]:
        prepared = [self.prepare(rule, item, label) for item, label in zip(items, labels, strict=True)]
        self._charge_quota(rule.name, sum(tokens for _, tokens, _ in prepared))
        texts = [text for text, _, _ in prepared]
        vectors = self.vectors(
            rule, texts, [dims for _, _, dims in prepared], [item.task_type for item in items]
        )
        now = self.clock.now()
        for text, tokens, _ in prepared:
            self.billing.append(BillingRecord(rule.name, "online", text, tokens, now))
        return vectors

    def _charge_quota(self, model: str, tokens: int) -> None:
        """Counts an online call against the per-minute quotas; a 429 with RetryInfo when one is exceeded."""
        now = self.clock.now()
        while self._usage and self._usage[0][0] <= now - 60:
            self._usage.popleft()
        window = [(moment, used) for moment, name, used in self._usage if name == model]
        rpm, tpm = self.settings.requests_per_minute, self.settings.tokens_per_minute
        over_requests = rpm is not None and len(window) + 1 > rpm
        over_tokens = tpm is not None and sum(used for _, used in window) + tokens > tpm
        if over_requests or over_tokens:
            wait = max(1, math.ceil(window[0][0] + 60 - now)) if window else 60
            raise fault_error(429, None, model, f"{wait}s")
        self._usage.append((now, model, tokens))

    def prepare(self, rule: ModelRule, item: EmbedItem, label: str) -> tuple[str, int, int]:
        """The text to embed (truncated if allowed), its tokens and its output size; a 400 if unacceptable."""
        dims = rule.default_dims if item.dimensions is None else item.dimensions
        if not rule.min_dims <= dims <= rule.max_dims:
            raise invalid_argument(
                f"* {label}.output_dimensionality: Output dimensionality must be between {rule.min_dims} and "
                f"{rule.max_dims} for models/{rule.name}, got {dims}.",
                "output_dimensionality",
            )
        if self.settings.check_request_model and item.model and bare_model_name(item.model) != rule.name:
            raise invalid_argument(
                f"* {label}.model: Model in the request ({item.model}) does not match the model in the URL "
                f"(models/{rule.name}).",
                "model",
            )
        if item.task_type is not None and not rule.task_types:
            raise invalid_argument(
                f"* {label}.task_type: task_type is not supported for models/{rule.name}; put the task in "
                "the text instead (e.g. 'task: search result | query: ...').",
                "task_type",
            )
        marker = self.settings.rejected_texts_containing
        if marker and marker in item.text:
            raise invalid_argument(
                f"* {label}.content: the content cannot be embedded (it contains {marker!r})."
            )
        text, tokens = item.text, count_tokens(item.text)
        if tokens > rule.max_input_tokens:
            if not self.settings.truncate_long_inputs:
                raise invalid_argument(
                    f"The input token count ({tokens}) exceeds the maximum number of tokens allowed "
                    f"({rule.max_input_tokens})."
                )
            text = truncate_to_tokens(text, rule.max_input_tokens)
            tokens = count_tokens(text)
        return text, tokens, dims

    def vectors(
        self, rule: ModelRule, texts: list[str], dimensions: list[int], task_types: list[str | None]
    ) -> list[Vector]:
        key = (rule.name, rule.max_dims)
        vectorizer = self._vectorizers.get(key)
        if vectorizer is None:
            vectorizer = self._vectorizers[key] = Vectorizer(rule.name, rule.max_dims)
        vectors = vectorizer.embed(texts, dimensions, task_types)
        if rule.normalises:
            vectors = [np.round(vector / (float(np.linalg.norm(vector)) or 1.0), 9) for vector in vectors]
        return vectors

    # Generation -------------------------------------------------------------------------------------------

    def generate_one(self, rule: ModelRule, item: GenerateItem) -> Generation:
        """Answers one generateContent request: checked, charged against the quotas, billed."""
        self.check_generate(rule, item, "GenerateContentRequest")
        self._charge_quota(rule.name, count_tokens(item.text))
        answer = self.generation(item)
        self._bill_generation(rule, "online", item, answer, self.clock.now())
        return answer

    def check_generate(self, rule: ModelRule, item: GenerateItem, label: str) -> None:
        """A 400 for a request the model cannot take; a 404 for a cache the emulator does not hold."""
        if self.settings.check_request_model and item.model and bare_model_name(item.model) != rule.name:
            raise invalid_argument(
                f"* {label}.model: Model in the request ({item.model}) does not match the model in the URL "
                f"(models/{rule.name}).",
                "model",
            )
        tokens = count_tokens(item.text)
        if tokens > rule.max_input_tokens:
            raise invalid_argument(
                f"The input token count ({tokens}) exceeds the maximum number of tokens allowed "
                f"({rule.max_input_tokens})."
            )
        limit = item.max_output_tokens
        if limit is not None and not 1 <= limit <= rule.max_output_tokens:
            raise invalid_argument(
                f"* {label}.generation_config.max_output_tokens: must be between 1 and "
                f"{rule.max_output_tokens} for models/{rule.name}, got {limit}.",
                "generation_config.max_output_tokens",
            )
        if item.cached_content is not None:  # the emulator keeps no caches (no cachedContents API)
            raise not_found(f"CachedContent not found (or permission denied): {item.cached_content}")

    def generation(self, item: GenerateItem) -> Generation:
        """The deterministic answer (see `generation`), with the scripted blocks and safety stops."""
        blocked, safety = self.settings.blocked_prompts_containing, self.settings.safety_stops_containing
        return generate(
            item.text,
            item.prompt,
            item.max_output_tokens,
            blocked=bool(blocked and blocked in item.text),
            safety=bool(safety and safety in item.text),
        )

    def _bill_generation(
        self,
        rule: ModelRule,
        mode: Mode,
        item: GenerateItem,
        answer: Generation,
        at: float,
        job: str | None = None,
    ) -> None:
        self.billing.append(
            BillingRecord(
                rule.name,
                mode,
                item.text,
                answer.prompt_tokens,
                at,
                job,
                work="generate",
                output_tokens=answer.output_tokens,
                output=answer.text,
            )
        )

    # Batches ----------------------------------------------------------------------------------------------

    def create_generate_batch(self, rule: ModelRule, spec: GenerateBatchSpec) -> BatchJob:
        if not rule.batch:
            raise invalid_argument(f"models/{rule.name} does not support batchGenerateContent.", "model")
        if spec.inline is not None:
            entries = [BatchEntry(item=None, metadata=e.metadata, prompt=e.item) for e in spec.inline]
            input_file = None
        else:
            stored = self.files.get(spec.file_name or "")
            if stored.state != "ACTIVE":
                raise failed_precondition(f"File {stored.name} is not in an ACTIVE state.")
            lines = parse_generate_jsonl(stored.data, strict_fields=self.settings.strict_fields)
            entries = [
                BatchEntry(item=None, key=line.key, error=line.error, prompt=line.item) for line in lines
            ]
            input_file = stored.name
        return self._new_job(rule, entries, input_file, spec.display_name, "generate")

    def create_batch(self, rule: ModelRule, spec: BatchSpec) -> BatchJob:
        if not rule.batch:
            raise invalid_argument(
                f"models/{rule.name} does not support batch mode: asyncBatchEmbedContent is not supported "
                "for this model. Use a model that supports batch embeddings, such as "
                "models/gemini-embedding-001.",
                "model",
            )
        entries, input_file = self._batch_entries(spec)
        return self._new_job(rule, entries, input_file, spec.display_name, "embed")

    def _new_job(
        self,
        rule: ModelRule,
        entries: list[BatchEntry],
        input_file: str | None,
        display_name: str | None,
        work: Work,
    ) -> BatchJob:
        limit = self.settings.max_batch_requests
        if len(entries) > limit:
            kind = "EmbedContentBatch" if work == "embed" else "GenerateContentBatch"
            raise invalid_argument(
                f"* {kind}.input_config: a batch can hold at most {limit} requests, got {len(entries)}.",
                "batch.input_config",
            )
        self._check_enqueued_tokens(rule.name, entries)
        concurrent = self.settings.max_concurrent_batches
        if sum(1 for job in self.batches.values() if not job.done) >= concurrent:
            raise resource_exhausted(
                f"Too many concurrent batches: at most {concurrent} batch jobs can be pending or running."
            )
        job = BatchJob(
            job_id=self.new_id(BATCH_ID_LENGTH),
            model=rule.name,
            mode="inline" if input_file is None else "file",
            entries=entries,
            plan=self.planned.popleft() if self.planned else self.job_plan,
            create_time=self.clock.now(),
            display_name=display_name,
            input_file=input_file,
            reports_usage=rule.reports_usage,
            work=work,
        )
        self.batches[job.job_id] = job
        return job

    def _check_enqueued_tokens(self, model: str, entries: list[BatchEntry]) -> None:
        budget = self.settings.batch_enqueued_tokens
        if budget is None:
            return
        live = [job for job in self.batches.values() if job.model == model and not job.done]
        enqueued = sum(_entry_tokens(job.entries) for job in live)
        if enqueued + _entry_tokens(entries) > budget:
            raise resource_exhausted(
                f"Enqueued tokens limit exceeded for models/{model}: {enqueued} tokens are already enqueued "
                f"and the limit is {budget}."
            )

    def _batch_entries(self, spec: BatchSpec) -> tuple[list[BatchEntry], str | None]:
        if spec.inline is not None:
            return [BatchEntry(item=entry.item, metadata=entry.metadata) for entry in spec.inline], None
        stored = self.files.get(spec.file_name or "")
        if stored.state != "ACTIVE":
            raise failed_precondition(f"File {stored.name} is not in an ACTIVE state.")
        lines = parse_jsonl(stored.data, strict_fields=self.settings.strict_fields)
        return [BatchEntry(item=line.item, key=line.key, error=line.error) for line in lines], stored.name

    def batch(self, batch_id: str) -> BatchJob:
        job = self.batches.get(batch_id.removeprefix("batches/"))
        if job is None:
            raise not_found("Requested entity was not found.")
        return job

    def batch_listing(self) -> list[BatchJob]:
        """Newest first; jobs created at the same emulated instant in reverse creation order."""
        return sorted(reversed(list(self.batches.values())), key=lambda job: job.create_time, reverse=True)

    def cancel_batch(self, batch_id: str) -> None:
        job = self.batch(batch_id)
        if not job.done:
            self._finish(job, CANCELLED, self.clock.now())
        elif self.settings.cancel_terminal_fails:
            raise failed_precondition(f"Batch {job.name} is already in a terminal state ({job.state}).")

    def delete_batch(self, batch_id: str) -> None:
        del self.batches[self.batch(batch_id).job_id]

    def force_state(self, batch_id: str, state: str) -> BatchJob:
        """Terminal states finish the job now; others (even unknown strings) pin it until forced again."""
        job = self.batch(batch_id)
        wire_state = _wire_state(state)
        if wire_state in TERMINAL_STATES:
            job.pinned_state = None
            self._finish(job, wire_state, self.clock.now())
        else:
            job.pinned_state = job.state = wire_state
            job.update_time = self.clock.now()
        return job

    def refresh(self) -> None:
        """Moves every job to where its plan puts it at the current emulated time."""
        now = self.clock.now()
        for job in list(self.batches.values()):
            self._advance(job, now)

    def _advance(self, job: BatchJob, now: float) -> None:
        target, since = job.scheduled(now)
        if target == job.state:
            return
        if job.state == PENDING and target not in (EXPIRED, CANCELLED):
            problem = self._start_problem(job)
            if problem is not None:
                self._finish(job, FAILED, job.run_start, problem)
                return
        if target in TERMINAL_STATES:
            self._finish(job, target, since)
        else:
            job.state, job.update_time = target, since

    def _start_problem(self, job: BatchJob) -> tuple[int, str] | None:
        """Why a job cannot start: its input file went away, or (if so configured) it has unreadable lines."""
        if job.input_file is not None and not self.files.existed_at(job.input_file, job.run_start):
            return 5, f"The input file {job.input_file} was deleted or expired before the batch started."
        if self.settings.bad_jsonl_fails_job and any(entry.error for entry in job.entries):
            kind = "embedding" if job.work == "embed" else "generateContent"
            return 3, f"The input file contains lines that are not valid {kind} requests."
        return None

    def _finish(self, job: BatchJob, state: str, at: float, error: tuple[int, str] | None = None) -> None:
        job.state, job.update_time, job.end_time = state, at, at
        job.pinned_state = None
        if state == SUCCEEDED:
            self._complete(job, at)
        elif state == FAILED:
            job.error = error or (job.plan.error_code, job.plan.error_message)
        elif state == CANCELLED:
            job.error = (wire.CANCELLED_CODE, "The batch was cancelled.")

    def _complete(self, job: BatchJob, at: float) -> None:
        rule = self.models.get(job.model)
        if rule is None:  # shut down (or removed) while the job waited
            job.state, job.error = FAILED, (5, f"models/{job.model} is not found.")
            return
        if job.processed is None:
            job.processed = self._process(rule, job) if job.work == "embed" else self._answer(rule, job)
            job.results = _deliver(job.processed, job.plan)
            for result in job.results:
                if result.values is not None:
                    self.billing.append(
                        BillingRecord(rule.name, "batch", result.text, result.token_count, at, job.name)
                    )
                elif result.generation is not None and result.entry.prompt is not None:
                    self._bill_generation(rule, "batch", result.entry.prompt, result.generation, at, job.name)
        results = job.results or []
        if job.mode == "inline":
            job.output = wire.inline_output(results, job)
        else:
            data = wire.output_jsonl(results, job)
            job.output_file = self.files.add_generated(
                f"batch-{job.job_id}", data, "application/jsonl", at
            ).name
            job.output = {"responsesFile": job.output_file}

    def _process(self, rule: ModelRule, job: BatchJob) -> list[ItemResult]:
        results: list[ItemResult] = []
        todo: list[tuple[ItemResult, str, int, str | None]] = []
        for entry in job.entries:
            result = ItemResult(entry)
            results.append(result)
            try:
                text, tokens, dims = self._prepare_entry(rule, entry, job.plan)
            except _ItemFailure as failure:
                result.error = (failure.code, failure.message)
                continue
            result.token_count = tokens
            todo.append((result, text, dims, entry.item.task_type if entry.item else None))
        vectors = self.vectors(rule, [t[1] for t in todo], [t[2] for t in todo], [t[3] for t in todo])
        for (result, *_), values in zip(todo, vectors, strict=True):
            result.values = values
        return results

    def _answer(self, rule: ModelRule, job: BatchJob) -> list[ItemResult]:
        """One generation or one error per entry of a generation job, in input order."""
        results: list[ItemResult] = []
        for entry in job.entries:
            result = ItemResult(entry)
            results.append(result)
            try:
                prompt = self._checked_prompt(rule, entry, job.plan)
            except _ItemFailure as failure:
                result.error = (failure.code, failure.message)
                continue
            result.generation = self.generation(prompt)
            result.token_count = result.generation.prompt_tokens
        return results

    def _checked_prompt(self, rule: ModelRule, entry: BatchEntry, plan: JobPlan) -> GenerateItem:
        if entry.prompt is None:
            raise _ItemFailure(3, entry.error or "Request contains an invalid argument.")
        scripted = plan.item_errors(entry.prompt.text) if plan.item_errors else None
        if scripted is not None:
            raise _ItemFailure(*scripted)
        try:
            self.check_generate(rule, entry.prompt, "GenerateContentRequest")
        except ApiError as error:
            raise _ItemFailure(5 if error.code == 404 else 3, error.message) from None
        return entry.prompt

    def _prepare_entry(self, rule: ModelRule, entry: BatchEntry, plan: JobPlan) -> tuple[str, int, int]:
        if entry.item is None:
            raise _ItemFailure(3, entry.error or "Request contains an invalid argument.")
        scripted = plan.item_errors(entry.item.text) if plan.item_errors else None
        if scripted is not None:
            raise _ItemFailure(*scripted)
        try:
            return self.prepare(rule, entry.item, "EmbedContentRequest")
        except ApiError as error:
            raise _ItemFailure(3, error.message) from None

    # Files ------------------------------------------------------------------------------------------------

    def file_for_read(self, file_id: str, request_name: str) -> StoredFile:
        if self.settings.limit_file_id_length and len(file_id.removeprefix("files/")) > 40:
            raise invalid_argument(
                f"* {request_name}.name: File ID (name excluding 'files/') cannot be more than 40 "
                "characters.",
                "name",
            )
        return self.files.get(file_id)

    def downloadable(self, file_id: str) -> StoredFile:
        """Downloads of missing or expired files are 404s (unlike files.get, which answers 403)."""
        stored = self.files.find(file_id)
        if stored is None:
            raise not_found(f"File {file_id.removeprefix('files/')} was not found.")
        if stored.source != "GENERATED" and not self.settings.download_uploaded_files:
            raise invalid_argument(f"Only generated files can be downloaded; {stored.name} was uploaded.")
        return stored

    # Billing ----------------------------------------------------------------------------------------------

    def billed(self, model: str | None = None, mode: Mode | None = None) -> list[BillingRecord]:
        wanted = None if model is None else bare_model_name(model)
        return [
            record
            for record in self.billing
            if (wanted is None or record.model == wanted) and (mode is None or record.mode == mode)
        ]


def _entry_tokens(entries: list[BatchEntry]) -> int:
    return sum(count_tokens(entry.text) for entry in entries)


def _wire_state(state: str) -> str:
    """FAILED, JOB_STATE_FAILED and BATCH_STATE_FAILED all mean BATCH_STATE_FAILED; other strings pass."""
    bare = state.removeprefix("BATCH_STATE_").removeprefix("JOB_STATE_")
    known = {PENDING, RUNNING, *TERMINAL_STATES}
    return f"BATCH_STATE_{bare}" if f"BATCH_STATE_{bare}" in known else state


def _deliver(processed: list[ItemResult], plan: JobPlan) -> list[ItemResult]:
    """Drops and shuffles per the plan (seeded). A shuffle never leaves two or more results in input order."""
    rng = random.Random(plan.seed)
    delivered = list(processed)
    if plan.drop_fraction > 0 and delivered:
        count = max(1, round(len(delivered) * plan.drop_fraction))
        dropped = set(rng.sample(range(len(delivered)), min(count, len(delivered))))
        delivered = [result for index, result in enumerate(delivered) if index not in dropped]
    if plan.shuffle and len(delivered) > 1:
        original = [id(result) for result in delivered]
        rng.shuffle(delivered)
        if [id(result) for result in delivered] == original:
            delivered = delivered[1:] + delivered[:1]
    return delivered


def public_state(job: BatchJob) -> dict[str, Any]:
    return {"name": job.name, "state": job.state, "model": job.model, "mode": job.mode, "work": job.work}
