"""kb: a SQLite-backed embedding batch manager for RAG knowledge bases."""

from kb.app import KnowledgeBase as KnowledgeBase
from kb.errors import ConfigError as ConfigError
from kb.errors import DatabaseError as DatabaseError
from kb.errors import InputError as InputError
from kb.errors import KbError as KbError
from kb.errors import ProviderError as ProviderError
from kb.records import IngestReport as IngestReport
from kb.records import StatusReport as StatusReport
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
