"""The MCP tools, `search` and `status`: read-only, answering what `kb search --json` and `kb status --json`
print. `kb mcp` serves them over stdio, where stdout is the protocol and every log goes to stderr; `kb serve`
over streamable HTTP at /mcp.

Their functions are synchronous: the SDK runs each call on a worker thread, so a search never blocks the
event loop and concurrent calls share the open `KnowledgeBase` as HTTP requests do.
"""

import json
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Annotated, Any

from mcp.server.mcpserver import MCPServer
from mcp.server.mcpserver.exceptions import ToolError
from mcp_types import CallToolResult, TextContent, ToolAnnotations
from pydantic import Field

from kb import __version__
from kb.app import KnowledgeBase
from kb.errors import KbError
from kb.records import SearchMode, SearchResult
from kb.report import shapes, views

INSTRUCTIONS = (
    "A knowledge base of documents. `search` finds the passages that best answer a question, each with its "
    "text and where it comes from (path, pages for PDFs, heading): cite those. `status` tells what the "
    "knowledge base holds and whether its texts are embedded yet."
)
_READ_ONLY = ToolAnnotations(read_only_hint=True, idempotent_hint=True, open_world_hint=False)


def create_server(kb: KnowledgeBase) -> MCPServer[Any]:
    """The tools over `kb`, which stays open as long as the server (its vector index stays in memory)."""
    # The SDK configures logging (stderr) if nothing has; its per-request lines are INFO, left out.
    server: MCPServer[Any] = MCPServer(
        "kb", instructions=INSTRUCTIONS, version=__version__, log_level="WARNING"
    )

    @server.tool(annotations=_READ_ONLY)
    def search(
        query: Annotated[str, Field(description=views.QUERY_HELP)],
        k: Annotated[int, Field(ge=1, le=views.MAX_HITS, description=views.K_HELP)] = 10,
        mode: Annotated[SearchMode, Field(description=views.MODE_HELP)] = SearchMode.HYBRID,
        path: Annotated[str | None, Field(description=views.PATH_HELP)] = None,
        space: Annotated[int | None, Field(description=views.SPACE_HELP)] = None,
        per_document: Annotated[int | None, Field(ge=0, description=views.PER_DOCUMENT_HELP)] = None,
        where: Annotated[list[str] | None, Field(description=views.WHERE_HELP)] = None,
    ) -> Annotated[CallToolResult, list[shapes.SearchHitJson]]:
        """Find the passages of the knowledge base that best answer a question, best first: each with its
        text, score and citation (path, page_start/page_end for paged documents, heading), and its
        document's metadata (front matter, document properties), which `where` filters on."""
        with _reported():
            result = kb.search(
                query, k=k, mode=mode, path=path, space=space, per_document=per_document, where=where
            )
        return _answer(result)

    @server.tool(annotations=_READ_ONLY)
    def status() -> shapes.StatusJson:
        """What the knowledge base holds: documents, chunks, texts by embedding state, batch jobs in
        flight, warnings, and what embedding has cost."""
        with _reported():
            return views.status_json(kb.status())

    return server


def _answer(result: SearchResult) -> CallToolResult:
    """The hits as `kb search --json` prints them (the structured result), and for the model to read: why
    the search fell back, if it did (what `kb search` says on stderr), then each hit as a JSON block."""
    hits = views.search_json(result)
    notes = [TextContent(type="text", text=f"note: {note}") for note in result.notes]
    blocks = [TextContent(type="text", text=json.dumps(hit, indent=2, ensure_ascii=False)) for hit in hits]
    return CallToolResult(content=[*notes, *blocks], structured_content={"result": hits})


@contextmanager
def _reported() -> Iterator[None]:
    """A kb error reaches the model as the tool's error, in kb's own words (which never hold a secret);
    anything else is a bug, which the SDK logs here and reports without details."""
    try:
        yield
    except KbError as error:
        raise ToolError(error.message) from None


def serve_stdio(kb: KnowledgeBase) -> None:
    """Answer on stdin and stdout until the client closes them."""
    create_server(kb).run("stdio")
