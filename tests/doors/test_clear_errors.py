"""What a new user meets when something is wrong: one line that says what and how to fix it, the right exit
code, and nothing shown on the terminal that could take it over."""

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from typer.testing import CliRunner

from kb.app import KnowledgeBase
from kb.cli.commands import app
from kb.errors import InputError
from kb.settings import KbSettings
from kb.testing.gemini_emulator import Fault, GeminiEmulator
from tests.support.crash_harness import kb_env
from tests.support.files import write
from tests.support.settings import EMULATOR_KEY


def _kb(runner: CliRunner, *args: str, env: dict[str, str] | None = None) -> tuple[int, str, str]:
    result = runner.invoke(app, list(args), env=env)
    return result.exit_code, result.stdout, result.stderr


# -- configuration errors: exit 3, one line naming the variable ------------------------------------------


@pytest.mark.parametrize(
    ("variable", "value", "says"),
    [
        ("KB_EMBEDDING_DIMENSIONS", "abc", "must be a valid integer"),
        ("KB_EMBEDDING_DIMENSIONS", "0", "greater than or equal to 1"),
        ("KB_EMBEDDING_DIMENSIONS", "99999", "less than or equal to 3072"),
        ("KB_PROVIDER", "bogus", "must be 'gemini' or 'local'"),
        ("KB_MODEL_PRICES", "notjson", "not valid JSON"),
        ("KB_SEARCH_INDEX", "fastest", "'auto', 'exact', 'quantized' or 'memory'"),
    ],
)
def test_a_bad_setting_is_one_line_naming_its_variable(
    runner: CliRunner, tmp_path: Path, variable: str, value: str, says: str
) -> None:
    code, _, err = _kb(runner, "--db", str(tmp_path / "kb.sqlite"), "status", env={variable: value})
    assert code == 3, err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith(f"error: {variable}"), err
    assert says in lines[0]
    assert "Usage" not in err and "Traceback" not in err and "pydantic" not in err


# -- a database from a newer kb is never migrated ---------------------------------------------------------


def test_a_database_from_a_newer_kb_says_to_upgrade_kb(runner: CliRunner, tmp_path: Path) -> None:
    from kb.store.dbapi import sqlite_driver

    db = str(tmp_path / "kb.sqlite")
    assert _kb(runner, "--db", db, "--provider", "local", "db", "upgrade")[0] == 0
    connection = sqlite_driver().connect(db)
    connection.execute("UPDATE alembic_version SET version_num = '0099'")
    connection.commit()
    connection.close()
    code, out, _ = _kb(runner, "--db", db, "db", "current")
    assert code == 0 and "written by a newer kb: upgrade kb" in out
    for command in (["db", "upgrade"], ["status"], ["search", "anything"]):
        code, _, err = _kb(runner, "--db", db, "--provider", "local", *command)
        assert code == 4 and "written by a newer kb" in err and "upgrade kb" in err, (command, err)
    connection = sqlite_driver().connect(db)
    assert connection.execute("SELECT version_num FROM alembic_version").fetchone() == ("0099",)
    connection.close()


# -- usage errors: exit 2 --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "args",
    [
        ["search", ""],
        ["search", "   "],
        ["search", "storm", "--path", "["],
        ["ingest", ".", "--include", "["],
        ["ingest", ".", "--exclude", "notes/[a-z"],
    ],
)
def test_an_empty_question_or_a_broken_glob_is_a_usage_error(
    runner: CliRunner, tmp_path: Path, args: list[str]
) -> None:
    db = str(tmp_path / "kb.sqlite")
    write(tmp_path / "a.md", "# Storm\n\nstorm beacon\n")
    _kb(runner, "--db", db, "--provider", "local", "ingest", str(tmp_path / "a.md"))
    code, out, err = _kb(runner, "--db", db, "--provider", "local", *args)
    assert code == 2, (out, err)
    assert "error:" in err and ("empty" in err or "never closed" in err)
    assert out == ""


def test_a_question_longer_than_the_cap_is_a_usage_error(runner: CliRunner, tmp_path: Path) -> None:
    db = str(tmp_path / "kb.sqlite")
    write(tmp_path / "a.md", "# Storm\n\nstorm beacon\n")
    _kb(runner, "--db", db, "--provider", "local", "ingest", str(tmp_path / "a.md"))
    longest = "storm " * (8000 // 6) + "st"  # exactly 8,000 characters: still a question
    code, out, err = _kb(runner, "--db", db, "--provider", "local", "search", longest)
    assert code == 0 and "a.md" in out, err
    code, out, err = _kb(runner, "--db", db, "--provider", "local", "search", longest + "s")
    assert code == 2 and out == ""
    assert "error: the question is too long: 8,001 characters (at most 8,000)" in err
    settings = KbSettings(db=Path(db), provider="local")
    with KnowledgeBase(settings=settings) as kb, pytest.raises(InputError, match="too long"):
        kb.search("x" * 640_000)


def test_a_well_formed_glob_with_a_set_still_works(runner: CliRunner, tmp_path: Path) -> None:
    db = str(tmp_path / "kb.sqlite")
    write(tmp_path / "notes" / "b1.md", "# Storm\n\nstorm beacon\n")
    assert (
        _kb(
            runner,
            "--db",
            db,
            "--provider",
            "local",
            "ingest",
            str(tmp_path / "notes"),
            "--include",
            "b[0-9].md",
        )[0]
        == 0
    )
    code, out, _ = _kb(
        runner, "--db", db, "--provider", "local", "search", "storm", "--path", "notes/b[0-9].md"
    )
    assert code == 0 and "b1.md" in out


# -- control characters are shown, not obeyed --------------------------------------------------------------

HOSTILE = "evil\x1b]0;owned\x07\nname.md"


def test_control_characters_in_names_are_escaped_for_people_and_exact_in_json(
    runner: CliRunner, tmp_path: Path
) -> None:
    db = str(tmp_path / "kb.sqlite")
    corpus = tmp_path / "corpus"
    write(corpus / HOSTILE, "# Storm\n\nstorm beacon over the harbour\n")
    code, out, _ = _kb(runner, "--db", db, "--provider", "local", "ingest", str(corpus))
    assert code == 0
    code, out, _ = _kb(runner, "--db", db, "--provider", "local", "search", "storm beacon")
    assert code == 0
    assert "\x1b" not in out and "\x07" not in out
    assert "evil\\x1b]0;owned\\x07\\nname.md" in out  # one line, escapes visible
    code, out, _ = _kb(runner, "--db", db, "--provider", "local", "search", "storm beacon", "--json")
    assert json.loads(out)[0]["path"].endswith(HOSTILE)  # programs get the exact name


def test_a_skip_line_with_an_escape_sequence_in_its_name_is_escaped(
    runner: CliRunner, tmp_path: Path
) -> None:
    corpus = tmp_path / "corpus"
    (corpus / "x\x1b[2Jy.md").parent.mkdir(parents=True, exist_ok=True)
    (corpus / "x\x1b[2Jy.md").write_bytes(b"\x00\x01binary\xff")
    code, out, _ = _kb(
        runner, "--db", str(tmp_path / "kb.sqlite"), "--provider", "local", "ingest", str(corpus)
    )
    assert code == 0
    assert "skipped" in out and "x\\x1b[2Jy.md" in out and "\x1b" not in out


# -- a knowledge base on read-only media can be searched -------------------------------------------------


@contextmanager
def read_only(folder: Path) -> Iterator[None]:
    """`folder` and its files made unwritable, as on read-only media (root needs the immutable flag)."""
    files = [path for path in folder.iterdir() if path.is_file()]
    if os.geteuid() != 0:
        for path in [*files, folder]:
            path.chmod(0o555 if path.is_dir() else 0o444)
        try:
            yield
        finally:
            folder.chmod(0o755)
        return
    chattr = shutil.which("chattr")
    if (
        chattr is None
        or subprocess.run([chattr, "+i", *map(str, files), str(folder)], capture_output=True).returncode
    ):
        pytest.skip("cannot make a folder read-only here (no chattr, or no CAP_LINUX_IMMUTABLE)")
    try:
        yield
    finally:
        subprocess.run([chattr, "-i", *map(str, files), str(folder)], check=True)


@pytest.mark.slow
def test_a_knowledge_base_on_read_only_media_answers(emulator: GeminiEmulator, tmp_path: Path) -> None:
    media = tmp_path / "media"
    db = media / "kb.sqlite"
    media.mkdir()
    env = kb_env(emulator, db)
    write(tmp_path / "corpus" / "a.md", "# Storm\n\nstorm beacon over the harbour\n")
    kb = [sys.executable, "-m", "kb"]
    for args in (["ingest", str(tmp_path / "corpus")], ["worker", "--once"], ["search", "asked before"]):
        subprocess.run([*kb, *args], env=env, check=True, capture_output=True, timeout=120)
    assert not (media / "kb.sqlite-wal").exists()  # checkpointed by the last process: one file, as copied
    with read_only(media):
        status = subprocess.run(
            [*kb, "status", "--json"], env=env, capture_output=True, text=True, timeout=60
        )
        assert status.returncode == 0, status.stderr
        assert json.loads(status.stdout)["tasks"]["embedded"] == 1
        for question, recorded in (("asked before", True), ("never asked", False)):
            found = subprocess.run(
                [*kb, "search", question, "--json"], env=env, capture_output=True, text=True, timeout=60
            )
            assert found.returncode == 0, found.stderr
            assert json.loads(found.stdout)[0]["path"].endswith("a.md")
            assert ("were not recorded" in found.stderr) is not recorded, found.stderr


# -- the worker says when it retries -----------------------------------------------------------------------


def test_the_worker_logs_an_upload_retried_after_a_500(
    runner: CliRunner, emulator: GeminiEmulator, tmp_path: Path
) -> None:
    db = tmp_path / "kb.sqlite"
    write(tmp_path / "a.md", "# Storm\n\nstorm beacon\n")
    env = kb_env(emulator, db)
    subprocess.run(
        [sys.executable, "-m", "kb", "ingest", str(tmp_path / "a.md")], env=env, check=True, timeout=60
    )
    emulator.faults.add(Fault(route="files.upload", status=500, times=2))
    worker = subprocess.run(
        [sys.executable, "-m", "kb", "worker", "--once"], env=env, capture_output=True, text=True, timeout=120
    )
    assert worker.returncode == 0, worker.stderr
    retries = [line for line in worker.stderr.splitlines() if "retrying in" in line and "INFO" in line]
    assert len(retries) >= 2, worker.stderr


def test_the_key_is_never_shown(runner: CliRunner, tmp_path: Path) -> None:
    code, _, err = _kb(
        runner,
        "--db",
        str(tmp_path / "kb.sqlite"),
        "status",
        env={"GEMINI_API_KEY": EMULATOR_KEY, "KB_PROVIDER": "x"},
    )
    assert code == 3 and EMULATOR_KEY not in err
