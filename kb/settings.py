"""One settings object, read once from the environment and `.env`, then passed explicitly.

This is the only module that reads `os.environ` (through pydantic-settings). CLI options override fields
by constructing `KbSettings(**overrides)`.
"""

from pathlib import Path
from typing import Literal

from pydantic import AliasChoices, Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

ProviderName = Literal["gemini", "local"]

LOCAL_MODEL = "wordllama-l2-supercat"
LOCAL_DIMENSIONS = 256


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
    gemini_api_version: str | None = Field(
        None, description="Gemini API version, e.g. `v1beta` (default: the SDK's, `v1`)."
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
    search_index: Literal["sqlite", "memory"] = Field(
        "sqlite",
        description="Vector search: scan the sqlite-vec table (`sqlite`), or keep the active space's vectors "
        "in RAM (`memory`: several times faster in long-lived processes, costs dims x 4 bytes per chunk).",
    )
    chunk_target_tokens: int = Field(512, ge=32, description="Target chunk size in tokens.")
    chunk_max_tokens: int = Field(
        1024, ge=64, le=2048, description="Hard ceiling of a chunk in (estimated) tokens."
    )
    chunk_overlap_tokens: int = Field(0, ge=0, description="Tokens of overlap between chunks.")
    max_file_bytes: int = Field(
        64 * 1024 * 1024, ge=1, description="Files larger than this are skipped at ingest."
    )
    busy_timeout_ms: int = Field(
        10_000, ge=0, description="How long SQLite waits for a lock before giving up."
    )

    def resolved_provider(self) -> ProviderName:
        """The provider in force: explicit choice, else `gemini` when a key is configured."""
        if self.provider is not None:
            return self.provider
        return "gemini" if self.gemini_api_key is not None else "local"
