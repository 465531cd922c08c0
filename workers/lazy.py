"""PEP 562 lazy exports for a package ``__init__``: names import their module on first use."""

from importlib import import_module


def lazy_getattr(package: str, exports: dict[str, str]):
    """A module ``__getattr__`` that resolves ``exports`` (name -> module path) on demand."""

    def __getattr__(name: str):
        if name in exports:
            return getattr(import_module(exports[name]), name)
        raise AttributeError(f"module {package!r} has no attribute {name!r}")

    return __getattr__
