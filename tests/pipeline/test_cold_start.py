"""Cold command lines load only what they use: `--help` no database layer, `status` and a local `search` no
SQLAlchemy (the read-only path), and the read-only path answers exactly as the full one."""

import json
import subprocess
import sys
from dataclasses import asdict
from pathlib import Path
from typing import Any

import pytest

from kb import readonly
from kb.app import KnowledgeBase
from kb.errors import DatabaseReadOnlyError
from kb.records import SearchMode
from kb.settings import KbSettings
from kb.store.dbapi import connect_readonly
from kb.store.reader import DriverReader
from tests.support.files import write

PROBE = """
import json, sys
from kb.cli.commands import main
sys.argv = ["kb", *json.loads(sys.argv[1])]
try:
    main()
except SystemExit:
    pass
loaded = [name for name in ("sqlalchemy", "alembic", "google.genai", "wordllama", "rich", "selectolax")
          if name in sys.modules]
print(json.dumps(loaded), file=sys.stderr)
"""


def _loaded(args: list[str], env: dict[str, str], cwd: Path) -> list[str]:
    done = subprocess.run(
        [sys.executable, "-c", PROBE, json.dumps(args)],
        env=env,
        cwd=cwd,
        capture_output=True,
        text=True,
        check=True,
    )
    return json.loads(done.stderr.strip().splitlines()[-1])  # type: ignore[no-any-return]


@pytest.fixture
def local_kb(tmp_path: Path) -> KbSettings:
    for number in range(3):
        sections = [
            f"## Part {n}\n\nThe lighthouse keeper {n} trims the lamp wick at dusk.\n" for n in range(20)
        ]
        write(tmp_path / "docs" / f"keeper{number}.md", f"# Keeper {number}\n\n" + "\n".join(sections))
    settings = KbSettings(db=tmp_path / "kb.sqlite", provider="local")
    with KnowledgeBase(settings=settings) as kb:
        kb.ingest([tmp_path / "docs"])
        kb.worker().run(once=True, timeout_s=300)
    return settings


def test_cold_commands_import_only_what_they_use(local_kb: KbSettings, tmp_path: Path) -> None:
    import os

    env = {k: v for k, v in os.environ.items() if not k.startswith("KB_")}
    env |= {"KB_DB": str(local_kb.db), "KB_PROVIDER": "local"}
    assert _loaded(["--help"], env, tmp_path) == ["rich"]  # typer renders its help with Rich
    assert _loaded(["status", "--json"], env, tmp_path) == []
    assert _loaded(["search", "lamp wick"], env, tmp_path) == ["rich"]  # results and messages, for people
    # The full path when something must be written.
    assert "sqlalchemy" in _loaded(["ingest", str(tmp_path / "docs")], env, tmp_path)


def test_read_only_status_and_search_answer_as_the_full_path(local_kb: KbSettings) -> None:
    with KnowledgeBase(settings=local_kb) as kb:
        full_status = asdict(kb.status())
        full = {mode: kb.search("lamp wick at dusk", k=5, mode=mode) for mode in SearchMode}
    quick_status = asdict(readonly.status(local_kb))  # type: ignore[arg-type]
    for report in (full_status, quick_status):
        report.pop("database")
        for worker in report["workers"]:
            worker.pop("heartbeat_age_s")
    assert quick_status == full_status
    for mode in SearchMode:
        quick = readonly.search(local_kb, "lamp wick at dusk", k=5, mode=mode, path=None, space=None)
        assert quick is not None and quick.hits
        assert [(h.chunk_id, h.score) for h in quick.hits] == [(h.chunk_id, h.score) for h in full[mode].hits]


def test_the_read_only_path_cannot_write(local_kb: KbSettings) -> None:
    reader = DriverReader(connect_readonly(local_kb.db), str(local_kb.db))
    with pytest.raises(DatabaseReadOnlyError, match="readonly"):
        reader.rows("DELETE FROM documents")
    reader.close()
    with KnowledgeBase(settings=local_kb) as kb:
        assert kb.status().documents == 3


def test_the_full_path_is_taken_when_something_must_be_written(tmp_path: Path) -> None:
    """No database yet, or one to migrate: the read-only path declines and the caller opens the full one."""
    settings = KbSettings(db=tmp_path / "new.sqlite", provider="local")
    assert readonly.status(settings) is None
    assert readonly.search(settings, "x", k=3, mode=SearchMode.HYBRID, path=None, space=None) is None
    assert not settings.db.exists()


def _built_by(args: list[str], monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The commands Typer builds (their parameters read from their signatures) while `kb ARGS` runs."""
    import typer.main

    from kb.cli.commands import main

    built: list[str] = []
    build = typer.main.get_command_from_info

    def recording(*args: Any, **options: Any) -> Any:
        command = build(*args, **options)
        built.append(command.name)
        return command

    monkeypatch.setattr(typer.main, "get_command_from_info", recording)
    monkeypatch.setattr(sys, "argv", ["kb", *args])
    with pytest.raises(SystemExit) as exit_:
        main()
    assert exit_.value.code == 0
    return built


def test_a_command_line_builds_only_the_command_it_runs(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    assert _built_by(["search", "--help"], monkeypatch) == ["search"]
    assert _built_by(["db", "current", "--help"], monkeypatch) == ["upgrade", "current"]  # the db group
    everything = _built_by(["--help"], monkeypatch)  # the list of commands shows each one's summary
    assert {"search", "ingest", "status", "upgrade", "current"} <= set(everything)
    assert "Inspect and migrate the database schema." in capsys.readouterr().out  # the help was shown
