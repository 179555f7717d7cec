"""Builds the Embedder and BatchBackend for an embedding space from the settings (the only place providers
are chosen)."""

import threading
from pathlib import Path
from typing import TYPE_CHECKING

from kb.core.ratelimit import RateLimiter
from kb.core.retry import RetryPolicy
from kb.errors import NotConfiguredError
from kb.providers.base import BatchBackend, Embedder, Generator
from kb.records import SpaceSpec, SpecFields, spec_of
from kb.settings import LOCAL_MODEL, KbSettings

if TYPE_CHECKING:
    from kb.providers.gemini import GeminiApi


def build_embedder(settings: KbSettings, spec: SpaceSpec, api: "GeminiApi | None" = None) -> Embedder:
    """An embedder for `spec`; raises NotConfiguredError when its provider cannot be used here. Gemini
    embedders share `api` when given (one connection, one memory of which API version serves what)."""
    if spec.provider == "gemini":
        from kb.providers.gemini import GeminiEmbedder  # the SDK is heavy: import it only when it is used

        limiter = RateLimiter(settings.requests_per_minute, settings.tokens_per_minute)
        return GeminiEmbedder(api or gemini_api(settings), spec.model, spec.dimensions, limiter)
    if spec.provider == "local" and spec.model == LOCAL_MODEL:
        from kb.providers.local import LocalEmbedder

        return LocalEmbedder()
    raise NotConfiguredError(
        f"no embedding provider for space {spec.provider}/{spec.model}: set GEMINI_API_KEY for Gemini"
    )


def build_generator(settings: KbSettings, model: str) -> Generator:
    """An online text generator (chunk contexts, `kb enrich --now`); NotConfiguredError without a key."""
    from kb.providers.gemini import GeminiGenerator

    limiter = RateLimiter(settings.requests_per_minute, settings.tokens_per_minute)
    return GeminiGenerator(gemini_api(settings), model, limiter)


def gemini_api(settings: KbSettings, timeout_s: float | None = None) -> "GeminiApi":
    """A connection to the Gemini API from the settings; NotConfiguredError without a key."""
    if settings.gemini_api_key is None:
        raise NotConfiguredError(
            "no Gemini API key: set GEMINI_API_KEY (or GOOGLE_API_KEY, KB_GEMINI_API_KEY) in the "
            "environment or in .env"
        )
    from kb.providers.gemini import GeminiApi

    return GeminiApi(
        api_key=settings.gemini_api_key.get_secret_value(),
        base_url=settings.gemini_base_url,
        api_version=settings.gemini_api_version,
        timeout_s=timeout_s or settings.request_timeout_s,
        retry=RetryPolicy(
            max_attempts=settings.max_retries,
            base_delay=settings.retry_base_delay_s,
            max_delay=settings.retry_max_delay_s,
        ),
    )


class Providers:
    """The providers of one open knowledge base, each built on first use and all closed together: one
    embedder per space, one batch backend per provider."""

    def __init__(self, settings: KbSettings, results_dir: Path) -> None:
        self.settings = settings
        self.results_dir = results_dir  # where the local batch backend writes its results
        self._embedders: dict[SpaceSpec, Embedder] = {}
        # A server searches from many threads: two first questions at once must not build two embedders
        # (one never closed).
        self._lock = threading.Lock()
        self._gemini_batches: BatchBackend | None = None
        self._local_batches: BatchBackend | None = None

    def embedder(self, spec: SpaceSpec) -> Embedder:
        """The embedder for a space, built on first use (raises ConfigError if it cannot be used)."""
        with self._lock:
            if spec not in self._embedders:
                self._embedders[spec] = build_embedder(self.settings, spec)
            return self._embedders[spec]

    def batch_backend(self, space: SpecFields) -> BatchBackend | None:
        """Where a space's texts are batched; None for spaces whose texts go online instead."""
        if space.provider == "local":
            if self._local_batches is None:
                from kb.providers.local import LocalBatchBackend, LocalEmbedder

                embedder = self.embedder(spec_of(space))
                assert isinstance(embedder, LocalEmbedder)
                self._local_batches = LocalBatchBackend(embedder, self.results_dir)
            return self._local_batches
        if space.provider != "gemini" or space.model in self.settings.batch_incompatible_models:
            return None
        if self._gemini_batches is None:
            from kb.providers.gemini import GeminiBatchBackend

            # Uploads and downloads of 10,000-text files take longer than one online request.
            self._gemini_batches = GeminiBatchBackend(gemini_api(self.settings, timeout_s=300.0))
        return self._gemini_batches

    def online_embedder(self, space: SpecFields) -> Embedder | None:
        """The embedder for spaces whose texts go online instead of through batch jobs."""
        if space.provider == "gemini" and space.model in self.settings.batch_incompatible_models:
            return self.embedder(spec_of(space))
        return None

    def close(self) -> None:
        for embedder in self._embedders.values():
            embedder.close()
        self._embedders.clear()
        for backend in (self._gemini_batches, self._local_batches):
            if backend is not None:
                backend.close()
