"""The command line, end to end: exit codes, JSON shapes, bad input, secrets."""

import json
import os
from pathlib import Path

import pytest
from typer.testing import CliRunner

from kb.cli.commands import app
from kb.store import migrate
from tests.conftest import HANDBOOK, write


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
