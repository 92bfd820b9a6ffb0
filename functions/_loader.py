"""Finding agents in user code: ``module:attribute`` targets and whole packages or folders."""

from __future__ import annotations

import importlib
import importlib.util
import pkgutil
import sys
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

from agentfn.functions._agent import Agent

__all__ = ["DiscoveredAgent", "discover_agents", "load_agent"]


@dataclass(frozen=True, slots=True)
class DiscoveredAgent:
    module: str
    attribute: str
    agent: Agent

    @property
    def target(self) -> str:
        """What ``agentfn serve`` takes to serve it."""
        return f"{self.module}:{self.attribute}"


def _import_file(path: Path) -> ModuleType:
    name = f"_agentfn_user_{path.stem}_{abs(hash(str(path.resolve()))):x}"
    known = sys.modules.get(name)
    if known is not None:
        return known
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot import {path}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        del sys.modules[name]
        raise
    return module


def _import(target: str) -> ModuleType:
    path = Path(target)
    if target.endswith(".py") and path.is_file():
        return _import_file(path)
    return importlib.import_module(target)


def load_agent(target: str) -> Agent:
    """The agent a ``module:attribute`` target names (``attribute`` defaults to ``agent``).

    The module is a dotted module name or a ``.py`` file path.
    """
    module_name, _, attribute = target.partition(":")
    attribute = attribute or "agent"
    try:
        module = _import(module_name)
    except ModuleNotFoundError as error:
        raise LookupError(f"cannot import {module_name!r}: {error}") from error
    found = getattr(module, attribute, None)
    if found is None:
        raise LookupError(f"{module_name!r} has no attribute {attribute!r}")
    if not isinstance(found, Agent):
        raise LookupError(f"{target!r} is a {type(found).__name__}, not an agentfn Agent")
    return found


def _agents_in(module: ModuleType, label: str) -> list[DiscoveredAgent]:
    return [
        DiscoveredAgent(label, attribute, value)
        for attribute, value in vars(module).items()
        if isinstance(value, Agent)
    ]


def discover_agents(path: str) -> tuple[list[DiscoveredAgent], list[str]]:
    """Agents declared at module level under ``path``, and the import errors met on the way.

    ``path`` is a dotted module or package (its submodules are walked), a ``.py`` file, a
    folder (each ``.py`` file in it, recursively, except those starting with ``_`` or
    ``test``), or one agent as ``agentfn serve`` takes it: ``MODULE:AGENT`` (or
    ``FILE.py:AGENT``; a :class:`LookupError` when it names no agent). An agent reachable under
    several names is listed once.
    """
    if ":" in path:
        module_name, _, attribute = path.partition(":")
        return [DiscoveredAgent(module_name, attribute or "agent", load_agent(path))], []
    modules: list[tuple[str, ModuleType]] = []
    errors: list[str] = []
    location = Path(path)
    if location.is_dir():
        for file in sorted(location.rglob("*.py")):
            if file.name.startswith(("_", "test")):
                continue
            try:
                modules.append((str(file), _import_file(file)))
            except Exception as error:
                errors.append(f"{file}: {type(error).__name__}: {error}")
    elif path.endswith(".py") and location.is_file():
        modules.append((path, _import_file(location)))
    else:
        root = importlib.import_module(path)
        modules.append((path, root))
        if hasattr(root, "__path__"):
            for info in pkgutil.walk_packages(root.__path__, prefix=f"{path}."):
                try:
                    modules.append((info.name, importlib.import_module(info.name)))
                except Exception as error:
                    errors.append(f"{info.name}: {type(error).__name__}: {error}")
    seen: set[int] = set()
    found: list[DiscoveredAgent] = []
    for label, module in modules:
        for item in _agents_in(module, label):
            if id(item.agent) not in seen:
                seen.add(id(item.agent))
                found.append(item)
    return found, errors
