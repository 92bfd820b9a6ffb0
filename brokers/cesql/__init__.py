"""CESQL: the CloudEvents SQL Expression Language, version 1.0.0, for Trigger filters.

Two entry points::

    >>> from agentfn.brokers import cesql
    >>> cesql.evaluate("type = 'order.created' AND int(amount) > 100",
    ...                {"type": "order.created", "amount": "250"})
    EvaluationResult(value=True, errors=[])
    >>> compiled = cesql.compile("source LIKE 'https://%'")  # raises CesqlParseError if invalid
    >>> compiled.matches({"source": "https://example.com"})
    True

``evaluate`` reports errors as their kinds (``ErrorKind``): ``parse``, ``math``, ``cast``,
``missingAttribute``, ``missingFunction``, ``functionEvaluation``. A compiled expression
evaluates in a few microseconds; ``matches`` is the filter view (true only for the Boolean
``true`` with no error).

Where the spec leaves room, this implementation decides as follows: AND, OR and XOR share one
precedence level and associate to the right, as in the spec's ANTLR grammar and the Go SDK
Knative uses (``a AND b OR c`` is ``a AND (b OR c)``); integer overflow in ``+ - * /`` and unary
``-`` is a math error with value 0; inside string literals ``\\'``, ``\\"``, ``\\\\`` and a
doubled quote are escapes and any other backslash is kept; in LIKE patterns ``\\%``, ``\\_`` and
``\\\\`` match the character itself.

Implicit casts (of an operator's operands) are those of the spec's table except Integer ->
Boolean, which only ``BOOL`` makes, as the CESQL TCK has it: ``NOT 10`` is ``true`` with a
``cast`` error (the failed cast gives ``false``, the zero value, and NOT computes with it), and
``BOOL(10)`` is ``true`` with none. The Go SDK casts ``NOT 10`` to ``false`` instead.
"""

from agentfn.brokers.cesql._errors import CesqlParseError, ErrorKind
from agentfn.brokers.cesql._expression import (
    CompiledExpression,
    EvaluationResult,
    compile,
    evaluate,
)

__all__ = [
    "CesqlParseError",
    "CompiledExpression",
    "ErrorKind",
    "EvaluationResult",
    "compile",
    "evaluate",
]
