"""The Gemini API endpoints (moto's `responses.py`): HTTP request in, HTTP response out, state in between.

Order per call: route -> refresh jobs -> API key -> scripted fault -> endpoint. Every call is logged, faulted
and failed ones included. Everything runs under the state's lock except the latency sleep (in `server`).
"""

from collections.abc import Callable
from typing import Any

from . import control, wire
from .errors import ApiError, fault_error, invalid_argument, not_found
from .faults import Fault
from .jobs import BatchJob
from .messages import HttpRequest, HttpResponse, error_response, json_response
from .models import bare_model_name
from .paging import first_page_token, paginate
from .parsing import (
    EmbedItem,
    UploadMeta,
    parse_batch_create,
    parse_batch_embed,
    parse_count_tokens,
    parse_embed_request,
    parse_generate_batch_create,
    parse_generate_jsonl,
    parse_generate_request,
    parse_json,
    parse_jsonl,
    parse_upload_start,
)
from .records import REDACTED, LoggedRequest
from .routing import Target, resolve
from .state import EmulatorState
from .tokens import count_tokens

CHUNK_GRANULARITY = 8 * 1024 * 1024
_SECRET_HEADERS = ("x-goog-api-key", "authorization")


def handle(state: EmulatorState, request: HttpRequest) -> HttpResponse:
    target = resolve(request.method, request.path)
    if target.control is not None:
        return control.handle(state, request.method, target, request.body)
    with state.lock:
        return _Call(state, request, target).serve()


class _Call:
    """One API call: serves it and logs it."""

    def __init__(self, state: EmulatorState, request: HttpRequest, target: Target) -> None:
        self.state = state
        self.request = request
        self.target = target
        self.version = target.api_version or ""
        self.arrival = state.clock.now()
        self._json: Any = None
        self._json_parsed = False

    @property
    def base_url(self) -> str:
        return f"http://{self.request.host}{self.target.prefix}"

    @property
    def model(self) -> str:
        return bare_model_name(self.target.params.get("model", ""))

    def serve(self) -> HttpResponse:
        try:
            response = self._respond()
        except ApiError as error:
            response = error_response(error, self._upload_status_header())
        self.state.log.append(self._log_entry(response.status))
        return response

    def _respond(self) -> HttpResponse:
        route = self.target.route
        if route is None or self.version not in self.state.settings.api_versions:
            raise not_found(f"The emulator serves no {self.request.method} {self.target.path}.")
        served = self.state.settings.route_versions.get(route)
        if served is not None and self.version not in served:
            page = wire.unknown_url_page(self.target.path)
            return HttpResponse(404, page.encode(), "text/html; charset=UTF-8")
        self.state.refresh()
        if not self._is_upload_chunk():
            self.state.check_api_key(self._api_key())
        fault = self.state.faults.take(route, self._logged_model(), self.arrival)
        if fault is not None and not fault.passes_through:
            return self._fault_response(fault)
        response = _ENDPOINTS[route](self)
        if fault is not None:
            response.delay_s = fault.latency_s
        return response

    def _fault_response(self, fault: Fault) -> HttpResponse:
        if fault.disconnect:
            return HttpResponse(499, delay_s=fault.latency_s, disconnect=True)
        if fault.html_body:
            page = fault.html_body if isinstance(fault.html_body, str) else wire.html_error_page(fault.status)
            return HttpResponse(
                fault.status, page.encode(), "text/html; charset=UTF-8", delay_s=fault.latency_s
            )
        error = fault_error(fault.status, fault.message, self._logged_model(), fault.retry_delay)
        response = error_response(error)
        response.delay_s = fault.latency_s
        return response

    # Request helpers -------------------------------------------------------------------------------------

    def json(self) -> Any:
        """The body as JSON; a 400 if it is not JSON."""
        return parse_json(self.request.body)

    def lenient_json(self) -> Any:
        if not self._json_parsed:
            self._json_parsed = True
            try:
                carries_json = self.request.body and self._carries_json()
                self._json = parse_json(self.request.body) if carries_json else None
            except ApiError:
                self._json = None
        return self._json

    def _carries_json(self) -> bool:
        content_type = self.request.headers.get("content-type", "")
        return not self._is_upload_chunk() and (not content_type or "json" in content_type)

    def _is_upload_chunk(self) -> bool:
        return self.target.route == "files.upload" and "upload_id" in self.target.query

    def quirk(self, name: str) -> bool:
        """Whether a scripted quirk fault answers this call oddly (see `Fault.quirk`)."""
        route = self.target.route or ""
        return self.state.faults.take(route, self._logged_model(), self.arrival, quirk=name) is not None

    def _api_key(self) -> str | None:
        return self.request.headers.get("x-goog-api-key") or self.target.query.get("key")

    def _upload_status_header(self) -> dict[str, str]:
        """Upload errors say `final`: without any status the SDK re-posts the chunk after 1, 2 and 4 s."""
        return {"X-Goog-Upload-Status": "final"} if self.target.route == "files.upload" else {}

    def check_payload(self, limit: int) -> None:
        if len(self.request.body) > limit:
            raise invalid_argument(f"Request payload size exceeds the limit: {limit} bytes.")

    def page_args(self) -> tuple[int | None, str | None]:
        size = self.target.query.get("pageSize") or self.target.query.get("page_size")
        token = self.target.query.get("pageToken") or self.target.query.get("page_token")
        if size is not None and not size.isdigit():
            raise invalid_argument(f"Invalid value at 'page_size' (TYPE_INT32), \"{size}\"", "page_size")
        return (None if size is None else int(size)), token

    # Logging ----------------------------------------------------------------------------------------------

    def _logged_model(self) -> str | None:
        if self.model:
            return self.model
        job = self.state.batches.get(self.target.params.get("batch", ""))
        return None if job is None else job.model

    def _log_entry(self, status: int) -> LoggedRequest:
        items = self._logged_items()
        return LoggedRequest(
            method=self.request.method,
            path=self.target.path,
            route=self.target.route or "unknown",
            model=self._logged_model(),
            status=status,
            api_version=self.target.api_version,
            body=self.lenient_json(),
            texts=[item.text for item in items],
            task_types=[item.task_type or "TASK_TYPE_UNSPECIFIED" for item in items],
            dimensions=[item.dimensions for item in items],
            item_count=len(items),
            headers={
                name: REDACTED if name in _SECRET_HEADERS else value
                for name, value in self.request.headers.items()
            },
            time=self.arrival,
            query={name: REDACTED if name == "key" else value for name, value in self.target.query.items()},
        )

    def _logged_items(self) -> list[EmbedItem]:
        """The items of an embedding request, read leniently: a request that got a 400 is still described."""
        body = self.lenient_json()
        if not isinstance(body, dict):
            return []
        try:
            return _describe(self.target.route, body, self.state)
        except ApiError:
            return []


def _describe(route: str | None, body: dict[str, Any], state: EmulatorState) -> list[EmbedItem]:
    if route == "batchEmbedContents":
        return parse_batch_embed(body, strict_fields=False)
    if route == "embedContent":
        return [parse_embed_request(body, "", strict_fields=False)]
    if route == "countTokens":
        return [EmbedItem(text) for text in parse_count_tokens(body)]
    if route == "asyncBatchEmbedContent":
        spec = parse_batch_create(body, strict_fields=False)
        if spec.inline is not None:
            return [entry.item for entry in spec.inline]
        stored = state.files.find(spec.file_name or "")
        lines = [] if stored is None else parse_jsonl(stored.data, strict_fields=False)
        return [line.item or EmbedItem("") for line in lines]
    if route == "generateContent":  # prompts are logged as the request's texts
        return [EmbedItem(parse_generate_request(body, "", strict_fields=False).text)]
    if route == "batchGenerateContent":
        generate_spec = parse_generate_batch_create(body, strict_fields=False)
        if generate_spec.inline is not None:
            return [EmbedItem(entry.item.text) for entry in generate_spec.inline]
        stored = state.files.find(generate_spec.file_name or "")
        prompts = [] if stored is None else parse_generate_jsonl(stored.data, strict_fields=False)
        return [EmbedItem(line.item.text if line.item else "") for line in prompts]
    return []


# Endpoints ------------------------------------------------------------------------------------------------


def _batch_embed_contents(call: _Call) -> HttpResponse:
    call.check_payload(call.state.settings.max_payload_bytes)
    items = parse_batch_embed(call.json(), strict_fields=call.state.settings.strict_fields)
    rule = call.state.served_model(call.model, call.version, "embedContent")
    vectors = call.state.batch_embed(rule, items)
    answer: dict[str, Any] = {"embeddings": [wire.values_json(values) for values in vectors]}
    if rule.reports_usage:
        answer["usageMetadata"] = {"promptTokenCount": sum(count_tokens(item.text) for item in items)}
    return json_response(answer)


def _embed_content(call: _Call) -> HttpResponse:
    call.check_payload(call.state.settings.max_payload_bytes)
    item = parse_embed_request(call.json(), "", strict_fields=call.state.settings.strict_fields)
    rule = call.state.served_model(call.model, call.version, "embedContent")
    return json_response({"embedding": wire.values_json(call.state.embed_one(rule, item))})


def _count_tokens(call: _Call) -> HttpResponse:
    texts = parse_count_tokens(call.json())
    call.state.served_model(call.model, call.version, "countTokens")
    return json_response({"totalTokens": sum(count_tokens(text) for text in texts)})


def _async_batch_embed(call: _Call) -> HttpResponse:
    call.check_payload(call.state.settings.max_inline_batch_bytes)
    spec = parse_batch_create(call.json(), strict_fields=call.state.settings.strict_fields)
    rule = call.state.served_model(call.model, call.version, "asyncBatchEmbedContent")
    return json_response(wire.operation(call.state.create_batch(rule, spec)))


def _generate_content(call: _Call) -> HttpResponse:
    call.check_payload(call.state.settings.max_inline_batch_bytes)  # generateContent takes up to 20 MB
    item = parse_generate_request(call.json(), "", strict_fields=call.state.settings.strict_fields)
    rule = call.state.served_model(call.model, call.version, "generateContent")
    answer = call.state.generate_one(rule, item)
    return json_response(wire.generate_response(answer, rule.name, call.state.new_id(22)))


def _batch_generate_content(call: _Call) -> HttpResponse:
    call.check_payload(call.state.settings.max_inline_batch_bytes)
    spec = parse_generate_batch_create(call.json(), strict_fields=call.state.settings.strict_fields)
    rule = call.state.served_model(call.model, call.version, "batchGenerateContent")
    return json_response(wire.operation(call.state.create_generate_batch(rule, spec)))


def _get_model(call: _Call) -> HttpResponse:
    rule = call.state.served_model(call.model, call.version, "get")
    return json_response(wire.model_resource(rule))


def _list_models(call: _Call) -> HttpResponse:
    page, token = paginate(call.state.models.served(), *call.page_args(), default=50, maximum=1000)
    return _listing("models", [wire.model_resource(rule) for rule in page], token)


def _get_batch(call: _Call) -> HttpResponse:
    return json_response(wire.operation(call.state.batch(call.target.params["batch"])))


def _list_batches(call: _Call) -> HttpResponse:
    if call.quirk("empty_page"):
        return _empty_page(call, "operations")
    jobs: list[BatchJob] = call.state.batch_listing()
    page, token = paginate(jobs, *call.page_args(), default=50, maximum=1000)
    return _listing("operations", [wire.operation(job, with_output=False) for job in page], token)


def _cancel_batch(call: _Call) -> HttpResponse:
    call.state.cancel_batch(call.target.params["batch"])
    return json_response({})


def _delete_batch(call: _Call) -> HttpResponse:
    call.state.delete_batch(call.target.params["batch"])
    return json_response({})


def _upload(call: _Call) -> HttpResponse:
    upload_id = call.target.query.get("upload_id")
    if upload_id is not None:
        return _upload_chunk(call, upload_id)
    if "start" in call.request.headers.get("x-goog-upload-command", "").lower():
        return _upload_start(call)
    meta = UploadMeta(None, None, call.request.headers.get("content-type"), len(call.request.body))
    stored = call.state.files.add_uploaded(meta, call.request.body)
    return json_response({"file": wire.file_resource(stored, call.base_url)})


def _upload_start(call: _Call) -> HttpResponse:
    meta = parse_upload_start(call.json(), call.request.headers)
    session = call.state.files.start_upload(meta, call.version)
    url = (
        f"{call.base_url}/upload/{call.version}/files?upload_id={session.upload_id}&upload_protocol=resumable"
    )
    headers = {
        "X-Goog-Upload-Status": "active",
        "X-Goog-Upload-URL": url,
        "X-Goog-Upload-Control-URL": url,
        "X-Goog-Upload-Chunk-Granularity": str(CHUNK_GRANULARITY),
        "X-GUploader-UploadID": session.upload_id,
    }
    return HttpResponse(200, b"", "text/plain; charset=utf-8", headers)


def _upload_chunk(call: _Call, upload_id: str) -> HttpResponse:
    command = call.request.headers.get("x-goog-upload-command", "upload, finalize").lower()
    offset_header = call.request.headers.get("x-goog-upload-offset")
    session = call.state.files.upload_session(upload_id)
    if command == "query" and session is not None:
        received = {"X-Goog-Upload-Size-Received": str(len(session.received))}
        return HttpResponse(200, b"", headers={"X-Goog-Upload-Status": "active", **received})
    offset = int(offset_header) if offset_header and offset_header.isdigit() else None
    stored = call.state.files.upload_chunk(upload_id, offset, call.request.body, "finalize" in command)
    if stored is None:
        return HttpResponse(200, b"", headers={"X-Goog-Upload-Status": "active"})
    payload = {"file": wire.file_resource(stored, call.base_url)}
    if call.quirk("upload_not_final"):  # stored, but the answer says the upload goes on
        return json_response(payload, headers={"X-Goog-Upload-Status": "active"})
    if call.quirk("upload_without_file"):  # stored, but the answer does not say what
        return json_response({}, headers={"X-Goog-Upload-Status": "final"})
    return json_response(payload, headers={"X-Goog-Upload-Status": "final"})


def _get_file(call: _Call) -> HttpResponse:
    stored = call.state.file_for_read(call.target.params["file"], "GetFileRequest")
    return json_response(wire.file_resource(stored, call.base_url))


def _list_files(call: _Call) -> HttpResponse:
    if call.quirk("empty_page"):
        return _empty_page(call, "files")
    page, token = paginate(call.state.files.listing(), *call.page_args(), default=10, maximum=100)
    return _listing("files", [wire.file_resource(stored, call.base_url) for stored in page], token)


def _delete_file(call: _Call) -> HttpResponse:
    stored = call.state.file_for_read(call.target.params["file"], "DeleteFileRequest")
    call.state.files.delete(stored.file_id)
    return json_response({})


def _download_file(call: _Call) -> HttpResponse:
    if call.target.query.get("alt") != "media":
        raise invalid_argument("Downloads need the query parameter alt=media.", "alt")
    stored = call.state.downloadable(call.target.params["file"])
    return HttpResponse(200, stored.data, stored.mime_type)


def _empty_page(call: _Call, key: str) -> HttpResponse:
    """An empty page whose token asks for the page that was asked for (the live API sends such pages)."""
    _, token = call.page_args()
    return _listing(key, [], token or first_page_token())


def _listing(key: str, resources: list[dict[str, Any]], next_token: str | None) -> HttpResponse:
    payload: dict[str, Any] = {key: resources}
    if next_token:
        payload["nextPageToken"] = next_token
    return json_response(payload)


_ENDPOINTS: dict[str, Callable[[_Call], HttpResponse]] = {
    "batchEmbedContents": _batch_embed_contents,
    "embedContent": _embed_content,
    "countTokens": _count_tokens,
    "asyncBatchEmbedContent": _async_batch_embed,
    "generateContent": _generate_content,
    "batchGenerateContent": _batch_generate_content,
    "models.get": _get_model,
    "models.list": _list_models,
    "batches.get": _get_batch,
    "batches.list": _list_batches,
    "batches.cancel": _cancel_batch,
    "batches.delete": _delete_batch,
    "files.upload": _upload,
    "files.get": _get_file,
    "files.list": _list_files,
    "files.delete": _delete_file,
    "files.download": _download_file,
}
