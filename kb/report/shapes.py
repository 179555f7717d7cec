"""The shapes of kb's JSON answers, as `kb.report.views` makes them: mypy checks `views` against them, and
they are the schemas of the HTTP API's responses and the MCP tools' results (`kb.serve`)."""

from typing import Any

from typing_extensions import TypedDict  # pydantic, which makes them schemas, needs this one before 3.12


class SearchHitJson(TypedDict):
    """One hit of `kb search --json`, `GET /search` and the MCP `search` tool. `page_start` and `page_end`
    are set for documents with pages (PDF); `text_rank` and `vector_rank` say where each half ranked it."""

    context: str  # what `kb enrich` wrote to situate the chunk; empty if nothing was

    rank: int
    score: float
    path: str
    title: str
    heading: str
    text: str
    chunk_id: int
    chunk_ids: list[int]  # every chunk the hit shows, in document order (consecutive ones are merged)
    start: int
    end: int
    page_start: int | None
    page_end: int | None
    text_rank: int | None
    vector_rank: int | None
    metadata: dict[str, Any]  # the document's: front matter, document properties, `kb ingest --meta`


class StatusJson(TypedDict):
    """`kb status --json`, `GET /status` and the MCP `status` tool; keys documented in docs/status.md."""

    database: str
    revision: str | None
    documents: int
    chunks: int
    tasks: dict[str, int]
    chunk_statuses: dict[str, int]
    spaces: list[dict[str, Any]]
    jobs: list[dict[str, Any]]
    warnings: list[str]
    recent_errors: list[str]
    spend: dict[str, Any] | None
    worker: dict[str, Any] | None
    workers: list[dict[str, Any]]
    budget_block: str | None
