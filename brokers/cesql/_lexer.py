"""Turns CESQL source into tokens (CESQL v1 section 2; the upstream ANTLR lexer for the gaps)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import Enum, auto
from typing import Final

from agentfn.brokers.cesql._errors import CesqlParseError


class Tok(Enum):
    WORD = auto()  # identifiers, function names and integers: classified by the parser
    KEYWORD = auto()
    STRING = auto()
    OP = auto()
    END = auto()


KEYWORDS: Final = frozenset({"AND", "OR", "XOR", "NOT", "LIKE", "EXISTS", "IN", "TRUE", "FALSE"})


@dataclass(frozen=True, slots=True)
class Token:
    kind: Tok
    # Upper-cased for keywords, the unescaped value for strings, the source text otherwise.
    text: str
    offset: int
    end: int


# Longest operators first so that `<=` is never read as `<` then `=`.
_SCANNER: Final = re.compile(
    r"(?P<space>[ \t\r\n\f\v]+)"
    r"|(?P<word>[A-Za-z0-9_]+)"
    r"|(?P<op><>|<=|>=|!=|[=<>()+\-*/%,])"
    r"|(?P<quote>['\"])"
)

# A backslash before one of these stands for the character alone; before anything else it is kept,
# so LIKE patterns such as 'a\_b' reach the LIKE operator with their escapes intact.
_ESCAPABLE: Final = frozenset("'\"\\")


def tokenize(source: str) -> list[Token]:
    tokens: list[Token] = []
    pos = 0
    size = len(source)
    match = _SCANNER.match
    while pos < size:
        found = match(source, pos)
        if found is None:
            raise CesqlParseError(f"unexpected character {source[pos]!r}", source, pos)
        group = found.lastgroup
        end = found.end()
        if group == "word":
            text = found.group()
            upper = text.upper()
            if upper in KEYWORDS:
                tokens.append(Token(Tok.KEYWORD, upper, pos, end))
            else:
                tokens.append(Token(Tok.WORD, text, pos, end))
        elif group == "op":
            tokens.append(Token(Tok.OP, found.group(), pos, end))
        elif group == "quote":
            value, end = _string(source, pos)
            tokens.append(Token(Tok.STRING, value, pos, end))
        pos = end
    tokens.append(Token(Tok.END, "", size, size))
    return tokens


def _string(source: str, start: int) -> tuple[str, int]:
    r"""Reads the literal opening at ``start``; returns its value and the offset after it.

    The delimiting quote is written inside the literal escaped (``'it\'s'``) or doubled
    (``'it''s'``, as in SQL and the upstream ANTLR lexer). ``\'``, ``\"`` and ``\\`` are
    escapes in either style.
    """
    quote = source[start]
    parts: list[str] = []
    pos = start + 1
    size = len(source)
    while True:
        stop = _next_special(source, pos, quote)
        if stop < 0:
            raise CesqlParseError("unterminated string literal", source, start)
        parts.append(source[pos:stop])
        char = source[stop]
        if char == "\\":
            if stop + 1 >= size:
                raise CesqlParseError("unterminated string literal", source, start)
            escaped = source[stop + 1]
            parts.append(escaped if escaped in _ESCAPABLE else "\\" + escaped)
            pos = stop + 2
        elif stop + 1 < size and source[stop + 1] == quote:
            parts.append(quote)
            pos = stop + 2
        else:
            return "".join(parts), stop + 1


def _next_special(source: str, pos: int, quote: str) -> int:
    backslash = source.find("\\", pos)
    closing = source.find(quote, pos)
    if backslash < 0:
        return closing
    if closing < 0:
        return backslash
    return min(backslash, closing)
