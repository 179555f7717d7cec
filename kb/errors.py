"""kb's error hierarchy: one root, user-facing messages, one exit code per family.

    KbError
    ├── ConfigError            settings or environment are unusable
    ├── DatabaseError          SQLite cannot be opened, migrated or written
    ├── InputError             a user-supplied path, glob or argument is wrong
    └── ProviderError          an embedding provider failed (later issues add subclasses)

The CLI maps these to exit codes in one place (`kb.cli`); library callers catch `KbError`.
Messages must never contain secrets.
"""


class KbError(Exception):
    """Something went wrong in kb."""

    exit_code = 1

    def __init__(self, message: str | None = None) -> None:
        super().__init__(message or self.__doc__ or type(self).__name__)

    @property
    def message(self) -> str:
        return str(self.args[0])


class ConfigError(KbError):
    """kb is not configured correctly."""

    exit_code = 3


class DatabaseError(KbError):
    """The kb database could not be used."""

    exit_code = 4


class InputError(KbError):
    """The input given to kb is not usable."""

    exit_code = 2


class ProviderError(KbError):
    """The embedding provider failed."""

    exit_code = 5


class NotConfiguredError(ConfigError):
    """No embedding provider is usable: set GEMINI_API_KEY, or use the local provider."""


class RetryableProviderError(ProviderError):
    """The provider failed in a way that may pass if tried again later."""

    def __init__(self, message: str | None = None, *, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class RateLimitedError(RetryableProviderError):
    """The provider's rate limit or quota was exceeded (HTTP 429)."""


class ProviderUnavailableError(RetryableProviderError):
    """The provider is overloaded, failing or unreachable (HTTP 5xx, timeouts)."""


class ModelNotFoundError(ProviderError):
    """The embedding model does not exist or has been shut down."""


class InvalidRequestError(ProviderError):
    """The provider refused the request as invalid (HTTP 400)."""


class AuthenticationError(ConfigError):
    """The provider refused the API key."""


class InvalidResponseError(RetryableProviderError):
    """The provider answered with something kb cannot use (wrong count, dimensions, or non-finite values)."""


class LeaseLostError(KbError):
    """Another worker took over this database's batch work."""


class ClaimLostError(KbError):
    """Another worker took over a job this worker was working on (its claim had expired)."""
