"""The built-in functions: CESQL v1 section 3.5 and the casting functions INT, BOOL, STRING, IS_INT
and IS_BOOL that the spec's examples and TCK use.

An implementation receives the error list first, then its arguments already cast to the declared
parameter types; it appends the kinds of the errors it raises and still returns a value (3.5.3).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Final

from agentfn.brokers.cesql._errors import FUNCTION_EVALUATION, MATH
from agentfn.brokers.cesql._values import (
    INT_MAX,
    INT_MIN,
    Type,
    Value,
    can_bool,
    can_int,
    to_bool,
    to_int,
    to_str,
)

# Unicode's White_Space property. str.strip() would also remove U+001C..U+001F, control
# characters the spec says TRIM keeps.
_WHITE_SPACE: Final = (
    "\t\n\v\f\r \x85\xa0\u1680\u2000\u2001\u2002\u2003\u2004\u2005\u2006\u2007\u2008\u2009\u200a"
    "\u2028\u2029\u202f\u205f\u3000"
)


@dataclass(frozen=True, slots=True)
class Function:
    name: str
    params: tuple[Type, ...]
    returns: Type
    impl: Callable[..., Value]
    # The type of the arguments after ``params``, for a variadic function.
    variadic: Type | None = None

    def param_type(self, index: int) -> Type:
        if index < len(self.params):
            return self.params[index]
        assert self.variadic is not None  # resolve() only pairs a call with a fitting arity
        return self.variadic


def _length(_: list[str], text: str) -> int:
    return len(text)


def _concat(_: list[str], *parts: str) -> str:
    return "".join(parts)


def _concat_ws(_: list[str], delimiter: str, *parts: str) -> str:
    return delimiter.join(parts)


def _lower(_: list[str], text: str) -> str:
    return text.lower()


def _upper(_: list[str], text: str) -> str:
    return text.upper()


def _trim(_: list[str], text: str) -> str:
    return text.strip(_WHITE_SPACE)


def _left(errors: list[str], text: str, count: int) -> str:
    if count < 0:
        errors.append(FUNCTION_EVALUATION)
        return text
    return text[:count]


def _right(errors: list[str], text: str, count: int) -> str:
    if count < 0:
        errors.append(FUNCTION_EVALUATION)
        return text
    # Not text[-count:]: for count == 0 that is the whole string.
    return text[max(0, len(text) - count) :]


def _start(text: str, pos: int) -> int | None:
    """The 0-based index SUBSTRING starts at, or ``None`` when ``pos`` is out of range."""
    size = len(text)
    if pos > size or pos < -size:
        return None
    return pos - 1 if pos > 0 else size + pos


def _substring(errors: list[str], text: str, pos: int) -> str:
    start = _start(text, pos)
    if start is None:
        errors.append(FUNCTION_EVALUATION)
        return ""
    return "" if pos == 0 else text[start:]


def _substring_length(errors: list[str], text: str, pos: int, length: int) -> str:
    start = _start(text, pos)
    if start is None or length < 0:
        errors.append(FUNCTION_EVALUATION)
        return ""
    return "" if pos == 0 else text[start : start + length]


def _abs(errors: list[str], number: int) -> int:
    if number == INT_MIN:
        # The spec's answer for the one value whose absolute value is not a 32-bit integer.
        errors.append(MATH)
        return INT_MAX
    return abs(number)


def _int(errors: list[str], value: Value) -> int:
    return to_int(value, errors)


def _bool(errors: list[str], value: Value) -> bool:
    return to_bool(value, errors)


def _string(errors: list[str], value: Value) -> str:
    return to_str(value, errors)


def _is_int(_: list[str], value: Value) -> bool:
    return can_int(value)


def _is_bool(_: list[str], value: Value) -> bool:
    return can_bool(value)


_S, _I, _B, _A = Type.STRING, Type.INTEGER, Type.BOOLEAN, Type.ANY

BUILTINS: Final = (
    Function("LENGTH", (_S,), _I, _length),
    Function("CONCAT", (), _S, _concat, variadic=_S),
    Function("CONCAT_WS", (_S,), _S, _concat_ws, variadic=_S),
    Function("LOWER", (_S,), _S, _lower),
    Function("UPPER", (_S,), _S, _upper),
    Function("TRIM", (_S,), _S, _trim),
    Function("LEFT", (_S, _I), _S, _left),
    Function("RIGHT", (_S, _I), _S, _right),
    Function("SUBSTRING", (_S, _I), _S, _substring),
    Function("SUBSTRING", (_S, _I, _I), _S, _substring_length),
    Function("ABS", (_I,), _I, _abs),
    Function("INT", (_A,), _I, _int),
    Function("BOOL", (_A,), _B, _bool),
    Function("STRING", (_A,), _S, _string),
    Function("IS_INT", (_A,), _B, _is_int),
    Function("IS_BOOL", (_A,), _B, _is_bool),
)

_FIXED: Final[dict[tuple[str, int], Function]] = {
    (f.name, len(f.params)): f for f in BUILTINS if f.variadic is None
}
_VARIADIC: Final[dict[str, Function]] = {f.name: f for f in BUILTINS if f.variadic is not None}


def resolve(name: str, arity: int) -> Function | None:
    """Dispatch by name and arity (3.5): an exact fixed arity first, then a variadic overload
    whose fixed parameters the call fills."""
    fixed = _FIXED.get((name, arity))
    if fixed is not None:
        return fixed
    variadic = _VARIADIC.get(name)
    if variadic is not None and arity >= len(variadic.params):
        return variadic
    return None
