"""kb: a SQLite-backed embedding batch manager for RAG knowledge bases.

The names below are the public API. `KnowledgeBase` and `KbSettings` are imported on first use (PEP 562):
`import kb` stays cheap, so a command line that does not need the database does not pay for loading it.
"""

import importlib as _importlib
import typing as _typing

from kb.errors import ConfigError as ConfigError
from kb.errors import DatabaseError as DatabaseError
from kb.errors import InputError as InputError
from kb.errors import KbError as KbError
from kb.errors import ProviderError as ProviderError
from kb.records import IngestReport as IngestReport
from kb.records import StatusReport as StatusReport

if _typing.TYPE_CHECKING:
    from kb.app import KnowledgeBase as KnowledgeBase
    from kb.settings import KbSettings as KbSettings

__version__ = "0.1.0"

__all__ = [
    "ConfigError",
    "DatabaseError",
    "IngestReport",
    "InputError",
    "KbError",
    "KbSettings",
    "KnowledgeBase",
    "ProviderError",
    "StatusReport",
    "__version__",
]

_LAZY = {"KnowledgeBase": "kb.app", "KbSettings": "kb.settings"}


def __getattr__(name: str) -> _typing.Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'kb' has no attribute {name!r}")
    value = getattr(_importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_LAZY})
