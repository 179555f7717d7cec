"""Real PDF and Word files made by the tests: text-layer PDFs written object by object (so a page holds
exactly the lines given), scanned-like PDFs without a text layer, encrypted and broken files."""

from io import BytesIO


def pdf(pages: list[list[str]], *, title: str | None = None, info: dict[str, str] | None = None) -> bytes:
    """A PDF whose page n shows the lines of `pages[n]` in Helvetica, top to bottom; a page given no
    lines is a drawing only (a box), as a scanned page without a text layer is to a text extractor.
    `info`: more document properties, e.g. {"Author": "Ada", "CreationDate": "D:20240105103000Z"}."""
    objects: list[bytes] = [b"<< /Type /Catalog /Pages 2 0 R >>", b""]
    page_ids: list[int] = []
    font_id = 3
    objects.append(b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>")
    for lines in pages:
        stream = _text_stream(lines) if lines else b"0.5 g 72 72 468 648 re f"
        objects.append(b"<< /Length %d >>\nstream\n%s\nendstream" % (len(stream), stream))
        content_id = len(objects)
        objects.append(
            b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents %d 0 R "
            b"/Resources << /Font << /F1 %d 0 R >> >> >>" % (content_id, font_id)
        )
        page_ids.append(len(objects))
    kids = b" ".join(b"%d 0 R" % page_id for page_id in page_ids)
    objects[1] = b"<< /Type /Pages /Kids [%s] /Count %d >>" % (kids, len(page_ids))
    properties = ({"Title": title} if title is not None else {}) | (info or {})
    info_id = None
    if properties:
        entries = b" ".join(b"/%s (%s)" % (k.encode(), _literal(v)) for k, v in properties.items())
        objects.append(b"<< %s >>" % entries)
        info_id = len(objects)
    return _assemble(objects, info_id)


def _text_stream(lines: list[str]) -> bytes:
    shown = b" T* ".join(b"(%s) Tj" % _literal(line) for line in lines)
    return b"BT /F1 11 Tf 14 TL 72 740 Td " + shown + b" ET"


def _literal(text: str) -> bytes:
    escaped = text.replace("\\", "\\\\").replace("(", "\\(").replace(")", "\\)")
    return escaped.encode("latin-1")


def _assemble(objects: list[bytes], info: int | None) -> bytes:
    out = BytesIO()
    out.write(b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n")
    offsets: list[int] = []
    for number, body in enumerate(objects, start=1):
        offsets.append(out.tell())
        out.write(b"%d 0 obj\n%s\nendobj\n" % (number, body))
    xref = out.tell()
    out.write(b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1))
    for offset in offsets:
        out.write(b"%010d 00000 n \n" % offset)
    trailer = b"/Size %d /Root 1 0 R" % (len(objects) + 1)
    if info is not None:
        trailer += b" /Info %d 0 R" % info
    out.write(b"trailer\n<< %s >>\nstartxref\n%d\n%%%%EOF\n" % (trailer, xref))
    return out.getvalue()


def with_bookmarks(data: bytes, bookmarks: list[tuple[str, int]]) -> bytes:
    """The PDF with top-level bookmarks (title, 0-based page), written by pypdf."""
    from pypdf import PdfReader, PdfWriter

    writer = PdfWriter(clone_from=PdfReader(BytesIO(data)))
    for title, page in bookmarks:
        writer.add_outline_item(title=title, page_number=page)
    out = BytesIO()
    writer.write(out)
    return out.getvalue()


def encrypted(data: bytes, password: str = "s3cret") -> bytes:
    """The PDF encrypted with AES-256 (pypdf), readable only with the password."""
    from pypdf import PdfReader, PdfWriter

    writer = PdfWriter(clone_from=PdfReader(BytesIO(data)))
    writer.encrypt(password, algorithm="AES-256")
    out = BytesIO()
    writer.write(out)
    return out.getvalue()


def docx(
    blocks: list[tuple[str, str]], *, title: str | None = None, properties: dict[str, object] | None = None
) -> bytes:
    """A Word file (python-docx): ("h1".."h3", text) headings, ("p", text) paragraphs, ("li", text) list
    items, ("table", "a|b;c|d") a table of rows split by ";" and cells by "|". `properties`: more core
    properties, e.g. {"author": "Ada", "created": datetime(...)}."""
    from docx import Document

    document = Document()
    if title is not None:
        document.core_properties.title = title
    for name, value in (properties or {}).items():
        setattr(document.core_properties, name, value)
    for kind, text in blocks:
        if kind.startswith("h"):
            document.add_heading(text, level=int(kind[1:]))
        elif kind == "li":
            document.add_paragraph(text, style="List Bullet")
        elif kind == "table":
            rows = [row.split("|") for row in text.split(";")]
            table = document.add_table(rows=len(rows), cols=len(rows[0]))
            for row, cells in zip(table.rows, rows, strict=True):
                for cell, value in zip(row.cells, cells, strict=True):
                    cell.text = value
        else:
            document.add_paragraph(text)
    out = BytesIO()
    document.save(out)
    return out.getvalue()
