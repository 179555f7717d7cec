"""kb's error hierarchy: one root, user-facing messages, one exit code per family.

    KbError
    ├── ConfigError (3)            settings or environment are unusable
    │   ├── NotConfiguredError     no provider can be used
    │   └── AuthenticationError    the provider refused the API key
    ├── DatabaseError (4)          the database cannot be opened, migrated, read or written
    │   ├── DatabaseBusyError      locked by another process, or unreachable for now (transient)
    │   ├── DatabaseFullError      the disk (or the database) is full
    │   ├── DatabaseCorruptError   the file is not a database, or is damaged
    │   └── DatabaseReadOnlyError  the file or its folder cannot be written
    ├── InputError (2)             a user-supplied path, glob or argument is wrong
    ├── ProviderError (5)          an embedding provider failed
    │   ├── RetryableProviderError     worth another try later
    │   │   ├── RateLimitedError       429, quota
    │   │   ├── ProviderUnavailableError  5xx, timeouts, unreachable
    │   │   └── InvalidResponseError   an answer kb cannot use
    │   ├── ModelNotFoundError     the model is gone
    │   ├── InvalidRequestError    the request was refused as invalid
    │   ├── RouteNotServedError    this API version does not serve the call (the other is tried)
    │   └── RemoteGoneError        a remote job or its result file no longer exists
    │       └── InputFileGoneError     a job's uploaded input is gone (upload it again)
    ├── LeaseLostError, ClaimLostError   another worker took over (the step is left to it)
    └── StopRequested              SIGINT/SIGTERM: stop after the current remote call

The CLI maps these to exit codes in one place (`kb.cli.commands`); library callers catch `KbError`.
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
    # True when trying again later may work (a lock held by another process, a server restarting): the
    # worker backs off and goes on. Otherwise the worker stops and says why.
    transient = False


class DatabaseBusyError(DatabaseError):
    """The database is locked by another process, or its server cannot be reached right now."""

    transient = True


class DatabaseFullError(DatabaseError):
    """The disk holding the database is full."""


class DatabaseCorruptError(DatabaseError):
    """The database file is not a database, or it is damaged."""


class DatabaseReadOnlyError(DatabaseError):
    """The database cannot be written (read-only file, folder or medium)."""


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


class RouteNotServedError(ProviderError):
    """The API version used does not serve this call (its URL is unknown there): try the other version."""


class RemoteGoneError(ProviderError):
    """A remote batch job, or its result file, no longer exists (deleted, or expired after 48 h)."""


class InputFileGoneError(RemoteGoneError):
    """A batch job could not be created because its uploaded input file is gone: upload it again."""


class LeaseLostError(KbError):
    """Another worker took over this database's batch work."""


class ClaimLostError(KbError):
    """Another worker took over a job this worker was working on (its claim had expired)."""


class StopRequested(KbError):
    """A stop was requested (SIGINT/SIGTERM): the current remote call is done, and nothing more starts."""
