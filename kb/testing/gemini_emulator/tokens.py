"""The emulator's token counter: deterministic and close enough to a SentencePiece tokenizer for budgets.

Each match of `\\w+|[^\\w\\s]` costs: an ASCII word ceil(len/6) tokens (at least 1), a punctuation mark 1,
and every non-ASCII character 1. It drives billing, `countTokens`, the input limit and batch `tokenCount`s.
"""

import re

_PIECE = re.compile(r"\w+|[^\w\s]")
_ASCII_RUN = re.compile(r"[\x00-\x7f]+")


def piece_tokens(piece: str) -> int:
    if piece.isascii():
        return (len(piece) + 5) // 6
    ascii_tokens = sum((len(run) + 5) // 6 for run in _ASCII_RUN.findall(piece))
    return ascii_tokens + sum(1 for char in piece if not char.isascii())


def count_tokens(text: str) -> int:
    return sum(piece_tokens(piece) for piece in _PIECE.findall(text))


def truncate_to_tokens(text: str, limit: int) -> str:
    """The longest prefix of whole pieces that fits in `limit` tokens."""
    used = 0
    for match in _PIECE.finditer(text):
        used += piece_tokens(match.group())
        if used > limit:
            return text[: match.start()].rstrip()
    return text
