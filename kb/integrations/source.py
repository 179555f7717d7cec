"""Where the retrievers get their hits: a `KnowledgeBase` in this process, or `GET /search` of a `kb serve`.

Both give the hits as `kb search --json` prints them (`kb.report.views`), so a retriever answers the same
whichever it asks, and both turn a hit into the same citation. Search arguments are passed as they are, to
`KnowledgeBase.search` or as the query parameters of `GET /search`: a new one needs no change here.
"""

import asyncio
import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol
from urllib.parse import urlsplit

import httpx2
from pydantic import SecretStr

from kb.app import KnowledgeBase
from kb.errors import ConfigError, InputError, KbError, ProviderError
from kb.records import SearchMode
from kb.report import views

if TYPE_CHECKING:
    from kb.report.shapes import SearchHitJson

log = logging.getLogger(__name__)

DEFAULT_K = 4  # a handful of passages for a prompt, as the frameworks' own retrievers give
DEFAULT_TIMEOUT_S = 30.0  # a server's first question may wait for its embedding
# The citation fields a language model is shown with each LlamaIndex node; the rest (ranks, offsets,
# chunk ids) are for programs.
FOR_THE_MODEL = ("source", "title", "heading", "page_start", "page_end")


class Source(Protocol):
    """A place to search: the hits of a question, best first."""

    def search(self, query: str, arguments: Mapping[str, Any]) -> list["SearchHitJson"]: ...

    async def asearch(self, query: str, arguments: Mapping[str, Any]) -> list["SearchHitJson"]: ...


def search_arguments(
    k: int,
    mode: SearchMode | str,
    path: str | None,
    per_document: int | None,
    extra: Mapping[str, Any] | None,
) -> dict[str, Any]:
    """`KnowledgeBase.search`'s keyword arguments; `extra` ones (any other, e.g. `space`) win."""
    return {"k": k, "mode": SearchMode(mode), "path": path, "per_document": per_document, **(extra or {})}


def source_of(
    kb: KnowledgeBase | str, token: SecretStr | str | None = None, timeout_s: float = DEFAULT_TIMEOUT_S
) -> Source:
    """A `KnowledgeBase` searched in this process, or the base URL of a `kb serve` (with its token)."""
    if isinstance(kb, KnowledgeBase):
        return InProcess(kb)
    if isinstance(kb, str):
        secret = SecretStr(token) if isinstance(token, str) else token
        return OverHttp(kb, secret, timeout_s)
    raise TypeError(f"a KnowledgeBase or the URL of a kb serve, not {type(kb).__name__}")


@dataclass(frozen=True)
class InProcess:
    """Searches an open `KnowledgeBase`; asynchronously on a thread, as `kb serve` does."""

    kb: KnowledgeBase

    def search(self, query: str, arguments: Mapping[str, Any]) -> list["SearchHitJson"]:
        result = self.kb.search(query, **arguments)
        _log_notes(result.notes)
        return views.search_json(result)

    async def asearch(self, query: str, arguments: Mapping[str, Any]) -> list["SearchHitJson"]:
        return await asyncio.to_thread(self.search, query, arguments)


@dataclass(frozen=True)
class OverHttp:
    """Asks `GET /search` of a `kb serve` at `url`, with its token if it has one (KB_SERVE_TOKEN). A
    client per question: nothing to close, and an async one belongs to the running event loop."""

    url: str
    token: SecretStr | None = None  # repr shows only asterisks
    timeout_s: float = DEFAULT_TIMEOUT_S

    def search(self, query: str, arguments: Mapping[str, Any]) -> list["SearchHitJson"]:
        try:
            with httpx2.Client(**self._client()) as client:
                response = client.get("/search", params=_params(query, arguments))
        except httpx2.HTTPError as error:
            raise self._unreachable(error) from None
        return self._hits(response)

    async def asearch(self, query: str, arguments: Mapping[str, Any]) -> list["SearchHitJson"]:
        try:
            async with httpx2.AsyncClient(**self._client()) as client:
                response = await client.get("/search", params=_params(query, arguments))
        except httpx2.HTTPError as error:
            raise self._unreachable(error) from None
        return self._hits(response)

    def _client(self) -> dict[str, Any]:
        headers = {} if self.token is None else {"Authorization": f"Bearer {self.token.get_secret_value()}"}
        return {"base_url": self.url, "headers": headers, "timeout": self.timeout_s}

    def _hits(self, response: httpx2.Response) -> list["SearchHitJson"]:
        if response.status_code != 200:
            raise self._refused(response)
        notes = response.headers.get("X-Kb-Search-Notes")
        if notes:
            _log_notes(_json_list(notes))
        try:
            hits: list[SearchHitJson] = response.json()
        except ValueError:  # a URL of something else than a kb serve
            raise KbError(f"{self._where()} answered /search with something else than kb's JSON") from None
        return hits

    def _refused(self, response: httpx2.Response) -> KbError:
        """kb's error for a refusal, in the server's words (which never hold a secret)."""
        try:
            detail = str(response.json()["detail"])
        except (ValueError, KeyError, TypeError):
            detail = response.reason_phrase
        said = f"kb serve at {self._where()} answered {response.status_code}: {detail}"
        if response.status_code == 400:  # kb's own words, as in process
            return InputError(detail)
        if response.status_code == 422:  # a parameter the API refuses (k=0, say)
            return InputError(said)
        if response.status_code in (401, 403):
            return ConfigError(said)
        if response.status_code == 502:
            return ProviderError(said)
        return KbError(said)

    def _unreachable(self, error: httpx2.HTTPError) -> KbError:
        return KbError(f"kb serve at {self._where()} cannot be reached: {type(error).__name__}: {error}")

    def _where(self) -> str:
        """The server's URL without any user name or password it was given with."""
        parts = urlsplit(self.url)
        return parts._replace(netloc=parts.netloc.rpartition("@")[2]).geturl()


def citation(hit: "SearchHitJson") -> dict[str, Any]:
    """A hit's metadata: every field of `kb search --json` but its text, and `source`, its path, the key
    the frameworks' tools read to cite a document."""
    fields: dict[str, Any] = {key: value for key, value in hit.items() if key != "text"}
    return {"source": hit["path"], **fields}


def hit_id(hit: "SearchHitJson") -> str:
    """A stable id per passage: "kb-chunk-12", or "kb-chunks-12-13" for consecutive chunks merged into one."""
    ids = hit["chunk_ids"]
    return f"kb-chunk-{ids[0]}" if len(ids) == 1 else f"kb-chunks-{'-'.join(map(str, ids))}"


def _params(query: str, arguments: Mapping[str, Any]) -> dict[str, Any]:
    """The query parameters of `GET /search`: None means the server's default, so it is left out."""
    values = {"q": query, **arguments}
    return {
        name: str(value) if isinstance(value, SearchMode) else value
        for name, value in values.items()
        if value is not None
    }


def _json_list(header: str) -> list[str]:
    try:
        notes = json.loads(header)
    except ValueError:
        return [header]
    return [str(note) for note in notes] if isinstance(notes, list) else [str(notes)]


def _log_notes(notes: list[str]) -> None:
    """Why a search fell back (no vectors yet, say): what `kb search` prints on stderr."""
    for note in notes:
        log.warning("kb search: %s", note)
