"""How a space's vectors are searched: sqlite-vec's exact scan, or the quantized index over their codes.

sqlite-vec scans every float (60 ms at 100,000 vectors of 768 dimensions, ~0.6 s at a million). The
quantized index scans one sign bit per dimension instead (`kb.core.quantize`: 96 bytes a vector, ~25 ms per
million in numpy), keeps the nearest 0.5% as candidates, ranks them by their int8 levels when those are in
memory, and reads the exact vectors of the best from the database for the final order: recall@10 0.99 on
clustered vectors at a million (docs/performance.md). Its codes are written with the vectors, in the same
transaction (`kb.store.vectors`), so a crash can never leave the index behind the database: at every search it
loads just the blocks written since, and reloads whole when the codes were refitted.

`search_index` chooses: `exact`, `quantized` (signs in memory, ~100 MB per million vectors; candidates are
re-scored from the database), `memory` (levels too, ~870 MB per million; for long-lived processes), or
`auto`: exact below `EXACT_BELOW` vectors; above, a process's first search scans exactly up to
`FIRST_EXACT_BELOW` vectors (loading codes would cost more) and otherwise uses signs only, and its later
searches keep everything in memory. PostgreSQL always uses pgvector's HNSW index.
"""

import logging
import threading
from dataclasses import dataclass, field
from enum import StrEnum

import numpy as np
from numpy.typing import NDArray

from kb.core.quantize import Quantizer, sign_bytes
from kb.store import vectors
from kb.store.reader import Reader

log = logging.getLogger(__name__)

EXACT_BELOW = 20_000
FIRST_EXACT_BELOW = 80_000
CANDIDATE_SHARE = 200  # candidates: 1 vector in 200 ...
MIN_CANDIDATES = 1_000  # ... and at least this many
EXACT_SHORTLIST = 20  # with levels in memory: the best k (at least this many) are read exactly
_SEGMENT_ROWS = 65_536  # rows loaded into one array (and scanned per step: cache-sized)
_MAX_SMALL_SEGMENTS = 8  # blocks loaded since are merged when more pile up

Neighbours = list[tuple[int, float]]  # (row id, cosine distance), nearest first


class Method(StrEnum):
    EXACT = "exact"
    QUANTIZED = "quantized"
    MEMORY = "memory"


def choose(setting: str, stored: int, searches: int, dialect: str) -> Method:
    """The method for a search of a space holding `stored` vectors, after `searches` in this process."""
    if dialect == "postgresql" or setting == "exact":
        return Method.EXACT
    if setting in (Method.QUANTIZED, Method.MEMORY):
        return Method(setting)
    if stored < EXACT_BELOW:
        return Method.EXACT
    if searches == 0:
        return Method.EXACT if stored < FIRST_EXACT_BELOW else Method.QUANTIZED
    return Method.MEMORY


@dataclass(frozen=True, slots=True)
class _Segment:
    ids: NDArray[np.int64]
    # (words, n): word-major, so each 64-bit word of the query meets one contiguous array (4x faster)
    signs: NDArray[np.uint64]
    levels: NDArray[np.int8] | None  # (n, dimensions)


@dataclass(frozen=True, slots=True)
class _Loaded:
    """One consistent state of the index, swapped whole: searches in other threads keep the one they took."""

    quantizer: Quantizer
    segments: tuple[_Segment, ...]
    through: int  # the last code block loaded
    # Every segment's ids in order, made once per state (positions -> row ids): a search no longer copies
    # a million ids to look up its shortlist.
    ids: NDArray[np.int64] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        ids = [segment.ids for segment in self.segments]
        object.__setattr__(self, "ids", np.concatenate(ids) if ids else np.empty(0, dtype=np.int64))

    @property
    def size(self) -> int:
        return sum(len(segment.ids) for segment in self.segments)


class QuantizedIndex:
    """A space's codes in memory (signs, and levels if `levels`), caught up with the database per search."""

    def __init__(self, space_id: int, dimensions: int, levels: bool) -> None:
        self.space_id = space_id
        self.dimensions = dimensions
        self.levels = levels
        self._loaded: _Loaded | None = None

    def refresh(self, reader: Reader, stored: int) -> bool:
        """Load what was written since; False when the codes do not cover the `stored` vectors (counted
        before this call: a write landing in between only adds codes, never makes them look incomplete)."""
        state = vectors.codes_state(reader, self.space_id)
        if state.token is None or state.coded < stored:
            return False
        loaded = self._loaded
        if loaded is None or loaded.quantizer.token != state.token or state.through < loaded.through:
            fitted = vectors.quantizer(reader, self.space_id)
            if fitted is None or fitted.token != state.token:
                return False  # refitted at this very moment: the next search catches up
            loaded = _Loaded(fitted, (), 0)
        if state.through > loaded.through:
            loaded = self._load(reader, loaded, state.through)
        self._loaded = loaded
        return True

    def nearest(self, reader: Reader, query: NDArray[np.float32], k: int) -> Neighbours:
        loaded = self._loaded
        if loaded is None or not loaded.size:
            return []
        query = np.asarray(query, dtype=np.float32)
        residual = query - loaded.quantizer.center
        candidates = _nearest_by_signs(loaded, loaded.quantizer.signs(residual).view(np.uint64)[0], k)
        all_ids = loaded.ids
        if not self.levels:  # every candidate is re-scored exactly
            every = _unique(all_ids[candidates])
            return _exact_order(reader, self.space_id, self.dimensions, every, query, k)
        # (x - center) . q ranks as x . q does: center . q is the same for every x.
        shortlist, scores = _ranked_by_levels(loaded, candidates, query * loaded.quantizer.scale)
        ids, first = _unique_with_positions(all_ids[shortlist])
        # The best EXACT_SHORTLIST are read and re-scored exactly (a vec0 row costs 70 us at a million);
        # the rest of a deep k (hybrid asks 100) keep the levels' order and estimated similarity.
        exact = _exact_order(reader, self.space_id, self.dimensions, ids[:EXACT_SHORTLIST], query, k)
        if k <= EXACT_SHORTLIST or len(ids) <= EXACT_SHORTLIST:
            return exact
        offset = float(loaded.quantizer.center @ query)
        rest = slice(EXACT_SHORTLIST, k)  # only those: the shortlist holds thousands
        similarities = (scores[first[rest]].astype(np.float64) + offset).tolist()
        return exact + [(i, 1.0 - s) for i, s in zip(ids[rest].tolist(), similarities, strict=True)]

    def _load(self, reader: Reader, loaded: _Loaded, through: int) -> _Loaded:
        sizes = vectors.block_sizes(reader, self.space_id, loaded.through, through)
        segments = list(loaded.segments)
        group: list[tuple[int, int]] = []
        for block, size in sizes:
            group.append((block, size))
            if sum(s for _, s in group) >= _SEGMENT_ROWS:
                segments.append(self._segment(reader, group))
                group = []
        if group:
            segments.append(self._segment(reader, group))
        return _Loaded(loaded.quantizer, tuple(_merge_small(segments)), through)

    def _segment(self, reader: Reader, group: list[tuple[int, int]]) -> _Segment:
        """The blocks of `group` copied into arrays sized up front: the peak is the arrays themselves."""
        rows = sum(size for _, size in group)
        ids = np.empty(rows, dtype=np.int64)
        signs = np.empty((sign_bytes(self.dimensions) // 8, rows), dtype=np.uint64)
        levels = np.empty((rows, self.dimensions), dtype=np.int8) if self.levels else None
        filled = 0
        blocks = vectors.code_blocks(reader, self.space_id, group[0][0] - 1, group[-1][0], self.levels)
        for block_ids, block_signs, block_levels in blocks:
            end = filled + len(block_ids)
            ids[filled:end] = block_ids
            signs[:, filled:end] = np.frombuffer(block_signs, dtype=np.uint64).reshape(len(block_ids), -1).T
            if levels is not None and block_levels is not None:
                levels[filled:end] = np.frombuffer(block_levels, dtype=np.int8).reshape(len(block_ids), -1)
            filled = end
        return _Segment(
            ids[:filled], signs[:filled].view(np.uint64), None if levels is None else levels[:filled]
        )


def _merge_small(segments: list[_Segment]) -> list[_Segment]:
    small = [segment for segment in segments if len(segment.ids) < _SEGMENT_ROWS]
    if len(small) <= _MAX_SMALL_SEGMENTS:
        return segments
    big = [segment for segment in segments if len(segment.ids) >= _SEGMENT_ROWS]
    levels = [segment.levels for segment in small]
    merged = _Segment(
        np.concatenate([segment.ids for segment in small]),
        np.concatenate([segment.signs for segment in small], axis=1),
        None if any(level is None for level in levels) else np.concatenate(levels),  # type: ignore[arg-type]
    )
    return [*big, merged]


def _nearest_by_signs(loaded: _Loaded, query_signs: NDArray[np.uint64], k: int) -> NDArray[np.intp]:
    """Positions (over all segments, in order) of the vectors whose signs differ least from the query's,
    in no particular order."""
    distances = _sign_distances(loaded, query_signs)
    wanted = min(len(distances), max(MIN_CANDIDATES, len(distances) // CANDIDATE_SHARE, 10 * k))
    if wanted >= len(distances):
        return np.arange(len(distances))
    # Distances are small integers: the cut-off comes from their histogram (a partition costs 5x more).
    cumulative = np.cumsum(np.bincount(distances))
    cutoff = int(np.searchsorted(cumulative, wanted))
    below = np.flatnonzero(distances < cutoff)
    at = np.flatnonzero(distances == cutoff)[: wanted - len(below)]
    return np.concatenate([below, at])


def _sign_distances(loaded: _Loaded, query_signs: NDArray[np.uint64]) -> NDArray[np.uint16]:
    """Hamming distance from the query's signs to every vector's, a cache-sized stretch at a time."""
    distances = np.empty(loaded.size, dtype=np.uint16)
    start = 0
    for segment in loaded.segments:
        words, rows = segment.signs.shape
        for offset in range(0, rows, _SEGMENT_ROWS):
            end = min(rows, offset + _SEGMENT_ROWS)
            total = distances[start + offset : start + end]
            total[:] = 0
            for word in range(words):
                total += np.bitwise_count(segment.signs[word, offset:end] ^ query_signs[word])
        start += rows
    return distances


def _ranked_by_levels(
    loaded: _Loaded, positions: NDArray[np.intp], scaled_query: NDArray[np.float32]
) -> tuple[NDArray[np.intp], NDArray[np.float32]]:
    """`positions` best first by their levels' dot product with the query (times the scale), and those
    scores. Computed 256 rows at a time: a float copy of all 1,000 candidates is a fresh 3 MB allocation
    per search, whose page faults cost more than the arithmetic (2.5x at 100,000 vectors)."""
    scores = np.empty(len(positions), dtype=np.float32)
    start = 0
    for segment in loaded.segments:
        end = start + len(segment.ids)
        inside = np.flatnonzero((positions >= start) & (positions < end))
        if segment.levels is not None:
            for offset in range(0, len(inside), 256):
                chosen = inside[offset : offset + 256]
                scores[chosen] = segment.levels[positions[chosen] - start].astype(np.float32) @ scaled_query
        start = end
    order = np.argsort(-scores, kind="stable")
    return positions[order], scores[order]


def _unique(ids: NDArray[np.int64]) -> NDArray[np.int64]:
    """Row ids in first-seen order, once each (a replaced vector leaves an old code behind)."""
    return _unique_with_positions(ids)[0]


def _unique_with_positions(ids: NDArray[np.int64]) -> tuple[NDArray[np.int64], NDArray[np.intp]]:
    """`_unique`, and where in `ids` each first appears."""
    _, first = np.unique(ids, return_index=True)
    kept = np.sort(first)
    return ids[kept], kept


def _exact_order(
    reader: Reader, space_id: int, dimensions: int, ids: NDArray[np.int64], query: NDArray[np.float32], k: int
) -> Neighbours:
    found, matrix = vectors.lookup(reader, space_id, ids.tolist(), dimensions)
    similarities = matrix @ query
    best = np.argsort(-similarities, kind="stable")[:k]
    return [(int(found[i]), float(1.0 - similarities[i])) for i in best]


class SpaceIndex:
    """The vector search of one space, for the life of a process: chooses the method per search and keeps
    the quantized index (if any) between searches. Safe to share between threads."""

    def __init__(self, space_id: int, dimensions: int, setting: str = "auto") -> None:
        self.space_id = space_id
        self.dimensions = dimensions
        self.setting = setting
        self.searches = 0
        self.last_method: Method | None = None
        self._quantized: QuantizedIndex | None = None
        self._lock = threading.Lock()

    def nearest(self, reader: Reader, query: NDArray[np.float32], k: int) -> Neighbours:
        """The k nearest (row id, cosine distance) pairs, nearest first."""
        with self._lock:
            index = self._prepare(reader)
            self.searches += 1
        if index is None:
            return vectors.nearest(reader, self.space_id, query, k)
        return index.nearest(reader, query, k)

    def warm(self, reader: Reader) -> Method:
        """Load now the index that a long-lived process's later searches use (`kb serve` does this before
        it answers); counts as the process's first search. Returns the method its searches will use."""
        with self._lock:
            self.searches += 1
            self._prepare(reader)
            assert self.last_method is not None
            return self.last_method

    def _prepare(self, reader: Reader) -> QuantizedIndex | None:
        """The quantized index the next search uses, loaded or refreshed; None: it searches exactly."""
        stored = vectors.count(reader, self.space_id)
        method = choose(self.setting, stored, self.searches, reader.dialect)
        index = self._ready(reader, method, stored) if method is not Method.EXACT else None
        self.last_method = method if index is not None else Method.EXACT
        return index

    def _ready(self, reader: Reader, method: Method, stored: int) -> QuantizedIndex | None:
        levels = method is Method.MEMORY
        if self._quantized is None or (levels and not self._quantized.levels):
            self._quantized = QuantizedIndex(self.space_id, self.dimensions, levels)
        if self._quantized.refresh(reader, stored):
            return self._quantized
        log.warning("space #%d: its vector codes do not cover every vector; searching exactly", self.space_id)
        return None
