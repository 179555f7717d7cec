"""Planning a search: which space answers (the one asked for, else the active one), which spaces being built
stand in when its vectors cannot, how each embeds the question, and which vector index searches it.

Both doors plan here: `KnowledgeBase.search` and the read-only `kb search` (kb.readonly). They differ only in
how they open the database and whether a paid question is recorded (its vector cached, its cost counted).
"""

from collections.abc import Callable
from dataclasses import dataclass, field

from kb.core.metadata import WhereSpec
from kb.core.shares import percent
from kb.errors import InputError
from kb.providers.base import Embedder, Matrix
from kb.records import SearchMode, SearchResult, Space, SpaceSpec, SpaceState, spec_label, spec_of
from kb.search.hybrid import Remember, SearchSpace, run_search
from kb.search.textindex import TextIndex, for_settings
from kb.search.vectorindex import SpaceIndex
from kb.settings import KbSettings
from kb.store import querycache, readmodel
from kb.store.reader import OpenReader, Reader

EmbedderFor = Callable[[SpaceSpec], Embedder]  # raises ConfigError when the space's provider cannot be used
IndexFor = Callable[[Space], SpaceIndex]
PaidQuery = Callable[[Space, str], None]  # a question just embedded at a price, to count its cost


@dataclass(frozen=True, slots=True)
class Candidates:
    """The stored spaces a search may use: the chosen one (None: no space yet) and, when none was asked
    for, the spaces being built, newest first: their embedded part answers if the chosen one's cannot."""

    chosen: Space | None
    building: list[Space] = field(default_factory=list)

    @property
    def all(self) -> list[Space]:
        return ([self.chosen] if self.chosen else []) + self.building


def candidates(reader: Reader, space_id: int | None) -> Candidates:
    """The space asked for (InputError if there is none such), else the active one and those being built."""
    known = readmodel.spaces(reader)
    if space_id is not None:
        chosen = next((space for space in known if space.id == space_id), None)
        if chosen is None:
            raise InputError(f"no embedding space #{space_id}: see `kb status`")
        return Candidates(chosen)
    active = next((space for space in known if space.state == SpaceState.ACTIVE), None)
    return Candidates(active, [space for space in reversed(known) if space.state == SpaceState.BUILDING])


def is_paid(space: Space) -> bool:
    """Its questions cost money (a local model's are free)."""
    return space.provider != "local"


def must_pay(reader: Reader, found: Candidates, query: str, mode: SearchMode) -> bool:
    """Whether answering may embed the question at a price: vectors are wanted and a paid space has not
    cached this question yet."""
    if mode == SearchMode.TEXT:
        return False
    return any(is_paid(space) and querycache.get(reader, space.id, query) is None for space in found.all)


@dataclass(frozen=True, slots=True)
class SearchPlan:
    """The spaces a search uses, ready to embed its question: `space` first, then `fallbacks` in order."""

    space: SearchSpace | None
    fallbacks: list[SearchSpace]
    text_index: TextIndex | None = None  # None: FTS5 (or PostgreSQL's tsvector) ranks full text
    text_setting: str = "auto"

    def run(
        self,
        open_reader: OpenReader,
        query: str,
        *,
        k: int,
        mode: SearchMode,
        path: str | None,
        remember: Remember | None = None,
        per_document: int = 0,
        where: WhereSpec | None = None,
        long_lived: bool = False,
    ) -> SearchResult:
        """`long_lived`: this process outlives the search (a server, a library user), so a text index far
        behind may be caught up in a thread of its own."""
        return run_search(
            open_reader,
            query,
            k=k,
            mode=mode,
            path_glob=path,
            space=self.space,
            fallbacks=self.fallbacks,
            remember=remember,
            per_document=per_document,
            text_index=self.text_index,
            text_setting=self.text_setting,
            where=where,
            catch_up_text_index=long_lived,
        )


def plan(
    reader: Reader,
    found: Candidates,
    settings: KbSettings,
    *,
    embedder_for: EmbedderFor | None = None,
    index_for: IndexFor | None = None,
    on_paid_query: PaidQuery | None = None,
) -> SearchPlan:
    """How to search the candidates. Embedders come from `embedder_for` (default: a new one from the
    factory), indexes from `index_for` (default: a new one per space, as the settings choose)."""
    if embedder_for is None:
        from kb.providers.factory import build_embedder

        def embedder_for(spec: SpaceSpec) -> Embedder:
            return build_embedder(settings, spec)

    def index(space: Space) -> SpaceIndex:
        if index_for is not None:
            return index_for(space)
        return SpaceIndex(space.id, space.dimensions, settings.search_index)

    targets = [
        search_space(
            space,
            reader,
            lambda space=space: embedder_for(spec_of(space)),  # type: ignore[misc]
            vector_weight=settings.hybrid_vector_weight,
            on_paid_query=on_paid_query,
            index=index(space),
        )
        for space in found.all
    ]
    text = for_settings(settings)
    if found.chosen is None:
        return SearchPlan(None, targets, text, settings.text_index)
    return SearchPlan(targets[0], targets[1:], text, settings.text_index)


def search_space(
    space: Space,
    reader: Reader,
    embedder: Callable[[], Embedder],
    *,
    vector_weight: float | None = None,
    on_paid_query: PaidQuery | None = None,
    index: SpaceIndex | None = None,
) -> SearchSpace:
    """How to search `space`: its embedder (or why there is none), its weight in hybrid fusion (the local
    model's vectors count half by default: they are weaker than full text), and its coverage if building."""
    label = f"space #{space.id} ({spec_label(space)})"
    paid = is_paid(space)
    models: list[Embedder] = []

    def embed_query(question: str) -> Matrix:
        # Built at the first question that needs it: a text search, or a question whose vector is cached,
        # never loads a provider (the Gemini SDK's import is most of a cold `kb search`). A ConfigError
        # (no key) is the reason vectors are unavailable (kb.search.hybrid notes it).
        if not models:
            models.append(embedder())
        vector = models[0].embed_query(question)
        if on_paid_query is not None and paid:
            on_paid_query(space, question)
        return vector

    coverage = ""
    if space.state == SpaceState.BUILDING:
        counts = readmodel.task_counts(reader, space.id)
        total = sum(counts.values())
        coverage = percent(counts["embedded"] / total) if total else "0%"
    weight = vector_weight if vector_weight is not None else (1.0 if paid else 0.5)
    return SearchSpace(
        space.id,
        label,
        embed_query,
        index=index,
        vector_weight=weight,
        coverage=coverage,
        paid=paid,
        provider=space.provider,
        chunk_input=space.chunk_input,
    )
