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
