"""Document metadata end to end: front matter, PDF and Word properties and `kb ingest --meta` are stored flat
per document, a re-ingest changes them without embedding anything again, and `--where` narrows both
rankings (full text and vectors) to the documents that match, exactly."""

import datetime as dt
import json
from pathlib import Path

import pytest

from kb.app import KnowledgeBase
from kb.records import SearchMode
from kb.store import fulltext
from tests.support.documents import docx, pdf
from tests.support.files import write

FOX = "The quick brown fox jumps over the lazy dog near the riverbank."


def _metadata(kb: KnowledgeBase) -> dict[str, dict[str, object]]:
    with kb.open_reader() as reader:
        rows = reader.rows("SELECT source_path, metadata FROM documents")
    return {Path(path).name: json.loads(metadata) for path, metadata in rows}


def _chunks_and_tasks(kb: KnowledgeBase) -> tuple[list[int], int]:
    with kb.open_reader() as reader:
        chunks = [row[0] for row in reader.rows("SELECT id FROM chunks ORDER BY id")]
        tasks = reader.rows("SELECT count(*) FROM embedding_tasks")[0][0]
    return chunks, int(tasks)


def test_front_matter_and_meta_are_stored_the_files_own_winning(kb: KnowledgeBase, tmp_path: Path) -> None:
    write(
        tmp_path / "a.md", f"---\nTags: [API, cli]\nSource: git\nAuthor: {{Name: Ada}}\n---\n# A\n\n{FOX}\n"
    )
    write(tmp_path / "b.md", f"# B\n\n{FOX}\n")
    kb.ingest([tmp_path], meta={"source": "wiki", "project": "kb"})
    assert _metadata(kb) == {
        "a.md": {"tags": ["API", "cli"], "source": "git", "author.name": "Ada", "project": "kb"},
        "b.md": {"source": "wiki", "project": "kb"},
    }


def test_a_new_meta_reaches_unchanged_files_without_new_chunks_or_tasks(
    kb: KnowledgeBase, tmp_path: Path
) -> None:
    write(tmp_path / "a.md", f"# A\n\n{FOX}\n")
    kb.ingest([tmp_path])
    before = _chunks_and_tasks(kb)
    report = kb.ingest([tmp_path], meta={"project": "kb"})
    assert report.unchanged and report.tasks_queued == 0 and report.chunks_written == 0
    assert _metadata(kb) == {"a.md": {"project": "kb"}}
    assert _chunks_and_tasks(kb) == before


def test_changed_front_matter_over_the_same_text_embeds_nothing_again(
    kb: KnowledgeBase, tmp_path: Path
) -> None:
    path = write(tmp_path / "a.md", f"---\ntags: draft\n---\n# A\n\n{FOX}\n")
    kb.ingest([tmp_path])
    kb.worker().run(once=True, timeout_s=60)
    _, tasks = _chunks_and_tasks(kb)
    write(path, f"---\ntags: [published, api]\n---\n# A\n\n{FOX}\n")
    report = kb.ingest([tmp_path])
    assert report.changed and report.tasks_queued == 0
    assert _metadata(kb) == {"a.md": {"tags": ["published", "api"]}}
    assert _chunks_and_tasks(kb)[1] == tasks
    hits = kb.search("quick brown fox", mode="vector", where=["tags=api"]).hits
    assert [Path(hit.path).name for hit in hits] == ["a.md"] and hits[0].metadata["tags"] == [
        "published",
        "api",
    ]


def test_pdf_and_word_properties_are_metadata(kb: KnowledgeBase, tmp_path: Path) -> None:
    info = {
        "Author": "Ada",
        "Subject": "Ops",
        "Keywords": "api, cli; http",
        "CreationDate": "D:20240105103000Z",
    }
    (tmp_path / "report.pdf").write_bytes(pdf([[FOX]], title="Report", info=info))
    properties = {
        "author": "Grace",
        "keywords": "guide",
        "category": "manual",
        "created": dt.datetime(2023, 6, 1, 9, 0),
        "modified": dt.datetime(2023, 7, 1, 9, 0),
    }
    (tmp_path / "guide.docx").write_bytes(docx([("p", FOX)], title="Guide", properties=properties))
    kb.ingest([tmp_path])
    stored = _metadata(kb)
    assert stored["report.pdf"] == {
        "pages": 1,
        "title": "Report",
        "author": "Ada",
        "subject": "Ops",
        "keywords": ["api", "cli", "http"],
        "created": "2024-01-05T10:30:00+00:00",
    }
    assert stored["guide.docx"] == {
        "title": "Guide",
        "author": "Grace",
        "keywords": ["guide"],
        "category": "manual",
        "created": "2023-06-01T09:00:00+00:00",
        "modified": "2023-07-01T09:00:00+00:00",
    }
    found = kb.search("quick fox", mode="text", where=["created>=2024-01-01"]).hits
    assert [Path(hit.path).name for hit in found] == ["report.pdf"]


@pytest.fixture
def tagged(kb: KnowledgeBase, tmp_path: Path) -> KnowledgeBase:
    """40 documents about tides tagged `other` rank above 3 tagged `wanted`, which mention tides less."""
    for tag, files, tide in (("other", 40, 4), ("wanted", 3, 1)):
        for number in range(files):
            sections = [
                f"## Part {number}-{section}\n\n" + "tide " * tide + "filler " * (number * 10 + section)
                for section in range(10)
            ]
            write(tmp_path / tag / f"f{number}.md", f"---\ntag: {tag}\n---\n" + "\n\n".join(sections))
    kb.ingest([tmp_path])
    kb.worker().run(once=True, timeout_s=60)
    return kb


def test_text_search_where_is_the_best_matches_there(tagged: KnowledgeBase) -> None:
    """As with `--path`: ranked first, filtered after, widening as needed; the hits are exactly the best
    matches among the documents that match, when the best matches overall are all elsewhere."""
    with tagged.open_reader() as reader:
        everything = fulltext.search(reader, "tide", 10_000)
        wanted_documents = {
            int(row[0]) for row in reader.rows("SELECT id FROM documents WHERE source_path LIKE '%/wanted/%'")
        }
        document_of = dict(reader.rows("SELECT id, document_id FROM chunks"))
        wanted = [hit for hit in everything if document_of[hit[0]] in wanted_documents]
        for limit in (5, 10, 40):
            assert fulltext.search(reader, "tide", limit, documents=wanted_documents) == wanted[:limit]
    hits = tagged.search("tide", mode="text", k=10, where={"tag": "wanted"}).hits
    assert len({hit.path for hit in hits}) == 3 and all("/wanted/" in hit.path for hit in hits)


@pytest.mark.parametrize("mode", list(SearchMode))
def test_every_mode_finds_only_the_documents_that_match(tagged: KnowledgeBase, mode: SearchMode) -> None:
    result = tagged.search("tide filler", mode=mode, k=5, where=["tag=wanted"])
    assert result.used == mode and 3 <= len(result.hits) <= 5
    assert all(hit.metadata == {"tag": "wanted"} for hit in result.hits)
    nothing = tagged.search("tide filler", mode=mode, where=["tag=nowhere"])
    assert nothing.hits == [] and nothing.notes == ["no document has metadata matching tag=nowhere"]
