"""Retrieval quality against labelled questions: recall@k per search mode.

A labelled question is `{"q": "...", "relevant": ["tutorial/cors.md", ...]}`; a hit is relevant when its
document path ends with one of the relevant paths.
"""

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from kb.records import SearchMode, SearchResult


class Searcher(Protocol):
    def search(
        self, query: str, *, k: int = 10, mode: SearchMode | str = SearchMode.HYBRID
    ) -> SearchResult: ...


@dataclass(frozen=True, slots=True)
class LabelledQuery:
    question: str
    relevant: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Recall:
    mode: SearchMode
    at_1: float
    at_5: float
    queries: int
    fell_back: int  # questions answered from full text although another mode was asked for


def load_queries(path: Path) -> list[LabelledQuery]:
    items = json.loads(path.read_text(encoding="utf-8"))
    return [LabelledQuery(item["q"], tuple(item["relevant"])) for item in items]


def first_relevant_rank(result: SearchResult, relevant: Sequence[str]) -> int | None:
    for hit in result.hits:
        if any(hit.path.endswith("/" + path) or hit.path == path for path in relevant):
            return hit.rank
    return None


def recall(searcher: Searcher, queries: Sequence[LabelledQuery], mode: SearchMode) -> Recall:
    found_at_1 = found_at_5 = fell_back = 0
    for query in queries:
        result = searcher.search(query.question, k=5, mode=mode)
        fell_back += result.used != mode
        rank = first_relevant_rank(result, query.relevant)
        found_at_1 += rank == 1
        found_at_5 += rank is not None
    total = max(len(queries), 1)
    return Recall(mode, found_at_1 / total, found_at_5 / total, len(queries), fell_back)
