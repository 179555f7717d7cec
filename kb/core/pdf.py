"""PDF documents: the text layer of each page, with where each page starts, so every chunk knows its pages.

Reads with pypdf (the `kb[pdf]` extra; BSD). Only the text layer: a scanned PDF without one is skipped with
that reason, as kb does no OCR. The bookmarks (outline), when the PDF has them, become headings at the
start of the page they point to, so chunks get a heading path at page precision. Encrypted, truncated and
malformed files raise `UnreadableDocument` with a reason for the ingest summary; nothing here writes.
"""

import logging
import re
import unicodedata
from collections.abc import Callable, Iterator
from datetime import datetime
from io import BytesIO
from typing import TYPE_CHECKING, Any

from kb.core.formats import (
    Converted,
    UnreadableDocument,
    atx_heading,
    collapse_whitespace,
    escape_markdown_structure,
)
from kb.core.metadata import keywords

if TYPE_CHECKING:
    from pypdf import PdfReader

EXTRA_HINT = "PDF support is not installed (pip install 'kb[pdf]')"
NO_TEXT_LAYER = "no text layer (OCR is not supported)"

# pypdf logs a warning for every recoverable quirk of real-world PDFs; what matters reaches the user as the
# file's skip reason instead.
logging.getLogger("pypdf").setLevel(logging.ERROR)

_BLANK_RUNS = re.compile(r"\n[ \t]*\n(?:[ \t]*\n)+")
_TRAILING_SPACE = re.compile(r"[ \t]+\n")
_MAX_OUTLINE_DEPTH = 6


def pdf_document(data: bytes) -> Converted:
    """The document's text, page after page, with each page's start offset and the PDF's title."""
    reader = _open(data)
    headings = _outline_by_page(reader)
    parts: list[str] = []
    page_starts: list[int] = []
    offset = 0
    has_text = False
    for number, page_text in enumerate(_page_texts(reader)):
        has_text = has_text or bool(page_text)
        block = "\n\n".join([*headings.get(number, []), page_text]).strip("\n")
        page_starts.append(offset)  # an empty page starts where the next one does
        if block:
            parts.append(block)
            offset += len(block) + 2  # the blank line that joins pages
    if not has_text:
        raise UnreadableDocument(NO_TEXT_LAYER)
    return Converted("\n\n".join(parts), _title(reader), _metadata(reader), tuple(page_starts))


def _open(data: bytes) -> "PdfReader":
    try:
        from pypdf import PdfReader
    except ImportError:
        raise UnreadableDocument(EXTRA_HINT) from None
    if b"%PDF-" not in data[:1024]:  # where readers look for the header (junk may come first)
        raise UnreadableDocument("not a PDF (no %PDF- header)")
    try:
        reader = PdfReader(BytesIO(data))
        if reader.is_encrypted and not reader.decrypt(""):
            raise UnreadableDocument("encrypted (a password is needed to read it)")
        len(reader.pages)  # reads the page tree: a truncated file fails here, not halfway through
    except UnreadableDocument:
        raise
    except Exception as error:  # pypdf raises many types on broken files; each is a skip, not a crash
        raise UnreadableDocument(_broken(error)) from None
    return reader


def _page_texts(reader: "PdfReader") -> Iterator[str]:
    for number, page in enumerate(reader.pages, start=1):
        try:
            raw = page.extract_text()
        except Exception as error:
            raise UnreadableDocument(f"page {number}: {_broken(error)}") from None
        yield _clean(raw)


def _clean(raw: str) -> str:
    """NFC, no NULs or trailing spaces, at most one blank line in a row, Markdown structure escaped."""
    text = unicodedata.normalize("NFC", raw.replace("\x00", "").replace("\r\n", "\n").replace("\r", "\n"))
    text = _BLANK_RUNS.sub("\n\n", _TRAILING_SPACE.sub("\n", text + "\n")).strip()
    return escape_markdown_structure(text)


def _outline_by_page(reader: "PdfReader") -> dict[int, list[str]]:
    """Heading lines from the bookmarks, by the 0-based page they point to; none when they are unreadable."""
    headings: dict[int, list[str]] = {}
    try:
        for depth, item in _walk_outline(reader.outline, 1):
            page = reader.get_destination_page_number(item)
            title = collapse_whitespace(str(item.title or ""))
            if page is not None and page >= 0 and title:
                headings.setdefault(page, []).append(atx_heading(depth, title))
    except Exception:  # bookmarks are a bonus: a broken outline must not cost the text
        return {}
    return headings


def _walk_outline(items: list[Any], depth: int) -> Iterator[tuple[int, Any]]:
    """(depth, destination) in reading order; pypdf nests a bookmark's children in the list after it."""
    for item in items:
        if isinstance(item, list):
            if depth < _MAX_OUTLINE_DEPTH:
                yield from _walk_outline(item, depth + 1)
        else:
            yield depth, item


def _title(reader: "PdfReader") -> str | None:
    try:
        title = reader.metadata.title if reader.metadata else None
    except Exception:
        return None
    return (collapse_whitespace(str(title)) or None) if title else None


def _metadata(reader: "PdfReader") -> dict[str, object]:
    """The page count and the document properties: title, author, subject, keywords (a list), created,
    modified (ISO moments). A property that cannot be read is left out; the document is kept."""
    metadata: dict[str, object] = {"pages": len(reader.pages)}
    try:
        info = reader.metadata
    except Exception:
        return metadata
    if info is None:
        return metadata
    for key, read in _PROPERTIES:
        try:
            value = read(info)
        except Exception:  # a broken entry (a malformed date, say) loses itself, not the others
            continue
        if isinstance(value, datetime):
            metadata[key] = value.isoformat()
        elif value and collapse_whitespace(str(value)):
            text = collapse_whitespace(str(value))
            metadata[key] = keywords(text) if key == "keywords" else text
    return metadata


_PROPERTIES: tuple[tuple[str, Callable[[Any], object]], ...] = (
    ("title", lambda info: info.title),
    ("author", lambda info: info.author),
    ("subject", lambda info: info.subject),
    ("keywords", lambda info: info.keywords),
    ("created", lambda info: info.creation_date),
    ("modified", lambda info: info.modification_date),
)


def _broken(error: Exception) -> str:
    detail = collapse_whitespace(str(error))[:160]
    return f"not a readable PDF ({type(error).__name__}{': ' + detail if detail else ''})"
