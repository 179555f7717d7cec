"""Shaping the fused ranking into the hits a person reads: at most `per_document` chunks of one document,
and consecutive chunks of one document (ordinal n, n+1) merged into one passage.

Both free places in the top k; they are filled from the candidates further down the fused ranking (run_search
passes max(5k, 50) of them), so k hits come back whenever the candidates allow.
"""

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import replace

from kb.records import SearchHit

HEADING_RANGE = " … "  # "A > B … A > C": a passage that starts under one heading and ends under another


def shape(
    candidates: Sequence[SearchHit], ordinals: Mapping[int, int], *, k: int, per_document: int
) -> list[SearchHit]:
    """The top `k` passages of `candidates` (best first, one chunk each); `per_document` 0 means no cap."""
    chosen: list[SearchHit] = []
    taken: dict[int, int] = {}
    for hit in candidates:
        if per_document and taken.get(hit.document_id, 0) >= per_document:
            continue
        trial = [*chosen, hit]
        if len(merge(trial, ordinals)) > k:
            break
        chosen = trial
        taken[hit.document_id] = taken.get(hit.document_id, 0) + 1
    return merge(chosen, ordinals)


def merge(hits: Sequence[SearchHit], ordinals: Mapping[int, int]) -> list[SearchHit]:
    """Runs of consecutive chunks of one document become one hit, placed at its best member's place."""
    place = {hit.chunk_id: index for index, hit in enumerate(hits)}
    ordered = sorted(hits, key=lambda hit: (hit.document_id, ordinals[hit.chunk_id]))
    runs: list[list[SearchHit]] = []
    for hit in ordered:
        last = runs[-1][-1] if runs else None
        if (
            last is not None
            and last.document_id == hit.document_id
            and ordinals[hit.chunk_id] == ordinals[last.chunk_id] + 1
        ):
            runs[-1].append(hit)
        else:
            runs.append([hit])
    runs.sort(key=lambda run: min(place[hit.chunk_id] for hit in run))
    return [replace(_passage(run, place), rank=rank) for rank, run in enumerate(runs, start=1)]


def _passage(run: list[SearchHit], place: Mapping[int, int]) -> SearchHit:
    if len(run) == 1:
        return run[0]
    best = min(run, key=lambda hit: place[hit.chunk_id])
    first, last = run[0], run[-1]
    pages = [page for hit in run for page in (hit.page_start, hit.page_end) if page is not None]
    return replace(
        best,
        heading=first.heading
        if first.heading == last.heading
        else f"{first.heading}{HEADING_RANGE}{last.heading}",
        text=_joined(run),
        chunk_id=first.chunk_id,
        chunk_ids=[hit.chunk_id for hit in run],
        start=first.start,
        end=max(hit.end for hit in run),
        page_start=min(pages) if pages else None,
        page_end=max(pages) if pages else None,
        text_rank=_best_rank(hit.text_rank for hit in run),
        vector_rank=_best_rank(hit.vector_rank for hit in run),
    )


def _joined(run: list[SearchHit]) -> str:
    """The run's text in document order, each overlap with the chunk before it shown once.

    A chunk's text is document[start:end], or a repeated table header then that (kb.core.chunking): the
    part from the document is its last end - start characters."""
    text = run[0].text
    end = run[0].end
    for hit in run[1:]:
        own = hit.text[len(hit.text) - (hit.end - hit.start) :]
        if hit.start >= end:
            text += "\n\n" + own if hit.start > end else own
        else:
            text += own[end - hit.start :]
        end = max(end, hit.end)
    return text


def _best_rank(ranks: Iterable[int | None]) -> int | None:
    known = [rank for rank in ranks if rank is not None]
    return min(known) if known else None
