"""The URL table: which route a method and path name, with its parameters. No state, no HTTP.

Paths may carry a prefix (a base_url with a path) before the version segment; `/upload/{v}/files` and
`/download/{v}/files/{id}:download` are the media endpoints; `/__emulator/...` is the control API.
"""

import re
from dataclasses import dataclass, field
from urllib.parse import parse_qsl, unquote, urlsplit

ROUTE_NAMES = (
    "batchEmbedContents",
    "embedContent",
    "countTokens",
    "asyncBatchEmbedContent",
    "generateContent",
    "batchGenerateContent",
    "models.get",
    "models.list",
    "batches.get",
    "batches.list",
    "batches.cancel",
    "batches.delete",
    "files.upload",
    "files.download",
    "files.get",
    "files.delete",
    "files.list",
)

_TARGET = re.compile(
    r"^(?P<prefix>(?:/[^/]+)*?)/(?:(?P<media>upload|download)/)?(?P<version>v1(?:alpha|beta)?)/(?P<rest>.*)$"
)
_CONTROL = re.compile(r"^(?P<prefix>(?:/[^/]+)*?)/__emulator/(?P<rest>.*)$")
_ID = r"[^/:]+"

# (media kind, method, pattern of the path after the version, route)
_TABLE: list[tuple[str | None, str, re.Pattern[str], str]] = [
    (None, "POST", re.compile(rf"models/(?P<model>{_ID}):batchEmbedContents"), "batchEmbedContents"),
    (None, "POST", re.compile(rf"models/(?P<model>{_ID}):embedContent"), "embedContent"),
    (None, "POST", re.compile(rf"models/(?P<model>{_ID}):countTokens"), "countTokens"),
    (None, "POST", re.compile(rf"models/(?P<model>{_ID}):asyncBatchEmbedContent"), "asyncBatchEmbedContent"),
    (None, "POST", re.compile(rf"models/(?P<model>{_ID}):generateContent"), "generateContent"),
    (None, "POST", re.compile(rf"models/(?P<model>{_ID}):batchGenerateContent"), "batchGenerateContent"),
    (None, "GET", re.compile(rf"models/(?P<model>{_ID})"), "models.get"),
    (None, "GET", re.compile(r"models"), "models.list"),
    (None, "GET", re.compile(rf"batches/(?P<batch>{_ID})"), "batches.get"),
    (None, "GET", re.compile(r"batches"), "batches.list"),
    (None, "POST", re.compile(rf"batches/(?P<batch>{_ID}):cancel"), "batches.cancel"),
    (None, "DELETE", re.compile(rf"batches/(?P<batch>{_ID})"), "batches.delete"),
    (None, "POST", re.compile(rf"batches/(?P<batch>{_ID}):delete"), "batches.delete"),
    (None, "GET", re.compile(rf"batches/(?P<batch>{_ID}):delete"), "batches.delete"),
    (None, "GET", re.compile(rf"files/(?P<file>{_ID}):download"), "files.download"),
    ("download", "GET", re.compile(rf"files/(?P<file>{_ID}):download"), "files.download"),
    ("upload", "POST", re.compile(r"files"), "files.upload"),
    (None, "GET", re.compile(rf"files/(?P<file>{_ID})"), "files.get"),
    (None, "DELETE", re.compile(rf"files/(?P<file>{_ID})"), "files.delete"),
    (None, "GET", re.compile(r"files"), "files.list"),
]


@dataclass(frozen=True)
class Target:
    """A request path taken apart. `route` is None for a path the emulator does not serve."""

    path: str
    query: dict[str, str]
    prefix: str = ""
    api_version: str | None = None
    route: str | None = None
    params: dict[str, str] = field(default_factory=dict)
    control: str | None = None  # the path after /__emulator/

    @property
    def model(self) -> str | None:
        return self.params.get("model")


def resolve(method: str, raw_path: str) -> Target:
    parts = urlsplit(raw_path)
    path = parts.path
    query = dict(parse_qsl(parts.query, keep_blank_values=True))
    control = _CONTROL.match(path)
    if control:
        return Target(path, query, prefix=control["prefix"], control=control["rest"])
    found = _TARGET.match(path)
    if not found:
        return Target(path, query)
    rest = unquote(found["rest"])
    for media, route_method, pattern, route in _TABLE:
        if media != found["media"] or route_method != method:
            continue
        matched = pattern.fullmatch(rest)
        if matched:
            params = {key: value for key, value in matched.groupdict().items() if value is not None}
            return Target(path, query, found["prefix"], found["version"], route, params)
    return Target(path, query, found["prefix"], found["version"])
