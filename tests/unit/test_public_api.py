"""The public surface is deliberate: everything exported is listed, and everything listed exists."""

import importlib
import types

import kb


def test_all_lists_exactly_the_public_names() -> None:
    """Every name `kb` offers without a leading underscore (functions and constants too, not only classes;
    its submodules aside) is in `__all__`, and every name in `__all__` exists and is what `import *` gives."""
    importlib.import_module("kb.app")  # loaded, a submodule is an attribute of kb: that is not an export
    offered = {name for name in dir(kb) if not name.startswith("_")}
    public = {name for name in offered if not isinstance(getattr(kb, name), types.ModuleType)}
    assert public == set(kb.__all__) - {"__version__"}
    assert "__version__" in kb.__all__
    namespace: dict[str, object] = {}
    exec("from kb import *", namespace)  # the star import is what is tested
    assert set(namespace) - {"__builtins__"} == set(kb.__all__)
    assert kb.KnowledgeBase is importlib.import_module("kb.app").KnowledgeBase  # the lazy names resolve


def test_errors_share_one_root() -> None:
    for name in ("ConfigError", "DatabaseError", "InputError", "ProviderError"):
        error = getattr(kb, name)
        assert issubclass(error, kb.KbError)
        assert error().message  # each has a default, user-facing message
