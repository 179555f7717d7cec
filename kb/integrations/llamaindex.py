"""kb as a LlamaIndex retriever (the `llamaindex` extra: llama-index-core).

    from kb.integrations.llamaindex import KbRetriever

    retriever = KbRetriever(knowledge_base, k=4)                   # in this process
    retriever = KbRetriever("http://127.0.0.1:8000", token=...)    # a `kb serve`
    nodes = retriever.retrieve("how do I enable CORS?")

Each hit is a `NodeWithScore` (kb's score) holding a `TextNode`: the passage, its character offsets in the
document, and as metadata its citation: every field of `kb search --json` but the text (path, title,
heading, chunk_ids, page_start, page_end, score, rank, ...), and `source`, its path. A language model is
shown the source, title, heading and pages (of a PDF); the rest is left out of what it reads and of what
is embedded.
"""

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from pydantic import SecretStr

from kb.app import KnowledgeBase
from kb.integrations import missing_extra
from kb.integrations.source import (
    DEFAULT_K,
    DEFAULT_TIMEOUT_S,
    FOR_THE_MODEL,
    citation,
    hit_id,
    search_arguments,
    source_of,
)
from kb.records import SearchMode

if TYPE_CHECKING:
    from kb.report.shapes import SearchHitJson

try:
    from llama_index.core.base.base_retriever import BaseRetriever
    from llama_index.core.callbacks import CallbackManager
    from llama_index.core.schema import NodeWithScore, QueryBundle, TextNode
except ImportError as error:
    raise missing_extra("llamaindex", error) from error


class KbRetriever(BaseRetriever):
    """The passages of a kb knowledge base that best answer a question, best first, as LlamaIndex nodes.
    `kb` is an open `KnowledgeBase` or the base URL of a `kb serve` (`token`: its KB_SERVE_TOKEN). `k`,
    `mode`, `path` and `per_document` are `kb search`'s; `search_kwargs` adds any other argument of
    `KnowledgeBase.search` (a query parameter of `GET /search` over HTTP)."""

    def __init__(
        self,
        kb: KnowledgeBase | str,
        *,
        token: SecretStr | str | None = None,
        k: int = DEFAULT_K,
        mode: SearchMode | str = SearchMode.HYBRID,
        path: str | None = None,
        per_document: int | None = None,
        search_kwargs: Mapping[str, Any] | None = None,
        timeout_s: float = DEFAULT_TIMEOUT_S,
        callback_manager: CallbackManager | None = None,
        verbose: bool = False,
    ) -> None:
        super().__init__(callback_manager=callback_manager, verbose=verbose)
        self._source = source_of(kb, token, timeout_s)
        self._arguments = search_arguments(k, mode, path, per_document, search_kwargs)

    def _retrieve(self, query_bundle: QueryBundle) -> list[NodeWithScore]:
        return [_node(hit) for hit in self._source.search(query_bundle.query_str, self._arguments)]

    async def _aretrieve(self, query_bundle: QueryBundle) -> list[NodeWithScore]:
        hits = await self._source.asearch(query_bundle.query_str, self._arguments)
        return [_node(hit) for hit in hits]


def _node(hit: "SearchHitJson") -> NodeWithScore:
    metadata = citation(hit)
    for_programs = [key for key, value in metadata.items() if key not in FOR_THE_MODEL or value is None]
    node = TextNode(
        id_=hit_id(hit),
        text=hit["text"],
        metadata=metadata,
        start_char_idx=hit["start"],
        end_char_idx=hit["end"],
        excluded_llm_metadata_keys=for_programs,
        excluded_embed_metadata_keys=for_programs,
    )
    return NodeWithScore(node=node, score=hit["score"])
