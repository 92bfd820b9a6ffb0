"""Optional heavy dependencies (kserve, torch), imported with an error naming the extra."""

from __future__ import annotations

import importlib
from types import ModuleType
from typing import Final

__all__ = ["EXTRAS", "MissingExtraError", "import_optional"]

#: Which extra of the ``agentfn`` distribution brings each optional top-level module.
EXTRAS: Final = {"kserve": "kserve", "torch": "torch"}


class MissingExtraError(ImportError):
    """An optional dependency is not installed; the message names the extra that brings it."""


def import_optional(module: str) -> ModuleType:
    """Import ``module`` (e.g. ``kserve``), or raise :class:`MissingExtraError` naming its extra.

    Heavy parts are optional so that a broker or a plain agent does not install several hundred
    megabytes it never imports.
    """
    top = module.split(".", 1)[0]
    extra = EXTRAS.get(top)
    if extra is None:
        raise ValueError(f"{module!r} is not an optional dependency of agentfn")
    try:
        return importlib.import_module(module)
    except ImportError as error:
        if error.name is not None and error.name.split(".", 1)[0] != top:
            raise  # the package is there but broke on one of its own imports: show that
        raise MissingExtraError(
            f"{module} is not installed; it comes with the '{extra}' extra: "
            f"pip install 'agentfn[{extra}]'",
            name=top,
        ) from error
