"""Documentation stays true: generated blocks are current and every command is documented."""

import importlib.util
import re
import sys
from pathlib import Path

import pytest
from cogapp import Cog  # type: ignore[import-untyped]

from tests.support.files import PROJECT_ROOT

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


def test_library_examples_run(tmp_path: Path) -> None:
    """The Python examples in docs/library.md run as written (in an empty folder with a docs/ folder)."""
    (Path.cwd() / "docs").mkdir()
    (Path.cwd() / "docs" / "guide.md").write_text("# Guide\n\nHow kb works.\n", encoding="utf-8")
    text = (PROJECT_ROOT / "docs" / "library.md").read_text(encoding="utf-8")
    blocks = re.findall(r"```python\n(.*?)```", text, flags=re.DOTALL)
    assert len(blocks) >= 2
    not_installed = []
    for block in blocks:
        extra = _missing_extra(block)
        if extra is not None:
            not_installed.append(extra)
            continue
        exec(compile(block, "docs/library.md", "exec"), {})
    assert (Path.cwd() / "kb.sqlite").exists()
    if not_installed:
        pytest.skip(f"examples not run, their extras not installed: {', '.join(not_installed)}")


def _missing_extra(example: str) -> str | None:
    """The extra that an example of kb.integrations needs, if it is not installed."""
    for extra, framework in (("langchain", "langchain_core"), ("llamaindex", "llama_index.core")):
        if f"kb.integrations.{extra}" in example and not _installed(framework):
            return extra
    return None


def _installed(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except ModuleNotFoundError:  # its parent package is not there either
        return False


def test_the_configuration_table_shows_every_real_default() -> None:
    """Defaults made by a factory (model lists, prices) are shown as the JSON one would set, not as
    pydantic's placeholder; each reads back as the default it claims."""
    import json

    from kb.settings import KbSettings, variable_of

    readme = (PROJECT_ROOT / "README.md").read_text(encoding="utf-8")
    assert "PydanticUndefined" not in readme
    for name, field in KbSettings.model_fields.items():
        default = field.get_default(call_default_factory=True)
        row = next(
            line
            for line in readme.splitlines()
            if line.startswith(f"| `{variable_of(name).replace(' / ', ', ')}` |")
        )
        shown = row.split(" | ")[1]
        if default is None:
            assert shown == "unset", row
        elif isinstance(default, list | dict):
            assert json.loads(shown.strip("`")) == json.loads(json.dumps(default)), row
        else:
            assert shown == f"`{default}`", row
