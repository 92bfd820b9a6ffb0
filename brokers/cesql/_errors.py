"""The error kinds of CESQL v1 (section 3.3) and the exception a bad expression raises."""

from __future__ import annotations

from enum import StrEnum
from typing import Final


class ErrorKind(StrEnum):
    """An error kind, spelled as in the CESQL TCK (``error:`` values).

    Members are ``str``: ``ErrorKind.MATH == "math"``. Evaluation reports kinds as plain strings.
    """

    PARSE = "parse"
    MATH = "math"
    CAST = "cast"
    MISSING_ATTRIBUTE = "missingAttribute"
    MISSING_FUNCTION = "missingFunction"
    FUNCTION_EVALUATION = "functionEvaluation"
    GENERIC = "generic"


# Plain strings for the hot path: appending an enum member would leak it into user-visible lists.
PARSE: Final = "parse"
MATH: Final = "math"
CAST: Final = "cast"
MISSING_ATTRIBUTE: Final = "missingAttribute"
MISSING_FUNCTION: Final = "missingFunction"
FUNCTION_EVALUATION: Final = "functionEvaluation"
GENERIC: Final = "generic"


class CesqlParseError(ValueError):
    """An expression that is not valid CESQL.

    ``offset`` is the 0-based index of the offending character in ``expression``; ``line`` and
    ``column`` are 1-based, for messages a person reads. ``reason`` is the message without the
    position.
    """

    kind: Final = ErrorKind.PARSE

    def __init__(self, reason: str, expression: str, offset: int) -> None:
        offset = max(0, min(offset, len(expression)))
        line = expression.count("\n", 0, offset) + 1
        column = offset - (expression.rfind("\n", 0, offset) + 1) + 1
        super().__init__(f"{reason} at line {line}, column {column} (offset {offset})")
        self.reason = reason
        self.expression = expression
        self.offset = offset
        self.line = line
        self.column = column

    def __reduce__(self) -> tuple[type[CesqlParseError], tuple[str, str, int]]:
        # The default would call __init__ with the message alone.
        return (type(self), (self.reason, self.expression, self.offset))
