"""Every runtime dependency pyproject declares is imported by the package, or says why not."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

PROJECT = Path(__file__).resolve().parents[1]
PACKAGE_FOLDERS = ("agentfn", "events", "brokers", "functions", "inference")

#: Distribution -> the top-level module it installs, where the two names differ.
IMPORT_NAMES = {
    "functions-framework": "functions_framework",
    "grpcio": "grpc",
    "grpcio-health-checking": "grpc_health",
    "grpcio-reflection": "grpc_reflection",
    "protobuf": "google.protobuf",
    "kafka-python": "kafka",
    "opentelemetry-api": "opentelemetry",
    "opentelemetry-sdk": "opentelemetry.sdk",
    "pydantic-settings": "pydantic_settings",
    "pyyaml": "yaml",
    "prometheus-client": "prometheus_client",
}

#: Declared and never imported by the package, each for a reason pyproject's comments give.
NOT_IMPORTED = {
    # The command that serves `function = agent.http_function()`; the target imports only
    # starlette, which comes with it.
    "functions-framework",
    # Manifest validation: tests only until the deploy command validates what it renders.
    "jsonschema",
}


def declared() -> list[str]:
    project = tomllib.loads((PROJECT / "pyproject.toml").read_text())["project"]
    return [re.split(r"[\s\[<>=!~;]", spec, maxsplit=1)[0] for spec in project["dependencies"]]


def imported(module: str) -> bool:
    pattern = re.compile(rf"^\s*(from|import) {re.escape(module)}(\.|\s|$)", re.MULTILINE)
    return any(
        pattern.search(path.read_text(encoding="utf-8"))
        for folder in PACKAGE_FOLDERS
        for path in (PROJECT / folder).rglob("*.py")
    )


def test_each_declared_dependency_is_imported_or_its_absence_is_explained() -> None:
    unused = {name for name in declared() if not imported(IMPORT_NAMES.get(name, name))}
    assert unused == NOT_IMPORTED
