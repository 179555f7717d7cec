"""Builds the Embedder for an embedding space from the settings (the only place providers are chosen)."""

from kb.embedder import Embedder
from kb.errors import NotConfiguredError
from kb.ratelimit import RateLimiter
from kb.records import SpaceSpec
from kb.retry import RetryPolicy
from kb.settings import LOCAL_MODEL, KbSettings


def build_embedder(settings: KbSettings, spec: SpaceSpec) -> Embedder:
    """An embedder for `spec`; raises NotConfiguredError when its provider cannot be used here."""
    if spec.provider == "gemini":
        return _gemini(settings, spec)
    if spec.provider == "local" and spec.model == LOCAL_MODEL:
        from kb.local import LocalEmbedder

        return LocalEmbedder()
    raise NotConfiguredError(
        f"no embedding provider for space {spec.provider}/{spec.model}: set GEMINI_API_KEY for Gemini"
    )


def _gemini(settings: KbSettings, spec: SpaceSpec) -> Embedder:
    if settings.gemini_api_key is None:
        raise NotConfiguredError(
            "no Gemini API key: set GEMINI_API_KEY (or GOOGLE_API_KEY, KB_GEMINI_API_KEY) in the "
            "environment or in .env"
        )
    from kb.gemini import GeminiEmbedder  # the SDK is heavy: import it only when it is used

    return GeminiEmbedder(
        api_key=settings.gemini_api_key.get_secret_value(),
        model=spec.model,
        dimensions=spec.dimensions,
        base_url=settings.gemini_base_url,
        api_version=settings.gemini_api_version,
        timeout_s=settings.request_timeout_s,
        retry=RetryPolicy(
            max_attempts=settings.max_retries,
            base_delay=settings.retry_base_delay_s,
            max_delay=settings.retry_max_delay_s,
        ),
        limiter=RateLimiter(settings.requests_per_minute, settings.tokens_per_minute),
    )
