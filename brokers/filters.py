"""Trigger filters compiled once into plain predicates over an event's attributes.

Two dialects, as in Knative Eventing:

* ``spec.filter.attributes``: every listed attribute must exist and equal the value exactly
  (case-sensitive); an empty value matches any value of an attribute that exists.
* ``spec.filters`` (wins when both are set): a list that must all match, of dialect objects
  ``exact``, ``prefix``, ``suffix`` (each exactly one attribute), ``all``, ``any``, ``not`` and
  ``cesql``. An attribute that is absent never matches.

Attribute values are compared in their canonical string form (:func:`agentfn.events.attribute_text`:
``true``/``false`` for booleans), which is how they travel in binary mode and how an agent's
handler filters compare them too.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, Protocol

from agentfn.events import attribute_text

__all__ = ["ExpressionCompiler", "TriggerFilter", "compile_filter", "match_all"]

Attributes = Mapping[str, object]
TriggerFilter = Callable[[Attributes], bool]


class ExpressionCompiler(Protocol):
    """Compiles a CESQL expression to a predicate; rejects a bad one with ``ValueError``."""

    def __call__(self, expression: str) -> TriggerFilter: ...


def match_all(_: Attributes) -> bool:
    return True


def _text(value: object) -> str:
    if value is None:  # `source:` with no value in YAML: Knative reads it as "", any value
        return ""
    try:
        return attribute_text(value)  # a YAML `true` is "true", never "True"
    except TypeError:
        return str(value)  # a YAML float or date in filter.attributes, compared as written


def _attribute_filter(expected: Mapping[str, Any]) -> TriggerFilter:
    pairs = tuple((str(k), _text(v)) for k, v in expected.items())
    if not pairs:
        return match_all

    def matches(attributes: Attributes) -> bool:
        for name, value in pairs:
            actual = attributes.get(name)
            if actual is None:
                return False
            if value and _text(actual) != value:
                return False
        return True

    return matches


def _single(dialect: str, body: Any) -> tuple[str, str]:
    if not isinstance(body, Mapping) or len(body) != 1:
        raise ValueError(f"filters.{dialect}: must hold exactly one attribute: value pair")
    ((name, value),) = body.items()
    if not isinstance(value, str | int | bool):
        raise ValueError(f"filters.{dialect}.{name}: value must be a string")
    return str(name), _text(value)


def _default_cesql(expression: str) -> TriggerFilter:
    from agentfn.brokers import cesql  # noqa: PLC0415 - only Triggers that use CESQL pay for it

    try:
        compiled = cesql.compile(expression)
    except cesql.CesqlParseError as error:
        raise ValueError(f"filters.cesql: {error}") from None
    return compiled.matches


def _dialect(raw: Any, cesql: ExpressionCompiler) -> TriggerFilter:
    if not isinstance(raw, Mapping) or len(raw) != 1:
        raise ValueError(f"filters: each filter is an object with one dialect key, got {raw!r}")
    ((dialect, body),) = raw.items()
    if dialect == "exact":
        name, value = _single(dialect, body)
        return lambda a: (v := a.get(name)) is not None and _text(v) == value
    if dialect == "prefix":
        name, value = _single(dialect, body)
        return lambda a: (v := a.get(name)) is not None and _text(v).startswith(value)
    if dialect == "suffix":
        name, value = _single(dialect, body)
        return lambda a: (v := a.get(name)) is not None and _text(v).endswith(value)
    if dialect in ("all", "any"):
        if not isinstance(body, list):
            raise ValueError(f"filters.{dialect}: must be a list of filters")
        parts = tuple(_dialect(item, cesql) for item in body)
        if dialect == "all":
            return lambda a: all(p(a) for p in parts)
        return lambda a: any(p(a) for p in parts)
    if dialect == "not":
        inner = _dialect(body, cesql)
        return lambda a: not inner(a)
    if dialect == "cesql":
        if not isinstance(body, str) or not body.strip():
            raise ValueError("filters.cesql: must be a non-empty expression")
        return cesql(body)
    raise ValueError(f"filters: unknown dialect {dialect!r}")


def compile_filter(
    legacy: Any, filters: Any, *, cesql: ExpressionCompiler = _default_cesql
) -> TriggerFilter:
    """The predicate of a Trigger's ``spec.filter`` and ``spec.filters`` (which wins)."""
    if filters:
        if not isinstance(filters, list):
            raise ValueError("filters: must be a list")
        parts = tuple(_dialect(item, cesql) for item in filters)
        if len(parts) == 1:
            return parts[0]
        return lambda a: all(p(a) for p in parts)
    if legacy is None:
        return match_all
    if not isinstance(legacy, Mapping):
        raise ValueError("filter: must be an object")
    attributes = legacy.get("attributes") or {}
    if not isinstance(attributes, Mapping):
        raise ValueError("filter.attributes: must be a map of attribute to value")
    return _attribute_filter(attributes)
