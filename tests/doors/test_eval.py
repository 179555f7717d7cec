"""`kb eval` end to end on the handbook with the local model: scores per mode, JSON, and its errors."""

import json
from pathlib import Path

from typer.testing import CliRunner

from kb.app import KnowledgeBase
from kb.cli.commands import app
from kb.settings import KbSettings
from tests.support.files import HANDBOOK, HANDBOOK_QUERIES


def test_eval_scores_every_mode_as_json(settings: KbSettings, runner: CliRunner) -> None:
    with KnowledgeBase(settings=settings) as kb:
        kb.ingest([HANDBOOK])
        kb.worker().run(once=True, timeout_s=60)
    result = runner.invoke(app, ["--db", str(settings.db), "eval", str(HANDBOOK_QUERIES), "--json"])
    assert result.exit_code == 0, result.output
    modes = json.loads(result.stdout)["modes"]
    assert set(modes) == {"hybrid", "vector", "text"}
    assert modes["text"]["recall_at_5"] == 1.0 and modes["hybrid"]["fell_back"] == 0
    assert len(modes["hybrid"]["ranks"]) == 20


def test_eval_errors(tmp_path: Path, settings: KbSettings, runner: CliRunner) -> None:
    missing = runner.invoke(app, ["--db", str(settings.db), "eval", str(HANDBOOK_QUERIES)])
    assert missing.exit_code == 3 and "no knowledge base" in missing.output
    assert not settings.db.exists()
    bad = tmp_path / "bad.json"
    bad.write_text("{x")
    assert runner.invoke(app, ["--db", str(settings.db), "eval", str(bad)]).exit_code == 2
