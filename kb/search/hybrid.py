"""Search: full text (FTS5 BM25) and vectors (the active space's sqlite-vec table), fused by reciprocal rank.

Search never fails for want of vectors: when the space has none yet, or the question cannot be embedded (no
key, model shut down, provider down), it answers from full text and says why in `SearchResult.notes`.
"""

import fnmatch
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING

from kb.core import globs
from kb.core.metadata import Where, WhereSpec, parse_where
from kb.core.questions import check_question
from kb.errors import ConfigError, KbError
from kb.providers.base import Matrix
from kb.records import ChunkInput, SearchHit, SearchMode, SearchResult
from kb.search.shaping import shape
from kb.store import fulltext, querycache, readmodel, vectors
from kb.store.reader import OpenReader, Reader

if TYPE_CHECKING:
    from kb.search.textindex import TextIndex
    from kb.search.vectorindex import SpaceIndex

QueryEmbedder = Callable[[str], Matrix]
# A reader on its own connection (full text and vectors are searched at once, on two).
# Stores a query vector just paid for, so that the same question costs nothing next time.
Remember = Callable[[int, str, Matrix], None]
RRF_K = 10  # a small k lets the top of each ranking count (measured on the labelled FastAPI questions)
_EXECUTOR = ThreadPoolExecutor(max_workers=2, thread_name_prefix="kb-search")


@dataclass(frozen=True, slots=True)
class SearchSpace:
    """The embedding space searched, and how to embed a question for it (a ConfigError from it: not
    possible here, e.g. no key)."""

    id: int
    label: str
    embed_query: QueryEmbedder
    index: "SpaceIndex | None" = None  # None: sqlite-vec's exact scan
    vector_weight: float = 1.0  # in hybrid fusion, relative to full text's 1.0
    coverage: str = ""  # e.g. "41% embedded", for notes about a space still being built
    paid: bool = True  # its questions cost money: cached (a local model's are free, and not kept)
    provider: str = ""
    chunk_input: str = ChunkInput.HEADED  # what its vectors embed, and so which chunk key its tasks have


def normalize_glob(pattern: str | None) -> str | None:
    """`tutorial/*` matches `/any/where/tutorial/x.md`; absolute or `*`-led patterns are kept as given."""
    if not pattern:
        return None
    globs.check(pattern, "path")  # KnowledgeBase.search's, the HTTP API's and the MCP tool's name
    return pattern if pattern.startswith(("/", "*")) else "*/" + pattern


def rank_fusion(
    rankings: Sequence[Sequence[int]], k: int = RRF_K, weights: Sequence[float] | None = None
) -> list[tuple[int, float]]:
    """Weighted reciprocal rank fusion: list i adds weights[i] / (k + rank) to its items; best first."""
    scores: dict[int, float] = {}
    for index, ranking in enumerate(rankings):
        weight = 1.0 if weights is None else weights[index]
        for rank, item in enumerate(ranking, start=1):
            scores[item] = scores.get(item, 0.0) + weight / (k + rank)
    return sorted(scores.items(), key=lambda pair: (-pair[1], pair[0]))


def run_search(
    open_reader: OpenReader,
    query: str,
    *,
    k: int = 10,
    mode: SearchMode = SearchMode.HYBRID,
    path_glob: str | None = None,
    space: SearchSpace | None = None,
    fallbacks: Sequence[SearchSpace] = (),
    remember: Remember | None = None,
    per_document: int = 0,
    text_index: "TextIndex | None" = None,
    text_setting: str = "auto",
    where: WhereSpec | None = None,
    catch_up_text_index: bool = False,
) -> SearchResult:
    """Search `space`; if its vectors cannot be used, the first usable of `fallbacks` (spaces being built).

    The fused ranking's first max(5k, 50) chunks are the candidates that shaping (at most `per_document`
    chunks of a document, 0: any; consecutive chunks merged) draws the k hits from. `path_glob` and `where`
    (conditions on document metadata, kb.core.metadata) filter the candidates of both rankings.
    `catch_up_text_index`: a long-lived process, which may bring a text index far behind up to date in a
    thread of its own."""
    check_question(query)
    glob = normalize_glob(path_glob)
    conditions = parse_where(where)
    depth = max(k * 5, 50)
    notes: list[str] = []
    documents = _documents_where(open_reader, conditions) if conditions else None
    if documents is not None and not documents:
        notes.append(f"no document has metadata matching {conditions}")
        return SearchResult(query=query, mode=mode, used=mode, hits=[], notes=notes)
    text_ranked: list[tuple[int, float]] = []
    vector_ranked: list[tuple[int, float]] = []
    wants_vectors = mode in (SearchMode.HYBRID, SearchMode.VECTOR)
    # Contextual BM25 goes with contextual embeddings: full text reads the contexts when the space does.
    situated = space is not None and space.chunk_input == ChunkInput.SITUATED
    text = _TextQuery(text_index, text_setting, situated, open_reader if catch_up_text_index else None)
    # The full-text query and the vector scan run on two connections at once: SQLite releases the GIL
    # while it works, so hybrid costs about the slower of the two rather than their sum.
    text_future = (
        _EXECUTOR.submit(_text_search, open_reader, query, depth, glob, documents, text)
        if mode != SearchMode.VECTOR
        else None
    )
    used_space = space
    if wants_vectors:
        vector_ranked, reason = _vector_search(open_reader, remember, query, space, depth, glob, documents)
        for fallback in fallbacks if reason is not None else ():
            ranked, fallback_reason = _vector_search(
                open_reader, remember, query, fallback, depth, glob, documents
            )
            if fallback_reason is None:
                notes.append(
                    f"vector search unavailable ({reason}): answering from full text and "
                    f"{fallback.label}, {fallback.coverage or 'partly'} embedded"
                )
                vector_ranked, reason, used_space = ranked, None, fallback
                break
        if reason is not None:
            notes.append(f"vector search unavailable ({reason}): answering from full text")
    vectors_used = wants_vectors and (not notes or used_space is not space)
    if text_future is not None:
        text_ranked = text_future.result()
    elif not vectors_used:
        text_ranked = _text_search(open_reader, query, depth, glob, documents, text)
    used = _used_mode(mode, vectors_used)
    fused = _combine(used, text_ranked, vector_ranked, used_space.vector_weight if used_space else 1.0)[
        :depth
    ]
    text_ranks = {chunk_id: rank for rank, (chunk_id, _) in enumerate(text_ranked, start=1)}
    vector_ranks = {chunk_id: rank for rank, (chunk_id, _) in enumerate(vector_ranked, start=1)}
    with open_reader() as reader:
        candidates, ordinals = _hydrate(reader, fused, text_ranks, vector_ranks)
    hits = shape(candidates, ordinals, k=k, per_document=per_document)
    return SearchResult(
        query=query,
        mode=mode,
        used=used,
        hits=hits,
        notes=notes,
        space_id=used_space.id if used_space and vectors_used else None,
        space_label=used_space.label if used_space and vectors_used else None,
        space_provider=used_space.provider if used_space and vectors_used else None,
        vector_index=_index_used(used_space) if vectors_used else None,
    )


def _index_used(space: SearchSpace | None) -> str | None:
    if space is None:
        return None
    if space.index is None or space.index.last_method is None:
        return "exact"
    return str(space.index.last_method)


def _documents_where(open_reader: OpenReader, where: Where) -> frozenset[int]:
    """The ids of the documents whose metadata matches `where`: the database narrows them to those holding
    its keys, one function decides (the same on every backend)."""
    with open_reader() as reader:
        return frozenset(
            document_id
            for document_id, metadata in readmodel.documents_metadata(reader, where.required_keys)
            if where.matches(metadata)
        )


def _text_search(
    open_reader: OpenReader,
    query: str,
    depth: int,
    glob: str | None,
    documents: frozenset[int] | None,
    text: "_TextQuery",
) -> list[tuple[int, float]]:
    """FTS5's ranking, or the tantivy index's when it is fresh and wanted (FTS5 with a metadata filter)."""
    with open_reader() as reader:
        if text.index is not None and documents is None:
            ranked = text.index.search(reader, query, depth, text.setting, glob, text.situated, text.catch_up)
            if ranked is not None:
                return ranked
        return fulltext.search(reader, query, depth, glob, documents, text.situated)


@dataclass(frozen=True, slots=True)
class _TextQuery:
    """How full text is ranked: by which index (None: FTS5 or PostgreSQL's own), as `KB_TEXT_INDEX` says,
    with the contexts or not, and how a long-lived process catches the index up (None: it does not)."""

    index: "TextIndex | None"
    setting: str
    situated: bool
    catch_up: OpenReader | None


def _used_mode(mode: SearchMode, vectors_used: bool) -> SearchMode:
    if not vectors_used:
        return SearchMode.TEXT
    return mode


def _combine(
    used: SearchMode,
    text_ranked: list[tuple[int, float]],
    vector_ranked: list[tuple[int, float]],
    vector_weight: float,
) -> list[tuple[int, float]]:
    if used == SearchMode.TEXT:
        return text_ranked
    if used == SearchMode.VECTOR:
        return vector_ranked
    rankings = [[i for i, _ in text_ranked], [i for i, _ in vector_ranked]]
    return rank_fusion(rankings, weights=[1.0, vector_weight])


def _vector_search(
    open_reader: OpenReader,
    remember: Remember | None,
    query: str,
    space: SearchSpace | None,
    depth: int,
    glob: str | None,
    documents: frozenset[int] | None = None,
) -> tuple[list[tuple[int, float]], str | None]:
    """Chunk ids with cosine similarity, best first; or the reason vectors could not be used."""
    if space is None:
        return [], "no embedding space yet"
    with open_reader() as reader:
        if not vectors.any_stored(reader, space.id):
            return [], f"nothing is embedded yet in {space.label}"
        cached = querycache.get(reader, space.id, query) if space.paid else None
    if cached is None:
        try:
            cached = space.embed_query(query)
        except ConfigError as error:  # no provider can be built for the space (no key): not an accident
            return [], error.message
        except KbError as error:
            return [], f"the question could not be embedded: {error.message}"
        if space.paid and remember is not None:
            remember(space.id, query, cached)
    fetch = min(4096, depth * 10 if glob or documents is not None else depth * 2)
    with open_reader() as reader:
        if space.index is not None:
            neighbours = space.index.nearest(reader, cached[0], fetch)
        else:
            neighbours = vectors.nearest(reader, space.id, cached[0], fetch)
        ranked = _chunks_of_tasks(reader, neighbours, glob, documents, space.chunk_input)
        return ranked[:depth], None


def _chunks_of_tasks(
    reader: Reader,
    neighbours: list[tuple[int, float]],
    glob: str | None,
    documents: frozenset[int] | None,
    chunk_input: str,
) -> list[tuple[int, float]]:
    """Expand (task id, distance) to (chunk id, similarity): every chunk holding that text, in order, of
    the documents under `glob` and among `documents` (None: any)."""
    chunks_by_task = readmodel.chunks_of_tasks(reader, [task_id for task_id, _ in neighbours], chunk_input)
    ranked: list[tuple[int, float]] = []
    for task_id, distance in neighbours:
        for chunk_id, document_id, path in chunks_by_task.get(task_id, []):
            if (glob is None or fnmatch.fnmatchcase(path, glob)) and (
                documents is None or document_id in documents
            ):
                ranked.append((chunk_id, 1.0 - distance))
    return ranked


def _hydrate(
    reader: Reader,
    ranked: list[tuple[int, float]],
    text_ranks: dict[int, int],
    vector_ranks: dict[int, int],
) -> tuple[list[SearchHit], dict[int, int]]:
    """The ranked chunks still there, as hits, and each one's ordinal in its document."""
    by_id = readmodel.chunks_for_hits(reader, [chunk_id for chunk_id, _ in ranked])
    hits: list[SearchHit] = []
    ordinals: dict[int, int] = {}
    for chunk_id, score in ranked:
        chunk = by_id.get(chunk_id)
        if chunk is None:  # deleted by a concurrent ingest since it was ranked
            continue
        ordinals[chunk_id] = chunk.ordinal
        hits.append(
            SearchHit(
                rank=len(hits) + 1,
                score=score,
                path=chunk.path,
                title=chunk.title,
                heading=chunk.heading,
                text=chunk.text,
                chunk_id=chunk_id,
                document_id=chunk.document_id,
                start=chunk.start,
                end=chunk.end,
                page_start=chunk.page_start,
                page_end=chunk.page_end,
                text_rank=text_ranks.get(chunk_id),
                vector_rank=vector_ranks.get(chunk_id),
                context=chunk.situation,
                metadata=chunk.metadata,
            )
        )
    return hits, ordinals
