"""Compiled expressions and the two entry points, ``compile`` and ``evaluate``."""

from __future__ import annotations

from collections.abc import Mapping
from functools import lru_cache
from typing import NamedTuple

from agentfn.brokers.cesql._compiler import compile_tree
from agentfn.brokers.cesql._errors import PARSE, CesqlParseError
from agentfn.brokers.cesql._parser import parse


class EvaluationResult(NamedTuple):
    """What an evaluation gives: a tuple ``(value, errors)``.

    ``value`` is a ``bool``, an ``int`` or a ``str`` (``None`` only when the expression did not
    parse). ``errors`` lists the kind of every error raised, in the order raised (see
    ``ErrorKind``); it is empty when none was.
    """

    value: bool | int | str | None
    errors: list[str]


_new_tuple = tuple.__new__


class CompiledExpression:
    """A CESQL expression parsed and compiled once, to evaluate against any number of events.

    Instances are immutable and safe to share between threads and tasks. An event is a mapping
    of context attribute names (lower case, as CloudEvents requires) to values: ``str``, ``int``
    and ``bool`` are CESQL values, an ``int`` outside 32 bits, a ``datetime`` (RFC 3339), bytes
    (base64) and anything else become strings, and ``None`` is an absent attribute. The event's
    ``data`` is never an attribute: CESQL does not address it.
    """

    __slots__ = ("_evaluate", "expression")

    def __init__(self, expression: str) -> None:
        """Parses ``expression``; raises ``CesqlParseError`` if it is not valid CESQL."""
        self.expression = expression
        self._evaluate = compile_tree(parse(expression))

    def evaluate(self, event: Mapping[str, object]) -> EvaluationResult:
        """Evaluates against ``event``: the value, and the kinds of the errors raised.

        Evaluation never stops at an error (CESQL's "complete evaluation mode"): the failing part
        takes the zero value of its type (``false``, ``0``, ``""``) and every error is reported.
        """
        errors: list[str] = []
        value = self._evaluate(event, errors)
        # tuple.__new__ skips the NamedTuple constructor's argument handling: a third of the cost
        # of evaluating a typical filter.
        return _new_tuple(EvaluationResult, (value, errors))

    def matches(self, event: Mapping[str, object]) -> bool:
        """Whether ``event`` passes this expression used as a filter.

        True only when the value is the Boolean ``true`` and no error was raised. The spec says
        so for filters (CESQL v1, 1.2): "When used as a filter predicate, the expression output
        value MUST be a _Boolean_. If the output value is not a _Boolean_, or any errors are
        returned, the event MUST NOT pass the filter." So ``myext = 'a'`` does not match an
        event without ``myext``, and neither does ``1`` (an Integer) or ``'true'`` (a String).
        """
        errors: list[str] = []
        return self._evaluate(event, errors) is True and not errors

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.expression!r})"

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, CompiledExpression):
            return NotImplemented
        return self.expression == other.expression

    def __hash__(self) -> int:
        return hash(self.expression)


def compile(expression: str) -> CompiledExpression:
    """Parses and compiles ``expression`` once, for repeated evaluation.

    Raises ``CesqlParseError`` (a ``ValueError``) naming the position of the first problem, so
    that a Trigger with a bad filter is rejected when it is loaded.
    """
    return CompiledExpression(expression)


@lru_cache(maxsize=512)
def _cached(expression: str) -> CompiledExpression | None:
    try:
        return CompiledExpression(expression)
    except CesqlParseError:
        return None


def evaluate(expression: str, event: Mapping[str, object]) -> EvaluationResult:
    """Evaluates ``expression`` against ``event``; ``(None, ["parse"])`` if it does not parse.

    Recently used expressions stay compiled, so calling this in a loop costs little more than
    ``compile(expression).evaluate(event)`` once.
    """
    if not isinstance(expression, str):
        raise TypeError(f"expression must be a str, not {type(expression).__name__}")
    compiled = _cached(expression)
    if compiled is None:
        return EvaluationResult(None, [PARSE])
    return compiled.evaluate(event)
