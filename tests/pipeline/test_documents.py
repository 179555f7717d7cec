"""PDF and Word documents end to end: real files made by the tests are ingested, embedded by the local
model and found again; a PDF hit names its page, a Word hit its heading path; files kb cannot read are
skipped with their reason and nothing else in the run is affected."""

import json
import shutil
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from kb.app import KnowledgeBase
from kb.cli.commands import app
from kb.core.chunking import TextChunk, with_pages
from kb.records import SearchMode
from kb.settings import KbSettings
from tests.support.documents import docx, encrypted, pdf, with_bookmarks
from tests.support.files import write

FILLER = [
    "Section {page}.{n} restates the policy in plain words for every reader of the handbook.",
    "Each team lead keeps a copy of section {page}.{n} and answers questions about it.",
]
ZEBRA = "The zebra migration census is counted by volunteers every April at dawn."


def _page(number: int, extra: str | None = None) -> list[str]:
    lines = [FILLER[n % 2].format(page=number, n=n) for n in range(12)]
    if extra is not None:
        lines.insert(6, extra)
    return lines


def _report_pdf() -> bytes:
    return pdf([_page(1), _page(2, ZEBRA), _page(3)], title="Field Report")


def _handbook_docx() -> bytes:
    return docx(
        [
            ("h1", "Leave policy"),
            ("p", "Everyone gets twenty-five days of paid leave a year."),
            ("h2", "Carrying leave over"),
            ("p", "Up to five unused days of leave carry over into the first quarter of the next year."),
            ("li", "Ask your lead before the end of December."),
            ("h1", "Expenses"),
            ("table", "Item|Limit;Hotel night|180 EUR;Train|second class"),
        ],
        title="Staff Handbook",
    )


@pytest.fixture
def small_chunks(db_path: Path) -> KbSettings:
    return KbSettings(db=db_path, provider="local", chunk_target_tokens=64, chunk_max_tokens=128)


def _ingest_and_embed(kb: KnowledgeBase, *paths: Path) -> None:
    kb.ingest(list(paths))
    kb.worker().run(once=True, timeout_s=60)


def test_a_pdf_hit_names_its_page(small_chunks: KbSettings, tmp_path: Path) -> None:
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "report.pdf").write_bytes(_report_pdf())
    with KnowledgeBase(settings=small_chunks) as kb:
        _ingest_and_embed(kb, tmp_path / "docs")
        for mode in (SearchMode.HYBRID, SearchMode.TEXT, SearchMode.VECTOR):
            top = kb.search("zebra migration census volunteers", k=3, mode=mode).hits[0]
            assert top.path.endswith("report.pdf") and ZEBRA in top.text, mode
            assert (top.page_start, top.page_end) == (2, 2), mode
        assert kb.status().documents == 1


def test_pages_are_stored_and_searched_on_both_backends(backend: KbSettings, tmp_path: Path) -> None:
    settings = backend.model_copy(update={"chunk_target_tokens": 64, "chunk_max_tokens": 128})
    (tmp_path / "report.pdf").write_bytes(_report_pdf())
    with KnowledgeBase(settings=settings) as kb:
        _ingest_and_embed(kb, tmp_path / "report.pdf")
        hits = kb.search("zebra migration census volunteers", k=3, mode=SearchMode.HYBRID).hits
    assert ZEBRA in hits[0].text and (hits[0].page_start, hits[0].page_end) == (2, 2)
    assert all(hit.page_start is not None and hit.page_end is not None for hit in hits)


def test_search_output_cites_the_page(small_chunks: KbSettings, tmp_path: Path, runner: CliRunner) -> None:
    (tmp_path / "report.pdf").write_bytes(_report_pdf())
    with KnowledgeBase(settings=small_chunks) as kb:
        _ingest_and_embed(kb, tmp_path / "report.pdf")
    env = {"KB_DB": str(small_chunks.db), "KB_PROVIDER": "local"}
    found = runner.invoke(app, ["search", "zebra migration census", "-k", "1", "--json"], env=env)
    assert found.exit_code == 0, found.output
    [hit] = json.loads(found.stdout)
    assert (hit["page_start"], hit["page_end"]) == (2, 2) and hit["title"] == "Field Report"
    shown = runner.invoke(app, ["search", "zebra migration census", "-k", "1"], env=env)
    assert "report.pdf, page 2" in shown.stdout


def test_word_headings_become_the_heading_path(kb: KnowledgeBase, tmp_path: Path) -> None:
    (tmp_path / "handbook.docx").write_bytes(_handbook_docx())
    _ingest_and_embed(kb, tmp_path / "handbook.docx")
    hits = kb.search("how many unused leave days carry over", k=5, mode=SearchMode.TEXT).hits
    assert hits and hits[0].title == "Staff Handbook"
    assert "five unused days" in hits[0].text
    assert hits[0].page_start is None
    # The handbook's sections are tiny, so they join their siblings: the Expenses heading is in the text.
    hits = kb.search("hotel night limit", k=5, mode=SearchMode.TEXT).hits
    assert any("Expenses" in hit.heading or "Expenses" in hit.text for hit in hits)


def test_pdf_bookmarks_become_headings(small_chunks: KbSettings, tmp_path: Path) -> None:
    marked = with_bookmarks(_report_pdf(), [("Overview", 0), ("Wildlife counts", 1), ("Appendix", 2)])
    (tmp_path / "marked.pdf").write_bytes(marked)
    with KnowledgeBase(settings=small_chunks) as kb:
        kb.ingest([tmp_path / "marked.pdf"])
        [top] = kb.search("zebra migration census", k=1, mode=SearchMode.TEXT).hits
    assert top.heading == "Wildlife counts" and top.page_start == 2


def test_unreadable_files_are_skipped_with_their_reason_and_the_rest_is_stored(
    kb: KnowledgeBase, tmp_path: Path
) -> None:
    folder = tmp_path / "mixed"
    folder.mkdir()
    write(folder / "notes.md", "# Notes\n\nThe good file is stored whatever happens to the others.\n")
    report = _report_pdf()
    files = {
        "scanned.pdf": pdf([[], []]),
        "locked.pdf": encrypted(report),
        "truncated.pdf": report[: len(report) // 2],
        "not-really.pdf": b"just some text saved with the wrong name\n",
        "locked.docx": b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1" + b"\x00" * 504,
        "broken.docx": _handbook_docx()[:700],
        "old.doc": b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1" + b"\x00" * 504,
    }
    for name, data in files.items():
        (folder / name).write_bytes(data)
    first = kb.ingest([folder])
    reasons = {Path(skipped.path).name: skipped.reason for skipped in first.skipped}
    assert reasons["scanned.pdf"] == "no text layer (OCR is not supported)"
    assert reasons["locked.pdf"] == "encrypted (a password is needed to read it)"
    assert reasons["truncated.pdf"].startswith("not a readable PDF (")
    assert reasons["not-really.pdf"] == "not a PDF (no %PDF- header)"
    assert reasons["locked.docx"].startswith("encrypted, or a legacy .doc file")
    assert reasons["broken.docx"].startswith("not a readable Word document (")
    assert reasons["old.doc"] == "unsupported file type '.doc' (legacy Word format; save it as .docx)"
    assert [Path(path).name for path in first.added] == ["notes.md"]
    # The same folder again, now with a readable PDF too: the stored note is untouched.
    (folder / "report.pdf").write_bytes(report)
    second = kb.ingest([folder])
    assert [Path(path).name for path in second.added] == ["report.pdf"]
    assert [Path(path).name for path in second.unchanged] == ["notes.md"]
    assert kb.status().documents == 2


def test_unchanged_and_copied_documents_cost_nothing(kb: KnowledgeBase, tmp_path: Path) -> None:
    folder = tmp_path / "docs"
    folder.mkdir()
    (folder / "report.pdf").write_bytes(_report_pdf())
    (folder / "handbook.docx").write_bytes(_handbook_docx())
    first = kb.ingest([folder])
    assert len(first.added) == 2 and first.tasks_queued > 0
    again = kb.ingest([folder])
    assert len(again.unchanged) == 2 and again.tasks_queued == 0 and again.chunks_written == 0
    shutil.copy(folder / "report.pdf", folder / "report-copy.pdf")
    copied = kb.ingest([folder])
    assert [Path(path).name for path in copied.added] == ["report-copy.pdf"]
    assert copied.chunks_written > 0 and copied.tasks_queued == 0  # same texts: nothing new to pay for


def test_without_the_extra_the_file_is_skipped_naming_it(
    kb: KnowledgeBase, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "report.pdf").write_bytes(_report_pdf())
    (tmp_path / "handbook.docx").write_bytes(_handbook_docx())
    monkeypatch.setitem(sys.modules, "pypdf", None)  # as if `kb[pdf]` were not installed
    monkeypatch.setitem(sys.modules, "docx", None)
    report = kb.ingest([tmp_path / "report.pdf", tmp_path / "handbook.docx"])
    reasons = sorted(skipped.reason for skipped in report.skipped)
    assert reasons == [
        "PDF support is not installed (pip install 'kb[pdf]')",
        "Word support is not installed (pip install 'kb[office]')",
    ]


def test_a_pdf_from_stdin(runner: CliRunner, db_path: Path) -> None:
    env = {"KB_DB": str(db_path), "KB_PROVIDER": "local"}
    result = runner.invoke(
        app, ["ingest", "-", "--stdin-name", "piped.pdf", "--json"], input=_report_pdf(), env=env
    )
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["added"] == 1


@pytest.mark.parametrize(
    ("start", "end", "pages"),
    [(0, 10, (1, 1)), (10, 30, (1, 3)), (20, 21, (3, 3)), (40, 60, (4, 4)), (19, 20, (1, 1))],
)
def test_chunks_know_the_pages_they_span(start: int, end: int, pages: tuple[int, int]) -> None:
    chunk = TextChunk(0, "x" * (end - start), (), start, end, 1)
    [paged] = with_pages([chunk], [0, 20, 20, 40])  # page 2 is empty: it starts where page 3 does
    assert (paged.page_start, paged.page_end) == pages
