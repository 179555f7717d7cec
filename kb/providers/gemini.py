"""The Gemini provider: the only module that imports `google.genai`.

`GeminiApi` is one connection to the Gemini Developer API (never Vertex, whatever the environment says): a
client per API version, kb's retries (the SDK does none and ignores RetryInfo), and errors translated into
kb errors by what failed, not by HTTP code alone (`classify`). It calls the documented `v1beta` endpoints
by default (the SDK's own default is `v1`); a route the version does not serve is tried once on the other,
and the version that answered is remembered for that route.

`GeminiEmbedder` embeds online: `embed_content` sends one `batchEmbedContents` request per call and does
not split, so texts go in requests of at most 100 and well under the 4 MiB payload limit, one Content per
text (the SDK folds a list of strings into ONE embedding for gemini-embedding-2). How a model is told a
document from a query (a task_type, or a prompt prefix) comes from `kb.core.models`. `GeminiGenerator`
writes one text per prompt online (`generateContent`). `GeminiBatchBackend` runs Batch API jobs in file
mode, embedding (`asyncBatchEmbedContent`) and generation (`batchGenerateContent`) alike. Nothing above
this module sees an SDK type.
"""

import contextlib
import json
import logging
import os
import re
import secrets
import threading
import traceback
import warnings
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import httpx2
import numpy as np
from google import genai
from google.genai import errors as genai_errors
from google.genai import types
from google.genai.pagers import Pager

from kb.core import models
from kb.core.chunking import estimate_tokens
from kb.core.ratelimit import RateLimiter
from kb.core.results import read_generation
from kb.core.retry import RetryPolicy, call_with_retries
from kb.errors import (
    AuthenticationError,
    ConfigError,
    InputFileGoneError,
    InvalidRequestError,
    KbError,
    ModelNotFoundError,
    ProviderError,
    ProviderUnavailableError,
    RateLimitedError,
    RemoteGoneError,
    RetryableProviderError,
    RouteNotServedError,
)
from kb.providers.base import Matrix, checked_unit_rows
from kb.records import Generated, JobState, RemoteStatus, SpaceSpec

T = TypeVar("T")
log = logging.getLogger("kb.providers.gemini")

DEFAULT_API_VERSION = "v1beta"  # every documented REST sample and live capture of Batch and Files traffic
_OTHER_VERSION = {"v1beta": "v1", "v1": "v1beta"}

MAX_TEXTS_PER_REQUEST = 100
# The API refuses bodies over 4 MiB; stay well under it, counting JSON escaping and per-item overhead.
MAX_REQUEST_BYTES = 3_000_000
_ITEM_OVERHEAD_BYTES = 200

# Routes, as kb names the calls it makes (the SDK method behind each).
EMBED = "embed"  # models.embed_content -> :batchEmbedContents
COUNT_TOKENS = "count_tokens"  # models.count_tokens -> :countTokens
MODEL_GET = "models.get"  # models.get -> GET models/{m}
BATCH_CREATE = "batches.create"  # batches.create_embeddings -> :asyncBatchEmbedContent
GENERATE = "generate"  # models.generate_content -> :generateContent
GENERATION_CREATE = "batches.create_generation"  # batches.create -> :batchGenerateContent
BATCH_GET, BATCH_LIST, BATCH_CANCEL, BATCH_DELETE = (
    "batches.get",
    "batches.list",
    "batches.cancel",
    "batches.delete",
)
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


# -- the connection ---------------------------------------------------------------------------------------


class GeminiApi:
    """A connection to the Gemini Developer API: clients per API version, retries, translated errors."""

    def __init__(
        self,
        *,
        api_key: str,
        base_url: str | None = None,
        api_version: str | None = None,
        timeout_s: float = 60.0,
        retry: RetryPolicy | None = None,
        sleep: Callable[[float], None] | None = None,
        on_retry: Callable[[KbError, float], None] | None = None,
    ) -> None:
        self.secret = api_key
        self.base_url = base_url
        self.api_version = api_version or DEFAULT_API_VERSION
        self.timeout_s = timeout_s
        self.retry = retry or RetryPolicy()
        self._sleep_kwargs: dict[str, Any] = {} if sleep is None else {"sleep": sleep}
        self._on_retry = on_retry or _log_retry
        self._clients: dict[str, genai.Client] = {}
        self._clients_lock = threading.Lock()  # a server's threads share one client per version
        # The version each route answered on in this process (kb doctor reports it).
        self.versions: dict[str, str] = {}

    def client(self, version: str) -> genai.Client:
        with self._clients_lock:
            if version not in self._clients:
                options = types.HttpOptions(
                    base_url=self.base_url, api_version=version, timeout=int(self.timeout_s * 1000)
                )
                # vertexai=False: with GOOGLE_GENAI_USE_VERTEXAI=true in the environment the SDK would
                # otherwise talk to Vertex, a different protocol, and fail in ways kb cannot read.
                self._clients[version] = genai.Client(
                    api_key=self.secret, vertexai=False, http_options=options
                )
            return self._clients[version]

    def call(self, route: str, subject: str, send: Callable[[genai.Client], T], *, retried: bool = True) -> T:
        """`send(client)` on the route's version, its errors translated; retried as the policy says
        unless `retried` is False (a create that timed out may exist remotely: the caller looks first)."""

        def attempt() -> T:
            return self._on_version(route, subject, send)

        if not retried:
            return attempt()
        return call_with_retries(
            attempt,
            self.retry,
            on_retry=self._on_retry,
            # An upload the SDK could not read may have stored the file: the caller's intent looks first.
            retries=lambda error: route != FILE_UPLOAD or not isinstance(error, SdkFailureError),
            **self._sleep_kwargs,
        )

    def _on_version(self, route: str, subject: str, send: Callable[[genai.Client], T]) -> T:
        version = self.versions.get(route, self.api_version)
        try:
            result = self._translated(route, subject, lambda: send(self.client(version)))
        except RouteNotServedError as error:
            if route in self.versions:  # it answered on this version before: not a version problem
                raise
            other = _OTHER_VERSION.get(version, DEFAULT_API_VERSION)
            log.warning(
                "the Gemini API does not serve %s on %s (%s); trying %s", route, version, error, other
            )
            result = self._translated(route, subject, lambda: send(self.client(other)))
            version = other
        self.versions[route] = version
        return result

    def _translated(self, route: str, subject: str, call: Callable[[], T]) -> T:
        with _translated_errors(route, subject, self.secret):
            return call()

    def close(self) -> None:
        for client in self._clients.values():
            client.close()
        self._clients.clear()


def _log_retry(error: KbError, delay: float) -> None:
    log.info("%s; retrying in %.1f s", error.message, delay)


# -- online embeddings ------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ModelInfo:
    """What the service says about a model (`models.get`)."""

    name: str
    input_token_limit: int | None
    methods: list[str]


class GeminiEmbedder:
    """Online embeddings from the Gemini API, normalised and checked."""

    def __init__(
        self, api: GeminiApi, model: str, dimensions: int, limiter: RateLimiter | None = None
    ) -> None:
        self._spec = SpaceSpec(provider="gemini", model=model, dimensions=dimensions)
        self._api = api
        self._limiter = limiter

    @classmethod
    def connect(
        cls,
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
    ) -> "GeminiEmbedder":
        api = GeminiApi(
            api_key=api_key,
            base_url=base_url,
            api_version=api_version,
            timeout_s=timeout_s,
            retry=retry,
            sleep=sleep,
            on_retry=on_retry,
        )
        return cls(api, model, dimensions, limiter)

    @property
    def spec(self) -> SpaceSpec:
        return self._spec

    @property
    def api(self) -> GeminiApi:
        return self._api

    def embed_documents(self, texts: Sequence[str]) -> Matrix:
        return self.embed_counted(texts)[0]

    def embed_counted(self, texts: Sequence[str]) -> tuple[Matrix, int | None]:
        """The texts' vectors, and the input tokens the service counted for them (None: it did not say)."""
        if not texts:
            return np.zeros((0, self._spec.dimensions), dtype=np.float32), 0
        blocks: list[Matrix] = []
        tokens: int | None = 0
        for indexes in plan_requests(texts):
            block, counted = self._request([texts[i] for i in indexes], query=False)
            blocks.append(block)
            tokens = tokens if tokens is None else (None if counted is None else tokens + counted)
        return np.vstack(blocks), tokens

    def plan_requests(self, texts: Sequence[str]) -> list[range]:
        return plan_requests(texts)

    def embed_query(self, text: str) -> Matrix:
        return self._request([text], query=True)[0]

    def count_tokens(self, texts: list[str]) -> int:
        """The model's own token count for the texts (free of charge), for calibrated estimates."""
        total = 0
        for indexes in plan_requests(texts):
            # ContentUnion, not str: with Pillow installed (llama-index-core brings it) the SDK's list
            # types take images too, and a list[str] no longer fits them.
            contents: list[types.ContentUnion] = [texts[i] for i in indexes]

            def send(client: genai.Client, contents: list[types.ContentUnion] = contents) -> int:
                response = client.models.count_tokens(model=self._spec.model, contents=contents)
                return int(response.total_tokens or 0)

            total += self._api.call(COUNT_TOKENS, self._spec.model, send)
        return total

    def model_info(self) -> ModelInfo:
        """The service's description of the model (a cheap check that the key and the model work)."""

        def send(client: genai.Client) -> ModelInfo:
            model = client.models.get(model=self._spec.model)
            return ModelInfo(str(model.name), model.input_token_limit, list(model.supported_actions or []))

        return self._api.call(MODEL_GET, self._spec.model, send)

    def _request(self, texts: list[str], query: bool) -> tuple[Matrix, int | None]:
        model, dims = self._spec.model, self._spec.dimensions
        if self._limiter is not None:
            self._limiter.acquire(sum(estimate_tokens(text) for text in texts))
        shaped = [models.query_text(model, t) if query else models.document_text(model, t) for t in texts]
        # One Content per text: given a list of strings, the SDK folds them into one Content (one
        # embedding) for multimodal models such as gemini-embedding-2.
        contents: list[types.ContentUnion] = [
            types.Content(parts=[types.Part(text=t)], role="user") for t in shaped
        ]
        task = (QUERY_TASK if query else DOCUMENT_TASK) if models.takes_task_type(model) else None
        config = types.EmbedContentConfig(task_type=task, output_dimensionality=dims)

        def send(client: genai.Client) -> tuple[Matrix, int | None]:
            response = client.models.embed_content(model=model, contents=contents, config=config)
            rows = [embedding.values or [] for embedding in response.embeddings or []]
            usage = response.usage_metadata
            counted = usage.prompt_token_count if usage is not None else None
            return checked_unit_rows(rows, len(texts), dims), counted

        return self._api.call(EMBED, model, send)

    def close(self) -> None:
        self._api.close()


# -- online generation ------------------------------------------------------------------------------------


class GeminiGenerator:
    """Online text generation (`generateContent`): one prompt, one text, the tokens the service billed."""

    def __init__(self, api: GeminiApi, model: str, limiter: RateLimiter | None = None) -> None:
        self._api = api
        self._model = model
        self._limiter = limiter

    @property
    def model(self) -> str:
        return self._model

    def generate(self, prompt: str, *, max_output_tokens: int) -> Generated:
        """The model's text for `prompt`; retried on 429/5xx like every call. A prompt the model will not
        answer (blocked, stopped for safety, no text) is an `InvalidRequestError` naming the reason: paid
        or not, asking again gives the same answer."""
        if self._limiter is not None:
            self._limiter.acquire(estimate_tokens(prompt) + max_output_tokens)
        config = types.GenerateContentConfig(max_output_tokens=max_output_tokens)

        def send(client: genai.Client) -> Generated | str:
            response = client.models.generate_content(model=self._model, contents=prompt, config=config)
            wire = response.model_dump(
                mode="json", by_alias=True, exclude_none=True, exclude={"sdk_http_response"}
            )
            return read_generation(wire)

        outcome = self._api.call(GENERATE, self._model, send)
        if isinstance(outcome, str):
            raise InvalidRequestError(f"{self._model} wrote no text: {outcome}")
        return outcome

    def close(self) -> None:
        self._api.close()


# -- errors -----------------------------------------------------------------------------------------------


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
            # Not an API or transport error: the SDK itself failed on an answer it could not read (an
            # upload finalized without `file`, a pager on an empty page). It may pass; the call may still
            # have done its work (the caller's committed intent looks first).
            trace = "".join(traceback.format_exception(error))
            log.debug("the Gemini SDK failed on %s:\n%s", route, _scrub(trace, secret))
            translated = SdkFailureError(
                _scrub(f"the Gemini SDK failed on {route}: {type(error).__name__}: {error}", secret)
            )
        raise translated from None


class SdkFailureError(ProviderUnavailableError):
    """The SDK failed on an answer it could not read (not an API or transport error): it may pass, and
    the call may have done its work (an upload whose finalize answer lacked `file`)."""


_MODEL_ROUTES = frozenset({EMBED, COUNT_TOKENS, MODEL_GET, BATCH_CREATE, GENERATE, GENERATION_CREATE})
_CREATE_ROUTES = frozenset({BATCH_CREATE, GENERATION_CREATE})
_FILE_ROUTES = frozenset({FILE_UPLOAD, FILE_LIST, FILE_DOWNLOAD, FILE_DELETE})
_JOB_ROUTES = frozenset({BATCH_GET, BATCH_CANCEL, BATCH_DELETE})

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
# What a 404 says when the URL itself is unknown (a route this API version does not serve), as opposed to
# a model, job or file that does not exist: Google's front end answers an HTML page.
_NO_SUCH_URL = ("<html", "<!doctype", "was not found on this server", "method not found", "requested url")


def classify(route: str, code: int, status: str, reasons: frozenset[str], message: str) -> type[KbError]:
    """The kb error for a Gemini API error, read by what failed (route), the HTTP code, the canonical status
    and the ErrorInfo reasons, not by the code alone: a 403 on a file means the file is gone (the service
    answers "You do not have permission to access the File ... or it may not exist"), a 404 on a batch that
    the job is gone, only a 404 on a model call that names the model that the model is gone, and a 404 for
    an unknown URL that this API version does not serve the route. docs/gemini.md has the table."""
    text = message.lower()
    if reasons & _KEY_REASONS or "api key not valid" in text or "api key expired" in text:
        return AuthenticationError
    if code == 429:
        return RateLimitedError
    if code >= 500 or code == 408:
        return ProviderUnavailableError
    if code == 404 and any(marker in text for marker in _NO_SUCH_URL):
        return RouteNotServedError
    if route in _FILE_ROUTES and code in (403, 404):
        return RemoteGoneError
    if route in _JOB_ROUTES and code == 404:
        return BatchJobNotFoundError
    if route in _CREATE_ROUTES and code in (403, 404) and _names_input_file(text):
        return InputFileGoneError
    if code == 404 and route in _MODEL_ROUTES:
        return ModelNotFoundError
    if code in (401, 403):
        return AuthenticationError
    return InvalidRequestError


def _names_input_file(text: str) -> bool:
    """A create refused for its input file ("Input file files/x was not found", "You do not have
    permission to access the File x or it may not exist"), not for its model."""
    return "file" in text and "models/" not in text


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
    if isinstance(error, ValueError) and "vertex" in str(error).lower():
        return ConfigError(f"the Gemini SDK refused the call for Vertex AI: {error}")
    return None


def _scrub(text: str, secret: str) -> str:
    return text.replace(secret, "***") if secret else text


def _from_api_error(
    error: genai_errors.APIError, route: str, subject: str, secret: str
) -> ProviderError | ConfigError:
    code = int(error.code or 0)
    body = error.details if isinstance(error.details, dict) else {}
    inner = body.get("error", {}) if isinstance(body.get("error"), dict) else {}
    message = str(inner.get("message") or body.get("message") or error.message or error.status or code)
    status = str(inner.get("status") or error.status or "")
    kind = classify(route, code, status, _reasons(inner), message)
    if kind is RouteNotServedError:
        message = f"no such method or URL for {route}"  # not the whole HTML page
    summary = _scrub(f"Gemini API {code} {status}: {message}", secret)
    if issubclass(kind, RetryableProviderError):
        return kind(summary, retry_after=_retry_delay(body))
    if kind is ModelNotFoundError:
        return ModelNotFoundError(f"model {subject!r} is not available: {summary}")
    if kind is AuthenticationError:
        return AuthenticationError(f"the Gemini API refused the key: {summary}")
    if kind is InputFileGoneError:
        return InputFileGoneError(f"the batch job's input file is gone: {summary}")
    if issubclass(kind, RemoteGoneError):
        return kind(f"{subject} is gone or refused: {summary}")
    if kind is RouteNotServedError:
        return RouteNotServedError(summary)
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


# -- the Batch API (file mode): JSONL input uploaded with the Files API, results downloaded, joined by key --

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


def request_line(key: str, model: str, dimensions: int, text: str) -> dict[str, Any]:
    """One JSONL input line of a batch job, shaped as the model wants (task_type, or a prefix)."""
    request: dict[str, Any] = {"content": {"parts": [{"text": models.document_text(model, text)}]}}
    if models.takes_task_type(model):
        request["task_type"] = DOCUMENT_TASK
    request["output_dimensionality"] = dimensions
    return {"key": key, "request": request}


def generation_request_line(key: str, prompt: str, max_output_tokens: int) -> dict[str, Any]:
    """One JSONL input line of a generation batch job: a GenerateContentRequest under its key."""
    request = {
        "contents": [{"parts": [{"text": prompt}], "role": "user"}],
        "generationConfig": {"maxOutputTokens": max_output_tokens},
    }
    return {"key": key, "request": request}


class GeminiBatchBackend:
    """Gemini's Batch API through google-genai: upload, create, get, list, cancel, download; embedding and
    generation jobs share everything but their input lines and their create call."""

    mode = "file"

    def __init__(self, api: GeminiApi) -> None:
        self._api = api

    @property
    def api(self) -> GeminiApi:
        return self._api

    def upload_input(
        self, display_name: str, model: str, dimensions: int, lines: Sequence[tuple[str, str]], folder: Path
    ) -> str:
        """Write the JSONL request file and upload it; returns the remote file name (`files/...`)."""
        requests = (request_line(key, model, dimensions, text) for key, text in lines)
        return self._upload_lines(display_name, requests, folder)

    def upload_generation_input(
        self,
        display_name: str,
        model: str,
        lines: Sequence[tuple[str, str]],
        folder: Path,
        max_output_tokens: int,
    ) -> str:
        """Write the (key, prompt) lines as GenerateContentRequests and upload them; the remote file name.
        (`model` is in the create call's URL, not in the lines.)"""
        requests = (generation_request_line(key, prompt, max_output_tokens) for key, prompt in lines)
        return self._upload_lines(display_name, requests, folder)

    def _upload_lines(self, display_name: str, requests: Iterator[dict[str, Any]], folder: Path) -> str:
        path = folder / f"{display_name}.{os.getpid()}.{secrets.token_hex(4)}.input.jsonl"
        with path.open("w", encoding="utf-8") as handle:
            for request in requests:
                handle.write(json.dumps(request, ensure_ascii=False) + "\n")
        config = types.UploadFileConfig(mime_type="jsonl", display_name=display_name)
        try:
            uploaded = self._api.call(
                FILE_UPLOAD, display_name, lambda client: client.files.upload(file=str(path), config=config)
            )
        finally:
            path.unlink(missing_ok=True)
        return str(uploaded.name)

    def create(self, display_name: str, model: str, input_file: str) -> RemoteStatus:
        """Create the job. Never retried here: a create that timed out may exist remotely, so the caller
        looks for it by display name before trying again."""
        source = types.EmbeddingsBatchJobSource(file_name=input_file)
        config = types.CreateEmbeddingsBatchJobConfig(display_name=display_name)

        def send(client: genai.Client) -> RemoteStatus:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", genai_errors.ExperimentalWarning)
                return _remote(client.batches.create_embeddings(model=model, src=source, config=config))

        return self._api.call(BATCH_CREATE, model, send, retried=False)

    def create_generation(self, display_name: str, model: str, input_file: str) -> RemoteStatus:
        """Create a generation job (`batchGenerateContent`) on the uploaded file. Never retried here, as
        `create`: the caller looks for it by display name before trying again."""
        config = types.CreateBatchJobConfig(display_name=display_name)

        def send(client: genai.Client) -> RemoteStatus:
            return _remote(client.batches.create(model=model, src=input_file, config=config))

        return self._api.call(GENERATION_CREATE, model, send, retried=False)

    def get(self, name: str) -> RemoteStatus:
        return self._api.call(BATCH_GET, name, lambda client: _remote(client.batches.get(name=name)))

    def find(self, display_names: set[str], max_pages: int = 50) -> dict[str, RemoteStatus]:
        """Remote jobs whose display names are among `display_names` (newest pages first)."""

        def scan(client: genai.Client) -> dict[str, RemoteStatus]:
            found: dict[str, RemoteStatus] = {}
            pager = client.batches.list(config=types.ListBatchJobsConfig(page_size=100))
            for job in _listed(pager, max_pages):
                if job.display_name in display_names:
                    found[str(job.display_name)] = _remote(job)
                    if len(found) == len(display_names):
                        break
            return found

        return self._api.call(BATCH_LIST, "batch jobs", scan)

    def cancel(self, name: str) -> None:
        self._api.call(BATCH_CANCEL, name, lambda client: client.batches.cancel(name=name))

    def delete_job(self, name: str) -> None:
        self._api.call(BATCH_DELETE, name, lambda client: client.batches.delete(name=name))

    def discard_input(self, display_name: str, max_pages: int = 20) -> None:
        """Delete uploaded files named `display_name` (an upload cut short); best effort, since files
        expire after 48 h anyway, but a crash loop could otherwise fill the project's 20 GB."""

        def scan(client: genai.Client) -> list[str]:
            pager = client.files.list(config=types.ListFilesConfig(page_size=100))
            return [
                str(f.name) for f in _listed(pager, max_pages) if f.display_name == display_name and f.name
            ]

        try:
            for name in self._api.call(FILE_LIST, "files", scan):
                self.delete_file(name)
        except ProviderError as error:
            log.info("could not look for files left by an interrupted upload: %s", error.message)

    def download(self, file_name: str, destination: Path) -> None:
        """Stream the result file to `destination` atomically (written, synced, then renamed): a 10,000-
        result file is ~100 MB, never held in memory. A missing or expired file is `RemoteGoneError`."""
        partial = destination.with_name(f"{destination.name}.{os.getpid()}.{secrets.token_hex(4)}.part")

        def fetch(client: genai.Client) -> None:
            with partial.open("wb") as handle:
                client.files.download(file=file_name, destination=handle)
                handle.flush()
                os.fsync(handle.fileno())

        try:
            self._api.call(FILE_DOWNLOAD, f"result file {file_name}", fetch)
        except BaseException:
            partial.unlink(missing_ok=True)
            raise
        partial.replace(destination)

    def delete_file(self, file_name: str) -> None:
        """Best effort: remote files expire after 48 h anyway."""
        with contextlib.suppress(ProviderError):
            self._api.call(FILE_DELETE, file_name, lambda client: client.files.delete(name=file_name))

    def close(self) -> None:
        self._api.close()


def _listed(pager: Pager[T], max_pages: int) -> Iterator[T]:
    """The items of a listing, page by page, at most `max_pages` pages. The live API sends empty pages
    that still carry a nextPageToken, on which the SDK's own iterator raises IndexError: they are read
    past (within the page limit)."""
    for number in range(max_pages):
        yield from pager.page
        if number + 1 == max_pages or not pager.config.get("page_token"):
            return
        pager.next_page()


def _remote(job: types.BatchJob) -> RemoteStatus:
    raw = job.state.value if job.state is not None else "STATE_UNSPECIFIED"
    output = job.dest.file_name if job.dest is not None else None
    return RemoteStatus(
        name=str(job.name),
        display_name=job.display_name,
        state=map_state(str(raw)),
        raw_state=str(raw),
        output_file=output,
        end_time=job.end_time.timestamp() if job.end_time is not None else None,
        update_time=job.update_time.timestamp() if job.update_time is not None else None,
    )
