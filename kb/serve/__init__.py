"""Answers out: kb's search and status for other programs, from one long-lived `KnowledgeBase` whose vector
index stays in memory.

    http.py    `kb serve`: the JSON API, the search page (page.html), MCP over streamable HTTP
    mcp.py     the MCP tools, served over HTTP by `kb serve` and over stdio by `kb mcp`
    guard.py   who may ask: the token, and the Host and Origin of a server without one

They need the `serve` extra (fastapi, uvicorn, mcp); nothing here imports it until a server is built, so
`require` can say in one line what is missing.
"""

import importlib.util

from kb.errors import ConfigError


def require(*modules: str) -> None:
    """Raise a ConfigError naming the extra when any of `modules` is not installed."""
    missing = [name for name in modules if importlib.util.find_spec(name) is None]
    if missing:
        raise ConfigError(f"{', '.join(missing)} not installed: pip install 'kb[serve]'")
