"""LIKE patterns (CESQL v1 section 3.4.3), translated once when the expression is compiled.

``%`` is any run of characters, ``_`` exactly one; ``\\%``, ``\\_`` and ``\\\\`` stand for the
character itself, and any other backslash is an ordinary character. Matching is case-sensitive
and covers the whole value. Common shapes skip the regex engine: ``abc``, ``abc%``, ``%abc``
and ``%abc%`` become equality, ``startswith``, ``endswith`` and ``in``.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from operator import methodcaller

Matcher = Callable[[str], bool]

_ANY_RUN = object()
_ANY_ONE = object()


def compile_like(pattern: str) -> Matcher:
    parts = _parts(pattern)
    if _ANY_ONE not in parts:
        literals = [part for part in parts if isinstance(part, str)]
        if len(literals) <= 1:
            return _plain(parts, literals[0] if literals else "")
    regex = "".join(
        ".*" if part is _ANY_RUN else "." if part is _ANY_ONE else re.escape(str(part))
        for part in parts
    )
    fullmatch = re.compile(regex, re.DOTALL).fullmatch

    def matches(value: str) -> bool:
        return fullmatch(value) is not None

    return matches


def _parts(pattern: str) -> list[object]:
    """Literal runs as ``str``, wildcards as markers; consecutive ``%`` collapse into one."""
    parts: list[object] = []
    literal: list[str] = []
    pos = 0
    size = len(pattern)
    while pos < size:
        char = pattern[pos]
        if char == "\\" and pos + 1 < size and pattern[pos + 1] in "%_\\":
            literal.append(pattern[pos + 1])
            pos += 2
            continue
        if char in "%_":
            if literal:
                parts.append("".join(literal))
                literal = []
            if not (char == "%" and parts and parts[-1] is _ANY_RUN):
                parts.append(_ANY_RUN if char == "%" else _ANY_ONE)
        else:
            literal.append(char)
        pos += 1
    if literal:
        parts.append("".join(literal))
    return parts


def _plain(parts: list[object], text: str) -> Matcher:
    leading = bool(parts) and parts[0] is _ANY_RUN
    trailing = bool(parts) and parts[-1] is _ANY_RUN
    if leading and trailing:
        if not text:
            return _always
        return methodcaller("__contains__", text)
    if leading:
        return methodcaller("endswith", text)
    if trailing:
        return methodcaller("startswith", text)
    return text.__eq__


def _always(_: str) -> bool:
    return True
