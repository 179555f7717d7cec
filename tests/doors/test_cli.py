"""The command line, end to end: exit codes, JSON shapes, bad input, secrets."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import sqlalchemy as sa
from typer.testing import CliRunner

from kb.app import KnowledgeBase
from kb.cli.commands import app
from kb.store import migrate
from tests.support.corpora import write_sections
from tests.support.files import HANDBOOK, write


def _kb(runner: CliRunner, db: Path, *args: str, input: str | None = None) -> tuple[int, str, str]:
    result = runner.invoke(app, ["--db", str(db), *args], input=input)
    if result.exception and not isinstance(result.exception, SystemExit):
        raise result.exception
    return result.exit_code, result.stdout, result.stderr


def test_ingest_corpus_and_status_json(runner: CliRunner, db_path: Path) -> None:
    code, out, _ = _kb(runner, db_path, "ingest", str(HANDBOOK), "--json")
    assert code == 0
    summary = json.loads(out)
    files = len(list(HANDBOOK.rglob("*.md")))
    assert summary["added"] == files and summary["skipped"] == 0

    code, out, _ = _kb(runner, db_path, "status", "--json")
    status = json.loads(out)
    assert status["documents"] == files
    assert status["chunks"] == summary["chunks_written"]
    assert set(status["tasks"]) == {"pending", "submitted", "embedded", "failed"}
    assert status["tasks"]["pending"] == summary["tasks_queued"]

    code, out, _ = _kb(runner, db_path, "ingest", str(HANDBOOK))
    assert code == 0
    assert f"0 added, 0 changed, {files} unchanged" in out


def _build_bad_inputs(root: Path) -> dict[str, str | None]:
    """Files of every awkward kind, and the reason each should be skipped (None: ingested)."""
    write(root / "good.md", "# Good\n\nA normal document.\n")
    write(root / "ünïcödé name with spaces.md", "# Ünïcödé\n\nStill fine. 日本語のテキスト。\n")
    (root / "empty.md").write_bytes(b"")
    (root / "image.md").write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + bytes(range(256)))
    (root / "latin1.md").write_bytes("# Caf\xe9\n\nna\xefve text\n".encode("latin-1"))
    big = ("## Section\n\n" + "A line of ordinary prose for the big file. " * 20 + "\n\n") * 14_000
    write(root / "big.md", big)
    assert (root / "big.md").stat().st_size > 12_000_000
    write(root / "long-line.txt", "x" * 200_000)
    (root / "bom-crlf.md").write_bytes("\ufeff# BOM\r\n\r\nWindows line endings.\r\n".encode())
    write(root / "front-matter-only.md", "---\ntitle: Nothing else\n---\n")
    loop = root / "loop"
    loop.mkdir()
    (loop / "again").symlink_to(root, target_is_directory=True)
    (root / "dangling.md").symlink_to(root / "does-not-exist.md")
    os.mkfifo(root / "pipe.md")
    return {
        "good.md": None,
        "ünïcödé name with spaces.md": None,
        "big.md": None,
        "long-line.txt": None,
        "bom-crlf.md": None,
        "empty.md": "empty",
        "image.md": "binary",
        "latin1.md": "UTF-8",
        "front-matter-only.md": "front matter",
        "dangling.md": "symlink",
        "pipe.md": "regular file",
    }


def test_bad_inputs_never_crash_the_run(runner: CliRunner, db_path: Path, tmp_path: Path) -> None:
    root = tmp_path / "bad"
    root.mkdir()
    expected = _build_bad_inputs(root)
    code, out, err = _kb(runner, db_path, "ingest", str(root), "--json")
    assert code == 0, err
    summary = json.loads(out)
    skipped = {Path(s["path"]).name: s["reason"] for s in summary["files"]["skipped"]}
    ingested = {Path(p).name for p in summary["files"]["added"]}
    for name, reason in expected.items():
        if reason is None:
            assert name in ingested, (name, skipped.get(name))
        else:
            assert reason.lower() in skipped[name].lower(), (name, skipped.get(name))
    assert (
        "loop" in " ".join(skipped).lower()
        or "again" in skipped
        or all("loop" not in p for p in summary["files"]["added"])
    )
    code, out, _ = _kb(runner, db_path, "status", "--json")
    status = json.loads(out)
    assert status["documents"] == len(ingested)
    code, out, _ = _kb(runner, db_path, "ingest", str(root), "--json")
    assert json.loads(out)["unchanged"] == len(ingested)


def test_stdin_ingest(runner: CliRunner, db_path: Path) -> None:
    code, out, _ = _kb(
        runner,
        db_path,
        "ingest",
        "-",
        "--stdin-name",
        "note.md",
        "--json",
        input="# Note\n\nFrom a pipe.\n",
    )
    assert code == 0
    assert json.loads(out)["files"]["added"] == ["stdin:note.md"]


def test_missing_path_is_a_user_error_without_traceback(runner: CliRunner, db_path: Path) -> None:
    code, out, err = _kb(runner, db_path, "ingest", "/no/such/folder")
    assert code == 2
    assert "/no/such/folder" in err
    assert "Traceback" not in out + err


def test_not_a_database_is_a_clear_error(runner: CliRunner, tmp_path: Path) -> None:
    bogus = write(tmp_path / "bogus.sqlite", "this is not a database " * 100)
    code, _, err = _kb(runner, bogus, "status")
    assert code == 4
    assert "is not a database" in err and "bogus.sqlite" in err and "Traceback" not in err


def test_db_commands(runner: CliRunner, db_path: Path) -> None:
    code, out, _ = _kb(runner, db_path, "db", "current")
    assert code == 0 and "no database" in out
    code, out, _ = _kb(runner, db_path, "db", "upgrade")
    head = migrate.head_revision()
    assert code == 0 and head is not None and head in out
    code, out, _ = _kb(runner, db_path, "db", "current")
    assert f"{head} (head {head}; up to date)" in out


def test_api_key_never_printed(
    runner: CliRunner, db_path: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    secret = "AIzaSy-test-secret-value-0123456789"
    monkeypatch.setenv("GEMINI_API_KEY", secret)
    write(tmp_path / "d" / "a.md", "# A\n\nText.\n")
    outputs = []
    for args in (
        ["ingest", str(tmp_path / "d")],
        ["status"],
        ["status", "--json"],
        ["ingest", "/nope"],
    ):
        _, out, err = _kb(runner, db_path, *args)
        outputs.append(out + err)
    assert not any(secret in text for text in outputs)
    assert secret not in db_path.read_bytes().decode("latin-1")


def test_version_and_help(runner: CliRunner) -> None:
    result = runner.invoke(app, ["--version"])
    assert result.exit_code == 0 and result.stdout.startswith("kb ")
    result = runner.invoke(app, ["--help"])
    assert result.exit_code == 0
    for command in ("ingest", "status", "db"):
        assert command in result.stdout


def test_help_shows_bracketed_text_and_no_metavar_for_flags(runner: CliRunner) -> None:
    # Rich read "[env: ...]" as markup and dropped it; flags showed a `<bool>` value they do not take.
    wide = {"COLUMNS": "200", "TERMINAL_WIDTH": "200"}
    main_help = runner.invoke(app, ["--help"], env=wide).stdout
    assert "[env: KB_DB, KB_DATABASE_URL; default: ./kb.sqlite]" in main_help
    assert "Embedding provider [env: KB_PROVIDER]." in main_help
    reindex_help = runner.invoke(app, ["reindex", "--help"], env=wide).stdout
    assert "Target model [default: KB_EMBEDDING_MODEL]." in reindex_help
    assert "Target dimensions [default: 768]." in reindex_help
    for text in (main_help, reindex_help, runner.invoke(app, ["status", "--help"], env=wide).stdout):
        assert "<bool>" not in text
    assert "<str>" in main_help  # options that take a value still show its kind


READ_ONLY_COMMANDS = [
    ["status"],
    ["status", "--json"],
    ["status", "--prometheus"],
    ["search", "harbor"],
    ["search", "harbor", "--mode", "text", "--json"],
    ["jobs"],
    ["errors", "--json"],
    ["mcp"],
    ["reindex", "--status"],
    ["reindex", "--estimate"],
    ["migrate-db", "--to", "copy.sqlite"],
]


@pytest.mark.parametrize("args", READ_ONLY_COMMANDS, ids=" ".join)
@pytest.mark.parametrize("where", ["kb.sqlite", "typo/kb.sqlite"])
def test_read_only_commands_on_a_missing_database_create_nothing(
    runner: CliRunner, tmp_path: Path, args: list[str], where: str
) -> None:
    # A typo in KB_DB made an empty knowledge base: "0 documents", "No results", exit 0.
    before = sorted(tmp_path.rglob("*"))
    code, out, err = _kb(runner, tmp_path / where, *args)
    assert code == 3, out + err
    assert f"no knowledge base at {tmp_path / where} (kb ingest creates one)" in " ".join(err.split())
    assert sorted(tmp_path.rglob("*")) == before


def test_serve_on_a_missing_database_creates_nothing(runner: CliRunner, tmp_path: Path) -> None:
    # Only with a missing folder here: on today's code a missing file in an existing folder would serve.
    code, _, err = _kb(runner, tmp_path / "typo" / "kb.sqlite", "serve", "--port", "0")
    assert code == 3 and "no knowledge base at" in err
    assert not (tmp_path / "typo").exists()


def test_writing_commands_still_create_the_database(runner: CliRunner, db_path: Path) -> None:
    code, _, _ = _kb(runner, db_path, "worker", "--once")
    assert code == 0 and db_path.is_file()


def test_a_folder_given_as_database_is_named_a_directory(runner: CliRunner, tmp_path: Path) -> None:
    for args in (["status"], ["ingest", str(HANDBOOK)]):
        code, _, err = _kb(runner, tmp_path, *args)
        assert code == 4, err
        assert "is a directory" in err and "permissions" not in err


@pytest.mark.parametrize(
    "args", [["--help"], ["jobs"], ["search", "harbor", "--json"], ["search", "harbor"]], ids=" ".join
)
def test_a_closed_stdout_pipe_is_a_normal_end(args: list[str], kb: KnowledgeBase) -> None:
    # `kb jobs | head -1` exited 1 ("other kb error"); a reader gone before kb writes makes every write fail.
    kb.ingest([HANDBOOK])
    kb.close()
    read_end, write_end = os.pipe()
    os.close(read_end)
    try:
        child = subprocess.run(
            [sys.executable, "-m", "kb", "--db", str(kb.path), *args],
            stdout=write_end,
            stderr=subprocess.PIPE,
            text=True,
            timeout=120,
            env={**os.environ, "KB_PROVIDER": "local"},
        )
    finally:
        os.close(write_end)
    assert child.returncode == 141, child.stderr
    assert "Traceback" not in child.stderr and "Exception ignored" not in child.stderr
    assert "error" not in child.stderr


def _failed_task(kb: KnowledgeBase) -> int:
    kb.ingest([HANDBOOK / "index.md"])
    with kb.engine.begin() as connection:
        task_id = connection.execute(sa.text("SELECT min(id) FROM embedding_tasks")).scalar_one()
        connection.execute(
            sa.text("UPDATE embedding_tasks SET status = 'failed', last_error = 'refused' WHERE id = :id"),
            {"id": task_id},
        )
    return int(task_id)


def test_retry_of_unknown_task_ids_is_an_error_that_changes_nothing(
    runner: CliRunner, kb: KnowledgeBase
) -> None:
    # `kb retry 999` said "requeued 0 texts", exit 0.
    task_id = _failed_task(kb)
    code, _, err = _kb(runner, kb.path, "retry", "999")
    assert code == 2 and "999" in err
    code, _, err = _kb(runner, kb.path, "retry", str(task_id), "998", "999")
    assert code == 2 and "998, 999" in err and f"{task_id}," not in err
    assert [item.task_id for item in kb.failed_texts()] == [task_id]  # validated first: nothing changed
    code, out, _ = _kb(runner, kb.path, "retry", str(task_id))
    assert code == 0 and "requeued 1 text" in out and kb.failed_texts() == []


def test_search_says_which_space_answered_not_the_configured_provider(
    runner: CliRunner, kb: KnowledgeBase
) -> None:
    # `kb --provider gemini search` without a key announced "Gemini embeddings" and answered from wordllama.
    kb.ingest([HANDBOOK])
    kb.embed_now()
    result = runner.invoke(app, ["--db", str(kb.path), "--provider", "gemini", "search", "harbor"])
    assert result.exit_code == 0, result.stderr
    said = " ".join(result.stderr.split())
    assert "Gemini embeddings" not in said
    assert "searched space #1 (local/wordllama" in said and "--provider gemini" in said


def test_search_keeps_a_few_chunks_per_document_and_merges_neighbours(
    runner: CliRunner, kb: KnowledgeBase, tmp_path: Path
) -> None:
    # Issue 22: several chunks of one document filled the top 5; consecutive ones came back as separate hits.
    write_sections(tmp_path / "docs", 9, per_file=3)
    kb.ingest([tmp_path / "docs"])
    capped = kb.search("lighthouse keeper", k=5, mode="text")  # KB_HITS_PER_DOCUMENT: 2
    documents = [hit.document_id for hit in capped.hits for _ in hit.chunk_ids]
    assert len(set(documents)) == 3 and all(documents.count(d) <= 2 for d in documents)
    whole = kb.search("lighthouse keeper", k=5, mode="text", per_document=0)
    assert len(whole.hits) == 3 and all(len(hit.chunk_ids) == 3 for hit in whole.hits)
    text = next(hit.text for hit in whole.hits if hit.path.endswith("doc0000.md"))
    assert text.index("Section 0") < text.index("Section 1") < text.index("Section 2")
    args = ["--db", str(kb.path), "search", "lighthouse keeper", "--mode", "text", "--json"]
    printed = runner.invoke(app, [*args, "--per-document", "1"])
    assert printed.exit_code == 0, printed.stderr
    hits = json.loads(printed.stdout)
    assert len(hits) == 3 and all(len(hit["chunk_ids"]) == 1 for hit in hits)
    assert len({hit["path"] for hit in hits}) == 3


def test_search_shows_headings_without_their_markers(
    runner: CliRunner, kb: KnowledgeBase, tmp_path: Path
) -> None:
    # Issue 22: hits showed "## Heading" lines as raw Markdown; a code block's "#" comment stays as written.
    body = "Paragraph about the lantern room and its brass fittings, long enough to stand alone here."
    write(tmp_path / "docs" / "a.md", f"# Lantern\n\n## Brass fittings ##\n\n{body}\n\n```\n# keep me\n```\n")
    kb.ingest([tmp_path / "docs"])
    printed = runner.invoke(app, ["--db", str(kb.path), "search", "lantern brass", "--mode", "text"])
    assert printed.exit_code == 0, printed.stderr
    lines = [line.strip() for line in printed.stdout.splitlines()]
    assert "Brass fittings" in lines
    assert not [line for line in lines if line.startswith("## ") or line.startswith("# L")]
    assert "# keep me" in lines


def test_ingest_says_a_deleted_file_is_kept_until_pruned(
    runner: CliRunner, db_path: Path, tmp_path: Path
) -> None:
    # After a file was deleted `kb ingest` said "0 removed", and --json listed absolute paths.
    docs = tmp_path / "work" / "docs"
    write(docs / "a.md", "# A\n\nAlpha text.\n")
    write(docs / "b.md", "# B\n\nBeta text.\n")
    code, out, _ = _kb(runner, db_path, "ingest", "docs", "--json")
    assert code == 0 and sorted(json.loads(out)["files"]["added"]) == ["docs/a.md", "docs/b.md"]
    (docs / "b.md").unlink()
    code, out, _ = _kb(runner, db_path, "ingest", "docs")
    assert code == 0 and "1 file no longer exists (kept; --prune forgets it)" in out
    code, out, _ = _kb(runner, db_path, "ingest", "docs", "--json")
    summary = json.loads(out)
    assert summary["missing"] == 1 and summary["files"]["missing"] == ["docs/b.md"]
    assert summary["files"]["unchanged"] == ["docs/a.md"] and summary["removed"] == 0
    code, out, _ = _kb(runner, db_path, "ingest", "docs", "--prune", "--json")
    summary = json.loads(out)
    assert summary["removed"] == 1 and summary["files"]["removed"] == ["docs/b.md"]
    assert summary["missing"] == 0
    code, out, _ = _kb(runner, db_path, "errors", "--json")
    assert code == 0


def test_ingest_meta_and_search_where(runner: CliRunner, db_path: Path, tmp_path: Path) -> None:
    """`--meta` tags a run's documents under their own front matter; `--where` (read-only path) narrows the
    hits to matching documents, and `--json` shows each hit's metadata."""
    docs = tmp_path / "docs"
    write(
        docs / "api.md",
        "---\ntags: [api, http]\nreleased: 2024-05-01\n---\n# API\n\nThe harbor opens at dawn.\n",
    )
    write(
        docs / "old.md", "---\ntags: legacy\nreleased: 2019-01-01\n---\n# Old\n\nThe harbor closed at dusk.\n"
    )
    code, _, err = _kb(runner, db_path, "ingest", str(docs), "--meta", "team=docs", "--meta", "tags=ignored")
    assert code == 0, err
    assert _kb(runner, db_path, "worker", "--once")[0] == 0

    def paths(*where: str) -> list[str]:
        code, out, err = _kb(runner, db_path, "search", "harbor", "--json", *where)
        assert code == 0, err
        return sorted(Path(hit["path"]).name for hit in json.loads(out))

    assert paths("--where", "tags=api") == ["api.md"]
    assert paths("--where", "released<2020-01-01") == ["old.md"]
    assert paths("--where", "team=docs", "--where", "tags!=legacy") == ["api.md"]
    assert paths("--where", "tags=legacy,http") == ["api.md", "old.md"]
    assert paths("--where", "owner") == []
    code, out, _ = _kb(runner, db_path, "search", "harbor", "--json", "--where", "tags=api")
    assert json.loads(out)[0]["metadata"] == {
        "team": "docs",
        "tags": ["api", "http"],
        "released": "2024-05-01",
    }


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["search", "harbor", "--where", "tags=>1"], "invalid where condition 'tags=>1'"),
        (["search", "harbor", "--where", "=api"], "invalid where condition '=api'"),
        (["ingest", ".", "--meta", "team"], "--meta 'team': expected key=value"),
    ],
)
def test_a_malformed_where_or_meta_is_a_usage_error(
    runner: CliRunner, kb: KnowledgeBase, args: list[str], says: str
) -> None:
    code, out, err = _kb(runner, kb.path, *args)
    assert code == 2 and says in " ".join(err.split()) and "Traceback" not in out + err
