"""Shaping fused candidates into hits: the per-document cap, merging neighbours, filling freed places."""

from kb.records import SearchHit
from kb.search.shaping import shape

DOCUMENT = "# A\n\nalpha text\n\n## B\n\nbeta text\n\n## C\n\ngamma text\n"


def _hit(
    chunk_id: int, document_id: int, start: int, end: int, heading: str = "A", *, text: str = ""
) -> SearchHit:
    return SearchHit(
        rank=0,
        score=1.0 / chunk_id,
        path=f"/d{document_id}.md",
        title="",
        heading=heading,
        text=text or DOCUMENT[start:end],
        chunk_id=chunk_id,
        document_id=document_id,
        start=start,
        end=end,
        text_rank=chunk_id,
    )


def test_the_cap_keeps_at_most_n_chunks_of_a_document_and_fills_from_others() -> None:
    candidates = [
        _hit(1, 1, 0, 5),
        _hit(2, 1, 20, 25),
        _hit(3, 1, 40, 45),
        _hit(4, 2, 0, 5),
        _hit(5, 3, 0, 5),
    ]
    ordinals = {1: 0, 2: 2, 3: 4, 4: 0, 5: 0}
    hits = shape(candidates, ordinals, k=3, per_document=2)
    assert [hit.chunk_id for hit in hits] == [1, 2, 4]
    assert [hit.rank for hit in hits] == [1, 2, 3]
    assert [hit.chunk_id for hit in shape(candidates, ordinals, k=3, per_document=0)] == [1, 2, 3]


def test_consecutive_chunks_become_one_passage_in_document_order() -> None:
    b, c = DOCUMENT.index("## B"), DOCUMENT.index("## C")
    candidates = [_hit(7, 1, b, c, "A > B"), _hit(6, 1, 0, b, "A"), _hit(9, 2, 0, 5)]
    hits = shape(candidates, {6: 0, 7: 1, 9: 0}, k=2, per_document=0)
    merged = hits[0]
    assert merged.chunk_ids == [6, 7] and merged.chunk_id == 6
    assert merged.text == DOCUMENT[0:c] and (merged.start, merged.end) == (0, c)
    assert merged.heading == "A … A > B"
    assert merged.score == candidates[0].score and merged.rank == 1 and merged.text_rank == 6
    assert [hit.chunk_id for hit in hits] == [6, 9]


def test_merging_frees_a_place_that_the_next_candidate_fills() -> None:
    candidates = [_hit(1, 1, 0, 5), _hit(2, 1, 5, 10), _hit(3, 2, 0, 5), _hit(4, 3, 0, 5)]
    hits = shape(candidates, {1: 0, 2: 1, 3: 0, 4: 0}, k=2, per_document=2)
    assert [hit.chunk_ids for hit in hits] == [[1, 2], [3]]


def test_overlap_and_a_repeated_table_header_are_shown_once() -> None:
    document = "| h |\n| - |\n| 1 |\n| 2 |\n"
    first = _hit(1, 1, 0, 18, text=document[0:18])
    second = _hit(2, 1, 12, 24, text="| h |\n| - |\n" + document[12:24])  # overlaps, with the header again
    (merged,) = shape([first, second], {1: 0, 2: 1}, k=5, per_document=0)
    assert merged.text == document[0:24]


def test_pages_span_the_merged_chunks() -> None:
    first, second = _hit(1, 1, 0, 5), _hit(2, 1, 5, 10)
    first = SearchHit(**{**_fields(first), "page_start": 1, "page_end": 2})
    second = SearchHit(**{**_fields(second), "page_start": 2, "page_end": 3})
    (merged,) = shape([second, first], {1: 0, 2: 1}, k=5, per_document=0)
    assert (merged.page_start, merged.page_end) == (1, 3)


def _fields(hit: SearchHit) -> dict[str, object]:
    return {name: getattr(hit, name) for name in SearchHit.__dataclass_fields__}
