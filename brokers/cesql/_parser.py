"""Recursive descent with precedence climbing over the tokens of ``_lexer``.

Precedence, highest first: function invocations; the unary operators (NOT, then ``-``); LIKE;
EXISTS; IN; ``* / %``; ``+ -``; the comparisons; AND, OR, XOR. The prose of CESQL v1 leaves the
logic operators' grouping open; its ANTLR grammar (``cesql/CESQLParser.g4``), and so the Go SDK
that Knative's brokers evaluate Trigger filters with, puts AND, OR and XOR on one
right-associative level: ``a AND b OR c`` is ``a AND (b OR c)``, unlike most SQL dialects. We
follow the grammar so that a filter selects the same events here as in the cluster. Operands are
still evaluated left to right, with AND and OR short-circuiting (section 3.6).

A unary operator binds only its operand: ``NOT x LIKE 'a%'`` is ``(NOT x) LIKE 'a%'``; write
``x NOT LIKE 'a%'`` for the negated match.
"""

from __future__ import annotations

import re
from typing import Final

from agentfn.brokers.cesql._ast import (
    Attribute,
    Binary,
    Call,
    Exists,
    In,
    Like,
    Literal,
    Logic,
    Negate,
    Node,
    Not,
)
from agentfn.brokers.cesql._errors import CesqlParseError
from agentfn.brokers.cesql._lexer import Tok, Token, tokenize
from agentfn.brokers.cesql._values import INT_MAX, INT_MIN

# Deeper trees are refused rather than risking RecursionError in the parser, the compiler or
# an evaluation; a hundred levels is far beyond any filter a person writes.
MAX_DEPTH: Final = 100

_LOGIC: Final = 1
_COMPARISON: Final = 2
_ADDITIVE: Final = 3
_MULTIPLICATIVE: Final = 4
_IN: Final = 5
_LIKE: Final = 7

_BINARY: Final[dict[str, int]] = {
    "=": _COMPARISON,
    "!=": _COMPARISON,
    "<>": _COMPARISON,
    "<": _COMPARISON,
    "<=": _COMPARISON,
    ">": _COMPARISON,
    ">=": _COMPARISON,
    "+": _ADDITIVE,
    "-": _ADDITIVE,
    "*": _MULTIPLICATIVE,
    "/": _MULTIPLICATIVE,
    "%": _MULTIPLICATIVE,
}
_LOGIC_KEYWORDS: Final = frozenset({"AND", "OR", "XOR"})

_VALUE_IDENTIFIER: Final = re.compile(r"[A-Za-z0-9]+")
_FUNCTION_IDENTIFIER: Final = re.compile(r"[A-Za-z][A-Za-z_]*")


def parse(source: str) -> Node:
    return _Parser(source).parse()


class _Parser:
    def __init__(self, source: str) -> None:
        self._source = source
        self._tokens = tokenize(source)
        self._pos = 0
        self._nesting = 0

    def parse(self) -> Node:
        if self._peek().kind is Tok.END:
            raise self._error("empty expression", self._peek())
        node = self._expression(0)
        token = self._peek()
        if token.kind is not Tok.END:
            raise self._error(f"unexpected {self._describe(token)}", token)
        return node

    # Tokens

    def _peek(self) -> Token:
        return self._tokens[self._pos]

    def _next(self) -> Token:
        token = self._tokens[self._pos]
        if token.kind is not Tok.END:
            self._pos += 1
        return token

    def _is(self, token: Token, kind: Tok, text: str) -> bool:
        return token.kind is kind and token.text == text

    def _expect_op(self, text: str, context: str) -> Token:
        token = self._next()
        if not self._is(token, Tok.OP, text):
            raise self._error(f"expected '{text}' {context}, found {self._describe(token)}", token)
        return token

    def _describe(self, token: Token) -> str:
        if token.kind is Tok.END:
            return "end of expression"
        return repr(self._source[token.offset : token.end])

    def _error(self, reason: str, token: Token) -> CesqlParseError:
        return CesqlParseError(reason, self._source, token.offset)

    def _deeper(self, token: Token) -> None:
        self._nesting += 1
        if self._nesting > MAX_DEPTH:
            raise self._error(f"expression nested more than {MAX_DEPTH} levels deep", token)

    def _checked(self, node: Node, token: Token) -> Node:
        if node.depth > MAX_DEPTH:
            raise self._error(f"expression nested more than {MAX_DEPTH} levels deep", token)
        return node

    # Grammar

    def _expression(self, min_precedence: int) -> Node:
        self._deeper(self._peek())
        left = self._unary()
        while True:
            token = self._peek()
            precedence = self._precedence(token)
            if precedence is None or precedence < min_precedence:
                break
            if precedence == _LOGIC:
                left = self._logic(left)
            elif precedence == _LIKE:
                left = self._like(left)
            elif precedence == _IN:
                left = self._in(left)
            else:
                self._next()
                right = self._expression(precedence + 1)
                op = "!=" if token.text == "<>" else token.text
                depth = 1 + max(left.depth, right.depth)
                left = self._checked(Binary(op, left, right, left.offset, depth), token)
        self._nesting -= 1
        return left

    def _precedence(self, token: Token) -> int | None:
        if token.kind is Tok.OP:
            return _BINARY.get(token.text)
        if token.kind is not Tok.KEYWORD:
            return None
        text = token.text
        if text == "NOT":
            # Only `NOT LIKE` and `NOT IN` may follow an operand; anything else is an error.
            following = self._tokens[self._pos + 1]
            if self._is(following, Tok.KEYWORD, "LIKE"):
                return _LIKE
            if self._is(following, Tok.KEYWORD, "IN"):
                return _IN
            found = self._describe(following)
            raise self._error(f"expected LIKE or IN after NOT, found {found}", following)
        if text in _LOGIC_KEYWORDS:
            return _LOGIC
        if text == "LIKE":
            return _LIKE
        if text == "IN":
            return _IN
        return None

    def _logic(self, left: Node) -> Node:
        # One node per run of one operator: `a OR b OR c` needs no recursion however long the
        # list is (the operators are associative, so flat equals right-nested).
        token = self._peek()
        op = token.text
        operands = [left]
        while self._is(self._peek(), Tok.KEYWORD, op):
            self._next()
            operands.append(self._expression(_LOGIC + 1))
        following = self._peek()
        if following.kind is Tok.KEYWORD and following.text in _LOGIC_KEYWORDS:
            # Right associativity: another logic operator takes the last operand with it.
            self._deeper(following)
            operands.append(self._logic(operands.pop()))
            self._nesting -= 1
        depth = max(operand.depth for operand in operands)
        return self._checked(Logic(op, tuple(operands), left.offset, depth + 1), token)

    def _like(self, left: Node) -> Node:
        token = self._next()
        negated = token.text == "NOT"
        if negated:
            self._next()
        pattern = self._next()
        if pattern.kind is not Tok.STRING:
            found = self._describe(pattern)
            raise self._error(f"LIKE needs a string literal pattern, found {found}", pattern)
        return self._checked(Like(left, pattern.text, negated, left.offset, left.depth + 1), token)

    def _in(self, left: Node) -> Node:
        token = self._next()
        negated = token.text == "NOT"
        if negated:
            self._next()
        self._expect_op("(", "to open the IN set")
        items = self._list("IN set")
        if not items:
            raise self._error("the IN set needs at least one element", token)
        depth = 1 + max(left.depth, *(item.depth for item in items))
        return self._checked(In(left, tuple(items), negated, left.offset, depth), token)

    def _list(self, context: str) -> list[Node]:
        """The elements of a parenthesized list whose ``(`` was just read, through its ``)``."""
        items: list[Node] = []
        if self._is(self._peek(), Tok.OP, ")"):
            self._next()
            return items
        while True:
            items.append(self._expression(0))
            token = self._next()
            if self._is(token, Tok.OP, ")"):
                return items
            if not self._is(token, Tok.OP, ","):
                found = self._describe(token)
                raise self._error(f"expected ',' or ')' in the {context}, found {found}", token)

    def _unary(self) -> Node:
        token = self._peek()
        if self._is(token, Tok.KEYWORD, "NOT"):
            self._next()
            operand = self._operand(token)
            return self._checked(Not(operand, token.offset, operand.depth + 1), token)
        if self._is(token, Tok.OP, "-"):
            self._next()
            following = self._peek()
            if following.kind is Tok.WORD and following.text.isdigit():
                # Folded into the literal so that -2147483648, whose magnitude is not a valid
                # literal on its own, can be written at all.
                self._next()
                return self._integer("-" + following.text, token)
            operand = self._operand(token)
            return self._checked(Negate(operand, token.offset, operand.depth + 1), token)
        if self._is(token, Tok.OP, "+"):
            # The grammar has `+` only as the sign of an integer literal, not as an operator.
            self._next()
            following = self._next()
            if following.kind is not Tok.WORD or not following.text.isdigit():
                found = self._describe(following)
                raise self._error(f"expected an integer after '+', found {found}", following)
            return self._integer("+" + following.text, token)
        if self._is(token, Tok.KEYWORD, "EXISTS"):
            self._next()
            name = self._next()
            if name.kind is not Tok.WORD or _VALUE_IDENTIFIER.fullmatch(name.text) is None:
                found = self._describe(name)
                raise self._error(f"EXISTS needs an attribute name, found {found}", name)
            return Exists(name.text.lower(), token.offset)
        return self._primary()

    def _operand(self, operator: Token) -> Node:
        self._deeper(operator)
        operand = self._unary()
        self._nesting -= 1
        return operand

    def _primary(self) -> Node:
        token = self._next()
        kind = token.kind
        if kind is Tok.STRING:
            return Literal(token.text, token.offset)
        if kind is Tok.KEYWORD and token.text in ("TRUE", "FALSE"):
            return Literal(token.text == "TRUE", token.offset)
        if self._is(token, Tok.OP, "("):
            inner = self._expression(0)
            self._expect_op(")", "to close the parenthesis")
            return inner
        if kind is Tok.WORD:
            text = token.text
            if self._is(self._peek(), Tok.OP, "("):
                return self._call(token)
            if text.isdigit():
                return self._integer(text, token)
            if _VALUE_IDENTIFIER.fullmatch(text) is None:
                raise self._error(
                    f"invalid attribute name {text!r}: names are ASCII letters and digits", token
                )
            return Attribute(text.lower(), token.offset)
        raise self._error(f"expected a value, found {self._describe(token)}", token)

    def _call(self, name: Token) -> Node:
        if _FUNCTION_IDENTIFIER.fullmatch(name.text) is None:
            raise self._error(
                f"invalid function name {name.text!r}: names are letters and '_', "
                "starting with a letter",
                name,
            )
        self._next()
        self._deeper(name)
        args = self._list(f"arguments of {name.text.upper()}")
        self._nesting -= 1
        depth = 1 + max((arg.depth for arg in args), default=0)
        return self._checked(Call(name.text.upper(), tuple(args), name.offset, depth), name)

    def _integer(self, text: str, token: Token) -> Node:
        # Bounded before int(): a long digit run must be a parse error, not a ValueError from
        # Python's limit on integer string conversion.
        digits = text.lstrip("+-").lstrip("0")
        number = int(text) if len(digits) <= 10 else None
        if number is None or not INT_MIN <= number <= INT_MAX:
            raise self._error(f"integer literal {text} is outside the 32-bit range", token)
        return Literal(number, token.offset)
