"""Full-text search over chunks with SQLite FTS5 and BM25; all FTS SQL lives here."""

import re

from sqlalchemy import text
from sqlalchemy.engine import Connection

# Headings say what a chunk is about, so a match there weighs more than one in the body.
_TEXT_WEIGHT = 1.0
_HEADING_WEIGHT = 2.0

_WORD = re.compile(r"\w+", re.UNICODE)
_STOPWORDS = frozenset(
    [
        "a",
        "an",
        "and",
        "are",
        "as",
        "at",
        "be",
        "but",
        "by",
        "can",
        "do",
        "does",
        "for",
        "from",
        "how",
        "i",
        "if",
        "in",
        "into",
        "is",
        "it",
        "its",
        "me",
        "my",
        "of",
        "on",
        "or",
        "so",
        "that",
        "the",
        "their",
        "then",
        "there",
        "these",
        "this",
        "to",
        "was",
        "we",
        "what",
        "when",
        "where",
        "which",
        "who",
        "why",
        "will",
        "with",
        "you",
        "your",
    ]
)


def match_expression(query: str) -> str | None:
    """An FTS5 MATCH expression for a free-text question: its words OR-ed, each quoted.

    Quoting makes any user input safe (no FTS5 syntax errors); common words are dropped unless nothing else
    is left; BM25 then ranks chunks that match more, and rarer, words first.
    """
    words = list(dict.fromkeys(word.lower() for word in _WORD.findall(query)))
    meaningful = [word for word in words if word not in _STOPWORDS] or words
    if not meaningful:
        return None
    return " OR ".join('"' + word.replace('"', '""') + '"' for word in meaningful)


def search(
    connection: Connection, query: str, limit: int, path_glob: str | None = None
) -> list[tuple[int, float]]:
    """(chunk id, BM25 score) pairs, best first; higher scores are better."""
    expression = match_expression(query)
    if expression is None:
        return []
    path_filter = "AND d.source_path GLOB :glob" if path_glob else ""
    rows = connection.execute(
        text(
            f"SELECT c.id, bm25(chunks_fts, {_TEXT_WEIGHT}, {_HEADING_WEIGHT}) AS rank "
            "FROM chunks_fts JOIN chunks c ON c.id = chunks_fts.rowid "
            "JOIN documents d ON d.id = c.document_id "
            f"WHERE chunks_fts MATCH :expression {path_filter} "
            "ORDER BY rank LIMIT :limit"
        ),
        {"expression": expression, "limit": limit, "glob": path_glob},
    )
    return [(int(chunk_id), -float(rank)) for chunk_id, rank in rows]
