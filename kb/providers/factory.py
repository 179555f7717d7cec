"""Builds the Embedder for an embedding space from the settings (the only place providers are chosen)."""

from typing import TYPE_CHECKING

from kb.core.ratelimit import RateLimiter
from kb.core.retry import RetryPolicy
from kb.errors import NotConfiguredError
from kb.providers.base import Embedder
from kb.records import SpaceSpec
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
