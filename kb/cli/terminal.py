"""Text made safe for a terminal: Rich markup escaped, control characters shown instead of obeyed.

File names, headings and documents can hold anything. An ESC sequence would retitle the terminal or hide
output, a carriage return or newline would forge a line of kb's own, a bidirectional override would reorder
what is read. Human output shows them as escapes (`\\x1b`, `\\n`); JSON output stays exact.
"""

import re

# C0 and C1 controls, DEL, and the bidirectional embeddings, overrides and isolates.
_UNSAFE = re.compile("[\x00-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]")
_NAMED = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


def visible(text: str, keep: str = "") -> str:
    """`text` with its unsafe characters written as escapes, except those in `keep` (e.g. "\\n\\t")."""

    def shown(match: re.Match[str]) -> str:
        char = match.group()
        if char in keep:
            return char
        return _NAMED.get(char) or (f"\\x{ord(char):02x}" if ord(char) < 0x100 else f"\\u{ord(char):04x}")

    return _UNSAFE.sub(shown, text)


def escape(text: str, keep: str = "") -> str:
    """Text Rich prints as is: control characters made visible, then its `[...]` markup escaped."""
    from rich.markup import escape as rich_escape

    return rich_escape(visible(text, keep))
