"""How fast kb reads PDF and Word files: pages (or paragraphs) per second through
`kb.core.sources.load_bytes`, and, when installed, the same PDF through pdfminer.six and markitdown for
comparison.

    .venv/bin/python scripts/bench_documents.py [--pages 300]

The documents are generated (tests/support/documents.py): text-layer pages of 40 lines of prose each, and a
Word file with a heading every 10 paragraphs. Nothing beside the repository is needed.
"""

import argparse
import importlib.util
import sys
import time
from collections.abc import Callable
from io import BytesIO
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from kb.core.sources import LoadedDocument, load_bytes
from tests.support.documents import docx, pdf

LINE = "Line {n} of page {page}: the handbook explains leave, expenses and travel in plain words."


def _timed(read: Callable[[], object], repeat: int = 3) -> float:
    best = float("inf")
    for _ in range(repeat):
        started = time.perf_counter()
        read()
        best = min(best, time.perf_counter() - started)
    return best


def _kb(data: bytes, name: str) -> Callable[[], object]:
    def read() -> object:
        loaded = load_bytes(data, path=Path(name))
        assert isinstance(loaded, LoadedDocument), loaded
        return loaded

    return read


def _pdfminer(data: bytes) -> Callable[[], object]:
    from pdfminer.high_level import extract_text

    return lambda: extract_text(BytesIO(data))


def _markitdown(data: bytes) -> Callable[[], object]:
    from markitdown import MarkItDown, StreamInfo

    converter = MarkItDown()
    return lambda: converter.convert_stream(BytesIO(data), stream_info=StreamInfo(extension=".pdf"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pages", type=int, default=300)
    pages = parser.parse_args().pages
    report = pdf([[LINE.format(n=n, page=page) for n in range(40)] for page in range(1, pages + 1)])
    blocks: list[tuple[str, str]] = []
    for n in range(pages * 10):
        if n % 10 == 0:
            blocks.append(("h2", f"Section {n // 10}"))
        blocks.append(("p", LINE.format(n=n, page=n // 10)))
    word = docx(blocks)
    sizes = f"PDF: {pages} pages, {len(report) / 1e6:.1f} MB"
    print(f"{sizes}; Word: {len(blocks):,} paragraphs, {len(word) / 1e3:.0f} kB")
    readers: list[tuple[str, Callable[[], object], int, str]] = [
        ("kb PDF (pypdf)", _kb(report, "report.pdf"), pages, "pages"),
        ("kb Word (python-docx)", _kb(word, "report.docx"), len(blocks), "paragraphs"),
    ]
    if importlib.util.find_spec("pdfminer"):
        readers.append(("pdfminer.six extract_text", _pdfminer(report), pages, "pages"))
    if importlib.util.find_spec("markitdown"):
        readers.append(("markitdown (PDF)", _markitdown(report), pages, "pages"))
    baseline = None
    for name, read, units, unit in readers:
        seconds = _timed(read)
        if unit == "pages":
            baseline = baseline or seconds
        ratio = f"  {seconds / baseline:.2f}x kb's time" if unit == "pages" and baseline else ""
        print(f"{name:<28} {seconds:7.3f} s  {units / seconds:9,.0f} {unit}/s{ratio}")


if __name__ == "__main__":
    main()
