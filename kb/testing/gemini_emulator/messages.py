"""HTTP requests and responses as plain data, between the server plumbing and the endpoint handlers."""

from dataclasses import dataclass, field
from typing import Any

from . import wire
from .errors import ApiError

JSON_TYPE = "application/json; charset=UTF-8"


@dataclass
class HttpRequest:
    method: str
    path: str  # with the query string
    headers: dict[str, str]  # lower-case names
    body: bytes
    host: str  # host:port the client addressed


@dataclass
class HttpResponse:
    status: int
    body: bytes = b""
    content_type: str = JSON_TYPE
    headers: dict[str, str] = field(default_factory=dict)
    delay_s: float = 0.0  # sleep before answering (outside the lock)
    disconnect: bool = False  # close the connection without answering


def json_response(payload: Any, status: int = 200, headers: dict[str, str] | None = None) -> HttpResponse:
    return HttpResponse(status, wire.to_bytes(payload), headers=headers or {})


def error_response(error: ApiError, headers: dict[str, str] | None = None) -> HttpResponse:
    return json_response(wire.error_body(error), error.code, {**error.headers, **(headers or {})})
