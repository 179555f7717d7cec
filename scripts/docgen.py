"""Generators for the cog blocks in README.md and docs/*.md (run `scripts/cog`; CI runs `cog --check`)."""

import json
from typing import Any

import typer

from kb.cli.commands import app
from kb.settings import KbSettings, variable_of


def _commands(group: Any, prefix: str = "kb") -> list[tuple[str, Any]]:
    found: list[tuple[str, Any]] = []
    for name in sorted(group.commands):
        command = group.commands[name]
        path = f"{prefix} {name}"
        if hasattr(command, "commands"):
            found.extend(_commands(command, path))
        else:
            found.append((path, command))
    return found


def command_list() -> list[tuple[str, str]]:
    """(full command, first line of its help) for every command."""
    root = typer.main.get_command(app)
    return [(path, (cmd.help or "").strip().splitlines()[0]) for path, cmd in _commands(root)]


def command_summary() -> str:
    lines = ["| command | what it does |", "|---|---|"]
    lines += [f"| `{path}` | {summary} |" for path, summary in command_list()]
    return "\n".join(lines) + "\n"


def _option_row(param: Any) -> str:
    if param.param_type_name == "argument":
        name = f"`{(param.name or '').upper()}`"
        kind = "argument"
    else:
        name = ", ".join(f"`{opt}`" for opt in param.opts)
        kind = "flag" if getattr(param, "is_flag", False) else "option"
    help_text = (getattr(param, "help", None) or "").replace("|", "\\|")
    return f"| {name} | {kind} | {help_text} |"


def cli_reference() -> str:
    root = typer.main.get_command(app)
    lines = ["### `kb` (global options)", "", "| name | kind | meaning |", "|---|---|---|"]
    lines += [_option_row(param) for param in root.params if param.name != "help"]
    for path, command in _commands(root):
        lines += ["", f"### `{path}`", "", (command.help or "").strip()]
        params = [p for p in command.params if p.name != "help"]
        if params:
            lines += ["", "| name | kind | meaning |", "|---|---|---|"]
            lines += [_option_row(param) for param in params]
    return "\n".join(lines) + "\n"


def settings_table() -> str:
    lines = ["| environment variable | default | meaning |", "|---|---|---|"]
    for name, field in KbSettings.model_fields.items():
        env = variable_of(name).replace(" / ", ", ")
        lines.append(f"| `{env}` | {setting_default(name)} | {field.description or ''} |")
    return "\n".join(lines) + "\n"


def setting_default(name: str) -> str:
    """A setting's default as the table shows it: `unset`, or its value (lists and mappings as the JSON one
    would write in the environment)."""
    value = KbSettings.model_fields[name].get_default(call_default_factory=True)
    if value is None:
        return "unset"
    if isinstance(value, list | dict):
        return f"`{json.dumps(value, separators=(', ', ': '))}`"
    return f"`{value}`"
