"""Parts of the render written beside this one: looked up when called, absent until they land."""

from __future__ import annotations

import importlib
from typing import Any

__all__ = ["part"]


def part(module: str, function: str) -> Any:
    """``agentfn.functions._manifests.<module>.<function>``, or ``None`` while it is missing."""
    try:
        found = importlib.import_module(f"agentfn.functions._manifests.{module}")
    except ImportError:
        return None
    return getattr(found, function, None)
