"""Retrieval quality against labelled questions: recall@1/5/10, MRR and nDCG@10 per search mode.

A labelled question is `{"q": "...", "relevant": ["tutorial/cors.md", "async.md#Coroutines", ...]}`. A label
matches a hit whose document path equals it or ends with "/" + it; with "#Heading", the hit's heading path
must also hold that heading as one of its " > "-separated parts (case-insensitive). Ranks are at file level:
a label's rank is the number of distinct documents seen down to the first hit it matches.
"""

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from kb.errors import InputError
from kb.records import SearchHit, SearchMode, SearchResult

CUTOFF = 10  # MRR and nDCG look at the first ten files
SEARCH_DEPTH = 50  # chunks asked for, so that ten distinct files are usually among them


class Searcher(Protocol):
    def search(
        self, query: str, *, k: int = 10, mode: SearchMode | str = SearchMode.HYBRID
    ) -> SearchResult: ...


@dataclass(frozen=True, slots=True)
class Label:
    path: str
    heading: str | None = None

    @classmethod
    def parse(cls, text: str) -> "Label":
        path, _, heading = text.partition("#")
        return cls(path, heading.strip() or None)

    def matches(self, hit: SearchHit) -> bool:
        if not (hit.path == self.path or hit.path.endswith("/" + self.path)):
            return False
        if self.heading is None:
            return True
        parts = [part.strip().casefold() for part in hit.heading.split(" > ")]
        return self.heading.casefold() in parts


@dataclass(frozen=True, slots=True)
class LabelledQuery:
    question: str
    relevant: tuple[str, ...]

    @property
    def labels(self) -> list[Label]:
        return [Label.parse(text) for text in self.relevant]


def load_queries(path: Path) -> list[LabelledQuery]:
    """The labelled questions of a JSON file; InputError (exit 2) saying what is wrong with it."""
    try:
        items = json.loads(path.read_text(encoding="utf-8"))
    except OSError as error:
        raise InputError(f"cannot read {path}: {error.strerror or error}") from error
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise InputError(f"{path} is not valid JSON: {error}") from error
    if not isinstance(items, list) or not items:
        raise InputError(f'{path}: expected a non-empty list of {{"q": ..., "relevant": [...]}}')
    queries = []
    for number, item in enumerate(items, start=1):
        if not isinstance(item, dict) or not isinstance(item.get("q"), str) or not item["q"].strip():
            raise InputError(f'{path}: question {number} has no "q" text')
        relevant = item.get("relevant")
        if not isinstance(relevant, list) or not relevant or not all(isinstance(r, str) for r in relevant):
            raise InputError(f'{path}: question {number} needs "relevant": a non-empty list of paths')
        queries.append(LabelledQuery(item["q"], tuple(relevant)))
    return queries


# -- the metrics, as pure functions of the ranks ---------------------------------------------------------


def label_ranks(hits: Sequence[SearchHit], labels: Sequence[Label]) -> list[int | None]:
    """Each label's file-level rank: distinct documents seen down to its first matching hit (None: none)."""
    ranks: list[int | None] = [None] * len(labels)
    seen: set[int] = set()
    for hit in hits:
        seen.add(hit.document_id)
        for index, label in enumerate(labels):
            if ranks[index] is None and label.matches(hit):
                ranks[index] = len(seen)
    return ranks


def best_rank(ranks: Sequence[int | None]) -> int | None:
    found = [rank for rank in ranks if rank is not None]
    return min(found) if found else None


def found_at(ranks: Sequence[int | None], k: int) -> bool:
    best = best_rank(ranks)
    return best is not None and best <= k


def reciprocal_rank(ranks: Sequence[int | None], cutoff: int = CUTOFF) -> float:
    best = best_rank(ranks)
    return 1.0 / best if best is not None and best <= cutoff else 0.0


def ndcg(ranks: Sequence[int | None], cutoff: int = CUTOFF) -> float:
    """Binary gains, each label once at its rank; ideal: min(labels, cutoff) at the top. Capped at 1 (two
    labels of one file can share a rank)."""
    gain = sum(1 / math.log2(rank + 1) for rank in ranks if rank is not None and rank <= cutoff)
    ideal = sum(1 / math.log2(position + 1) for position in range(1, min(len(ranks), cutoff) + 1))
    return min(1.0, gain / ideal) if ideal else 0.0


# -- running the questions -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Outcome:
    question: str
    ranks: tuple[int | None, ...]  # per label
    fell_back: bool

    @property
    def best(self) -> int | None:
        return best_rank(self.ranks)


@dataclass(frozen=True, slots=True)
class ModeScore:
    mode: SearchMode
    outcomes: tuple[Outcome, ...]

    @property
    def queries(self) -> int:
        return len(self.outcomes)

    def recall_at(self, k: int) -> float:
        return _mean([float(found_at(o.ranks, k)) for o in self.outcomes])

    @property
    def mrr(self) -> float:
        return _mean([reciprocal_rank(o.ranks) for o in self.outcomes])

    @property
    def ndcg(self) -> float:
        return _mean([ndcg(o.ranks) for o in self.outcomes])

    @property
    def fell_back(self) -> int:
        return sum(o.fell_back for o in self.outcomes)

    def failed_at(self, k: int) -> list[Outcome]:
        return [o for o in self.outcomes if not found_at(o.ranks, k)]


def _mean(values: Sequence[float]) -> float:
    return sum(values) / len(values) if values else 0.0


def score(searcher: Searcher, queries: Sequence[LabelledQuery], mode: SearchMode) -> ModeScore:
    outcomes = []
    for query in queries:
        result = searcher.search(query.question, k=SEARCH_DEPTH, mode=mode)
        ranks = label_ranks(result.hits, query.labels)
        outcomes.append(Outcome(query.question, tuple(ranks), result.used != mode))
    return ModeScore(mode, tuple(outcomes))


# -- the former recall@1/@5 summary, kept for the pipeline tests -----------------------------------------


@dataclass(frozen=True, slots=True)
class Recall:
    mode: SearchMode
    at_1: float
    at_5: float
    queries: int
    fell_back: int  # questions answered from full text although another mode was asked for


def first_relevant_rank(result: SearchResult, relevant: Sequence[str]) -> int | None:
    return best_rank(label_ranks(result.hits, [Label.parse(text) for text in relevant]))


def recall(searcher: Searcher, queries: Sequence[LabelledQuery], mode: SearchMode) -> Recall:
    scored = score(searcher, queries, mode)
    return Recall(mode, scored.recall_at(1), scored.recall_at(5), scored.queries, scored.fell_back)
