"""CESQL values, their zero values and the casts of CESQL v1 section 3.7.

Values are plain ``str``, ``int`` (always within 32 bits) and ``bool``. ``bool`` is a subclass of
``int`` in Python, so a check that must tell them apart tests identity or the exact class.

Two sets of casts. The explicit ones (``INT``, ``BOOL``, ``STRING``) are table 3.7 in full. The
implicit ones, which operators apply to their operands, are the same except Integer -> Boolean,
which fails: the CESQL TCK (``not_operator.yaml``, "Invalid int cast") has ``NOT 10`` give
``true`` with a cast error, while ``casting_functions.yaml`` has ``BOOL(10)`` give ``true`` with
none. The spec's table lists Integer -> Boolean without telling implicit from explicit, and the
Go SDK casts ``NOT 10`` to ``false``; we follow the TCK, the spec's conformance data.
"""

from __future__ import annotations

import base64
import datetime as dt
import re
from collections.abc import Callable
from enum import Enum
from typing import Final

from agentfn.brokers.cesql._errors import CAST

Value = bool | int | str
Caster = Callable[[Value, list[str]], Value]

INT_MIN: Final = -(2**31)
INT_MAX: Final = 2**31 - 1


class Type(Enum):
    BOOLEAN = "Boolean"
    INTEGER = "Integer"
    STRING = "String"
    # An attribute: its type is only known once the event is there.
    ANY = "Any"


# Section 3.2: where the type of a failed subexpression cannot be known, it is Boolean.
ZERO: Final[dict[Type, Value]] = {
    Type.BOOLEAN: False,
    Type.INTEGER: 0,
    Type.STRING: "",
    Type.ANY: False,
}

_INTEGER_TEXT: Final = re.compile(r"[+-]?[0-9]+")


def parse_int(text: str) -> int | None:
    """A 32-bit integer written in base 10 with an optional sign, else ``None``.

    Stricter than ``int()``, which would accept spaces, underscores and non-ASCII digits.
    """
    if _INTEGER_TEXT.fullmatch(text) is None:
        return None
    # Bounded before int() so that a huge digit string costs nothing and never trips
    # Python's limit on integer string conversion.
    if len(text.lstrip("+-").lstrip("0")) > 10:
        return None
    number = int(text)
    return number if INT_MIN <= number <= INT_MAX else None


def to_int(value: Value, errors: list[str]) -> int:
    if type(value) is int:
        return value
    if isinstance(value, str):
        number = parse_int(value)
        if number is None:
            errors.append(CAST)
            return 0
        return number
    return 1 if value else 0


def to_bool(value: Value, errors: list[str]) -> bool:
    if value is True or value is False:
        return value
    if isinstance(value, str):
        lowered = value.lower()
        if lowered == "true":
            return True
        if lowered == "false":
            return False
        errors.append(CAST)
        return False
    return value != 0


def implicit_bool(value: Value, errors: list[str]) -> bool:
    """The implicit cast to Boolean: as ``to_bool``, except that an Integer fails (see above)."""
    if value is True or value is False:
        return value
    if isinstance(value, str):
        return to_bool(value, errors)
    errors.append(CAST)
    return False


def to_str(value: Value, errors: list[str]) -> str:
    if isinstance(value, str):
        return value
    if value is True:
        return "true"
    if value is False:
        return "false"
    return str(value)


def can_int(value: Value) -> bool:
    return not isinstance(value, str) or parse_int(value) is not None


def can_bool(value: Value) -> bool:
    return not isinstance(value, str) or value.lower() in ("true", "false")


# The implicit casts, by target type and by the class of a value of the target type.
IMPLICIT: Final[dict[Type, Caster]] = {
    Type.BOOLEAN: implicit_bool,
    Type.INTEGER: to_int,
    Type.STRING: to_str,
}
IMPLICIT_OF_CLASS: Final[dict[type, Caster]] = {bool: implicit_bool, int: to_int, str: to_str}


def type_of(value: Value) -> Type:
    if value is True or value is False:
        return Type.BOOLEAN
    return Type.INTEGER if isinstance(value, int) else Type.STRING


def caster(source: Type, target: Type) -> Caster | None:
    """The implicit cast from ``source`` to ``target``, or ``None`` where values need none."""
    if target is Type.ANY or source is target:
        return None
    return IMPLICIT[target]


def can_fail(source: Type, target: Type) -> bool:
    """Whether implicitly casting a ``source`` value to ``target`` may raise a cast error."""
    if target in (Type.ANY, Type.STRING) or source is target:
        return False
    if target is Type.BOOLEAN and source is Type.INTEGER:
        return True
    return source in (Type.STRING, Type.ANY)


class Missing(Enum):
    MISSING = "missing"


MISSING: Final = Missing.MISSING


def from_event(value: object) -> Value | Missing:
    """An attribute value as a CESQL value (section 3.2: what is not a CESQL type is a String).

    ``None`` is an absent attribute, as a JSON ``null`` is in the CloudEvents JSON format.
    """
    if value is True or value is False:
        return value
    if isinstance(value, str):
        return value if type(value) is str else str(value)
    if isinstance(value, int):
        number = int(value)
        return number if INT_MIN <= number <= INT_MAX else str(number)
    if value is None or value is MISSING:
        return MISSING
    if isinstance(value, dt.datetime):
        return _timestamp(value)
    if isinstance(value, bytes | bytearray | memoryview):
        # The canonical string form of the CloudEvents Binary type is base64.
        return base64.b64encode(bytes(value)).decode("ascii")
    return str(value)


def _timestamp(value: dt.datetime) -> str:
    text = value.isoformat()
    # RFC 3339 as CloudEvents SDKs write it: UTC as "Z".
    return text[:-6] + "Z" if text.endswith("+00:00") else text
