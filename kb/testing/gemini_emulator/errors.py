"""API errors as the state raises them: an HTTP code, a google.rpc canonical status, a message and details.

`wire.error_body` renders them in Google's `{"error": {...}}` envelope.
"""

import math
from typing import Any

CANONICAL_STATUS = {
    400: "INVALID_ARGUMENT",
    401: "UNAUTHENTICATED",
    403: "PERMISSION_DENIED",
    404: "NOT_FOUND",
    408: "DEADLINE_EXCEEDED",
    409: "ALREADY_EXISTS",
    429: "RESOURCE_EXHAUSTED",
    499: "CANCELLED",
    500: "INTERNAL",
    501: "UNIMPLEMENTED",
    502: "UNAVAILABLE",
    503: "UNAVAILABLE",
    504: "DEADLINE_EXCEEDED",
}

DEFAULT_MESSAGES = {
    400: "Request contains an invalid argument.",
    401: "Request had invalid authentication credentials.",
    403: "The caller does not have permission",
    404: "Requested entity was not found.",
    408: "Request timed out.",
    409: "Requested entity already exists.",
    429: (
        "You exceeded your current quota, please check your plan and billing details. For more information "
        "on this error, head to: https://ai.google.dev/gemini-api/docs/rate-limits."
    ),
    499: "The operation was cancelled.",
    500: (
        "An internal error has occurred. Please retry or report in "
        "https://developers.generativeai.google/guide/troubleshooting"
    ),
    501: "Method not implemented.",
    502: "Bad Gateway",
    503: "The model is overloaded. Please try again later.",
    504: "Deadline expired before operation could complete.",
}

TYPE_PREFIX = "type.googleapis.com/google.rpc."


class ApiError(Exception):
    """An error response. `status` defaults to the canonical code for the HTTP code."""

    def __init__(
        self,
        code: int,
        message: str | None = None,
        *,
        status: str | None = None,
        details: list[dict[str, Any]] | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        self.code = code
        self.message = message or DEFAULT_MESSAGES.get(code, "Unknown error.")
        self.status = status or CANONICAL_STATUS.get(code, "UNKNOWN")
        self.details = details or []
        self.headers = headers or {}
        super().__init__(f"{code} {self.status}: {self.message}")


def invalid_argument(message: str, field: str | None = None) -> ApiError:
    details = None
    if field is not None:
        violation = {"field": field, "description": message}
        details = [{"@type": TYPE_PREFIX + "BadRequest", "fieldViolations": [violation]}]
    return ApiError(400, message, details=details)


def failed_precondition(message: str) -> ApiError:
    return ApiError(400, message, status="FAILED_PRECONDITION")


def not_found(message: str) -> ApiError:
    return ApiError(404, message)


def permission_denied(message: str) -> ApiError:
    return ApiError(403, message)


def resource_exhausted(message: str) -> ApiError:
    return ApiError(429, message)


def api_key_invalid() -> ApiError:
    message = "API key not valid. Please pass a valid API key."
    details: list[dict[str, Any]] = [
        {
            "@type": TYPE_PREFIX + "ErrorInfo",
            "reason": "API_KEY_INVALID",
            "domain": "googleapis.com",
            "metadata": {"service": "generativelanguage.googleapis.com"},
        },
        {"@type": TYPE_PREFIX + "LocalizedMessage", "locale": "en-US", "message": message},
    ]
    return ApiError(400, message, details=details)


def api_key_missing() -> ApiError:
    return permission_denied(
        "Method doesn't allow unregistered callers (callers without established identity). "
        "Please use API Key or other form of API consumer identity to call this API."
    )


def model_not_found(model: str, api_version: str, method: str) -> ApiError:
    return not_found(
        f"models/{model} is not found for API version {api_version}, or is not supported for {method}. "
        "Call ListModels to see the list of available models and their supported methods."
    )


def fault_error(code: int, message: str | None, model: str | None, retry_delay: str | None) -> ApiError:
    """The error a scripted fault answers with: a 429 carries QuotaFailure and Help like the live one."""
    details: list[dict[str, Any]] = []
    if code == 429:
        details += _quota_details(model)
    if retry_delay is not None:
        details.append({"@type": TYPE_PREFIX + "RetryInfo", "retryDelay": retry_delay})
    headers = {} if retry_delay is None else {"Retry-After": str(math.ceil(float(retry_delay[:-1])))}
    return ApiError(code, message, details=details, headers=headers)


def _quota_details(model: str | None) -> list[dict[str, Any]]:
    violation = {
        "quotaMetric": "generativelanguage.googleapis.com/embed_content_free_tier_requests",
        "quotaId": "EmbedContentRequestsPerMinutePerProjectPerModel-FreeTier",
        "quotaDimensions": {"location": "global", "model": model or "gemini-embedding-001"},
        "quotaValue": "100",
    }
    link = {
        "description": "Learn more about Gemini API quotas",
        "url": "https://ai.google.dev/gemini-api/docs/rate-limits",
    }
    return [
        {"@type": TYPE_PREFIX + "QuotaFailure", "violations": [violation]},
        {"@type": TYPE_PREFIX + "Help", "links": [link]},
    ]
