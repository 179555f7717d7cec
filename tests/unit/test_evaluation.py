"""The retrieval metrics on hand-made rankings, and the labelled-questions file's errors."""

import json
import math
from pathlib import Path

import pytest

from kb.errors import InputError
from kb.records import SearchHit
from kb.search.evaluation import Label, found_at, label_ranks, load_queries, ndcg, reciprocal_rank


def hit(rank: int, path: str, document_id: int, heading: str = "") -> SearchHit:
    return SearchHit(rank, 1.0, path, "", heading, "", rank, document_id, 0, 0)


HITS = [
    hit(1, "/d/a.md", 1, "Intro"),
    hit(2, "/d/a.md", 1, "Guide > Setup"),
    hit(3, "/d/tutorial/cors.md", 2),
    hit(4, "/d/b.md", 3),
]


def test_ranks_are_per_file_and_headings_are_parts_of_the_heading_path() -> None:
    labels = [Label.parse(t) for t in ["tutorial/cors.md", "a.md#setup", "a.md#Set", "cors.md", "x.md"]]
    # cors.md is the second file, although its chunk is third; a heading must be a whole part.
    assert label_ranks(HITS, labels) == [2, 1, None, 2, None]


def test_mrr_recall_and_ndcg() -> None:
    assert reciprocal_rank([2, None]) == 0.5
    assert reciprocal_rank([None]) == 0.0
    assert reciprocal_rank([11]) == 0.0  # beyond the cutoff
    assert found_at([5], 5) and not found_at([6], 5)
    assert ndcg([1]) == 1.0
    assert ndcg([2]) == pytest.approx(1 / math.log2(3))
    assert ndcg([1, None]) == pytest.approx(1 / (1 + 1 / math.log2(3)))
    assert ndcg([1, 1]) == 1.0  # two labels of one file share rank 1: capped


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("{not json", "is not valid JSON"),
        ("[]", "non-empty list"),
        ('[{"relevant": ["a.md"]}]', 'question 1 has no "q"'),
        ('[{"q": "why?"}]', 'question 1 needs "relevant"'),
    ],
)
def test_bad_queries_files_are_input_errors(tmp_path: Path, content: str, message: str) -> None:
    path = tmp_path / "q.json"
    path.write_text(content)
    with pytest.raises(InputError, match=message):
        load_queries(path)
    with pytest.raises(InputError, match="cannot read"):
        load_queries(tmp_path / "missing.json")


def test_good_file(tmp_path: Path) -> None:
    path = tmp_path / "q.json"
    path.write_text(json.dumps([{"q": "why?", "relevant": ["a.md#Intro"]}]))
    assert load_queries(path)[0].labels == [Label("a.md", "Intro")]
