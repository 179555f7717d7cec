"""The public surface is deliberate: everything exported is listed, and everything listed exists."""

import kb


def test_all_lists_exactly_the_public_names() -> None:
    public = {name for name in dir(kb) if not name.startswith("_") and name[0].isupper()}
    assert public == {name for name in kb.__all__ if name != "__version__"}
    for name in kb.__all__:
        assert hasattr(kb, name)


def test_errors_share_one_root() -> None:
    for name in ("ConfigError", "DatabaseError", "InputError", "ProviderError"):
        error = getattr(kb, name)
        assert issubclass(error, kb.KbError)
        assert error().message  # each has a default, user-facing message
