"""Request JSON -> plain request objects, the way a proto3 JSON server reads it.

Every field is accepted in lowerCamelCase and in snake_case (the SDK sends both); int fields also as strings.
Shape errors (unknown fields, bad enum values, wrong types) are whole-request 400s with Google's wording;
semantic limits (dimensions, token counts, item counts) are the state's business.
"""

import json
import re
from dataclasses import dataclass
from typing import Any

from .errors import ApiError, invalid_argument

TASK_TYPES = frozenset(
    {
        "TASK_TYPE_UNSPECIFIED",
        "RETRIEVAL_QUERY",
        "RETRIEVAL_DOCUMENT",
        "SEMANTIC_SIMILARITY",
        "CLASSIFICATION",
        "CLUSTERING",
        "QUESTION_ANSWERING",
        "FACT_VERIFICATION",
        "CODE_RETRIEVAL_QUERY",
    }
)
_EMBED_REQUEST_FIELDS = frozenset({"model", "content", "taskType", "title", "outputDimensionality"})
# GenerateContentRequest (ai.google.dev/api/generate-content); the emulator reads contents, the system
# instruction, maxOutputTokens and cachedContent, and accepts the rest without acting on it.
_GENERATE_REQUEST_FIELDS = frozenset(
    {
        "model",
        "contents",
        "systemInstruction",
        "generationConfig",
        "safetySettings",
        "tools",
        "toolConfig",
        "cachedContent",
        "labels",
        "serviceTier",
    }
)
_TASK_TYPE_PROTO = "type.googleapis.com/google.ai.generativelanguage.v1beta.TaskType"
_CAMEL_HUMP = re.compile(r"(?<!^)(?=[A-Z])")


@dataclass(frozen=True)
class EmbedItem:
    """One EmbedContentRequest. `text` joins the text parts of its content with spaces."""

    text: str
    task_type: str | None = None
    title: str | None = None
    dimensions: int | None = None
    model: str | None = None


@dataclass(frozen=True)
class GenerateItem:
    """One GenerateContentRequest. `prompt` joins the text parts of every content with newlines; `text` is
    what billing and token budgets count (the system instruction too)."""

    prompt: str
    system: str = ""
    max_output_tokens: int | None = None
    cached_content: str | None = None
    model: str | None = None

    @property
    def text(self) -> str:
        return f"{self.system}\n{self.prompt}" if self.system else self.prompt


@dataclass(frozen=True)
class InlineEntry:
    item: EmbedItem
    metadata: Any = None


@dataclass(frozen=True)
class GenerateEntry:
    item: GenerateItem
    metadata: Any = None


@dataclass(frozen=True)
class BatchSpec:
    """An asyncBatchEmbedContent body: exactly one of `inline` and `file_name` is set."""

    display_name: str | None
    inline: list[InlineEntry] | None
    file_name: str | None


@dataclass(frozen=True)
class GenerateBatchSpec:
    """A batchGenerateContent body: exactly one of `inline` and `file_name` is set."""

    display_name: str | None
    inline: list[GenerateEntry] | None
    file_name: str | None


@dataclass(frozen=True)
class FileLine:
    """One line of a JSONL batch input: a request, or why it could not be read."""

    key: Any
    item: EmbedItem | None
    error: str | None = None


@dataclass(frozen=True)
class GenerateLine:
    """One line of a JSONL generation batch input: a request, or why it could not be read."""

    key: Any
    item: GenerateItem | None
    error: str | None = None


@dataclass(frozen=True)
class UploadMeta:
    file_id: str | None
    display_name: str | None
    mime_type: str | None
    size_bytes: int | None


def snake_case(name: str) -> str:
    return _CAMEL_HUMP.sub("_", name).lower()


def camel_case(name: str) -> str:
    head, *tail = name.split("_")
    return head + "".join(word.capitalize() for word in tail)


def get_field(message: dict[str, Any], camel: str) -> Any:
    """A field by its lowerCamelCase name or its snake_case name."""
    if camel in message:
        return message[camel]
    return message.get(snake_case(camel))


def parse_json(raw: bytes) -> Any:
    if not raw.strip():
        return {}
    try:
        return json.loads(raw)
    except json.JSONDecodeError as error:
        raise invalid_argument(f"Invalid JSON payload received. {error.msg}.") from None
    except UnicodeDecodeError:
        raise invalid_argument("Invalid JSON payload received. Invalid UTF-8.") from None


def parse_embed_request(message: Any, where: str, *, strict_fields: bool = True) -> EmbedItem:
    request = _require_object(message, where)
    if strict_fields:
        _reject_unknown_fields(request, _EMBED_REQUEST_FIELDS, where)
    return EmbedItem(
        text=_content_text(get_field(request, "content"), _at(where, "content")),
        task_type=_task_type(get_field(request, "taskType"), _at(where, "task_type")),
        title=_optional_string(get_field(request, "title"), _at(where, "title")),
        dimensions=_optional_int(
            get_field(request, "outputDimensionality"), _at(where, "output_dimensionality")
        ),
        model=_optional_string(get_field(request, "model"), _at(where, "model")),
    )


def parse_batch_embed(body: Any, *, strict_fields: bool = True) -> list[EmbedItem]:
    requests = get_field(_require_object(body, ""), "requests")
    if requests is None:
        return []
    if not isinstance(requests, list):
        raise invalid_argument(_invalid_value("requests", requests, "TYPE_MESSAGE"), "requests")
    return [
        parse_embed_request(request, f"requests[{index}]", strict_fields=strict_fields)
        for index, request in enumerate(requests)
    ]


def content_texts(content: Any) -> list[str]:
    """The text parts of a Content (non-text parts carry nothing this emulator embeds)."""
    if not isinstance(content, dict):
        return []
    parts = content.get("parts")
    if not isinstance(parts, list):
        return []
    return [part["text"] for part in parts if isinstance(part, dict) and isinstance(part.get("text"), str)]


def parse_count_tokens(body: Any) -> list[str]:
    request = _require_object(body, "")
    wrapped = get_field(request, "generateContentRequest")
    contents = get_field(wrapped if isinstance(wrapped, dict) else request, "contents")
    if not isinstance(contents, list):
        raise invalid_argument("* CountTokensRequest.contents: contents is not specified", "contents")
    return [text for content in contents for text in content_texts(content)]


def parse_batch_create(body: Any, *, strict_fields: bool = True) -> BatchSpec:
    batch = get_field(_require_object(body, ""), "batch")
    if not isinstance(batch, dict):
        raise invalid_argument("* AsyncBatchEmbedContentRequest.batch: batch is required", "batch")
    input_config = get_field(batch, "inputConfig")
    if not isinstance(input_config, dict):
        raise invalid_argument(
            "* EmbedContentBatch.input_config: input_config is required", "batch.input_config"
        )
    file_name = _optional_string(get_field(input_config, "fileName"), "batch.input_config.file_name")
    requests = get_field(input_config, "requests")
    if (file_name is None) == (requests is None):
        raise invalid_argument(
            "* EmbedContentBatch.input_config: exactly one of file_name and requests must be set",
            "batch.input_config",
        )
    display_name = _optional_string(get_field(batch, "displayName"), "batch.display_name")
    inline = None if requests is None else _inline_entries(requests, strict_fields)
    return BatchSpec(display_name=display_name, inline=inline, file_name=file_name)


def parse_jsonl(data: bytes, *, strict_fields: bool = True) -> list[FileLine]:
    """Each non-blank line `{"key": ..., "request": EmbedContentRequest}`; a bad line becomes an error."""
    lines: list[FileLine] = []
    for number, raw_line in enumerate(data.splitlines(), start=1):
        if raw_line.strip():
            lines.append(_file_line(raw_line, number, strict_fields))
    return lines


def parse_upload_start(body: Any, headers: dict[str, str]) -> UploadMeta:
    file = get_field(body, "file") if isinstance(body, dict) else None
    file = file if isinstance(file, dict) else {}
    name = _optional_string(get_field(file, "name"), "file.name")
    size = headers.get("x-goog-upload-header-content-length") or get_field(file, "sizeBytes")
    mime = headers.get("x-goog-upload-header-content-type") or get_field(file, "mimeType")
    return UploadMeta(
        file_id=None if name is None else name.removeprefix("files/"),
        display_name=_optional_string(get_field(file, "displayName"), "file.display_name"),
        mime_type=_optional_string(mime, "file.mime_type"),
        size_bytes=_optional_int(size, "file.size_bytes"),
    )


def parse_generate_request(message: Any, where: str, *, strict_fields: bool = True) -> GenerateItem:
    request = _require_object(message, where)
    if strict_fields:
        _reject_unknown_fields(request, _GENERATE_REQUEST_FIELDS, where)
    contents = get_field(request, "contents")
    if not isinstance(contents, list) or not contents:
        raise invalid_argument(f"* {_at(where, 'contents')}: contents is not specified", "contents")
    texts = [_content_text(content, _at(where, f"contents[{n}]")) for n, content in enumerate(contents)]
    system = get_field(request, "systemInstruction")
    config = get_field(request, "generationConfig")
    config = _require_object(config, _at(where, "generation_config")) if config is not None else {}
    return GenerateItem(
        prompt="\n".join(texts),
        system="" if system is None else _content_text(system, _at(where, "system_instruction")),
        max_output_tokens=_optional_int(
            get_field(config, "maxOutputTokens"), _at(where, "generation_config.max_output_tokens")
        ),
        cached_content=_optional_string(get_field(request, "cachedContent"), _at(where, "cached_content")),
        model=_optional_string(get_field(request, "model"), _at(where, "model")),
    )


def parse_generate_batch_create(body: Any, *, strict_fields: bool = True) -> GenerateBatchSpec:
    """`{"batch": {"inputConfig": {"fileName": ...} | {"requests": {"requests": [...]}}, "displayName"}}`."""
    batch = get_field(_require_object(body, ""), "batch")
    if not isinstance(batch, dict):
        raise invalid_argument("* BatchGenerateContentRequest.batch: batch is required", "batch")
    input_config = get_field(batch, "inputConfig")
    if not isinstance(input_config, dict):
        raise invalid_argument(
            "* GenerateContentBatch.input_config: input_config is required", "batch.input_config"
        )
    file_name = _optional_string(get_field(input_config, "fileName"), "batch.input_config.file_name")
    requests = get_field(input_config, "requests")
    if (file_name is None) == (requests is None):
        raise invalid_argument(
            "* GenerateContentBatch.input_config: exactly one of file_name and requests must be set",
            "batch.input_config",
        )
    display_name = _optional_string(get_field(batch, "displayName"), "batch.display_name")
    inline = None if requests is None else _generate_entries(requests, strict_fields)
    return GenerateBatchSpec(display_name=display_name, inline=inline, file_name=file_name)


def parse_generate_jsonl(data: bytes, *, strict_fields: bool = True) -> list[GenerateLine]:
    """Each non-blank line `{"key": ..., "request": GenerateContentRequest}`; a bad line becomes an error."""
    lines: list[GenerateLine] = []
    for number, raw_line in enumerate(data.splitlines(), start=1):
        if raw_line.strip():
            lines.append(_generate_line(raw_line, number, strict_fields))
    return lines


def _generate_line(raw_line: bytes, number: int, strict_fields: bool) -> GenerateLine:
    try:
        line = json.loads(raw_line)
    except (json.JSONDecodeError, UnicodeDecodeError):
        return GenerateLine(key=None, item=None, error=f"Line {number}: invalid JSON.")
    if not isinstance(line, dict):
        return GenerateLine(key=None, item=None, error=f"Line {number}: expected a JSON object.")
    key = line.get("key")
    if "request" not in line:
        return GenerateLine(key=key, item=None, error=f"Line {number}: missing field 'request'.")
    try:
        item = parse_generate_request(line["request"], "request", strict_fields=strict_fields)
    except ApiError as error:  # in a file, a bad request fails its line, not the job
        return GenerateLine(key=key, item=None, error=error.message)
    return GenerateLine(key=key, item=item)


def _generate_entries(requests: Any, strict_fields: bool) -> list[GenerateEntry]:
    where = "batch.input_config.requests"
    listed = get_field(_require_object(requests, where), "requests")
    if not isinstance(listed, list):
        return []
    entries = []
    for index, entry in enumerate(listed):
        entry_where = f"{where}.requests[{index}]"
        wrapper = _require_object(entry, entry_where)
        item = parse_generate_request(
            get_field(wrapper, "request"), f"{entry_where}.request", strict_fields=strict_fields
        )
        entries.append(GenerateEntry(item=item, metadata=get_field(wrapper, "metadata")))
    return entries


def _file_line(raw_line: bytes, number: int, strict_fields: bool) -> FileLine:
    try:
        line = json.loads(raw_line)
    except (json.JSONDecodeError, UnicodeDecodeError):
        return FileLine(key=None, item=None, error=f"Line {number}: invalid JSON.")
    if not isinstance(line, dict):
        return FileLine(key=None, item=None, error=f"Line {number}: expected a JSON object.")
    key = line.get("key")
    if "request" not in line:
        return FileLine(key=key, item=None, error=f"Line {number}: missing field 'request'.")
    try:
        item = parse_embed_request(line["request"], "request", strict_fields=strict_fields)
    except ApiError as error:  # in a file, a bad request fails its line, not the job
        return FileLine(key=key, item=None, error=error.message)
    return FileLine(key=key, item=item)


def _inline_entries(requests: Any, strict_fields: bool) -> list[InlineEntry]:
    where = "batch.input_config.requests"
    listed = get_field(_require_object(requests, where), "requests")
    if listed is None:
        return []
    if not isinstance(listed, list):
        raise invalid_argument(
            _invalid_value(f"{where}.requests", listed, "TYPE_MESSAGE"), f"{where}.requests"
        )
    entries = []
    for index, entry in enumerate(listed):
        entry_where = f"{where}.requests[{index}]"
        wrapper = _require_object(entry, entry_where)
        item = parse_embed_request(
            get_field(wrapper, "request"), f"{entry_where}.request", strict_fields=strict_fields
        )
        entries.append(InlineEntry(item=item, metadata=get_field(wrapper, "metadata")))
    return entries


def _at(where: str, name: str) -> str:
    return f"{where}.{name}" if where else name


def _invalid_value(where: str, value: Any, proto_type: str) -> str:
    return f"Invalid value at '{where}' ({proto_type}), {json.dumps(value)}"


def _require_object(value: Any, where: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise invalid_argument(_invalid_value(where or "(root)", value, "TYPE_MESSAGE"), where or None)
    return value


def _reject_unknown_fields(message: dict[str, Any], known: frozenset[str], where: str) -> None:
    for name in message:
        if camel_case(name) not in known:
            raise invalid_argument(
                f"Invalid JSON payload received. Unknown name \"{name}\" at '{where}': Cannot find field.",
                where,
            )


def _content_text(content: Any, where: str) -> str:
    if content is None:
        raise invalid_argument(f"* {where}: content is required", where)
    content = _require_object(content, where)
    parts = content.get("parts")
    if not isinstance(parts, list) or not parts:
        raise invalid_argument(f"* {where}.parts: contents.parts must not be empty.", f"{where}.parts")
    for index, part in enumerate(parts):
        _require_object(part, f"{where}.parts[{index}]")
        text = part.get("text")
        if text is not None and not isinstance(text, str):
            field = f"{where}.parts[{index}].text"
            raise invalid_argument(_invalid_value(field, text, "TYPE_STRING"), field)
    return " ".join(content_texts(content))


def _task_type(value: Any, where: str) -> str | None:
    if value is None:
        return None
    if value not in TASK_TYPES:
        raise invalid_argument(_invalid_value(where, value, _TASK_TYPE_PROTO), where)
    return str(value)


def _optional_string(value: Any, where: str) -> str | None:
    if value is None or isinstance(value, str):
        return value
    raise invalid_argument(_invalid_value(where, value, "TYPE_STRING"), where)


def _optional_int(value: Any, where: str) -> int | None:
    """proto3 JSON accepts int32/int64 as numbers or decimal strings."""
    if value is None:
        return None
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str) and re.fullmatch(r"-?\d+", value):
        return int(value)
    raise invalid_argument(_invalid_value(where, value, "TYPE_INT32"), where)
