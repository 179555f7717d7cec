"""MCP: the SDK's own client, talking to `kb mcp` over stdio (a real subprocess) and to `kb serve` over
streamable HTTP. The tools answer what the command line prints, and say why when they cannot."""

import json
import os
import sys
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import anyio
import httpx2
import pytest
from mcp import Client
from mcp.client.stdio import StdioServerParameters
from mcp.client.streamable_http import streamable_http_client
from pydantic import SecretStr

from kb.app import KnowledgeBase
from kb.report import views
from kb.serve import http
from kb.settings import KbSettings
from tests.support.files import HANDBOOK
from tests.support.serving import TOKEN, embedded_handbook, handbook_settings, running

QUESTION = "how do I deploy behind a proxy"


@pytest.fixture(scope="module")
def handbook(tmp_path_factory: pytest.TempPathFactory) -> KbSettings:
    return embedded_handbook(tmp_path_factory.mktemp("mcp") / "kb.sqlite")


@pytest.fixture(scope="module")
def expected(handbook: KbSettings) -> Iterator[Callable[..., Any]]:
    """What the same question gets in process, as `kb search --json` prints it."""
    with KnowledgeBase(settings=handbook) as kb:
        yield lambda question, **options: views.search_json(kb.search(question, **options))


def _stdio(db: Path) -> StdioServerParameters:
    # The SDK passes the child only a few variables (PATH, HOME, ...): kb's come explicitly.
    return StdioServerParameters(
        command=sys.executable,
        args=["-m", "kb", "mcp"],
        env={"KB_DB": str(db), "KB_PROVIDER": "local"},
        cwd=os.getcwd(),
    )


def _session(server: StdioServerParameters, talk: Callable[[Client], Awaitable[Any]]) -> Any:
    async def main() -> Any:
        async with Client(server) as client:
            return await talk(client)

    return anyio.run(main)


def test_kb_mcp_over_stdio_searches_and_reports_status(handbook: KbSettings, expected: Any) -> None:
    async def talk(client: Client) -> Any:
        tools = await client.list_tools()
        found = await client.call_tool("search", {"query": QUESTION, "k": 3, "mode": "text"})
        status = await client.call_tool("status", {})
        empty = await client.call_tool("search", {"query": "  "})
        too_long = await client.call_tool("search", {"query": "x" * 8001})
        return tools, found, status, empty, too_long

    tools, found, status, empty, too_long = _session(_stdio(handbook.db), talk)
    by_name = {tool.name: tool for tool in tools.tools}
    assert set(by_name) == {"search", "status"}
    assert all(tool.annotations.read_only_hint for tool in tools.tools)
    assert set(by_name["search"].input_schema["properties"]) == {
        "query",
        "k",
        "mode",
        "path",
        "space",
        "per_document",
        "where",
    }
    assert not found.is_error
    assert found.structured_content == {"result": expected(QUESTION, k=3, mode="text")}
    assert json.loads(found.content[0].text)["path"].endswith(".md")  # each hit also as a text block
    assert status.structured_content["documents"] == 25
    assert status.structured_content["tasks"]["embedded"] == status.structured_content["chunks"]
    assert empty.is_error
    assert "nothing to search for: the question is empty" in empty.content[0].text
    assert too_long.is_error
    assert "the question is too long: 8,001 characters (at most 8,000)" in too_long.content[0].text


def test_kb_serve_answers_mcp_over_http_with_its_token(handbook: KbSettings, expected: Any) -> None:
    settings = handbook.model_copy(update={"serve_token": SecretStr(TOKEN)})

    async def search(url: str) -> Any:
        async with (
            httpx2.AsyncClient(headers={"Authorization": f"Bearer {TOKEN}"}) as authorized,
            Client(streamable_http_client(f"{url}/mcp", http_client=authorized)) as client,
        ):
            by_path = await client.call_tool("search", {"query": QUESTION, "k": 4, "path": "tutorial/*"})
            by_metadata = await client.call_tool("search", {"query": QUESTION, "where": ["section=advanced"]})
            malformed = await client.call_tool("search", {"query": QUESTION, "where": ["section=>a"]})
            return by_path, by_metadata, malformed

    with KnowledgeBase(settings=settings) as kb, running(http.server(kb, settings, port=0)) as url:
        found, by_metadata, malformed = anyio.run(search, url)
    assert not found.is_error
    assert found.structured_content == {"result": expected(QUESTION, k=4, path="tutorial/*")}
    hits = by_metadata.structured_content["result"]
    assert hits == expected(QUESTION, where=["section=advanced"]) != []
    assert all(hit["metadata"] == {"section": "advanced"} for hit in hits)
    assert malformed.is_error and "invalid where condition 'section=>a'" in malformed.content[0].text


def test_a_search_that_fell_back_says_so_to_the_model(tmp_path: Path) -> None:
    """Nothing embedded yet: the hits come from full text alone, and the model reads why before the hits,
    as a person reads it on stderr; the structured result stays what `kb search --json` prints."""
    settings = handbook_settings(tmp_path / "kb.sqlite")

    async def search(url: str) -> Any:
        async with Client(streamable_http_client(f"{url}/mcp")) as client:
            return await client.call_tool("search", {"query": QUESTION, "k": 2})

    with KnowledgeBase(settings=settings) as kb:
        kb.ingest([HANDBOOK])  # queued, not embedded
        expected = views.search_json(kb.search(QUESTION, k=2))
        with running(http.server(kb, settings, port=0)) as url:
            found = anyio.run(search, url)
    assert not found.is_error and found.structured_content == {"result": expected} and len(expected) == 2
    note, *hits = found.content
    assert note.text.startswith("note: vector search unavailable") and "answering from full text" in note.text
    assert [json.loads(block.text) for block in hits] == expected
