"""Glob patterns given by people (`--path`, `--include`, `--exclude`), checked before they are used: a typo
is an error that says so, not a search or an ingest that silently matches nothing."""

from kb.errors import InputError


def check(pattern: str, option: str) -> str:
    """`pattern`, if it is a well-formed glob; else an InputError naming `option` (e.g. "--path")."""
    if _unclosed_set(pattern):
        raise InputError(
            f"invalid {option} pattern {pattern!r}: '[' opens a set of characters that is never closed "
            "(write '[[]' for a literal '[')"
        )
    return pattern


def _unclosed_set(pattern: str) -> bool:
    position = 0
    while position < len(pattern):
        char = pattern[position]
        if char == "\\":
            position += 2
            continue
        if char == "[":
            inside = position + 1
            if inside < len(pattern) and pattern[inside] in "!^":
                inside += 1
            if inside < len(pattern) and pattern[inside] == "]":  # a ']' first is part of the set
                inside += 1
            close = pattern.find("]", inside)
            if close < 0:
                return True
            position = close + 1
            continue
        position += 1
    return False
