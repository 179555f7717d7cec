"""kb inside RAG frameworks: its LangChain and LlamaIndex retrievers, called the way each framework calls a
retriever (`invoke` and `retrieve`, and their async twins), over a `KnowledgeBase` in this process and over a
real `kb serve` with a token. They answer kb's own hits, best first, each with kb's citation fields."""

import asyncio
import importlib
import re
import socket
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from pydantic import SecretStr

from kb.app import KnowledgeBase
from kb.errors import ConfigError, InputError, KbError
from kb.report import views
from kb.serve import http
from kb.settings import KbSettings
from tests.support.serving import TOKEN, embedded_handbook, running

QUESTION = "How do I run the app in production with several processes behind nginx?"
ANSWER = "deployment.md"  # the handbook page that answers it (tests/data/handbook-queries.json)
CITATION = {"source", "path", "title", "heading", "chunk_id", "chunk_ids", "score", "rank", "start", "end"}
PAGES = {"page_start", "page_end"}
WHERE = ["in process", "over http"]


@pytest.fixture(scope="module")
def handbook(tmp_path_factory: pytest.TempPathFactory) -> KbSettings:
    return embedded_handbook(tmp_path_factory.mktemp("integrations") / "kb.sqlite")


@pytest.fixture(scope="module")
def open_kb(handbook: KbSettings) -> Iterator[KnowledgeBase]:
    with KnowledgeBase(settings=handbook) as kb:
        yield kb


@pytest.fixture(scope="module")
def server_url(open_kb: KnowledgeBase, handbook: KbSettings) -> Iterator[str]:
    settings = handbook.model_copy(update={"serve_token": SecretStr(TOKEN)})
    with running(http.server(open_kb, settings, port=0)) as url:
        yield url


@pytest.fixture(params=WHERE)
def where(request: pytest.FixtureRequest, open_kb: KnowledgeBase, server_url: str) -> dict[str, Any]:
    """The retriever's arguments that say where it searches: the open knowledge base, or the server."""
    return {"kb": open_kb} if request.param == "in process" else {"kb": server_url, "token": TOKEN}


@pytest.fixture
def langchain() -> Any:
    pytest.importorskip("langchain_core", reason="the langchain extra is not installed")
    return importlib.import_module("kb.integrations.langchain")


@pytest.fixture
def llamaindex() -> Any:
    pytest.importorskip("llama_index.core", reason="the llamaindex extra is not installed")
    return importlib.import_module("kb.integrations.llamaindex")


def kb_hits(kb: KnowledgeBase, question: str, **arguments: Any) -> list[dict[str, Any]]:
    """What `kb search --json` prints for the question: what the retrievers must give."""
    return [dict(hit) for hit in views.search_json(kb.search(question, **arguments))]


def assert_cites(metadata: dict[str, Any], hit: dict[str, Any]) -> None:
    """The metadata is the hit's citation: every field of `kb search --json` but the text, and `source`."""
    assert set(metadata) >= CITATION | PAGES
    assert metadata == {"source": hit["path"], **{key: value for key, value in hit.items() if key != "text"}}


# -- LangChain: retriever.invoke ---------------------------------------------------------------------------


def test_langchain_invoke_gives_kbs_hits_as_documents(
    langchain: Any, where: dict[str, Any], open_kb: KnowledgeBase
) -> None:
    from langchain_core.documents import Document

    documents = langchain.KbRetriever(k=3, **where).invoke(QUESTION)
    hits = kb_hits(open_kb, QUESTION, k=3)
    assert all(isinstance(document, Document) for document in documents)
    assert documents[0].metadata["source"].endswith(ANSWER)
    assert [document.page_content for document in documents] == [hit["text"] for hit in hits]
    for document, hit in zip(documents, hits, strict=True):
        assert_cites(document.metadata, hit)
        assert document.id == f"kb-chunk-{hit['chunk_id']}"


def test_langchain_ainvoke_gives_what_invoke_gives(langchain: Any, where: dict[str, Any]) -> None:
    retriever = langchain.KbRetriever(k=3, **where)
    documents = asyncio.run(retriever.ainvoke(QUESTION))
    assert documents == retriever.invoke(QUESTION) != []
    assert documents[0].metadata["source"].endswith(ANSWER)


# -- LlamaIndex: retriever.retrieve ------------------------------------------------------------------------


def test_llamaindex_retrieve_gives_kbs_hits_as_scored_nodes(
    llamaindex: Any, where: dict[str, Any], open_kb: KnowledgeBase
) -> None:
    from llama_index.core.schema import MetadataMode, NodeWithScore, TextNode

    source = where.pop("kb")
    nodes = llamaindex.KbRetriever(source, k=3, **where).retrieve(QUESTION)
    hits = kb_hits(open_kb, QUESTION, k=3)
    assert all(isinstance(found, NodeWithScore) and isinstance(found.node, TextNode) for found in nodes)
    assert nodes[0].node.metadata["source"].endswith(ANSWER)
    assert [found.node.get_content() for found in nodes] == [hit["text"] for hit in hits]
    for found, hit in zip(nodes, hits, strict=True):
        assert found.score == hit["score"]
        assert found.node.node_id == f"kb-chunk-{hit['chunk_id']}"
        assert (found.node.start_char_idx, found.node.end_char_idx) == (hit["start"], hit["end"])
        assert_cites(found.node.metadata, hit)
    # A language model reads the passage with where it comes from, not kb's ranks and chunk ids.
    shown = nodes[0].node.get_content(MetadataMode.LLM)
    assert f"source: {hits[0]['path']}" in shown and f"heading: {hits[0]['heading']}" in shown
    assert "chunk_ids" not in shown and "vector_rank" not in shown and "page_start" not in shown


def test_llamaindex_aretrieve_gives_what_retrieve_gives(llamaindex: Any, where: dict[str, Any]) -> None:
    retriever = llamaindex.KbRetriever(where.pop("kb"), k=3, **where)
    nodes = asyncio.run(retriever.aretrieve(QUESTION))
    assert nodes == retriever.retrieve(QUESTION) != []
    assert nodes[0].node.metadata["source"].endswith(ANSWER)


# -- both: kb search's arguments, errors, secrets ----------------------------------------------------------


def _ask(framework: Any, question: str, **arguments: Any) -> list[dict[str, Any]]:
    """The metadata of each passage a retriever gives, by the framework's own call."""
    if framework.__name__.endswith("langchain"):
        return [document.metadata for document in framework.KbRetriever(**arguments).invoke(question)]
    source = arguments.pop("kb")
    return [found.node.metadata for found in framework.KbRetriever(source, **arguments).retrieve(question)]


@pytest.fixture(params=["langchain", "llamaindex"])
def framework(request: pytest.FixtureRequest) -> Any:
    return request.getfixturevalue(request.param)


def test_search_arguments_reach_kb_search(
    framework: Any, where: dict[str, Any], open_kb: KnowledgeBase
) -> None:
    arguments = {"mode": "text", "path": "advanced/*", "per_document": 1, "search_kwargs": {"k": 3}}
    cited = _ask(framework, "request", **where, **arguments)
    hits = kb_hits(open_kb, "request", k=3, mode="text", path="advanced/*", per_document=1)
    assert [metadata["chunk_ids"] for metadata in cited] == [hit["chunk_ids"] for hit in hits]
    assert len(cited) == 3 and len({metadata["source"] for metadata in cited}) == 3
    assert all("/advanced/" in metadata["source"] for metadata in cited)


def test_a_question_kb_refuses_is_its_input_error(framework: Any, where: dict[str, Any]) -> None:
    with pytest.raises(InputError, match=re.escape("no embedding space #999")):
        _ask(framework, QUESTION, **where, search_kwargs={"space": 999})


def test_a_parameter_the_server_refuses_is_an_input_error(framework: Any, server_url: str) -> None:
    with pytest.raises(InputError, match="answered 422"):
        _ask(framework, QUESTION, kb=server_url, token=TOKEN, k=0)


def test_a_wrong_token_is_a_config_error_that_does_not_show_it(framework: Any, server_url: str) -> None:
    wrong = "not-the-token-0123456789"
    with pytest.raises(ConfigError, match="401") as refused:
        _ask(framework, QUESTION, kb=server_url, token=wrong)
    assert wrong not in refused.value.message and "KB_SERVE_TOKEN" in refused.value.message


def test_a_server_that_is_not_there_is_said_so(framework: Any) -> None:
    with socket.socket() as probe:  # a loopback port nothing listens on
        probe.bind(("127.0.0.1", 0))
        url = f"http://user:secret@127.0.0.1:{probe.getsockname()[1]}"
    with pytest.raises(KbError, match="cannot be reached") as unreachable:
        _ask(framework, QUESTION, kb=url)
    assert "secret" not in unreachable.value.message


class _NotKb(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        body = b"<html>a web page</html>"
        self.send_response(200)
        self.send_header("Content-Type", "text/html")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        pass


def test_a_server_that_is_not_kb_is_said_so(framework: Any) -> None:
    with ThreadingHTTPServer(("127.0.0.1", 0), _NotKb) as other:
        threading.Thread(target=other.serve_forever, daemon=True).start()
        try:
            with pytest.raises(KbError, match="something else than kb's JSON"):
                _ask(framework, QUESTION, kb=f"http://127.0.0.1:{other.server_address[1]}")
        finally:
            other.shutdown()


def test_the_token_never_shows_in_a_retrievers_repr(langchain: Any, llamaindex: Any, server_url: str) -> None:
    assert TOKEN not in repr(langchain.KbRetriever(kb=server_url, token=TOKEN))
    assert TOKEN not in repr(vars(llamaindex.KbRetriever(server_url, token=TOKEN)))


@pytest.mark.parametrize(
    ("adapter", "framework"), [("langchain", "langchain_core"), ("llamaindex", "llama_index")]
)
def test_without_its_extra_an_adapter_says_what_to_install(
    monkeypatch: pytest.MonkeyPatch, adapter: str, framework: str
) -> None:
    for name in [name for name in sys.modules if name.split(".")[0] == framework] + [framework]:
        monkeypatch.setitem(sys.modules, name, None)  # as if not installed: importing it fails
    monkeypatch.delitem(sys.modules, f"kb.integrations.{adapter}", raising=False)
    with pytest.raises(ImportError, match=re.escape(f"pip install 'kb[{adapter}]'")):
        importlib.import_module(f"kb.integrations.{adapter}")
