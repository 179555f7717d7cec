"""`kb serve`: the real server on a loopback port, asked over a real socket. It answers what the command line
prints, refuses bad questions with a reason, writes nothing, and lets in only who it should."""

import base64
import json
import os
import re
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import closing
from pathlib import Path
from typing import Any

import httpx2
import pytest
from pydantic import SecretStr
from selectolax.lexbor import LexborHTMLParser
from typer.testing import CliRunner

from kb.app import KnowledgeBase
from kb.cli.commands import app
from kb.errors import (
    AuthenticationError,
    DatabaseBusyError,
    DatabaseCorruptError,
    InputError,
    KbError,
    NotConfiguredError,
    ProviderUnavailableError,
)
from kb.serve import http
from kb.serve.guard import check_exposure
from kb.settings import KbSettings, load
from kb.testing.gemini_emulator import GeminiEmulator
from tests.support.files import HANDBOOK, write
from tests.support.serving import TOKEN, embedded_handbook, handbook_settings, running

QUESTIONS = [
    "how do I deploy behind a proxy",
    "background tasks that survive a restart",
    "hash passwords",
    "write my own middleware",
]
PATHS = ["/search?q=deploy", "/status", "/metrics", "/healthz", "/", "/openapi.json", "/docs"]  # every GET


@pytest.fixture(scope="module")
def handbook(tmp_path_factory: pytest.TempPathFactory) -> KbSettings:
    return embedded_handbook(tmp_path_factory.mktemp("serve") / "kb.sqlite")


@pytest.fixture(scope="module")
def open_kb(handbook: KbSettings) -> Iterator[KnowledgeBase]:
    with KnowledgeBase(settings=handbook) as kb:
        yield kb


@pytest.fixture(scope="module")
def base_url(open_kb: KnowledgeBase, handbook: KbSettings) -> Iterator[str]:
    with running(http.server(open_kb, handbook, port=0)) as url:
        yield url


@pytest.fixture(scope="module")
def guarded_url(open_kb: KnowledgeBase, handbook: KbSettings) -> Iterator[str]:
    settings = handbook.model_copy(update={"serve_token": SecretStr(TOKEN)})
    with running(http.server(open_kb, settings, port=0)) as url:
        yield url


@pytest.fixture
def api(base_url: str) -> Iterator[httpx2.Client]:
    with httpx2.Client(base_url=base_url) as client:
        yield client


# -- the same answers as the command line -----------------------------------------------------------------


@pytest.mark.parametrize(
    "params",
    [
        {"q": QUESTIONS[0]},
        {"q": QUESTIONS[1], "k": "3", "mode": "text"},
        {"q": QUESTIONS[2], "k": "5", "mode": "vector"},
        {"q": QUESTIONS[3], "path": "advanced/*"},
        {"q": QUESTIONS[0], "per_document": "1", "k": "4"},
        {"q": QUESTIONS[1], "per_document": "0", "mode": "text"},
    ],
)
def test_search_answers_what_kb_search_json_prints(
    api: httpx2.Client, handbook: KbSettings, runner: CliRunner, params: dict[str, str]
) -> None:
    args = ["--db", str(handbook.db), "search", params["q"], "--json"]
    for name, flag in (
        ("k", "-k"),
        ("mode", "--mode"),
        ("path", "--path"),
        ("per_document", "--per-document"),
    ):
        args += [flag, params[name]] if name in params else []
    printed = runner.invoke(app, args)
    assert printed.exit_code == 0, printed.stderr
    answered = api.get("/search", params=params)
    assert answered.status_code == 200
    assert answered.json() == json.loads(printed.stdout) != []


def test_search_where_answers_what_kb_search_where_json_prints(
    api: httpx2.Client, handbook: KbSettings, runner: CliRunner
) -> None:
    """`where` repeats as `--where` does, all conditions holding; each hit carries its document's metadata."""
    wheres = ["section=advanced", "section!=tutorial"]
    args = ["--db", str(handbook.db), "search", QUESTIONS[3], "--json"]
    printed = runner.invoke(app, [*args, *(arg for where in wheres for arg in ("--where", where))])
    assert printed.exit_code == 0, printed.stderr
    answered = api.get("/search", params={"q": QUESTIONS[3], "where": wheres})
    assert answered.status_code == 200
    hits = answered.json()
    assert hits == json.loads(printed.stdout) != []
    assert all("/advanced/" in hit["path"] and hit["metadata"] == {"section": "advanced"} for hit in hits)
    elsewhere = api.get("/search", params={"q": QUESTIONS[3], "where": "section!=advanced"}).json()
    assert elsewhere and all("/advanced/" not in hit["path"] and hit["metadata"] == {} for hit in elsewhere)


def test_status_answers_what_kb_status_json_prints(
    api: httpx2.Client, handbook: KbSettings, runner: CliRunner
) -> None:
    printed = runner.invoke(app, ["--db", str(handbook.db), "status", "--json"])
    assert printed.exit_code == 0, printed.stderr
    answered = api.get("/status").json()
    assert _without_clock(answered) == _without_clock(json.loads(printed.stdout))
    assert answered["documents"] == 25 and answered["tasks"]["embedded"] == answered["chunks"] > 0


def _without_clock(status: dict[str, Any]) -> dict[str, Any]:
    """The status less the ages that grow between two readings."""
    for heartbeat in [status["worker"], *status["workers"]]:
        if heartbeat is not None:
            heartbeat.pop("heartbeat_age_s")
    return status


def test_metrics_are_the_prometheus_text_of_kb_status(api: httpx2.Client) -> None:
    response = api.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain; version=0.0.4")
    assert "# TYPE kb_documents gauge\nkb_documents 25\n" in response.text
    embedded = 'kb_tasks{space="1",model="wordllama-l2-supercat",state="active",status="embedded"} 124'
    assert embedded in response.text


def test_health_is_whether_the_database_answers(api: httpx2.Client) -> None:
    response = api.get("/healthz")
    assert (response.status_code, response.json()) == (200, {"ok": True})


# -- bad questions ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("params", "status", "says"),
    [
        ({"q": "  "}, 400, "nothing to search for: the question is empty"),
        ({"q": "x", "path": "docs/["}, 400, "invalid path pattern 'docs/[': '[' opens a set"),
        ({"q": "x" * 8001}, 400, "the question is too long: 8,001 characters (at most 8,000)"),
        ({"q": "x", "space": "99"}, 400, "no embedding space #99"),
        ({"q": "x", "where": "tag=>2"}, 400, "invalid where condition 'tag=>2': '>' after '='"),
        ({"q": "x", "k": "0"}, 422, "greater than or equal to 1"),
        ({"q": "x", "k": "1001"}, 422, "less than or equal to 1000"),
        ({"q": "x", "mode": "fuzzy"}, 422, "'hybrid', 'vector' or 'text'"),
        ({}, 422, "Field required"),
    ],
)
def test_a_bad_question_is_refused_with_its_reason(
    api: httpx2.Client, params: dict[str, str], status: int, says: str
) -> None:
    response = api.get("/search", params=params)
    assert response.status_code == status
    assert says in json.dumps(response.json()["detail"])
    assert "--" not in json.dumps(response.json()["detail"])  # the API's own parameters, not the CLI's flags


# -- the page and the description -------------------------------------------------------------------------


def test_the_search_page_is_served(api: httpx2.Client) -> None:
    response = api.get("/")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")
    assert '<input id="q" type="search"' in response.text
    assert "fetch(url" in response.text and "`search?${params}&format=html`" in response.text
    assert "default-src 'none'" in response.headers["content-security-policy"]


ATTACK = """# Attack

Some **bold** text and a list:

- <script>alert(1)</script>
- <img src=x onerror=alert(1)>
- [x](javascript:alert(1)) and [ok](https://example.org/a)

```
code <b>here</b>
```
"""


def test_the_page_s_hits_render_markdown_and_no_html_from_documents(
    kb: KnowledgeBase, tmp_path: Path
) -> None:
    # Issue 22: the page showed "## Heading" as text; it must format Markdown, never run a document's HTML.
    write(tmp_path / "docs" / "attack.md", ATTACK)
    kb.ingest([tmp_path / "docs"])
    with running(http.server(kb, kb.settings, port=0)) as url, httpx2.Client(base_url=url) as client:
        plain = client.get("/search", params={"q": "attack bold list", "mode": "text"}).json()
        (hit,) = client.get(
            "/search", params={"q": "attack bold list", "mode": "text", "format": "html"}
        ).json()
    assert "html" not in plain[0] and hit["text"] == plain[0]["text"]
    card = LexborHTMLParser(f"<div>{hit['html']}</div>")
    assert card.css_first("h1") is None and card.css_first("h4") is not None  # demoted, not raw "#"
    assert card.css_first("strong") is not None and len(card.css("li")) == 3 and card.css_first("pre code")
    assert card.css_first("script") is None and card.css_first("img") is None and card.css_first("b") is None
    assert not [node for node in card.css("*") if any(name.startswith("on") for name in node.attributes)]
    assert [link.attributes.get("href") for link in card.css("a")] == ["https://example.org/a"]
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in hit["html"]  # shown as text


def _rules(css: str) -> dict[str, str]:
    """The page's CSS as {selector: declarations}."""
    css = re.sub(r"/\*.*?\*/", "", css, flags=re.DOTALL)
    return {selector.strip(): body for selector, body in re.findall(r"([^{}]+)\{([^}]*)\}", css)}


def test_the_search_button_shares_the_question_s_row_and_errors_stand_out(api: httpx2.Client) -> None:
    page = LexborHTMLParser(api.get("/").text)
    question, button = page.css_first("#q"), page.css_first("form button")
    assert question is not None and button is not None and question.parent is not None
    row = question.parent
    assert button.parent is not None and button.parent.mem_id == row.mem_id  # they wrap as one, never apart
    style, script = page.css_first("style"), page.css_first("script")
    assert style is not None and script is not None
    rules = _rules(style.text())
    row_rule = rules[f".{row.attributes.get('class')}"]
    assert "display: flex" in row_rule and "wrap" not in row_rule
    # Read out at once by screen readers, unlike the role=status line.
    error = page.css_first('[role="alert"]')
    assert error is not None and error.attributes.get("id") == "error"
    assert "var(--error)" in rules["#error"] and "var(--muted)" not in rules["#error"]
    assert re.search(r"--error: #[0-9a-f]{3,6}", rules[":root"])
    code = script.text()
    assert "showError(error.message)" in code and '$("error").textContent = text' in code


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("chromium") is None, reason="needs chromium (apt-get install chromium)")
def test_a_browser_shows_a_refused_search_as_an_alert(base_url: str) -> None:
    page = f"{base_url}/?q=leave&path=docs/%5B"  # a glob the server refuses
    dom = subprocess.run(
        [
            "chromium",
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--virtual-time-budget=5000",
            "--dump-dom",
            page,
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout
    shown = LexborHTMLParser(dom)
    error = shown.css_first("#error")
    assert error is not None and "hidden" not in error.attributes
    assert error.text().startswith("invalid path pattern 'docs/['")
    message = shown.css_first("#message")
    assert message is not None and message.text() == ""  # not also in the muted line


def test_openapi_describes_the_api(api: httpx2.Client) -> None:
    spec = api.get("/openapi.json").json()
    search = spec["paths"]["/search"]["get"]
    assert [parameter["name"] for parameter in search["parameters"]] == [
        "q",
        "k",
        "mode",
        "path",
        "space",
        "per_document",
        "where",
        "format",
    ]
    assert "SearchHitJson" in json.dumps(search["responses"]["200"])
    assert {"/search", "/status", "/metrics", "/healthz"} <= set(spec["paths"])
    assert api.get("/docs").status_code == 200


# -- read-only and concurrent -----------------------------------------------------------------------------


def test_answering_writes_nothing(api: httpx2.Client, handbook: KbSettings) -> None:
    """The local model's questions are free, so not even the query cache is written."""
    watcher = sqlite3.connect(handbook.db)
    try:
        before = watcher.execute("PRAGMA data_version").fetchone()
        for path in [*PATHS, "/search?q=tokens&mode=vector", "/healthz"]:
            assert api.get(path).status_code == 200, path
        assert watcher.execute("PRAGMA data_version").fetchone() == before
    finally:
        watcher.close()


def test_concurrent_searches_answer_as_one_at_a_time(api: httpx2.Client, base_url: str) -> None:
    alone = {question: api.get("/search", params={"q": question}).json() for question in QUESTIONS}
    asked = QUESTIONS * 6
    with httpx2.Client(base_url=base_url) as shared, ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(lambda question: shared.get("/search", params={"q": question}).json(), asked))
    assert answers == [alone[question] for question in asked]


# -- who may ask ------------------------------------------------------------------------------------------


def _basic(password: str) -> str:
    return "Basic " + base64.b64encode(f"anyone:{password}".encode()).decode()


WRONG = ["Bearer not-the-token-0123456789", f"Bearer {TOKEN}x", _basic("wrong"), f"Token {TOKEN}", "Basic !!"]


@pytest.mark.parametrize("authorization", [None, *WRONG])
def test_with_a_token_set_every_door_needs_it(guarded_url: str, authorization: str | None) -> None:
    headers = {} if authorization is None else {"Authorization": authorization}
    with httpx2.Client(base_url=guarded_url, headers=headers) as client:
        for path in PATHS:
            response = client.get(path)
            assert response.status_code == 401, path
            assert response.headers["www-authenticate"] == 'Bearer realm="kb"'
            assert TOKEN not in response.text
        assert client.post("/mcp", json={"jsonrpc": "2.0", "id": 1, "method": "ping"}).status_code == 401


@pytest.mark.parametrize("authorization", [f"Bearer {TOKEN}", _basic(TOKEN)])
def test_the_token_opens_every_door(guarded_url: str, authorization: str) -> None:
    # Any host name: with a token, a reverse proxy may address the server by its own.
    headers = {"Authorization": authorization, "Host": "kb.example.com"}
    with httpx2.Client(base_url=guarded_url, headers=headers) as client:
        for path in PATHS:
            assert client.get(path).status_code == 200, path


def test_a_browser_is_asked_for_the_token(guarded_url: str) -> None:
    response = httpx2.get(guarded_url + "/", headers={"Accept": "text/html,application/xhtml+xml"})
    assert response.status_code == 401
    assert response.headers["www-authenticate"].startswith('Basic realm="kb"')


@pytest.mark.parametrize(
    "headers",
    [
        {"Host": "evil.example"},
        {"Host": "evil.example:8000"},
        {"Host": "127.0.0.1.evil.example"},
        {"Origin": "http://evil.example"},
        {"Origin": "null"},
    ],
)
def test_without_a_token_only_this_machine_is_answered(api: httpx2.Client, headers: dict[str, str]) -> None:
    """A page elsewhere cannot read the knowledge base by DNS rebinding, or send it questions."""
    response = api.get("/search", params={"q": "deploy"}, headers=headers)
    assert response.status_code == 403
    assert "KB_SERVE_TOKEN" in response.json()["detail"]


@pytest.mark.parametrize(
    "headers", [{"Host": "localhost:8000"}, {"Host": "[::1]:8000"}, {"Origin": "http://localhost:5173"}]
)
def test_pages_of_this_machine_are_answered(api: httpx2.Client, headers: dict[str, str]) -> None:
    assert api.get("/search", params={"q": "deploy"}, headers=headers).status_code == 200


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "192.168.1.20", "kb.example.com", ""])
def test_listening_beyond_this_machine_needs_a_token(runner: CliRunner, db_path: Path, host: str) -> None:
    result = runner.invoke(app, ["--db", str(db_path), "serve", "--host", host])
    assert result.exit_code == 3
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "set KB_SERVE_TOKEN" in lines[0], result.stderr
    assert not db_path.exists()  # refused before anything was opened
    check_exposure(host, SecretStr(TOKEN))  # with a token, it may


@pytest.mark.parametrize("host", ["127.0.0.1", "127.0.0.2", "::1", "[::1]", "localhost"])
def test_this_machine_needs_no_token(host: str) -> None:
    check_exposure(host, None)


def test_a_short_token_is_refused_without_being_shown() -> None:
    with pytest.raises(Exception, match="KB_SERVE_TOKEN: must be at least 16 characters") as refused:
        load(serve_token="hunter2hunter2")
    assert "hunter2" not in str(refused.value)


@pytest.mark.parametrize(("command", "module"), [("serve", "fastapi"), ("serve", "uvicorn"), ("mcp", "mcp")])
def test_without_the_serve_extra_the_error_says_what_to_install(
    runner: CliRunner, db_path: Path, monkeypatch: pytest.MonkeyPatch, command: str, module: str
) -> None:
    monkeypatch.setitem(sys.modules, module, None)  # what an interpreter without it finds
    result = runner.invoke(app, ["--db", str(db_path), command])
    assert result.exit_code == 3
    assert result.stderr.strip() == f"error: {module} not installed: pip install 'kb[serve]'"


# -- errors and a Gemini knowledge base: what a paid question writes, what a refused key shows -----------


@pytest.mark.parametrize(
    ("error", "status"),
    [
        (InputError("bad glob"), 400),
        (NotConfiguredError(), 503),
        (AuthenticationError(), 503),
        (DatabaseBusyError(), 503),
        (DatabaseCorruptError(), 503),
        (ProviderUnavailableError(), 502),
        (KbError(), 500),
    ],
)
def test_each_kind_of_kb_error_has_its_http_status(error: KbError, status: int) -> None:
    assert http.http_status(error) == status


def _rows(db: Path) -> dict[str, int]:
    """Rows per plain table (the vec0 and FTS5 tables need kb's SQLite extensions; they follow these)."""
    with closing(sqlite3.connect(db)) as connection:
        names = [
            name for (name,) in connection.execute("SELECT name FROM sqlite_master WHERE type = 'table'")
        ]
        return {
            name: connection.execute(f'SELECT count(*) FROM "{name}"').fetchone()[0]
            for name in names
            if not name.startswith(("vec_", "chunks_fts"))
        }


@pytest.fixture
def gemini_handbook(gemini_settings: KbSettings) -> KbSettings:
    """One page of the handbook embedded through the emulator."""
    with KnowledgeBase(settings=gemini_settings) as kb:
        kb.ingest([HANDBOOK / "deployment.md"])
        kb.embed_now()
    return gemini_settings


def test_a_paid_question_writes_its_vector_and_cost_once(
    gemini_handbook: KbSettings, emulator: GeminiEmulator
) -> None:
    before = _rows(gemini_handbook.db)
    with (
        KnowledgeBase(settings=gemini_handbook) as kb,
        running(http.server(kb, gemini_handbook, port=0)) as url,
    ):
        answers = [
            httpx2.get(f"{url}/search", params={"q": "behind a proxy", "mode": "vector"}).json()
            for _ in range(3)
        ]
    after = _rows(gemini_handbook.db)
    assert answers[0] == answers[1] == answers[2] != []
    changed = {name: after[name] - before[name] for name in after if after[name] != before[name]}
    assert changed == {"query_embeddings": 1, "usage_records": 1}
    assert sum("RETRIEVAL_QUERY" in call.task_types for call in emulator.log) == 1  # asked thrice, paid once


def test_a_refused_key_never_reaches_an_answer(gemini_handbook: KbSettings) -> None:
    wrong = "AIza-not-the-key-0123456789"
    settings = gemini_handbook.model_copy(update={"gemini_api_key": SecretStr(wrong)})
    with KnowledgeBase(settings=settings) as kb, running(http.server(kb, settings, port=0)) as url:
        response = httpx2.get(f"{url}/search", params={"q": "behind a proxy"})
    assert response.status_code == 200
    assert all(hit["vector_rank"] is None for hit in response.json())  # answered from full text
    assert wrong not in response.text


def test_a_search_says_how_it_was_answered(tmp_path: Path) -> None:
    """Nothing is embedded yet: the hybrid question is answered from full text, and the answer says so in
    its headers, as the command line says it on stderr (the body stays what `--json` prints)."""
    settings = handbook_settings(tmp_path / "kb.sqlite")
    with KnowledgeBase(settings=settings) as kb:
        kb.ingest([HANDBOOK])  # queued, not embedded
        with running(http.server(kb, settings, port=0)) as url:
            answered = httpx2.get(f"{url}/search", params={"q": QUESTIONS[0]})
    assert answered.status_code == 200 and answered.json() != []
    assert answered.headers["x-kb-search-used"] == "text"
    [note] = json.loads(answered.headers["x-kb-search-notes"])
    assert "vector search unavailable" in note and "answering from full text" in note


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_stops_the_server_cleanly(handbook: KbSettings, tmp_path: Path, signum: int) -> None:
    """SIGTERM (a service manager) or Ctrl-C: the requests in flight finish, the knowledge base is closed,
    and the command exits 0, not killed by the signal uvicorn re-raises after its graceful shutdown."""
    with socket.socket() as probe:  # a free port, for the child to listen on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    env = {**os.environ, "KB_DB": str(handbook.db), "KB_PROVIDER": "local"}
    env.pop("KB_SERVE_TOKEN", None)
    server = subprocess.Popen(
        [sys.executable, "-m", "kb", "serve", "--port", str(port)],
        env=env,
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 60  # a hang guard, never the outcome
        while time.monotonic() < deadline:
            try:
                if httpx2.get(f"http://127.0.0.1:{port}/healthz").status_code == 200:
                    break
            except httpx2.TransportError:
                time.sleep(0.05)
        server.send_signal(signum)
        _, stderr = server.communicate(timeout=60)
    finally:
        if server.poll() is None:
            server.kill()
    assert server.returncode == 0, stderr[-1000:]
    assert "Finished server process" in stderr
