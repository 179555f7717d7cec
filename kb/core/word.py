"""Word documents (.docx): paragraphs, headings and tables in reading order, as Markdown-like text.

Reads with python-docx (the `kb[office]` extra; MIT). Heading styles (Title, Heading 1-9) become Markdown
headings, so chunks get the document's heading path; list paragraphs become list items; a table becomes one
line per row. Encrypted, legacy (.doc) and malformed files raise `UnreadableDocument` with a reason.
"""

import re
import zipfile
from io import BytesIO
from typing import TYPE_CHECKING

from kb.core.formats import (
    Converted,
    UnreadableDocument,
    atx_heading,
    collapse_whitespace,
    escape_markdown_structure,
)
from kb.core.metadata import keywords

if TYPE_CHECKING:
    from docx.document import Document
    from docx.table import Table
    from docx.text.paragraph import Paragraph

EXTRA_HINT = "Word support is not installed (pip install 'kb[office]')"
# Password-protected .docx files, and legacy .doc files, are OLE compound files, not ZIP packages.
_OLE_MAGIC = b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1"
# A .docx is a ZIP: refuse one that would expand past this (a ZIP bomb), before python-docx inflates it.
MAX_EXPANDED_BYTES = 1 << 30
_HEADING_STYLE = re.compile(r"^heading ([1-9])$", re.IGNORECASE)
_BLANK_RUNS = re.compile(r"\n{3,}")


def docx_document(data: bytes) -> Converted:
    document = _open(data)
    reading = _Reading({style.style_id: style.name or "" for style in document.styles})
    blocks = [reading.block(item) for item in document.iter_inner_content()]
    text = _BLANK_RUNS.sub("\n\n", "\n\n".join(block for block in blocks if block)).strip()
    if not text:
        raise UnreadableDocument("no text in the Word document")
    title = collapse_whitespace(document.core_properties.title or "") or reading.title
    return Converted(text, title, _metadata(document))


def _open(data: bytes) -> "Document":
    try:
        import docx
    except ImportError:
        raise UnreadableDocument(EXTRA_HINT) from None
    if data.startswith(_OLE_MAGIC):
        raise UnreadableDocument("encrypted, or a legacy .doc file (save it as an unprotected .docx)")
    try:
        with zipfile.ZipFile(BytesIO(data)) as package:
            expanded = sum(entry.file_size for entry in package.infolist())
        if expanded > MAX_EXPANDED_BYTES:
            raise UnreadableDocument(f"expands to {expanded / (1 << 30):.1f} GiB (over the 1 GiB limit)")
        return docx.Document(BytesIO(data))
    except UnreadableDocument:
        raise
    except Exception as error:  # zipfile, lxml and python-docx raise many types on broken files
        detail = collapse_whitespace(str(error))[:160]
        raise UnreadableDocument(f"not a readable Word document ({type(error).__name__}: {detail})") from None


class _Reading:
    """Paragraphs and tables to text, in one pass that also finds the first Title paragraph.

    Style names come from a table built once: python-docx's `Paragraph.style` scans every style of the
    document for each paragraph (6 s for 8,000 paragraphs); the paragraph's style id is one attribute.
    """

    def __init__(self, style_names: dict[str, str]) -> None:
        from docx.table import Table

        self._style_names = style_names
        self._table_type = Table
        self.title: str | None = None

    def block(self, item: "Paragraph | Table") -> str:
        return _table(item) if isinstance(item, self._table_type) else self._paragraph(item)

    def _paragraph(self, paragraph: "Paragraph") -> str:
        text = collapse_whitespace(paragraph.text)
        if not text:
            return ""
        style_id = paragraph._p.style  # the w:pStyle value (see the class docstring)
        style = self._style_names.get(style_id or "", "")
        level = _heading_level(style)
        if level is not None:
            if style.lower() == "title" and self.title is None:
                self.title = text
            return atx_heading(level, text)
        if style.lower().startswith("list"):
            return "- " + text
        return escape_markdown_structure(text)


def _heading_level(style: str) -> int | None:
    if style.lower() == "title":
        return 1
    match = _HEADING_STYLE.match(style)
    return int(match[1]) if match else None


def _table(table: "Table") -> str:
    """One line per row, cells joined by " | "; merged cells (repeated by python-docx) once."""
    lines: list[str] = []
    for row in table.rows:
        cells: list[str] = []
        for cell in row.cells:
            text = collapse_whitespace(cell.text)
            if text and (not cells or cells[-1] != text):
                cells.append(text)
        if cells:
            lines.append(escape_markdown_structure(" | ".join(cells)))
    return "\n".join(lines)


def _metadata(document: "Document") -> dict[str, object]:
    """The core properties: title, author, subject, keywords (a list), category, created, modified."""
    properties = document.core_properties
    metadata: dict[str, object] = {}
    for key in ("title", "author", "subject", "keywords", "category"):
        text = collapse_whitespace(getattr(properties, key) or "")
        if text:
            metadata[key] = keywords(text) if key == "keywords" else text
    for key in ("created", "modified"):
        moment = getattr(properties, key)
        if moment is not None:
            metadata[key] = moment.isoformat()
    return metadata
