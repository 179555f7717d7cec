"""Plain values passed between kb's layers: statuses and the results services return."""

from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Protocol


class TaskStatus(StrEnum):
    """Where one (embedding space, text) task stands."""

    PENDING = "pending"
    SUBMITTED = "submitted"
    EMBEDDED = "embedded"
    FAILED = "failed"


class SpaceState(StrEnum):
    """An embedding space is filled while `building`, searched while `active`, kept while `retired`. A
    space of chunk contexts (written by a generation model, kb.core.contexts) is filled while `contexts`
    and never searched."""

    BUILDING = "building"
    ACTIVE = "active"
    RETIRED = "retired"
    CONTEXTS = "contexts"


class ChunkInput(StrEnum):
    """What a space embeds for a chunk: its text alone (spaces made before chunk headers), or `headed` by
    where it sits, its document title and heading path ("Node.js fs > File system > fs.mkdtemp(prefix)")."""

    TEXT = "text"
    HEADED = "headed"
    # The chunk headed, after the context a generation model wrote to situate it (contextual retrieval).
    SITUATED = "situated"
    # What a context space reads: the chunk within its document (its tasks write contexts, not vectors).
    DOCUMENT = "document"


@dataclass(frozen=True, slots=True)
class SpaceSpec:
    """What makes vectors comparable: vectors of two different specs are never mixed."""

    provider: str
    model: str
    dimensions: int
    task_type: str = "RETRIEVAL_DOCUMENT"
    normalized: bool = True
    chunk_input: ChunkInput = ChunkInput.HEADED


@dataclass(frozen=True, slots=True)
class Space:
    """An embedding space as stored (the row of `embedding_spaces`, as a plain value)."""

    id: int
    provider: str
    model: str
    dimensions: int
    task_type: str
    normalized: bool
    state: str
    created_at: float
    activated_at: float | None
    retired_at: float | None
    chunk_input: str = ChunkInput.HEADED


class SpecFields(Protocol):
    """Anything that names a space's spec: a `SpaceSpec`, a stored `Space`, the ORM row."""

    @property
    def provider(self) -> str: ...
    @property
    def model(self) -> str: ...
    @property
    def dimensions(self) -> int: ...
    @property
    def task_type(self) -> str: ...
    @property
    def normalized(self) -> bool: ...
    @property
    def chunk_input(self) -> str: ...


def spec_label(space: SpecFields) -> str:
    """How messages name what a space holds: "local/wordllama-l2-supercat, 256d[, chunk text only]"."""
    if space.chunk_input == ChunkInput.DOCUMENT:
        return f"{space.provider}/{space.model}, chunk contexts ({space.task_type.lower()})"
    note = {ChunkInput.TEXT: ", chunk text only", ChunkInput.SITUATED: ", with chunk contexts"}
    return f"{space.provider}/{space.model}, {space.dimensions}d{note.get(ChunkInput(space.chunk_input), '')}"


def spec_of(space: SpecFields) -> SpaceSpec:
    """The spec of a stored space: what its vectors are comparable by."""
    return SpaceSpec(
        space.provider,
        space.model,
        space.dimensions,
        space.task_type,
        space.normalized,
        ChunkInput(space.chunk_input),
    )


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
    # Stored documents whose files are gone, kept because --prune was not given.
    missing: list[str] = field(default_factory=list)
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
    coverage: float = 0.0  # embedded / all tasks of the space
    oldest_pending_age_s: float | None = None
    held_back: int = 0  # pending texts waiting out a back-off after failed attempts
    held_back_reason: str | None = None  # the latest of their errors
    held_back_until: float | None = None  # when the first of them is tried again (UNIX time)
    chunk_input: str = ChunkInput.HEADED  # what it embeds for a chunk (ChunkInput)


@dataclass(frozen=True, slots=True)
class WorkerHeartbeat:
    owner: str
    heartbeat_age_s: float
    alive: bool


@dataclass(frozen=True, slots=True)
class SpendSummary:
    tokens: int
    usd: float
    usd_online_equivalent: float
    saved_usd: float
    last_24h_usd: float
    by_kind: dict[str, dict[str, float]]
    tokens_measured: int = 0  # counted by the service (tokenCount, usageMetadata); the rest estimated by kb


@dataclass(frozen=True, slots=True)
class StatusReport:
    """Everything `kb status` shows. `tasks` and `chunk_statuses` are for the active space."""

    database: Path
    revision: str | None
    documents: int
    chunks: int
    tasks: dict[str, int]
    chunk_statuses: dict[str, int]
    spaces: list["SpaceSummary"]
    jobs: list["JobInfo"] = field(default_factory=list)  # live jobs
    warnings: list[str] = field(default_factory=list)  # stuck jobs, budget, no worker
    recent_errors: list[str] = field(default_factory=list)
    spend: SpendSummary | None = None
    workers: list[WorkerHeartbeat] = field(default_factory=list)  # newest heartbeat first
    budget_block: str | None = None

    @property
    def worker(self) -> WorkerHeartbeat | None:
        """The worker heard from last."""
        return self.workers[0] if self.workers else None


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
    # The pages the chunk spans, 1-based, in documents that have pages (PDF); None elsewhere.
    page_start: int | None = None
    page_end: int | None = None
    # Every chunk the hit shows, in document order: consecutive chunks of one document are merged into one
    # passage (kb.search.shaping); `chunk_id` is the first of them.
    chunk_ids: list[int] = field(default_factory=list)
    # The context a generation model wrote to situate the chunk in its document (`kb enrich`), if any.
    context: str = ""
    # Its document's metadata: front matter, document properties, `kb ingest --meta` (kb.core.metadata).
    metadata: dict[str, object] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.chunk_ids:
            object.__setattr__(self, "chunk_ids", [self.chunk_id])


@dataclass(frozen=True, slots=True)
class SearchResult:
    query: str
    mode: SearchMode
    used: SearchMode
    hits: list[SearchHit]
    notes: list[str] = field(default_factory=list)
    space_id: int | None = None
    # The space whose vectors answered, e.g. "space #1 (local/wordllama-l2, 256d)", and its provider.
    space_label: str | None = None
    space_provider: str | None = None
    # How the vectors were searched (kb.vectorindex): "exact", "quantized" or "memory"; None without vectors.
    vector_index: str | None = None


class JobState(StrEnum):
    """A batch job's life in kb's ledger. `created` jobs have no remote job yet (or kb does not know it)."""

    CREATED = "created"
    PENDING = "pending"
    RUNNING = "running"
    CANCELLING = "cancelling"
    SUCCEEDED = "succeeded"  # results downloaded and saved, not yet applied
    APPLIED = "applied"
    FAILED = "failed"
    EXPIRED = "expired"
    CANCELLED = "cancelled"

    @property
    def live(self) -> bool:
        """The job may still hold paid work: its tasks must not be submitted again."""
        return self in LIVE_JOB_STATES


LIVE_JOB_STATES = frozenset(
    {JobState.CREATED, JobState.PENDING, JobState.RUNNING, JobState.CANCELLING, JobState.SUCCEEDED}
)


@dataclass(frozen=True, slots=True)
class RemoteStatus:
    """A remote batch job as its service reports it. `state` is None for a state kb does not know."""

    name: str
    display_name: str | None
    state: JobState | None
    raw_state: str
    output_file: str | None
    end_time: float | None = None  # when it ended, by the service's clock (batch `endTime`)
    update_time: float | None = None  # its last change (`updateTime`)


@dataclass(frozen=True, slots=True)
class Generated:
    """A text a generation model wrote, and the tokens the service billed for it: `input_tokens` its
    promptTokenCount, `output_tokens` its candidates and thinking tokens (both billed at the output price).
    0 where the service did not say."""

    text: str
    input_tokens: int
    output_tokens: int


@dataclass(frozen=True, slots=True)
class JobInfo:
    id: int
    display_name: str
    remote_name: str | None
    state: str
    remote_state: str | None
    texts: int
    tokens: int
    created_at: float
    submitted_at: float | None
    finished_at: float | None
    deadline_at: float | None
    error: str | None
    worker: str | None = None  # the worker that holds or last held the job's claim


@dataclass(frozen=True, slots=True)
class FailedText:
    task_id: int
    space_id: int
    attempts: int
    error: str | None
    documents: list[str]
