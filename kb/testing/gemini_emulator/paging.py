"""List pagination with opaque page tokens (an offset, base64-encoded so clients cannot rely on it)."""

import base64
from collections.abc import Sequence
from typing import TypeVar

from .errors import invalid_argument

T = TypeVar("T")


def paginate(
    items: Sequence[T], page_size: int | None, page_token: str | None, *, default: int, maximum: int
) -> tuple[list[T], str | None]:
    """One page of `items` and the token of the next page (None on the last page)."""
    size = default if not page_size or page_size <= 0 else min(page_size, maximum)
    start = _offset(page_token) if page_token else 0
    stop = start + size
    next_token = _token(stop) if stop < len(items) else None
    return list(items[start:stop]), next_token


def first_page_token() -> str:
    """A token for the first page (what `paginate` reads as no token)."""
    return _token(0)


def _token(offset: int) -> str:
    return base64.urlsafe_b64encode(f"offset:{offset}".encode()).decode().rstrip("=")


def _offset(token: str) -> int:
    try:
        decoded = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)).decode()
        label, value = decoded.split(":")
        if label == "offset" and int(value) >= 0:
            return int(value)
    except ValueError:
        pass
    raise invalid_argument("Invalid page token.", "page_token")
