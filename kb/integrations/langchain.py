"""kb as a LangChain retriever (the `langchain` extra: langchain-core).

    from kb.integrations.langchain import KbRetriever

    retriever = KbRetriever(kb=knowledge_base, k=4)                 # in this process
    retriever = KbRetriever(kb="http://127.0.0.1:8000", token=...)  # a `kb serve`
    documents = retriever.invoke("how do I enable CORS?")

Each hit is a `Document` whose `page_content` is the passage and whose `metadata` is its citation: every
field of `kb search --json` but the text (path, title, heading, chunk_ids, page_start, page_end, score,
rank, ...), and `source`, its path.
"""

from typing import TYPE_CHECKING, Any

from pydantic import Field, SecretStr

from kb.app import KnowledgeBase
from kb.integrations import missing_extra
from kb.integrations.source import (
    DEFAULT_K,
    DEFAULT_TIMEOUT_S,
    Source,
    citation,
    hit_id,
    search_arguments,
    source_of,
)
from kb.records import SearchMode

if TYPE_CHECKING:
    from kb.report.shapes import SearchHitJson

try:
    from langchain_core.callbacks import AsyncCallbackManagerForRetrieverRun, CallbackManagerForRetrieverRun
    from langchain_core.documents import Document
    from langchain_core.retrievers import BaseRetriever
except ImportError as error:
    raise missing_extra("langchain", error) from error


class KbRetriever(BaseRetriever):
    """The passages of a kb knowledge base that best answer a question, best first, as LangChain
    `Document`s. `kb` is an open `KnowledgeBase` or the base URL of a `kb serve` (`token`: its
    KB_SERVE_TOKEN). `k`, `mode`, `path` and `per_document` are `kb search`'s; `search_kwargs` adds any
    other argument of `KnowledgeBase.search` (a query parameter of `GET /search` over HTTP)."""

    kb: KnowledgeBase | str
    token: SecretStr | None = None
    k: int = DEFAULT_K
    mode: SearchMode = SearchMode.HYBRID
    path: str | None = None
    per_document: int | None = None
    search_kwargs: dict[str, Any] = Field(default_factory=dict)
    timeout_s: float = DEFAULT_TIMEOUT_S

    def _get_relevant_documents(
        self, query: str, *, run_manager: CallbackManagerForRetrieverRun
    ) -> list[Document]:
        return [_document(hit) for hit in self._source().search(query, self._arguments())]

    async def _aget_relevant_documents(
        self, query: str, *, run_manager: AsyncCallbackManagerForRetrieverRun
    ) -> list[Document]:
        return [_document(hit) for hit in await self._source().asearch(query, self._arguments())]

    def _source(self) -> Source:
        return source_of(self.kb, self.token, self.timeout_s)

    def _arguments(self) -> dict[str, Any]:
        return search_arguments(self.k, self.mode, self.path, self.per_document, self.search_kwargs)


def _document(hit: "SearchHitJson") -> Document:
    return Document(page_content=hit["text"], metadata=citation(hit), id=hit_id(hit))
