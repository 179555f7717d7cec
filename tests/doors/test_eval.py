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


def test_eval_against_another_database_and_another_space_side_by_side(
    tmp_path: Path, settings: KbSettings, runner: CliRunner
) -> None:
    tutorial = HANDBOOK / "tutorial"
    with KnowledgeBase(settings=settings) as kb:
        kb.ingest([tutorial])
        kb.worker().run(once=True, timeout_s=60)
    other = settings.model_copy(update={"db": tmp_path / "whole.sqlite"})
    with KnowledgeBase(settings=other) as kb:  # a larger knowledge base, the whole handbook
        kb.ingest([HANDBOOK])
        kb.worker().run(once=True, timeout_s=60)
    base = ["--db", str(settings.db), "eval", str(HANDBOOK_QUERIES), "--mode", "text"]
    compared = runner.invoke(app, [*base, "--against", str(other.db), "--json"])
    assert compared.exit_code == 0, compared.output
    report = json.loads(compared.stdout)
    ours, theirs = report["base"]["modes"]["text"], report["against"]["modes"]["text"]
    assert report["against"]["name"].endswith("whole.sqlite")
    assert theirs["recall_at_5"] > ours["recall_at_5"]  # questions about pages the tutorial lacks
    assert report["delta"]["text"]["recall_at_5"] == round(theirs["recall_at_5"] - ours["recall_at_5"], 6)
    table = runner.invoke(app, [*base, "--against", str(other.db)])
    assert table.exit_code == 0 and "A / B" in table.stdout and "whole.sqlite" in table.stdout

    same_space = runner.invoke(app, [*base, "--mode", "vector", "--against", "1", "--json"])
    assert same_space.exit_code == 0, same_space.output
    assert json.loads(same_space.stdout)["delta"]["vector"]["mrr"] == 0  # space #1 is the active one
    gone = runner.invoke(app, [*base, "--against", str(tmp_path / "none.sqlite")])
    assert gone.exit_code == 3 and "no knowledge base" in gone.output
