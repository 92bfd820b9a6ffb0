"""The syntax tree the parser builds and the compiler turns into closures.

Every node records ``offset`` (where it starts in the source, for messages) and ``depth`` (the
height of its subtree), which the parser bounds so that neither compiling nor evaluating can
exhaust Python's recursion limit.
"""

from __future__ import annotations

from dataclasses import dataclass

from agentfn.brokers.cesql._values import Value


@dataclass(frozen=True, slots=True)
class Literal:
    value: Value
    offset: int
    depth: int = 1


@dataclass(frozen=True, slots=True)
class Attribute:
    name: str  # lower case: identifiers are case-insensitive
    offset: int
    depth: int = 1


@dataclass(frozen=True, slots=True)
class Exists:
    name: str
    offset: int
    depth: int = 1


@dataclass(frozen=True, slots=True)
class Not:
    operand: Node
    offset: int
    depth: int


@dataclass(frozen=True, slots=True)
class Negate:
    operand: Node
    offset: int
    depth: int


@dataclass(frozen=True, slots=True)
class Binary:
    """Comparison and arithmetic; ``op`` is the source operator, with ``<>`` read as ``!=``."""

    op: str
    left: Node
    right: Node
    offset: int
    depth: int


@dataclass(frozen=True, slots=True)
class Logic:
    """A left-to-right run of one of AND, OR, XOR: ``a AND b AND c`` is one node of three."""

    op: str
    operands: tuple[Node, ...]
    offset: int
    depth: int


@dataclass(frozen=True, slots=True)
class Like:
    operand: Node
    pattern: str
    negated: bool
    offset: int
    depth: int


@dataclass(frozen=True, slots=True)
class In:
    operand: Node
    items: tuple[Node, ...]
    negated: bool
    offset: int
    depth: int


@dataclass(frozen=True, slots=True)
class Call:
    name: str  # upper case: function names are case-insensitive
    args: tuple[Node, ...]
    offset: int
    depth: int


Node = Literal | Attribute | Exists | Not | Negate | Binary | Logic | Like | In | Call
