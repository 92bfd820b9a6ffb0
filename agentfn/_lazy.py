"""Public names a package exports but imports only when first used (PEP 562).

A package's ``__init__`` keeps its table of name -> defining module and says::

    __getattr__, __dir__ = lazy_exports(globals(), _EXPORTS, __all__)

so ``import agentfn.functions.cli`` does not pay for the runtime the package's names bring.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping, MutableMapping, Sequence
from typing import Any

__all__ = ["lazy_exports"]


def lazy_exports(
    namespace: MutableMapping[str, Any],
    exports: Mapping[str, str],
    public: Sequence[str],
    renamed: Mapping[str, str] | None = None,
) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """The module ``__getattr__`` and ``__dir__`` serving ``exports`` (name -> module).

    ``renamed`` maps an exported name to the name it has in its module, where they differ.
    """
    package = namespace["__name__"]
    aliases = dict(renamed or {})

    def __getattr__(name: str) -> Any:  # noqa: N807 - the module hook's name
        module = exports.get(name)
        if module is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(module), aliases.get(name, name))
        namespace[name] = value  # the next lookup is a plain attribute
        return value

    def __dir__() -> list[str]:  # noqa: N807
        return sorted({*namespace, *public})

    return __getattr__, __dir__
