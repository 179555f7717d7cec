"""Batch results: parse result lines (JSONL, one per request key) and classify per-key errors. Pure.

Embedding lines carry vectors (`parse_lines`); generation lines carry GenerateContentResponses
(`parse_generation_lines`, and `read_generation` for one response, online or in a line).
"""

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from enum import StrEnum

import orjson

from kb.records import Generated


class ErrorKind(StrEnum):
    TRANSIENT = "transient"  # retry later: quota, overload, internal error
    PERMANENT = "permanent"  # retrying cannot help: dead letter with the reason
    TOO_LONG = "too_long"  # the text exceeds the model's input limit


def saved_name(display_name: str) -> str:
    """The file, in the results folder, that a job's results are saved to before they are applied."""
    return f"{display_name}.results.jsonl"


@dataclass(frozen=True, slots=True)
class ResultItem:
    key: str
    values: list[float] | None
    error_code: int | None = None
    error_message: str | None = None
    token_count: int | None = None


@dataclass(frozen=True, slots=True)
class BadLine:
    line_number: int
    reason: str


# google.rpc.Code values: which per-item failures are worth another try.
_TRANSIENT_CODES = {1, 2, 4, 8, 10, 13, 14}  # CANCELLED UNKNOWN DEADLINE_EXCEEDED RESOURCE_EXHAUSTED ABORTED
# INTERNAL UNAVAILABLE (and HTTP-style 429/5xx below)
_TOO_LONG_HINTS = ("token", "too long", "exceeds", "input length", "limit")


def classify(code: int | None, message: str | None) -> ErrorKind:
    text = (message or "").lower()
    if code in _TRANSIENT_CODES or (code is not None and (code == 429 or code >= 500)):
        return ErrorKind.TRANSIENT
    if code in (3, 400, 11) and any(hint in text for hint in _TOO_LONG_HINTS):
        return ErrorKind.TOO_LONG
    return ErrorKind.PERMANENT


def parse_lines(lines: Iterable[bytes | str]) -> Iterator[ResultItem | BadLine]:
    """One item per non-empty line, streaming.

    A line is `{"response": {...}, "key": k}` or `{"error": {...}, "key": k}`; an error may also come as
    `{"response": {"error": {...}}, "key": k}`."""
    for number, raw in enumerate(lines, start=1):
        if not raw.strip():
            continue
        try:
            line = orjson.loads(raw)  # 4-5x faster than json on 10,000 lines of 768 floats
        except orjson.JSONDecodeError as error:
            yield BadLine(number, f"not JSON: {error}")
            continue
        if not isinstance(line, dict) or not isinstance(line.get("key"), str):
            yield BadLine(number, "no key")
            continue
        yield _item(line)


def _status(error: dict[str, object]) -> tuple[int | None, str]:
    """A google.rpc.Status's code (when it is a number) and message."""
    code = error.get("code")
    number = int(code) if isinstance(code, int | float | str) and str(code).isdigit() else None
    return number, str(error.get("message") or "unknown error")


def _item(line: dict[str, object]) -> ResultItem:
    key = str(line["key"])
    response = line.get("response")
    error = line.get("error")
    if not isinstance(error, dict) and isinstance(response, dict):
        error = response.get("error")  # a per-key error can come inside the response too
    if isinstance(error, dict):
        code, message = _status(error)
        return ResultItem(key, None, error_code=code, error_message=message)
    embedding = response.get("embedding") if isinstance(response, dict) else None
    values = embedding.get("values") if isinstance(embedding, dict) else None
    if not isinstance(values, list):
        return ResultItem(key, None, error_code=None, error_message="result has no embedding")
    return ResultItem(key, values, token_count=_token_count(response))


def _token_count(response: object) -> int | None:
    if not isinstance(response, dict):
        return None
    count = response.get("tokenCount")
    if count is None:
        usage = response.get("usageMetadata")
        count = usage.get("promptTokenCount") if isinstance(usage, dict) else None
    try:
        return int(count) if count is not None else None
    except (TypeError, ValueError):
        return None


# -- generation results -------------------------------------------------------------------------------------

# A candidate that ends so has a usable text (MAX_TOKENS: cut at the output limit, kept as it is).
_TEXT_FINISHES = frozenset({"STOP", "MAX_TOKENS", "FINISH_REASON_UNSPECIFIED"})


@dataclass(frozen=True, slots=True)
class GenerationItem:
    """One key of a generation batch: the text and its tokens, or why there is none (`classify` says
    whether trying again may help: a blocked prompt or a safety stop has no code, so it is permanent)."""

    key: str
    generated: Generated | None
    error_code: int | None = None
    error_message: str | None = None


def parse_generation_lines(lines: Iterable[bytes | str]) -> Iterator[GenerationItem | BadLine]:
    """One item per non-empty line, streaming. A line is `{"response": GenerateContentResponse, "key": k}`
    or a per-key error as `{"error": Status, "key": k}` or `{"status": Status or text, "key": k}`; a
    response without a usable text is that key's error, never a crash."""
    for number, raw in enumerate(lines, start=1):
        if not raw.strip():
            continue
        try:
            line = orjson.loads(raw)
        except orjson.JSONDecodeError as error:
            yield BadLine(number, f"not JSON: {error}")
            continue
        if not isinstance(line, dict) or not isinstance(line.get("key"), str):
            yield BadLine(number, "no key")
            continue
        yield _generation_item(line)


def read_generation(response: object) -> Generated | str:
    """The text of a GenerateContentResponse and its token counts, or why it has no usable text."""
    if not isinstance(response, dict):
        return "the answer is not a GenerateContentResponse"
    feedback = response.get("promptFeedback")
    if isinstance(feedback, dict) and feedback.get("blockReason"):
        return f"the prompt was blocked ({feedback['blockReason']})"
    candidates = response.get("candidates")
    if not isinstance(candidates, list) or not candidates or not isinstance(candidates[0], dict):
        return "the answer has no candidates"
    candidate = candidates[0]
    finish = str(candidate.get("finishReason") or "FINISH_REASON_UNSPECIFIED")
    text = _candidate_text(candidate)
    if finish not in _TEXT_FINISHES:
        return f"the answer stopped for {finish}" + ("" if text else ", with no text")
    if not text.strip():
        return f"the answer has no text (finishReason {finish})"
    usage = response.get("usageMetadata")
    usage = usage if isinstance(usage, dict) else {}
    output = _count(usage.get("candidatesTokenCount")) + _count(usage.get("thoughtsTokenCount"))
    return Generated(text, _count(usage.get("promptTokenCount")), output)


def _generation_item(line: dict[str, object]) -> GenerationItem:
    key = str(line["key"])
    response = line.get("response")
    error = line.get("error") or line.get("status")
    if error is None and isinstance(response, dict):
        error = response.get("error")  # a per-key error can come inside the response too
    if isinstance(error, dict):
        code, message = _status(error)
        return GenerationItem(key, None, error_code=code, error_message=message)
    if isinstance(error, str):  # a status written as text ("Bad Request: {...}")
        return GenerationItem(key, None, error_message=error)
    outcome = read_generation(response)
    if isinstance(outcome, str):
        return GenerationItem(key, None, error_message=outcome)
    return GenerationItem(key, outcome)


def _candidate_text(candidate: dict[str, object]) -> str:
    """The answer's text parts joined, without thought summaries (parts marked `thought`)."""
    content = candidate.get("content")
    parts = content.get("parts") if isinstance(content, dict) else None
    if not isinstance(parts, list):
        return ""
    return "".join(
        str(part["text"])
        for part in parts
        if isinstance(part, dict) and isinstance(part.get("text"), str) and not part.get("thought")
    )


def _count(value: object) -> int:
    try:
        return int(value) if isinstance(value, int | str) else 0
    except ValueError:
        return 0
