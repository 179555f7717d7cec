"""Helpers for the tests of `kb serve` and `kb mcp`: a searchable knowledge base, and a real server on a
loopback port, answering on a thread."""

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from kb.app import KnowledgeBase
from kb.settings import KbSettings
from tests.support.files import HANDBOOK

TOKEN = "serve-token-0123456789abcdef"


def handbook_settings(db: Path, **overrides: Any) -> KbSettings:
    """Local-provider settings for `db`, whatever the developer's environment or `.env` says of a token."""
    values: dict[str, Any] = {"db": db, "provider": "local", "serve_token": None} | overrides
    return KbSettings(_env_file=None, **values)  # type: ignore[call-arg]


def embedded_handbook(db: Path) -> KbSettings:
    """The test handbook ingested into `db` and embedded with the local model (about a second); its
    documents under advanced/ have the metadata {"section": "advanced"} (`kb ingest --meta`)."""
    settings = handbook_settings(db)
    with KnowledgeBase(settings=settings) as kb:
        kb.ingest([HANDBOOK])
        kb.ingest([HANDBOOK / "advanced"], meta={"section": "advanced"})
        kb.worker().run(once=True, timeout_s=60)
    return settings


@contextmanager
def running(server: Any) -> Iterator[str]:
    """A `uvicorn.Server` answering on a thread (it then installs no signal handlers); its base URL. Its
    port may be 0: the one the system chose is read back."""
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("the server did not start")
        time.sleep(0.01)
    host, port = server.servers[0].sockets[0].getsockname()[:2]
    try:
        yield f"http://{host}:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=20)
