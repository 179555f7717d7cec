"""Batch results: parse result lines (JSONL, one per request key) and classify per-key errors. Pure."""

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from enum import StrEnum

import orjson


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


def _item(line: dict[str, object]) -> ResultItem:
    key = str(line["key"])
    response = line.get("response")
    error = line.get("error")
    if not isinstance(error, dict) and isinstance(response, dict):
        error = response.get("error")  # a per-key error can come inside the response too
    if isinstance(error, dict):
        code = error.get("code")
        return ResultItem(
            key,
            None,
            error_code=int(code) if isinstance(code, int | float | str) and str(code).isdigit() else None,
            error_message=str(error.get("message") or "unknown error"),
        )
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
