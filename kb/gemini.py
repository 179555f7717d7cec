"""The Gemini provider: the only module that imports `google.genai`.

Online embeddings go through `client.models.embed_content`, which sends one `batchEmbedContents` request
per call with no splitting of its own, so this module splits texts into requests of at most 100 texts and
well under the 4 MiB payload limit. The SDK does not retry (and ignores RetryInfo): retries and rate
limits are kb's. SDK errors become `KbError`s here; nothing above this module sees an SDK type.
"""

import contextlib
import json
import logging
import os
import re
import secrets
import warnings
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path
from typing import Any, TypeVar

import httpx2
from google import genai
from google.genai import errors as genai_errors
from google.genai import types

from kb.chunking import estimate_tokens
from kb.embedder import Matrix, checked_unit_rows
from kb.errors import (
    AuthenticationError,
    ConfigError,
    InvalidRequestError,
    KbError,
    ModelNotFoundError,
    ProviderError,
    ProviderUnavailableError,
    RateLimitedError,
    RemoteGoneError,
    RetryableProviderError,
)
from kb.ratelimit import RateLimiter
from kb.records import JobState, RemoteStatus, SpaceSpec
from kb.retry import RetryPolicy, call_with_retries

T = TypeVar("T")
log = logging.getLogger("kb.gemini")

MAX_TEXTS_PER_REQUEST = 100
# The API refuses bodies over 4 MiB; stay well under it, counting JSON escaping and per-item overhead.
MAX_REQUEST_BYTES = 3_000_000
_ITEM_OVERHEAD_BYTES = 200

# Routes, as kb names the calls it makes (the SDK method behind each).
EMBED = "embed"  # models.embed_content -> :batchEmbedContents
COUNT_TOKENS = "count_tokens"  # models.count_tokens -> :countTokens
BATCH_CREATE = "batches.create"  # batches.create_embeddings -> :asyncBatchEmbedContent
BATCH_GET, BATCH_LIST, BATCH_CANCEL = "batches.get", "batches.list", "batches.cancel"
FILE_UPLOAD, FILE_LIST, FILE_DOWNLOAD, FILE_DELETE = (
    "files.upload",
    "files.list",
    "files.download",
    "files.delete",
)
DOCUMENT_TASK = "RETRIEVAL_DOCUMENT"
QUERY_TASK = "RETRIEVAL_QUERY"


def plan_requests(texts: Sequence[str]) -> list[range]:
    """Consecutive index ranges, each at most 100 texts and MAX_REQUEST_BYTES of estimated JSON."""
    ranges: list[range] = []
    start, size = 0, 0
    for index, text in enumerate(texts):
        item = len(json.dumps(text)) + _ITEM_OVERHEAD_BYTES
        if index > start and (index - start >= MAX_TEXTS_PER_REQUEST or size + item > MAX_REQUEST_BYTES):
            ranges.append(range(start, index))
            start, size = index, 0
        size += item
    if start < len(texts):
        ranges.append(range(start, len(texts)))
    return ranges


class GeminiEmbedder:
    """Online embeddings from the Gemini API, normalised and checked."""

    def __init__(
        self,
        *,
        api_key: str,
        model: str,
        dimensions: int,
        base_url: str | None = None,
        api_version: str | None = None,
        timeout_s: float = 60.0,
        retry: RetryPolicy | None = None,
        limiter: RateLimiter | None = None,
        sleep: Callable[[float], None] | None = None,
        on_retry: Callable[[KbError, float], None] | None = None,
    ) -> None:
        self._spec = SpaceSpec(provider="gemini", model=model, dimensions=dimensions)
        self._secret = api_key
        options = types.HttpOptions(base_url=base_url, api_version=api_version, timeout=int(timeout_s * 1000))
        self._client = genai.Client(api_key=api_key, http_options=options)
        self._retry = retry or RetryPolicy()
        self._limiter = limiter
        self._sleep_kwargs: dict[str, Any] = {} if sleep is None else {"sleep": sleep}
        self._on_retry = on_retry

    @property
    def spec(self) -> SpaceSpec:
        return self._spec

    def embed_documents(self, texts: Sequence[str]) -> Matrix:
        return self._embed(texts, DOCUMENT_TASK)

    def plan_requests(self, texts: Sequence[str]) -> list[range]:
        return plan_requests(texts)

    def embed_query(self, text: str) -> Matrix:
        return self._embed([text], QUERY_TASK)

    def count_tokens(self, texts: list[str]) -> int:
        """The model's own token count for the texts (free of charge), for calibrated estimates."""
        total = 0
        for indexes in plan_requests(texts):
            contents = [texts[i] for i in indexes]

            def send(contents: list[str] = contents) -> int:
                with self._translated_errors(COUNT_TOKENS):
                    response = self._client.models.count_tokens(model=self._spec.model, contents=contents)
                return int(response.total_tokens or 0)

            total += call_with_retries(send, self._retry, **self._sleep_kwargs)
        return total

    def embed_in_requests(self, texts: Sequence[str], task_type: str = DOCUMENT_TASK) -> Iterator[Matrix]:
        """Embed request by request, yielding each request's rows as they arrive."""
        for indexes in plan_requests(texts):
            yield self._request([texts[i] for i in indexes], task_type)

    def _embed(self, texts: Sequence[str], task_type: str) -> Matrix:
        import numpy as np

        if not texts:
            return np.zeros((0, self._spec.dimensions), dtype=np.float32)
        return np.vstack(list(self.embed_in_requests(texts, task_type)))

    def _request(self, texts: list[str], task_type: str) -> Matrix:
        if self._limiter is not None:
            self._limiter.acquire(sum(estimate_tokens(text) for text in texts))
        config = types.EmbedContentConfig(task_type=task_type, output_dimensionality=self._spec.dimensions)

        def send() -> Matrix:
            with self._translated_errors():
                response = self._client.models.embed_content(
                    model=self._spec.model, contents=list(texts), config=config
                )
            rows = [embedding.values or [] for embedding in response.embeddings or []]
            return checked_unit_rows(rows, len(texts), self._spec.dimensions)

        return call_with_retries(send, self._retry, on_retry=self._on_retry, **self._sleep_kwargs)

    def close(self) -> None:
        self._client.close()

    def _translated_errors(self, route: str = EMBED) -> AbstractContextManager[None]:
        return _translated_errors(route, self._spec.model, self._secret)


@contextmanager
def _translated_errors(route: str, subject: str, secret: str) -> Iterator[None]:
    """Turn SDK and transport errors into kb errors (with the key scrubbed) inside the block."""
    try:
        yield
    except KbError:
        raise
    except Exception as error:
        translated = translate_error(error, route, subject, secret)
        if translated is None:
            raise
        raise translated from None


_MODEL_ROUTES = frozenset({EMBED, COUNT_TOKENS, BATCH_CREATE})
_FILE_ROUTES = frozenset({FILE_UPLOAD, FILE_LIST, FILE_DOWNLOAD, FILE_DELETE})
_JOB_ROUTES = frozenset({BATCH_GET, BATCH_CANCEL})

# google.rpc.ErrorInfo reasons that mean the key (or its project) cannot be used: configuration, not outage.
_KEY_REASONS = frozenset(
    {
        "API_KEY_INVALID",
        "API_KEY_EXPIRED",
        "API_KEY_SERVICE_BLOCKED",
        "SERVICE_DISABLED",
        "CONSUMER_SUSPENDED",
    }
)


def classify(route: str, code: int, status: str, reasons: frozenset[str], message: str) -> type[KbError]:
    """The kb error for a Gemini API error, read by what failed (route), the HTTP code, the canonical status
    and the ErrorInfo reasons, not by the code alone: a 403 on a file means the file is gone (the service
    answers "You do not have permission to access the File ... or it may not exist"), a 404 on a batch that
    the job is gone, and only a 404 on a model call that the model is gone."""
    if reasons & _KEY_REASONS or "api key not valid" in message.lower():
        return AuthenticationError
    if code == 429:
        return RateLimitedError
    if code >= 500 or code == 408:
        return ProviderUnavailableError
    if route in _FILE_ROUTES and code in (403, 404):
        return RemoteGoneError
    if route in _JOB_ROUTES and code == 404:
        return BatchJobNotFoundError
    if code == 404 and route in _MODEL_ROUTES:
        return ModelNotFoundError
    if code in (401, 403):
        return AuthenticationError
    return InvalidRequestError


def translate_error(
    error: BaseException, route: str, subject: str, secret: str = ""
) -> ProviderError | ConfigError | None:
    """The kb error for an SDK or transport error on `route` (with `secret` scrubbed), or None if it is
    neither. `subject` names what the call was about (a model, a job, a file) in the message."""
    if isinstance(error, genai_errors.APIError):
        return _from_api_error(error, route, subject, secret)
    if isinstance(error, httpx2.TransportError):
        detail = _scrub(f"{type(error).__name__}: {error}", secret)
        return ProviderUnavailableError(f"Gemini API unreachable: {detail}")
    if isinstance(error, json.JSONDecodeError):
        return ProviderUnavailableError("Gemini API answered with a body that is not JSON")
    return None


def _scrub(text: str, secret: str) -> str:
    return text.replace(secret, "***") if secret else text


def _from_api_error(
    error: genai_errors.APIError, route: str, subject: str, secret: str
) -> ProviderError | ConfigError:
    code = int(error.code or 0)
    body = error.details if isinstance(error.details, dict) else {}
    inner = body.get("error", {}) if isinstance(body.get("error"), dict) else {}
    message = str(inner.get("message") or error.message or error.status or code)
    status = str(inner.get("status") or error.status or "")
    summary = _scrub(f"Gemini API {code} {status}: {message}", secret)
    kind = classify(route, code, status, _reasons(inner), message)
    if issubclass(kind, RetryableProviderError):
        return kind(summary, retry_after=_retry_delay(body))
    if kind is ModelNotFoundError:
        return ModelNotFoundError(f"model {subject!r} is not available: {summary}")
    if kind is AuthenticationError:
        return AuthenticationError(f"the Gemini API refused the key: {summary}")
    if issubclass(kind, RemoteGoneError):
        return kind(f"{subject} is gone: {summary}")
    return InvalidRequestError(summary)


def _reasons(error: dict[str, Any]) -> frozenset[str]:
    details = error.get("details") or []
    return frozenset(
        str(detail.get("reason"))
        for detail in (details if isinstance(details, list) else [])
        if isinstance(detail, dict) and detail.get("reason")
    )


_DURATION = re.compile(r"^\s*([0-9]*\.?[0-9]+)s\s*$")


def _retry_delay(body: dict[str, Any]) -> float | None:
    """The RetryInfo delay of a Google error body ("26s", "1.5s"), if any."""
    details = body.get("error", {}).get("details") or []
    for detail in details if isinstance(details, list) else []:
        if isinstance(detail, dict) and str(detail.get("@type", "")).endswith("google.rpc.RetryInfo"):
            match = _DURATION.match(str(detail.get("retryDelay", "")))
            if match:
                return float(match.group(1))
    return None


# ---------------------------------------------------------------------------------------------------------
# Batch API (file mode): JSONL input uploaded with the Files API, results downloaded and joined by key.
# ---------------------------------------------------------------------------------------------------------

_STATES = {
    "PENDING": JobState.PENDING,
    "RUNNING": JobState.RUNNING,
    "SUCCEEDED": JobState.SUCCEEDED,
    "FAILED": JobState.FAILED,
    "CANCELLED": JobState.CANCELLED,
    "EXPIRED": JobState.EXPIRED,
}


class BatchJobNotFoundError(RemoteGoneError):
    """The remote batch job no longer exists."""


def map_state(raw: str) -> JobState | None:
    """`BATCH_STATE_SUCCEEDED` (wire) or `JOB_STATE_SUCCEEDED` (SDK) -> JobState.SUCCEEDED."""
    return _STATES.get(raw.rsplit("_STATE_", 1)[-1])


class GeminiBatchBackend:
    """Gemini's Batch API through google-genai: upload, create, get, list, cancel, download."""

    mode = "file"

    def __init__(
        self,
        *,
        api_key: str,
        base_url: str | None = None,
        api_version: str | None = None,
        timeout_s: float = 300.0,
        retry: RetryPolicy | None = None,
        sleep: Callable[[float], None] | None = None,
    ) -> None:
        self._secret = api_key
        options = types.HttpOptions(base_url=base_url, api_version=api_version, timeout=int(timeout_s * 1000))
        self._client = genai.Client(api_key=api_key, http_options=options)
        self._retry = retry or RetryPolicy()
        self._sleep_kwargs: dict[str, Any] = {} if sleep is None else {"sleep": sleep}

    def upload_input(
        self, display_name: str, model: str, dimensions: int, lines: Sequence[tuple[str, str]], folder: Path
    ) -> str:
        """Write the JSONL request file and upload it; returns the remote file name (`files/...`)."""
        path = folder / f"{display_name}.{os.getpid()}.{secrets.token_hex(4)}.input.jsonl"
        with path.open("w", encoding="utf-8") as handle:
            for key, text in lines:
                request = {
                    "content": {"parts": [{"text": text}]},
                    "task_type": DOCUMENT_TASK,
                    "output_dimensionality": dimensions,
                }
                handle.write(json.dumps({"key": key, "request": request}, ensure_ascii=False) + "\n")
        config = types.UploadFileConfig(mime_type="jsonl", display_name=display_name)
        try:
            uploaded = self._retried(
                lambda: self._client.files.upload(file=str(path), config=config), FILE_UPLOAD, display_name
            )
        finally:
            path.unlink(missing_ok=True)
        return str(uploaded.name)

    def create(self, display_name: str, model: str, input_file: str) -> RemoteStatus:
        """Create the job. Never retried here: a create that timed out may exist remotely, so the caller
        looks for it by display name before trying again."""
        source = types.EmbeddingsBatchJobSource(file_name=input_file)
        config = types.CreateEmbeddingsBatchJobConfig(display_name=display_name)
        with _translated_errors(BATCH_CREATE, model, self._secret), warnings.catch_warnings():
            warnings.simplefilter("ignore", genai_errors.ExperimentalWarning)
            job = self._client.batches.create_embeddings(model=model, src=source, config=config)
        return _remote(job)

    def get(self, name: str) -> RemoteStatus:
        return self._retried(lambda: _remote(self._client.batches.get(name=name)), BATCH_GET, name)

    def find(self, display_names: set[str], max_pages: int = 50) -> dict[str, RemoteStatus]:
        """Remote jobs whose display names are among `display_names` (newest pages first)."""
        found: dict[str, RemoteStatus] = {}

        def scan() -> None:
            pager = self._client.batches.list(config=types.ListBatchJobsConfig(page_size=100))
            for number, job in enumerate(pager):
                if number >= max_pages * 100 or len(found) == len(display_names):
                    break
                if job.display_name in display_names:
                    found[str(job.display_name)] = _remote(job)

        self._retried(scan, BATCH_LIST, "batch jobs")
        return found

    def cancel(self, name: str) -> None:
        self._retried(lambda: self._client.batches.cancel(name=name), BATCH_CANCEL, name)

    def discard_input(self, display_name: str, max_pages: int = 20) -> None:
        """Delete uploaded files named `display_name` (an upload cut short); best effort, since files
        expire after 48 h anyway, but a crash loop could otherwise fill the project's 20 GB."""

        def scan() -> list[str]:
            pager = self._client.files.list(config=types.ListFilesConfig(page_size=100))
            return [
                str(f.name)
                for number, f in enumerate(pager)
                if number < max_pages * 100 and f.display_name == display_name and f.name
            ]

        try:
            for name in self._retried(scan, FILE_LIST, "files"):
                self.delete_file(name)
        except ProviderError as error:
            log.info("could not look for files left by an interrupted upload: %s", error.message)

    def download(self, file_name: str, destination: Path) -> None:
        """Stream the result file to `destination` atomically (written, synced, then renamed): a 10,000-
        result file is ~100 MB, never held in memory. A missing or expired file is `RemoteGoneError`."""
        partial = destination.with_name(f"{destination.name}.{os.getpid()}.{secrets.token_hex(4)}.part")

        def fetch() -> None:
            with partial.open("wb") as handle:
                self._client.files.download(file=file_name, destination=handle)
                handle.flush()
                os.fsync(handle.fileno())

        try:
            self._retried(fetch, FILE_DOWNLOAD, f"result file {file_name}")
        except BaseException:
            partial.unlink(missing_ok=True)
            raise
        partial.replace(destination)

    def delete_file(self, file_name: str) -> None:
        """Best effort: remote files expire after 48 h anyway."""
        with contextlib.suppress(KbError):
            self._retried(lambda: self._client.files.delete(name=file_name), FILE_DELETE, file_name)

    def close(self) -> None:
        self._client.close()

    def _retried(self, call: Callable[[], T], route: str, subject: str) -> T:
        def attempt() -> T:
            with _translated_errors(route, subject, self._secret):
                return call()

        return call_with_retries(attempt, self._retry, **self._sleep_kwargs)


def _remote(job: types.BatchJob) -> RemoteStatus:
    raw = job.state.value if job.state is not None else "STATE_UNSPECIFIED"
    output = job.dest.file_name if job.dest is not None else None
    return RemoteStatus(
        name=str(job.name),
        display_name=job.display_name,
        state=map_state(str(raw)),
        raw_state=str(raw),
        output_file=output,
    )
