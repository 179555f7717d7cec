"""`kb serve`: search and status over HTTP from a warm index, with a search page and MCP.

    GET /search    what `kb search --json` prints       GET /status   what `kb status --json` prints
    GET /metrics   what `kb status --prometheus` prints  GET /healthz  {"ok": true} when the database answers
    GET /          the search page (page.html)           /mcp          MCP over streamable HTTP (kb.serve.mcp)
    GET /docs, /openapi.json                             the API's description

Read-only: a search writes nothing but what every search writes, a paid question's vector (so that asking
it again costs nothing) and its cost. Endpoints are synchronous, so the server runs them on its thread pool,
concurrently: one `KnowledgeBase` serves them all (its caches are locked, each search takes its own
connections), and its vector index is loaded before the first request (`KnowledgeBase.warm_up`).
"""

import copy
import json
import logging
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from importlib import resources
from typing import Annotated, Any, Literal

import anyio.to_thread
import uvicorn
from fastapi import FastAPI, Query, Request
from fastapi.responses import HTMLResponse, JSONResponse, PlainTextResponse
from mcp.server.transport_security import TransportSecuritySettings
from pydantic import BaseModel

from kb import __version__
from kb.app import KnowledgeBase
from kb.errors import ConfigError, DatabaseBusyError, DatabaseError, InputError, KbError, ProviderError
from kb.records import SearchMode, SearchResult
from kb.report import shapes, views
from kb.serve.guard import Guard, check_exposure
from kb.serve.mcp import create_server
from kb.settings import KbSettings

log = logging.getLogger(__name__)

PROMETHEUS_TEXT = "text/plain; version=0.0.4"
# A search holds up to two pooled database connections at once (full text and vectors in parallel), and
# SQLAlchemy's pool has 15; searches are CPU work, so more at once would only queue on the cores anyway.
MAX_CONCURRENT_REQUESTS = 7
# kb's errors as HTTP statuses: the caller's mistake; kb unusable here (a setting, the database); the
# provider failing. Anything else is a bug: 500.
_STATUS_OF: tuple[tuple[type[KbError], int], ...] = (
    (InputError, 400),
    (ConfigError, 503),
    (DatabaseError, 503),
    (ProviderError, 502),
)
# The page is only ever read from this server; its script writes text, never markup.
_PAGE_HEADERS = {
    "Content-Security-Policy": "default-src 'none'; connect-src 'self'; script-src 'unsafe-inline'; "
    "style-src 'unsafe-inline'; frame-ancestors 'none'",
    "Referrer-Policy": "no-referrer",
    "X-Content-Type-Options": "nosniff",
}


class Problem(BaseModel):
    """Why a request was not answered."""

    detail: str


class Health(BaseModel):
    ok: bool


# For the API's description: why any request may be refused, and why a search may be.
_REFUSALS: dict[int | str, dict[str, Any]] = {
    401: {"model": Problem, "description": "The server has a token and the request did not carry it."},
    403: {"model": Problem, "description": "Without a token: not addressed to this machine (docs/serve.md)."},
    503: {"model": Problem, "description": "kb cannot answer here now: its database or configuration."},
}
_SEARCH_REFUSALS: dict[int | str, dict[str, Any]] = {
    400: {
        "model": Problem,
        "description": "A question kb cannot use: empty, too long, a bad glob or where, no such space.",
    },
    502: {"model": Problem, "description": "The embedding provider failed."},
    **_REFUSALS,
}


def create_app(kb: KnowledgeBase, settings: KbSettings) -> FastAPI:
    """The whole server over `kb`, which must stay open while the app runs."""
    mcp_server = create_server(kb)
    # The guard below checks Host and Origin for every route, /mcp included: the SDK's own check, which
    # would refuse a reverse proxy's Host even with a token, is left off.
    mcp_app = mcp_server.streamable_http_app(
        streamable_http_path="/mcp",
        stateless_http=True,  # the tools keep no state between calls: no sessions to track or expire
        json_response=True,
        transport_security=TransportSecuritySettings(enable_dns_rebinding_protection=False),
    )

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        # Requests beyond this wait their turn here, rather than for a pooled connection, which times out.
        anyio.to_thread.current_default_thread_limiter().total_tokens = MAX_CONCURRENT_REQUESTS
        await anyio.to_thread.run_sync(_warm_up, kb)
        async with mcp_server.session_manager.run():
            yield

    app = FastAPI(
        title="kb",
        version=__version__,
        summary="Search a kb knowledge base: the JSON of `kb search --json` and `kb status --json`.",
        lifespan=lifespan,
        redoc_url=None,
    )
    app.add_middleware(Guard, token=settings.serve_token)
    app.exception_handler(KbError)(_kb_error)
    _add_routes(app, kb)
    app.router.routes.extend(mcp_app.routes)  # /mcp, behind the same guard and lifespan
    return app


def server(
    kb: KnowledgeBase, settings: KbSettings, host: str = "127.0.0.1", port: int = 8000
) -> uvicorn.Server:
    """The server over `kb`, ready to `run()`: it answers until SIGINT or SIGTERM, then finishes the
    requests in flight (for up to 10 s). Refuses a host beyond this machine without a token."""
    check_exposure(host, settings.serve_token)
    config = uvicorn.Config(
        create_app(kb, settings),
        host=host,
        port=port,
        log_config=_log_config(),
        timeout_graceful_shutdown=10,
    )
    return uvicorn.Server(config)


def _add_routes(app: FastAPI, kb: KnowledgeBase) -> None:
    page = resources.files(__package__).joinpath("page.html").read_text(encoding="utf-8")

    @app.get("/", include_in_schema=False)
    def search_page() -> HTMLResponse:
        return HTMLResponse(page, headers=_PAGE_HEADERS)

    @app.get("/search", response_model=list[shapes.SearchHitJson], responses=_SEARCH_REFUSALS)
    def search(
        q: Annotated[str, Query(description=views.QUERY_HELP)],
        k: Annotated[int, Query(ge=1, le=views.MAX_HITS, description=views.K_HELP)] = 10,
        mode: Annotated[SearchMode, Query(description=views.MODE_HELP)] = SearchMode.HYBRID,
        path: Annotated[str | None, Query(description=views.PATH_HELP)] = None,
        space: Annotated[int | None, Query(description=views.SPACE_HELP)] = None,
        per_document: Annotated[int | None, Query(ge=0, description=views.PER_DOCUMENT_HELP)] = None,
        where: Annotated[list[str] | None, Query(description=views.WHERE_HELP)] = None,
        format: Annotated[
            Literal["json", "html"],
            Query(description="html: each hit also has `html`, its text rendered safely (the search page)."),
        ] = "json",
    ) -> JSONResponse:
        """The chunks that best answer a question, best first: exactly what `kb search --json` prints. The
        headers say how it was answered (`X-Kb-Search-Used`: hybrid, vector or text) and why it fell
        back, if it did (`X-Kb-Search-Notes`: a JSON list, what the command line prints on stderr)."""
        result = kb.search(q, k=k, mode=mode, path=path, space=space, per_document=per_document, where=where)
        hits: list[Any] = views.search_json(result)
        if format == "html":
            from kb.serve.markdown import to_html

            hits = [{**hit, "html": to_html(hit["text"])} for hit in hits]
        return JSONResponse(hits, headers=_search_headers(result))

    @app.get("/status", response_model=shapes.StatusJson, responses=_REFUSALS)
    def status() -> JSONResponse:
        """Documents, chunks, texts by embedding state, jobs, warnings and spend: what `kb status --json`
        prints (keys in docs/status.md)."""
        return JSONResponse(views.status_json(kb.status()))

    @app.get("/metrics", response_class=PlainTextResponse, responses=_REFUSALS)
    def metrics() -> PlainTextResponse:
        """The figures of `/status` in the Prometheus text format (`kb status --prometheus`)."""
        return PlainTextResponse(views.prometheus(kb.status()), media_type=PROMETHEUS_TEXT)

    @app.get("/healthz", response_model=Health, responses={503: {"model": Health}})
    def healthz() -> JSONResponse:
        """Whether the database answers, and nothing else."""
        try:
            kb.schema_revision()
        except DatabaseError as error:
            log.warning("health check failed: %s", error.message)
            return JSONResponse({"ok": False}, 503)
        return JSONResponse({"ok": True})


def _search_headers(result: SearchResult) -> dict[str, str]:
    headers = {"X-Kb-Search-Used": str(result.used)}
    if result.notes:  # ASCII JSON: a note may name a file in any script, and headers are Latin-1
        headers["X-Kb-Search-Notes"] = json.dumps(result.notes, ensure_ascii=True)
    return headers


def http_status(error: KbError) -> int:
    """The HTTP status that answers `error` (`_STATUS_OF`; 500 for anything else)."""
    return next((code for kind, code in _STATUS_OF if isinstance(error, kind)), 500)


async def _kb_error(request: Request, error: KbError) -> JSONResponse:
    status = http_status(error)
    if status >= 500:
        log.warning("%s %s: %s", request.method, request.url.path, error.message)
    headers = {"Retry-After": "1"} if isinstance(error, DatabaseBusyError) else None
    return JSONResponse({"detail": error.message}, status, headers=headers)


def _warm_up(kb: KnowledgeBase) -> None:
    started = time.perf_counter()
    method = kb.warm_up()
    if method is not None:
        log.info("vector search ready in %.1f s: %s", time.perf_counter() - started, method)


def _log_config() -> dict[str, Any]:
    """uvicorn's logging, all of it on stderr (its access log would go to stdout, which carries data)."""
    config = copy.deepcopy(uvicorn.config.LOGGING_CONFIG)
    config["handlers"]["access"]["stream"] = "ext://sys.stderr"
    return config
