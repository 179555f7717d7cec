"""Ingest end to end through the library: idempotence, content addressing, prune, dry run."""

import hashlib
import json
import os
from pathlib import Path

import sqlalchemy as sa
from typer.testing import CliRunner

from kb.app import KnowledgeBase
from kb.cli.commands import app
from kb.core.sources import text_to_path
from tests.support.files import HANDBOOK, write
from tests.unit.test_sources import write_deep, write_raw

SECTIONED = """# Guide

Intro paragraph about the guide.

## Installing

Install it with pip. This paragraph talks about installation.

Second installation paragraph, about virtual environments.

## Configuring

Set KB_DB to choose the database. This paragraph is about configuration.

## Searching

Run kb search with a question. This paragraph is about search.
"""


def _hashes_by_heading(kb: KnowledgeBase) -> set[tuple[str, str]]:
    with kb.engine.connect() as connection:
        rows = connection.exec_driver_sql("SELECT heading_path, text_sha256 FROM chunks")
        return {(row[0], row[1]) for row in rows}


def _files_digest(db: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(db.parent.glob(db.name + "*"))}


def test_corpus_ingest_then_reingest_is_a_no_op(kb: KnowledgeBase, db_path: Path) -> None:
    markdown_files = sorted(HANDBOOK.rglob("*.md"))
    first = kb.ingest([HANDBOOK])
    assert len(first.added) == len(markdown_files)
    assert first.skipped == []
    status = kb.status()
    assert status.documents == len(markdown_files)
    assert status.chunks == first.chunks_written > len(markdown_files)
    distinct_texts = _scalar(kb, "SELECT count(DISTINCT text_sha256) FROM chunks")
    assert status.tasks["pending"] == first.tasks_queued == distinct_texts
    kb.close()

    before = _files_digest(db_path)
    with KnowledgeBase(settings=kb.settings) as again:
        second = again.ingest([HANDBOOK])
    assert len(second.unchanged) == len(markdown_files)
    assert second.counts() == {
        "added": 0,
        "changed": 0,
        "unchanged": len(markdown_files),
        "removed": 0,
        "skipped": 0,
    }
    assert second.chunks_written == second.tasks_queued == 0
    assert _files_digest(db_path) == before


def test_editing_one_paragraph_changes_only_that_section(kb: KnowledgeBase, tmp_path: Path) -> None:
    doc = write(tmp_path / "docs" / "guide.md", SECTIONED)
    kb.ingest([doc.parent])
    before = _hashes_by_heading(kb)
    write(doc, SECTIONED.replace("Set KB_DB to choose", "Set KB_DB (or --db) to choose"))
    report = kb.ingest([doc.parent])
    after = _hashes_by_heading(kb)
    assert report.changed == [str(doc)]
    changed_headings = {heading for heading, _ in before ^ after}
    assert changed_headings == {"Guide > Configuring"}
    assert report.tasks_queued == len(after - before) == 1
    # The replaced text was never embedded, so its pending task is dropped: nobody pays for it.
    assert _scalar(kb, "SELECT count(*) FROM embedding_tasks") == len({sha for _, sha in after})


def test_same_text_in_two_documents_is_one_task(kb: KnowledgeBase, tmp_path: Path) -> None:
    write(tmp_path / "d" / "a.md", "# A\n\nShared paragraph.\n")
    write(tmp_path / "d" / "b.md", "# A\n\nShared paragraph.\n")
    report = kb.ingest([tmp_path / "d"])
    assert len(report.added) == 2
    assert kb.status().chunks == 2
    assert report.tasks_queued == 1


def test_touched_file_is_unchanged_and_not_reread(kb: KnowledgeBase, tmp_path: Path) -> None:
    doc = write(tmp_path / "d" / "a.md", "# A\n\nText.\n")
    kb.ingest([doc])
    os.utime(doc, ns=(1_000_000_000, 1_000_000_000))
    report = kb.ingest([doc])
    assert report.unchanged == [str(doc)] and report.chunks_written == 0
    stored = _scalar(kb, "SELECT mtime_ns FROM documents")
    assert stored == 1_000_000_000


def test_prune_removes_vanished_files_and_their_unpaid_tasks(kb: KnowledgeBase, tmp_path: Path) -> None:
    folder = tmp_path / "d"
    keep = write(folder / "keep.md", "# Keep\n\nKept text.\n")
    gone = write(folder / "gone.md", "# Gone\n\nText that goes away.\n")
    paid = write(folder / "paid.md", "# Paid\n\nText whose vector was paid for.\n")
    kb.ingest([folder])
    with kb.engine.begin() as connection:
        connection.exec_driver_sql(
            "UPDATE embedding_tasks SET status = 'embedded' WHERE text_sha256 IN "
            "(SELECT c.input_sha256 FROM chunks c JOIN documents d ON d.id = c.document_id "
            " WHERE d.source_path = ?)",
            (str(paid),),
        )
    gone.unlink()
    paid.unlink()
    without_prune = kb.ingest([folder])
    assert without_prune.removed == [] and kb.status().documents == 3
    report = kb.ingest([folder], prune=True)
    assert sorted(report.removed) == sorted([str(gone), str(paid)])
    assert _scalar(kb, "SELECT count(*) FROM documents") == 1
    statuses = _column(kb, "SELECT status FROM embedding_tasks ORDER BY status")
    assert statuses == ["embedded", "pending"]  # the paid vector is kept; the unpaid task is gone
    assert keep.exists()


def test_dry_run_writes_nothing(kb: KnowledgeBase, tmp_path: Path) -> None:
    long_enough = (
        "a sentence that is long enough to make a chunk of its own"  # tiny sections join their neighbour
    )
    write(tmp_path / "d" / "a.md", f"# A\n\nOne, {long_enough}.\n\n## B\n\nTwo, {long_enough}.\n")
    report = kb.ingest([tmp_path / "d"], dry_run=True)
    assert report.dry_run and len(report.added) == 1
    assert report.tasks_queued == 2 and report.tokens_queued > 0
    assert kb.status().documents == 0
    assert _scalar(kb, "SELECT count(*) FROM embedding_spaces") == 0


def test_ingest_text_replaces_same_name(kb: KnowledgeBase) -> None:
    kb.ingest_text("# Notes\n\nFirst version.\n", "notes.md")
    report = kb.ingest_text("# Notes\n\nSecond version.\n", "notes.md")
    assert report.changed == ["stdin:notes.md"]
    assert _column(kb, "SELECT text FROM chunks") == ["# Notes\n\nSecond version."]


def test_file_turned_bad_keeps_its_stored_document(kb: KnowledgeBase, tmp_path: Path) -> None:
    doc = write(tmp_path / "d" / "a.md", "# A\n\nGood text.\n")
    kb.ingest([doc])
    doc.write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00\x00binary")
    report = kb.ingest([doc])
    assert [s.path for s in report.skipped] == [str(doc)]
    assert kb.status().chunks == 1


def test_undecodable_file_names_are_stored_losslessly(kb: KnowledgeBase, tmp_path: Path) -> None:
    folder = tmp_path / "docs"
    write(folder / "good.md", "# Good\n\nA UTF-8 name.\n")
    write(folder / "caf\\xe9.md", "# Backslash\n\nA name holding a literal backslash.\n")
    e_acute = write_raw(folder, b"caf\xe9.md", b"# E acute\n\nA Latin-1 name.\n")
    e_grave = write_raw(folder, b"caf\xe8.txt", b"A Latin-1 name without a heading.\n")
    stored = {
        f"{folder}/good.md": os.fsencode(folder / "good.md"),
        f"{folder}/caf\\x5cxe9.md": os.fsencode(folder / "caf\\xe9.md"),
        f"{folder}/caf\\xe9.md": e_acute,
        f"{folder}/caf\\xe8.txt": e_grave,
    }

    report = kb.ingest([folder])
    assert report.skipped == []
    assert sorted(report.added) == sorted(stored)
    paths = _column(kb, "SELECT source_path FROM documents")
    assert sorted(paths) == sorted(stored)
    assert {os.fsencode(text_to_path(str(path))) for path in paths} == set(stored.values())
    assert _scalar(kb, "SELECT title FROM documents WHERE source_path LIKE '%.txt'") == "caf\\xe8"

    again = kb.ingest([folder], prune=True)
    assert sorted(again.unchanged) == sorted(stored)
    assert again.removed == [] and again.chunks_written == 0

    os.unlink(e_acute)
    pruned = kb.ingest([folder], prune=True)
    assert pruned.removed == [f"{folder}/caf\\xe9.md"]
    assert len(pruned.unchanged) == 3 and kb.status().documents == 3


def test_a_path_too_long_is_skipped_and_the_others_are_ingested(kb: KnowledgeBase, tmp_path: Path) -> None:
    folder = tmp_path / "docs"
    write(folder / "good.md", "# Good\n\nShallow.\n")
    deep = os.path.join(write_deep(folder, {"deep.md": "# Deep\n\nFar down.\n"}), "deep.md")
    report = kb.ingest([folder], prune=True)
    assert report.added == [str(folder / "good.md")]
    assert [(s.path, s.reason) for s in report.skipped] == [
        (deep, f"path too long ({len(deep):,} characters)")
    ]
    assert kb.status().documents == 1


def test_cli_reports_odd_paths_readably_and_succeeds(
    runner: CliRunner, db_path: Path, tmp_path: Path
) -> None:
    folder = tmp_path / "docs"
    write(folder / "good.md", "# Good\n\nA UTF-8 name.\n")
    write_raw(folder, b"caf\xe9.md", b"# Cafe\n\nA Latin-1 name.\n")
    deep = os.path.join(write_deep(folder, {"deep.md": "# Deep\n"}), "deep.md")
    too_long = f"path too long ({len(deep):,} characters)"

    result = runner.invoke(app, ["--db", str(db_path), "ingest", str(folder)])
    assert result.exit_code == 0, result.output
    assert "2 added, 0 changed, 0 unchanged, 0 removed, 1 skipped" in result.stdout
    assert f"  skipped  {deep}: {too_long}\n" in result.stdout

    result = runner.invoke(app, ["--db", str(db_path), "ingest", str(folder), "--json"])
    assert result.exit_code == 0, result.output
    files = json.loads(result.stdout)["files"]
    assert sorted(files["unchanged"]) == [f"{folder}/caf\\xe9.md", f"{folder}/good.md"]
    assert files["skipped"] == [{"path": deep, "reason": too_long}]

    result = runner.invoke(app, ["--db", str(db_path), "search", "Latin-1", "--mode", "text", "--json"])
    assert result.exit_code == 0, result.output
    assert [hit["path"] for hit in json.loads(result.stdout)] == [f"{folder}/caf\\xe9.md"]


def _scalar(kb: KnowledgeBase, sql: str) -> object:
    with kb.engine.connect() as connection:
        return connection.execute(sa.text(sql)).scalar()


def _column(kb: KnowledgeBase, sql: str) -> list[object]:
    with kb.engine.connect() as connection:
        return list(connection.execute(sa.text(sql)).scalars())
