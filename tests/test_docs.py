"""Documentation stays true: generated blocks are current and every command is documented."""

import sys

import pytest
from cogapp import Cog  # type: ignore[import-untyped]

from tests.conftest import PROJECT_ROOT

sys.path.insert(0, str(PROJECT_ROOT / "scripts"))
import docgen

GENERATED = ["README.md", "docs/cli.md", "docs/configuration.md"]


@pytest.mark.parametrize("name", GENERATED)
def test_generated_blocks_are_current(name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(PROJECT_ROOT)
    status = Cog().main(["cog", "--check", "-I", "scripts", name])
    assert status == 0, f"{name} is out of date: run scripts/cog"


@pytest.mark.parametrize(("command", "summary"), docgen.command_list())
def test_every_command_is_documented(command: str, summary: str) -> None:
    assert summary, f"{command} has no help text"
    assert f"### `{command}`" in (PROJECT_ROOT / "docs" / "cli.md").read_text()
    assert f"`{command}`" in (PROJECT_ROOT / "README.md").read_text()
