"""Full-text search over chunks with SQLite FTS5 and BM25 (PostgreSQL: a stored tsvector); all FTS SQL
lives here.

SQLite indexes new chunks in bulk, one `INSERT ... SELECT` per write (`index_new`), 3-4x faster than a
trigger per row; triggers keep deletes and edits exact. Anything that inserts chunks calls `index_new`, or
`rebuild` after a bulk copy.
"""

import fnmatch
import json
import re
from collections.abc import Callable, Container
from typing import TYPE_CHECKING

from kb.store.reader import Reader, Row

if TYPE_CHECKING:
    from sqlalchemy.engine import Connection

# Headings say what a chunk is about, so a match there weighs more than one in the body. A context written
# for the chunk (kb enrich) weighs as its text does.
_TEXT_WEIGHT = 1.0
_HEADING_WEIGHT = 2.0
_SITUATION_WEIGHT = 1.0

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


def _meaningful_words(query: str) -> list[str]:
    words = list(dict.fromkeys(word.lower() for word in _WORD.findall(query)))
    return [word for word in words if word not in _STOPWORDS] or words


def match_expression(query: str) -> str | None:
    """An FTS5 MATCH expression for a free-text question: its words OR-ed, each quoted.

    Quoting makes any user input safe (no FTS5 syntax errors); common words are dropped unless nothing else
    is left; BM25 then ranks chunks that match more, and rarer, words first.
    """
    meaningful = _meaningful_words(query)
    if not meaningful:
        return None
    return " OR ".join('"' + word.replace('"', '""') + '"' for word in meaningful)


def tsquery_expression(query: str) -> str | None:
    """The same OR of words for PostgreSQL's to_tsquery; each word quoted, so no input is syntax."""
    meaningful = _meaningful_words(query)
    if not meaningful:
        return None
    return " | ".join("'" + word.replace("'", "''") + "'" for word in meaningful)


def search(
    reader: Reader,
    query: str,
    limit: int,
    path_glob: str | None = None,
    documents: Container[int] | None = None,
    situated: bool = False,
) -> list[tuple[int, float]]:
    """(chunk id, relevance) pairs, best first; higher scores are better (BM25, or ts_rank_cd). Only chunks
    under `path_glob` and of `documents` (ids; None: any), when given: the best of those, exactly.
    `situated`: the contexts written for the chunks count too (the space searched embeds them)."""
    if reader.dialect == "postgresql":
        return _postgres_search(reader, query, limit, path_glob, documents, situated)
    expression = match_expression(query)
    if expression is None:
        return []
    if not situated:
        # Column filter: the same ranking as before contexts were written, whatever they say.
        expression = f"{{text heading_path}} : ({expression})"
    if path_glob is None and documents is None:
        # FTS5 alone: joining every match to its chunk first costs 1.5x at 1M chunks
        sql = (
            f"SELECT rowid, {_BM25} AS rank FROM chunks_fts WHERE chunks_fts MATCH :expression ORDER BY rank"
        )
        rows = reader.rows(sql + " LIMIT :limit", {"expression": expression, "limit": limit})
        return [(int(chunk_id), -float(rank)) for chunk_id, rank in rows]
    params = {"expression": expression, "glob": path_glob or "*"}

    def ranked(depth: int) -> list[Row]:
        # Only a path filter: SQL keeps the best `limit`; else every row of the depth, for `documents`.
        return reader.rows(
            _RANKED_THEN_FILTERED, {**params, "depth": depth, "limit": limit if documents is None else depth}
        )

    def matches() -> int:
        count = "SELECT count(*) FROM chunks_fts WHERE chunks_fts MATCH :expression"
        return int(reader.rows(count, {"expression": expression})[0][0])

    kept = _best_kept(ranked, matches, limit, lambda row: documents is None or row[2] in documents)
    return [(int(chunk_id), -float(rank)) for chunk_id, rank, _ in kept]


_BM25 = f"bm25(chunks_fts, {_TEXT_WEIGHT}, {_HEADING_WEIGHT}, {_SITUATION_WEIGHT})"
# The best `depth` matches ranked by FTS5 alone, then joined and filtered: one query that joins every match
# before ranking lets SQLite walk documents first and cost seconds at 1M chunks.
_RANKED_THEN_FILTERED = (
    f"WITH ranked AS (SELECT rowid AS id, {_BM25} AS rank FROM chunks_fts"
    " WHERE chunks_fts MATCH :expression ORDER BY rank LIMIT :depth) "
    "SELECT r.id, r.rank, c.document_id FROM ranked r JOIN chunks c ON c.id = r.id "
    "JOIN documents d ON d.id = c.document_id WHERE d.source_path GLOB :glob ORDER BY r.rank LIMIT :limit"
)
_FIRST_DEPTH = 20  # x limit: a filter keeping 5% of the chunks is answered by the first pass
_WIDENING = 10


def _best_kept(
    ranked: Callable[[int], list[Row]], matches: Callable[[], int], limit: int, keep: Callable[[Row], bool]
) -> list[Row]:
    """The best `limit` rows that `keep` accepts, exactly: if fewer than `limit` of the best `depth` matches
    are kept, rank deeper, until `limit` are or the depth covers every match."""
    depth = limit * _FIRST_DEPTH
    total: int | None = None
    while True:
        kept = [row for row in ranked(depth) if keep(row)][:limit]
        if len(kept) >= limit:
            return kept
        if total is None:
            total = matches()
        if depth >= total:
            return kept
        depth = min(depth * _WIDENING, total)


def under_paths(reader: Reader, chunk_ids: list[int], path_glob: str) -> set[int]:
    """Those of `chunk_ids` whose document's path matches `path_glob` (SQLite GLOB, as `search` filters)."""
    if not chunk_ids:
        return set()
    if reader.dialect == "postgresql":
        rows = reader.rows(
            "SELECT c.id, d.source_path FROM chunks c JOIN documents d ON d.id = c.document_id "
            "WHERE c.id = ANY(:ids)",
            {"ids": chunk_ids},
        )
        return {int(chunk_id) for chunk_id, path in rows if fnmatch.fnmatchcase(str(path), path_glob)}
    sql = (
        "SELECT c.id FROM chunks c JOIN documents d ON d.id = c.document_id "
        "WHERE c.id IN (SELECT value FROM json_each(:ids)) AND d.source_path GLOB :glob"
    )
    rows = reader.rows(sql, {"ids": json.dumps(chunk_ids), "glob": path_glob})
    return {int(chunk_id) for (chunk_id,) in rows}


# The stored `to_tsvector('english', text || ' ' || heading_path)` column of migration 0005, and with the
# stored `to_tsvector('english', situation)` of migration 0013 for a space that embeds the contexts.
_DOCUMENT_VECTOR = "c.search_vector"
_SITUATED_VECTOR = "(c.search_vector || c.situation_vector)"
# ts_rank normalised by document length (flag 1) is the closest to BM25 on the labelled FastAPI questions:
# text recall@1/@5 0.85 / 0.95, against 0.50 / 0.80 for ts_rank_cd (docs/postgres.md).
_RANK = "ts_rank({v}, q, 1)"
_POSTGRES_FROM = (
    "FROM chunks c JOIN documents d ON d.id = c.document_id, to_tsquery('english', :expression) AS q "
    f"WHERE {_DOCUMENT_VECTOR} @@ q"
)
# Either column's GIN index finds the matches (a bitmap OR); the rank reads both as one document.
_POSTGRES_SITUATED_FROM = _POSTGRES_FROM + " OR c.situation_vector @@ q"


def _postgres_search(
    reader: Reader,
    query: str,
    limit: int,
    path_glob: str | None,
    documents: Container[int] | None,
    situated: bool = False,
) -> list[tuple[int, float]]:
    expression = tsquery_expression(query)
    if expression is None:
        return []
    vector, source = (
        (_SITUATED_VECTOR, _POSTGRES_SITUATED_FROM) if situated else (_DOCUMENT_VECTOR, _POSTGRES_FROM)
    )

    def ranked(depth: int) -> list[Row]:
        return reader.rows(
            f"SELECT c.id, {_RANK.format(v=vector)} AS rank, d.id, d.source_path {source} "
            "ORDER BY rank DESC, c.id LIMIT :depth",
            {"expression": expression, "depth": depth},
        )

    def matches() -> int:
        return int(reader.rows(f"SELECT count(*) {source}", {"expression": expression})[0][0])

    def keep(row: Row) -> bool:
        in_path = path_glob is None or fnmatch.fnmatchcase(str(row[3]), path_glob)
        return in_path and (documents is None or row[2] in documents)

    if path_glob is None and documents is None:
        return [(int(row[0]), float(row[1])) for row in ranked(limit)]
    # A filter is applied after ranking, widening as SQLite's is: the best matches that pass it, exactly.
    return [(int(row[0]), float(row[1])) for row in _best_kept(ranked, matches, limit, keep)]


def last_chunk_id(connection: "Connection") -> int:
    """The highest chunk id now (new chunks of this write will have higher ones)."""
    return int(connection.exec_driver_sql("SELECT coalesce(max(id), 0) FROM chunks").scalar_one())


def index_new(connection: "Connection", after_id: int) -> None:
    """Add the chunks with ids above `after_id` (this write's) to SQLite's full-text index, in one statement.
    The caller's transaction holds the write lock, so no other writer's chunks are among them."""
    if connection.dialect.name == "postgresql":
        return  # the stored tsvector column is computed as rows are written
    connection.exec_driver_sql(
        "INSERT INTO chunks_fts(rowid, text, heading_path, situation) "
        "SELECT id, text, heading_path, situation FROM chunks WHERE id > ?",
        (after_id,),
    )


def rebuild(connection: "Connection") -> None:
    """Rebuild SQLite's full-text index from the chunks (after rows were copied in bulk)."""
    if connection.dialect.name != "postgresql":
        connection.exec_driver_sql("INSERT INTO chunks_fts(chunks_fts) VALUES ('rebuild')")


# -- what a derived full-text index (kb.search.textindex) reads to keep up with the chunks ---------------


def chunk_watermark(reader: Reader) -> tuple[int, int, float]:
    """(highest chunk id, number of chunks, latest document change): a derived index holding the same is
    fresh. The last is needed because SQLite gives a new row the highest id + 1: chunks replacing the
    newest ones reuse their ids, and may be as many."""
    row = reader.rows(
        "SELECT coalesce(max(id), 0), count(*), "
        "(SELECT coalesce(max(updated_at), 0) FROM documents) FROM chunks"
    )[0]
    return int(row[0]), int(row[1]), float(row[2])


IndexedRow = tuple[int, str, str, str]  # chunk id, text, heading path, situation


def chunk_rows_after(reader: Reader, after_id: int, limit: int) -> list[IndexedRow]:
    """Up to `limit` chunks with ids above `after_id`, by id."""
    rows = reader.rows(
        "SELECT id, text, coalesce(heading_path, ''), situation FROM chunks WHERE id > :after "
        "ORDER BY id LIMIT :limit",
        {"after": after_id, "limit": limit},
    )
    return [_indexed(row) for row in rows]


def chunk_rows_changed(
    reader: Reader, since: float, through: int, after_id: int, limit: int
) -> list[IndexedRow]:
    """Up to `limit` chunks with ids in (`after_id`, `through`] of documents changed after `since`, by id
    (a context written for a chunk changes its document: kb.store.contexts.situate)."""
    rows = reader.rows(
        "SELECT c.id, c.text, coalesce(c.heading_path, ''), c.situation FROM chunks c "
        "JOIN documents d ON d.id = c.document_id "
        "WHERE d.updated_at > :since AND c.id > :after AND c.id <= :through ORDER BY c.id LIMIT :limit",
        {"since": since, "after": after_id, "through": through, "limit": limit},
    )
    return [_indexed(row) for row in rows]


def _indexed(row: Row) -> IndexedRow:
    chunk_id, text, heading, situation = row
    return int(chunk_id), str(text), str(heading), str(situation or "")


def chunk_ids(reader: Reader, through: int) -> set[int]:
    """Every chunk id up to `through`."""
    ids: set[int] = set()
    for block in reader.blocks("SELECT id FROM chunks WHERE id <= :through", 65_536, {"through": through}):
        ids.update(int(row[0]) for row in block)
    return ids
