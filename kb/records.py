"""Plain values passed between kb's layers: statuses and the results services return."""

from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path


class TaskStatus(StrEnum):
    """Where one (embedding space, text) task stands."""

    PENDING = "pending"
    SUBMITTED = "submitted"
    EMBEDDED = "embedded"
    FAILED = "failed"


class SpaceState(StrEnum):
    """An embedding space is filled while `building`, searched while `active`, kept while `retired`."""

    BUILDING = "building"
    ACTIVE = "active"
    RETIRED = "retired"


@dataclass(frozen=True, slots=True)
class SpaceSpec:
    """What makes vectors comparable: vectors of two different specs are never mixed."""

    provider: str
    model: str
    dimensions: int
    task_type: str = "RETRIEVAL_DOCUMENT"
    normalized: bool = True


@dataclass(frozen=True, slots=True)
class SkippedFile:
    path: str
    reason: str


@dataclass(slots=True)
class IngestReport:
    """What one `kb ingest` did. Paths are as stored (absolute) or as given for skipped ones."""

    added: list[str] = field(default_factory=list)
    changed: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    skipped: list[SkippedFile] = field(default_factory=list)
    chunks_written: int = 0
    tasks_queued: int = 0
    tokens_queued: int = 0
    dry_run: bool = False
    # Texts newly queued in the active space, for `kb ingest --now`.
    queued_hashes: list[str] = field(default_factory=list, repr=False)

    def counts(self) -> dict[str, int]:
        return {
            "added": len(self.added),
            "changed": len(self.changed),
            "unchanged": len(self.unchanged),
            "removed": len(self.removed),
            "skipped": len(self.skipped),
        }


@dataclass(frozen=True, slots=True)
class SpaceSummary:
    id: int
    provider: str
    model: str
    dimensions: int
    state: str
    tasks: dict[str, int]


@dataclass(frozen=True, slots=True)
class StatusReport:
    """Counts for `kb status`. `tasks` and `chunk_statuses` are for the active space."""

    database: Path
    revision: str | None
    documents: int
    chunks: int
    tasks: dict[str, int]
    chunk_statuses: dict[str, int]
    spaces: list[SpaceSummary]


class SearchMode(StrEnum):
    HYBRID = "hybrid"
    VECTOR = "vector"
    TEXT = "text"


@dataclass(frozen=True, slots=True)
class SearchHit:
    """One chunk found by a search. `score` is the fused (hybrid), cosine (vector) or BM25 (text) score."""

    rank: int
    score: float
    path: str
    title: str
    heading: str
    text: str
    chunk_id: int
    document_id: int
    start: int
    end: int
    text_rank: int | None = None
    vector_rank: int | None = None


@dataclass(frozen=True, slots=True)
class SearchResult:
    query: str
    mode: SearchMode
    used: SearchMode
    hits: list[SearchHit]
    notes: list[str] = field(default_factory=list)
    space_id: int | None = None
