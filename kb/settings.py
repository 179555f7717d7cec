"""One settings object, read once from the environment and `.env`, then passed explicitly.

This is the only module that reads `os.environ` (through pydantic-settings). CLI options override fields
by constructing `KbSettings(**overrides)`.
"""

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pydantic import AliasChoices, Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from kb.core import models
from kb.errors import ConfigError

ProviderName = Literal["gemini", "local"]

LOCAL_MODEL = "wordllama-l2-supercat"
LOCAL_DIMENSIONS = 256
MIN_TOKEN_CHARS = 16  # a shorter `kb serve` token could be guessed


def is_postgres_url(target: str | Path) -> bool:
    return str(target).startswith(("postgresql://", "postgresql+", "postgres://"))


class KbSettings(BaseSettings):
    """kb configuration. Every field can be set as `KB_<NAME>` in the environment or in `.env`."""

    model_config = SettingsConfigDict(
        env_prefix="KB_",
        env_file=".env",
        env_file_encoding="utf-8",
        extra="ignore",
        populate_by_name=True,
    )

    db: Path = Field(Path("kb.sqlite"), description="SQLite database file (also `kb --db PATH`).")
    database_url: str | None = Field(
        None,
        description="A PostgreSQL database instead of SQLite, e.g. `postgresql://user@host/kb` "
        "(also `kb --db postgresql://...`).",
    )
    results_dir: Path | None = Field(
        None,
        description="Where batch results are saved before they are applied (default: beside the SQLite "
        "file; `./kb-results` with PostgreSQL).",
    )
    provider: ProviderName | None = Field(
        None,
        description="Embedding provider: `gemini` or `local`. Default: `gemini` when a key is set.",
    )
    gemini_api_key: SecretStr | None = Field(
        None,
        validation_alias=AliasChoices("KB_GEMINI_API_KEY", "GEMINI_API_KEY", "GOOGLE_API_KEY"),
        description="Gemini API key (`KB_GEMINI_API_KEY`, `GEMINI_API_KEY` or `GOOGLE_API_KEY`).",
    )
    embedding_model: str = Field("gemini-embedding-001", description="Gemini embedding model for new spaces.")
    embedding_dimensions: int = Field(
        768, ge=1, le=3072, description="Output dimensionality for Gemini embeddings."
    )
    gemini_base_url: str | None = Field(
        None,
        description="Gemini API base URL (default: the SDK's own, which honours `GOOGLE_GEMINI_BASE_URL`).",
    )
    gemini_api_version: Literal["v1beta", "v1"] | None = Field(
        None,
        description="Gemini API version (default: `v1beta`, the documented one; a call that version does not "
        "serve is tried once on the other).",
    )
    request_timeout_s: float = Field(60.0, gt=0, description="Timeout of one online API request, in seconds.")
    max_retries: int = Field(6, ge=1, description="Attempts per online API request before giving up.")
    retry_base_delay_s: float = Field(
        1.0, gt=0, description="First retry delay; it doubles per attempt (with jitter)."
    )
    retry_max_delay_s: float = Field(60.0, gt=0, description="Longest delay between two retries.")
    requests_per_minute: float = Field(
        1500, ge=0, description="Client-side cap on online embedding requests per minute (0: none)."
    )
    tokens_per_minute: float = Field(
        1_000_000, ge=0, description="Client-side cap on online embedding tokens per minute (0: none)."
    )
    batch_min_texts: int = Field(
        100, ge=1, description="The worker submits a batch job once this many texts are pending..."
    )
    batch_max_wait_s: float = Field(
        600.0, ge=0, description="...or once the oldest pending text has waited this long (seconds)."
    )
    batch_max_texts: int = Field(
        10_000, ge=1, le=10_000, description="Texts per batch job (API limit 10,000)."
    )
    batch_max_tokens: int = Field(0, ge=0, description="Estimated tokens per batch job (0: no limit).")
    poll_initial_s: float = Field(15.0, gt=0, description="First poll of a batch job after submitting it.")
    poll_max_s: float = Field(600.0, gt=0, description="Longest interval between two polls of a job.")
    job_deadline_h: float = Field(
        36.0, gt=0, description="A job still unfinished after this many hours is cancelled and resubmitted."
    )
    task_max_attempts: int = Field(5, ge=1, description="Attempts per text before it is marked failed.")
    task_retry_base_s: float = Field(
        60.0, gt=0, description="Back-off before a text is retried (batch or online); doubles per attempt."
    )
    task_retry_max_s: float = Field(
        6 * 3600.0, gt=0, description="Longest back-off before a text is retried."
    )
    job_max_step_failures: int = Field(
        4,
        ge=1,
        description="A batch job whose results cannot be fetched (file expired or gone, unusable answer) is "
        "tried this many times, then its texts go back to pending. Outages are waited out instead.",
    )
    worker_lease_s: float = Field(
        120.0,
        gt=0,
        description="How long a worker's lease and job claims last without renewal (then others take over).",
    )
    worker_idle_s: float = Field(
        5.0, gt=0, description="How long the worker sleeps when there is nothing to do."
    )
    batch_incompatible_models: list[str] = Field(
        default_factory=models.batch_refusing,
        description="Models that refuse the Batch API: their texts are embedded online, with a warning.",
    )
    reindex_min_coverage: float = Field(
        0.995,
        ge=0,
        le=1,
        description="The worker switches search to a rebuilt space only when this share of its texts is "
        "embedded; below it the space stays building and `kb status` says why.",
    )
    hybrid_vector_weight: float | None = Field(
        None,
        ge=0,
        description="Weight of vector ranks against full text's 1.0 in hybrid search "
        "(default: 1.0 for Gemini, 0.5 for the weaker local model).",
    )
    model_prices: dict[str, tuple[float, float]] = Field(
        default_factory=models.default_prices,
        description="US dollars per million input tokens, (online, batch), per model.",
    )
    output_prices: dict[str, tuple[float, float]] = Field(
        default_factory=models.default_output_prices,
        description="US dollars per million output tokens, (online, batch), per generation model.",
    )
    max_spend_usd: float | None = Field(
        None, ge=0, description="Stop submitting new work once this many US dollars have been spent in all."
    )
    max_spend_usd_per_day: float | None = Field(
        None, ge=0, description="Stop submitting new work once this much was spent in the last 24 hours."
    )
    stuck_after_h: float = Field(
        24.0, gt=0, description="`kb status` flags a job still pending or running after this many hours."
    )
    retired_models: list[str] = Field(
        default_factory=models.retired,
        description="Models shut down or on their way out: an active space on one makes kb suggest "
        "`kb reindex`.",
    )
    search_index: Literal["auto", "exact", "quantized", "memory"] = Field(
        "auto",
        description="Vector search on SQLite: sqlite-vec's exact scan (`exact`); the quantized index "
        "(`quantized`: 1 bit per dimension in memory, candidates re-scored exactly; `memory`: also 1 byte "
        "per dimension, fastest in long-lived processes); `auto` picks by the number of vectors "
        "(docs/search.md).",
    )
    text_index: Literal["auto", "fts5", "tantivy"] = Field(
        "auto",
        description="Full-text search: the database's own (`fts5`: FTS5, or PostgreSQL's tsvector), or a "
        "tantivy index that ranks only the chunks it returns (`tantivy`; the database's answers while it "
        "is not up to date); `auto` uses tantivy from 50,000 chunks (docs/search.md).",
    )
    text_index_dir: Path | None = Field(
        None,
        description="Where the tantivy index is kept (derived data, rebuilt when missing): default beside "
        "the SQLite file (`kb.sqlite.text/`); with PostgreSQL, on each host in the user's cache folder "
        "(`~/.cache/kb/text/<database>`).",
    )
    hits_per_document: int = Field(
        2,
        ge=0,
        description="At most this many chunks of one document among a search's hits (0: no limit); "
        "the places freed go to other documents (docs/search.md).",
    )
    serve_token: SecretStr | None = Field(
        None,
        description="Token that `kb serve` requires of every request (`Authorization: Bearer ...`); needed "
        "to listen beyond this machine (docs/serve.md).",
    )
    chunk_target_tokens: int = Field(512, ge=32, description="Target chunk size in tokens.")
    chunk_max_tokens: int = Field(
        1024, ge=64, le=2048, description="Hard ceiling of a chunk in (estimated) tokens."
    )
    chunk_overlap_tokens: int = Field(0, ge=0, description="Tokens of overlap between chunks.")
    chunk_headers: bool = Field(
        True,
        description="New embedding spaces embed each chunk headed by its document title and heading path "
        "(existing spaces keep what they embed; kb reindex moves to another).",
    )
    context_model: str = Field(
        "gemini-2.5-flash-lite",
        description="The Gemini generation model `kb enrich` writes chunk contexts with (docs/search.md).",
    )
    context_window_tokens: int = Field(
        2000,
        ge=100,
        description="How much of its document a chunk's context request carries: the title, the outline and "
        "the chunk's neighbours up to this many tokens (the whole document costs far more: docs/search.md).",
    )
    max_file_bytes: int = Field(
        64 * 1024 * 1024, ge=1, description="Files larger than this are skipped at ingest."
    )
    watch_debounce_ms: int = Field(
        300,
        ge=1,
        description="`kb watch`: a burst of file changes ends once the files have been quiet this long; "
        "then it is ingested at once (an editor's save, a `git checkout`).",
    )
    watch_max_burst_ms: int = Field(
        5_000,
        ge=1,
        description="`kb watch`: changes that go on longer than this are ingested in parts of this length.",
    )
    watch_poll_s: float = Field(
        1.0,
        gt=0,
        description="`kb watch`: how often it looks for a watched folder that disappeared to come back.",
    )
    busy_timeout_ms: int = Field(
        10_000, ge=0, description="How long SQLite waits for a lock before giving up."
    )

    @field_validator("search_index", mode="before")
    @classmethod
    def _former_search_index_names(cls, value: object) -> object:
        return "exact" if value == "sqlite" else value  # the name before the quantized index (kb 0.x)

    @field_validator("serve_token")
    @classmethod
    def _guessable_token(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and len(value.get_secret_value()) < MIN_TOKEN_CHARS:
            raise ValueError(f"must be at least {MIN_TOKEN_CHARS} characters (e.g. `openssl rand -hex 32`)")
        return value

    @property
    def database(self) -> str | Path:
        """The database in force: the PostgreSQL URL if one is set, else the SQLite file."""
        return self.database_url or self.db

    def legacy_hint(self, active_model: str | None) -> str | None:
        """A one-line suggestion when the active space uses a retired or batch-refusing model."""
        legacy = set(self.retired_models) | set(self.batch_incompatible_models)
        if active_model is None or active_model not in legacy:
            return None
        return (
            f"the active space uses {active_model}, which is retired or cannot use the Batch API: "
            f"run `kb reindex` to move to {self.embedding_model}"
        )

    def resolved_provider(self) -> ProviderName:
        """The provider in force: explicit choice, else `gemini` when a key is configured."""
        if self.provider is not None:
            return self.provider
        return "gemini" if self.gemini_api_key is not None else "local"


def load(**overrides: Any) -> KbSettings:
    """The settings from the environment, `.env` and `overrides`. A bad value is a ConfigError of one line
    naming its variable, what is wrong and what is allowed (never a secret's value)."""
    from pydantic import ValidationError
    from pydantic_settings import SettingsError

    try:
        return KbSettings(**overrides)
    except ValidationError as error:
        raise ConfigError("; ".join(_explain(problem) for problem in error.errors())) from None
    except SettingsError as error:  # a value that is not even JSON, for a list or mapping
        raise ConfigError(_unreadable(error)) from None


# Fields whose value is never repeated in a message: a key or token, or a URL that may carry a password.
_PRIVATE_FIELDS = {"gemini_api_key", "database_url", "serve_token"}


def variable_of(field: str) -> str:
    """The environment variable(s) that set `field`."""
    info = KbSettings.model_fields.get(field)
    alias = info.validation_alias if info is not None else None
    if isinstance(alias, AliasChoices):
        return " / ".join(str(choice) for choice in alias.choices)
    return f"KB_{field.upper()}"


def _explain(problem: Any) -> str:
    field = str(problem["loc"][0]) if problem.get("loc") else "?"
    message = str(problem["msg"]).replace("Input should be", "must be").removeprefix("Value error, ")
    if field in _PRIVATE_FIELDS:
        return f"{variable_of(field)}: {message}"
    value = str(problem.get("input"))
    shown = value if len(value) <= 60 else value[:57] + "..."
    return f"{variable_of(field)}={shown!r}: {message}"


def _unreadable(error: Exception) -> str:
    found = re.search(r'field "(\w+)"', str(error))
    field = found.group(1) if found else "?"
    cause = f" ({error.__cause__})" if error.__cause__ is not None else ""
    return f"{variable_of(field)}: not valid JSON{cause}; lists and mappings are written as JSON, e.g. " + (
        "'{\"model-name\": [0.15, 0.075]}'" if field.endswith("prices") else '\'["model-a", "model-b"]\''
    )


@dataclass(frozen=True, slots=True)
class Environment:
    """Variables outside kb's own that change what the Gemini SDK would do, for `kb doctor`."""

    key_variable: str | None  # which variable holds the key (never its value)
    sdk_base_url: str | None  # GOOGLE_GEMINI_BASE_URL
    sdk_api_version: str | None  # GOOGLE_GENAI_API_VERSION (kb passes its own version, so it is ignored)
    vertex: dict[str, str]  # those of GOOGLE_GENAI_USE_VERTEXAI, GOOGLE_CLOUD_PROJECT, _LOCATION that are set


KEY_VARIABLES = ("KB_GEMINI_API_KEY", "GEMINI_API_KEY", "GOOGLE_API_KEY")
_VERTEX_VARIABLES = ("GOOGLE_GENAI_USE_VERTEXAI", "GOOGLE_CLOUD_PROJECT", "GOOGLE_CLOUD_LOCATION")


def environment() -> Environment:
    return Environment(
        key_variable=next((name for name in KEY_VARIABLES if os.environ.get(name)), None),
        sdk_base_url=os.environ.get("GOOGLE_GEMINI_BASE_URL") or None,
        sdk_api_version=os.environ.get("GOOGLE_GENAI_API_VERSION") or None,
        vertex={name: os.environ[name] for name in _VERTEX_VARIABLES if os.environ.get(name)},
    )
