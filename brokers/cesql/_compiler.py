"""Turns a syntax tree into nested closures: evaluating an event walks no tree and decides
nothing that could be decided when the expression was compiled.

Every closure takes the event and the list that collects error kinds, and returns a value.

Error semantics (CESQL v1 sections 3.2, 3.3, 3.7, 4.1): evaluation always completes, collecting
every error raised. A node that raises an error returns a value of its return type: the value the
spec names (``ABS`` of the minimum gives 2147483647, ``LEFT`` with a negative count gives its
argument) or the zero value. Two cases for an operator's operand:

- The operand raised (a missing attribute, a math error, any error inside it): the operator
  returns its own zero value without computing, which is why ``missing / 0`` reports only the
  missing attribute, ``NOT missing`` is false and ``true AND (1 != 1 / 0)`` is false.
- The operand has a value that the operator's implicit cast cannot convert: the cast raises a
  cast error and its result is the zero value of the target type (3.7: "raise a CastError and
  the cast result is false"; String -> Integer "an error is returned along with a value of 0"),
  and the operator computes with it: ``NOT 10`` is true, ``'a' + 1`` is 1.

All as in the CESQL TCK. AND and OR short-circuit on their left operand (3.4.2); IN stops at the
first element that matches.

An operand evaluator (``Operand``) returns ``RAISED`` where its node raised, so that operators
tell the two cases apart; the node is evaluated by comparing the length of the error list before
and after, which operands that cannot raise skip.
"""

from __future__ import annotations

import operator
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from enum import Enum
from typing import Final, cast

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
from agentfn.brokers.cesql._errors import CAST, MATH, MISSING_ATTRIBUTE, MISSING_FUNCTION
from agentfn.brokers.cesql._functions import resolve
from agentfn.brokers.cesql._like import compile_like
from agentfn.brokers.cesql._values import (
    IMPLICIT_OF_CLASS,
    INT_MAX,
    INT_MIN,
    MISSING,
    ZERO,
    Caster,
    Type,
    Value,
    can_fail,
    caster,
    from_event,
    parse_int,
    to_str,
    type_of,
)


class Raised(Enum):
    RAISED = "raised"


# What an operand evaluator returns where its node raised an error; never a value of a node.
RAISED: Final = Raised.RAISED

Event = Mapping[str, object]
Evaluator = Callable[[Event, list[str]], Value]
Operand = Callable[[Event, list[str]], Value | Raised]
_IntOperand = Callable[[Event, list[str]], int | Raised]
_StrOperand = Callable[[Event, list[str]], str | Raised]

# The spec leaves the data of an event out of the language (section 1); an event mapping in the
# JSON format may still carry it, so it is never an attribute.
_NOT_ATTRIBUTES: Final = frozenset({"data"})

# 3.4.4: "EXISTS MUST always return true for the REQUIRED context attributes because the input
# CloudEvent is always assumed valid".
_REQUIRED: Final = frozenset({"id", "source", "specversion", "type"})

_COMPARISONS: Final[dict[str, Callable[[int, int], bool]]] = {
    "<": operator.lt,
    "<=": operator.le,
    ">": operator.gt,
    ">=": operator.ge,
}


@dataclass(frozen=True, slots=True)
class Code:
    fn: Evaluator
    type: Type
    # Whether evaluating may raise an error.
    fallible: bool
    constant: bool = False
    # Whether the value is the zero value of ``type`` whenever evaluating raises: such a Boolean
    # node can be an operand of AND without a check, as AND's value is then false anyway.
    zero_when_raising: bool = False


def compile_tree(node: Node) -> Evaluator:
    return _compile(node).fn


def _compile(node: Node) -> Code:
    match node:
        case Literal(value=value):
            return Code(_constant(value), type_of(value), fallible=False, constant=True)
        case Attribute(name=name):
            return Code(_attribute(name), Type.ANY, fallible=True, zero_when_raising=True)
        case Exists(name=name):
            return Code(_exists(name), Type.BOOLEAN, fallible=False)
        case Not(operand=operand):
            return _not(operand)
        case Negate(operand=operand):
            return _negate(operand)
        case Logic():
            return _logic(node)
        case Binary(op="=" | "!="):
            return _equality(node)
        case Binary(op="<" | "<=" | ">" | ">="):
            return _comparison(node)
        case Binary():
            return _arithmetic(node)
        case Like():
            return _like(node)
        case In():
            return _in(node)
        case Call():
            return _call(node)


def _operand(node: Node, target: Type, *, checked: bool = True) -> tuple[Operand, bool]:
    """An evaluator of ``node`` with its values implicitly cast to ``target`` (section 3.7), and
    whether it may raise an error.

    It returns ``RAISED`` where the node raised, and the zero value of ``target`` with a cast
    error where the cast fails. With ``checked`` false, a Boolean node that returns false when
    it raises is returned as it is: for a caller to which false and ``RAISED`` mean the same.
    """
    if isinstance(node, Attribute):
        return _attribute_operand(node.name, target), True
    code = _compile(node)
    function = code.fn
    cast_to = caster(code.type, target)
    if cast_to is None:
        if not code.fallible or (not checked and code.zero_when_raising):
            return function, code.fallible
        return _checked_operand(function), True
    if code.constant:
        errors: list[str] = []
        value = cast_to(function({}, errors), errors)
        return (_failing(value), True) if errors else (_constant(value), False)
    if not code.fallible:
        convert = cast_to

        def converted(event: Event, errors: list[str]) -> Value | Raised:
            return convert(function(event, errors), errors)

        return converted, can_fail(code.type, target)

    def checked_converted(event: Event, errors: list[str]) -> Value | Raised:
        count = len(errors)
        value = function(event, errors)
        if len(errors) != count:
            return RAISED
        return cast_to(value, errors)

    return checked_converted, True


def _checked_operand(function: Evaluator) -> Operand:
    def checked(event: Event, errors: list[str]) -> Value | Raised:
        count = len(errors)
        value = function(event, errors)
        return RAISED if len(errors) != count else value

    return checked


def _constant_of(node: Node, target: Type) -> tuple[Value] | None:
    """The value of a literal cast to ``target``, when that cast succeeds."""
    if not isinstance(node, Literal):
        return None
    cast_to = caster(type_of(node.value), target)
    if cast_to is None:
        return (node.value,)
    errors: list[str] = []
    value = cast_to(node.value, errors)
    return None if errors else (value,)


def _constant(value: Value) -> Evaluator:
    def constant(event: Event, errors: list[str]) -> Value:
        return value

    return constant


def _failing(zero: Value) -> Evaluator:
    """A literal that can never be cast to what its operator needs, such as ``NOT 'abc'``: a
    cast error, and the zero value for the operator to compute with."""

    def failing(event: Event, errors: list[str]) -> Value:
        errors.append(CAST)
        return zero

    return failing


# Attributes


def _attribute(name: str) -> Evaluator:
    """An attribute as a node: its value, or false with a missing attribute error (3.2: the
    type of a missing attribute cannot be known, so its zero value is the Boolean one)."""
    if name in _NOT_ATTRIBUTES:

        def absent(event: Event, errors: list[str]) -> Value:
            errors.append(MISSING_ATTRIBUTE)
            return False

        return absent

    def read(event: Event, errors: list[str]) -> Value:
        value = event.get(name, MISSING)
        if type(value) is str:
            return value
        converted = from_event(value)
        if converted is MISSING:
            errors.append(MISSING_ATTRIBUTE)
            return False
        return converted

    return read


def _absent(event: Event, errors: list[str]) -> Value | Raised:
    errors.append(MISSING_ATTRIBUTE)
    return RAISED


def _attribute_operand(name: str, target: Type) -> Operand:
    """Reads ``name`` from the event, converts it to a CESQL value and casts it to ``target``.

    One closure for the three steps: attribute access is the most frequent operand by far. A
    missing attribute gives ``RAISED``.
    """
    if name in _NOT_ATTRIBUTES:
        return _absent
    if target is Type.STRING:
        return _string_attribute(name)
    if target is Type.INTEGER:
        return _integer_attribute(name)
    if target is Type.BOOLEAN:
        return _boolean_attribute(name)
    return _checked_operand(_attribute(name))


def _string_attribute(name: str) -> Operand:
    def read(event: Event, errors: list[str]) -> Value | Raised:
        value = event.get(name, MISSING)
        if type(value) is str:
            return value
        converted = from_event(value)
        if converted is MISSING:
            errors.append(MISSING_ATTRIBUTE)
            return RAISED
        return to_str(converted, errors)

    return read


def _integer_attribute(name: str) -> Operand:
    def read(event: Event, errors: list[str]) -> Value | Raised:
        value = event.get(name, MISSING)
        if type(value) is int and INT_MIN <= value <= INT_MAX:
            return value
        converted = from_event(value)
        if converted is MISSING:
            errors.append(MISSING_ATTRIBUTE)
            return RAISED
        if isinstance(converted, str):
            number = parse_int(converted)
            if number is None:
                errors.append(CAST)
                return 0
            return number
        return int(converted)

    return read


def _boolean_attribute(name: str) -> Operand:
    def read(event: Event, errors: list[str]) -> Value | Raised:
        converted = from_event(event.get(name, MISSING))
        if converted is True or converted is False:
            return converted
        if converted is MISSING:
            errors.append(MISSING_ATTRIBUTE)
            return RAISED
        if isinstance(converted, str):
            lowered = converted.lower()
            if lowered == "true":
                return True
            if lowered == "false":
                return False
        # Not "true"/"false", or an Integer: no implicit cast to Boolean (see _values).
        errors.append(CAST)
        return False

    return read


def _exists(name: str) -> Evaluator:
    if name in _NOT_ATTRIBUTES:
        return _constant(value=False)
    if name in _REQUIRED:
        return _constant(value=True)

    def exists(event: Event, errors: list[str]) -> Value:
        return event.get(name) is not None

    return exists


# Unary operators


def _not(operand: Node) -> Code:
    value, fallible = _operand(operand, Type.BOOLEAN)

    # `is False` is false for RAISED, and true for the false of a failed cast: NOT 10 is true.
    def negation(event: Event, errors: list[str]) -> Value:
        return value(event, errors) is False

    return Code(negation, Type.BOOLEAN, fallible=fallible)


def _negate(operand: Node) -> Code:
    value = cast("_IntOperand", _operand(operand, Type.INTEGER)[0])

    def negation(event: Event, errors: list[str]) -> Value:
        number = value(event, errors)
        if number is RAISED:
            return 0
        if number == INT_MIN:
            errors.append(MATH)
            return 0
        return -number

    return Code(negation, Type.INTEGER, fallible=True, zero_when_raising=True)


# Binary operators


def _logic(node: Logic) -> Code:
    if node.op == "AND":
        # An operand that raised, or failed its cast, is not true: the conjunction is false.
        typed = [_operand(operand, Type.BOOLEAN, checked=False) for operand in node.operands]
    else:
        typed = [_operand(operand, Type.BOOLEAN) for operand in node.operands]
    operands = tuple(function for function, _ in typed)
    fallible = any(may_fail for _, may_fail in typed)
    if node.op == "AND":
        return Code(_and(operands), Type.BOOLEAN, fallible, zero_when_raising=True)
    if node.op == "OR":
        return Code(_or(operands, checked=fallible), Type.BOOLEAN, fallible)
    return Code(_xor(operands), Type.BOOLEAN, fallible)


def _and(operands: tuple[Operand, ...]) -> Evaluator:
    if len(operands) == 2:
        first, second = operands

        def conjunction2(event: Event, errors: list[str]) -> Value:
            return first(event, errors) is True and second(event, errors) is True

        return conjunction2

    def conjunction(event: Event, errors: list[str]) -> Value:
        # A loop, not all() over a generator: this runs for every event a Trigger sees.
        for operand in operands:  # noqa: SIM110
            if operand(event, errors) is not True:
                return False
        return True

    return conjunction


def _or(operands: tuple[Operand, ...], *, checked: bool) -> Evaluator:
    if not checked:

        def disjunction(event: Event, errors: list[str]) -> Value:
            return any(operand(event, errors) is True for operand in operands)

        return disjunction

    # `(a OR b) OR c` with `a` raising: the inner OR returns false whatever `b` is, so `c` is
    # still evaluated, and the whole is false. A failed cast is only a false operand:
    # `'yes' OR TRUE` is true, with the cast error.
    def checked_disjunction(event: Event, errors: list[str]) -> Value:
        raised = False
        for operand in operands:
            value = operand(event, errors)
            if value is RAISED:
                raised = True
            elif value is True and not raised:
                return True
        return False

    return checked_disjunction


def _xor(operands: tuple[Operand, ...]) -> Evaluator:
    def exclusive(event: Event, errors: list[str]) -> Value:
        raised = False
        result = False
        for operand in operands:
            value = operand(event, errors)
            if value is RAISED:
                raised = True
            else:
                result ^= value is True
        return result and not raised

    return exclusive


def _equality(node: Binary) -> Code:
    """``=`` and ``!=`` are defined for each type; the right operand's type picks the
    definition and the left operand is cast to it (section 3.7)."""
    negated = node.op == "!="
    right = _compile(node.right)
    if right.type is Type.ANY:
        return Code(_dynamic_equality(node, negated), Type.BOOLEAN, fallible=True)
    constant = right.fn({}, []) if right.constant else None
    if isinstance(node.left, Attribute) and isinstance(constant, str):
        return Code(
            _attribute_equals_string(node.left.name, constant, negated),
            Type.BOOLEAN,
            fallible=True,
            zero_when_raising=True,
        )
    left, left_fails = _operand(node.left, right.type)
    if constant is not None:
        if not left_fails:

            def equals_constant(event: Event, errors: list[str]) -> Value:
                return (left(event, errors) == constant) is not negated

            return Code(equals_constant, Type.BOOLEAN, fallible=False)

        def checked_equals_constant(event: Event, errors: list[str]) -> Value:
            value = left(event, errors)
            return value is not RAISED and (value == constant) is not negated

        return Code(checked_equals_constant, Type.BOOLEAN, fallible=True)
    other = _operand(node.right, right.type)[0]

    def equals(event: Event, errors: list[str]) -> Value:
        value = left(event, errors)
        expected = other(event, errors)
        if value is RAISED or expected is RAISED:
            return False
        return (value == expected) is not negated

    return Code(equals, Type.BOOLEAN, fallible=left_fails or right.fallible)


def _attribute_equals_string(name: str, expected: str, negated: bool) -> Evaluator:
    """``attribute = 'text'``, the commonest filter of all, in one closure."""
    if name in _NOT_ATTRIBUTES:
        return _attribute(name)

    def equals(event: Event, errors: list[str]) -> Value:
        value = event.get(name, MISSING)
        if type(value) is not str:
            converted = from_event(value)
            if converted is MISSING:
                errors.append(MISSING_ATTRIBUTE)
                return False
            value = to_str(converted, errors)
        return (value == expected) is not negated

    return equals


def _dynamic_equality(node: Binary, negated: bool) -> Evaluator:
    """The right operand is an attribute: its type is only known per event."""
    left = _compile(node.left).fn
    right = _compile(node.right).fn

    def equals(event: Event, errors: list[str]) -> Value:
        count = len(errors)
        value = left(event, errors)
        expected = right(event, errors)
        if len(errors) != count:
            return False
        value = IMPLICIT_OF_CLASS[type(expected)](value, errors)
        return (value == expected) is not negated

    return equals


def _comparison(node: Binary) -> Code:
    compare = _COMPARISONS[node.op]
    left = cast("_IntOperand", _operand(node.left, Type.INTEGER)[0])
    constant = _constant_of(node.right, Type.INTEGER)
    if constant is not None:
        bound = cast("int", constant[0])

        def compare_constant(event: Event, errors: list[str]) -> Value:
            value = left(event, errors)
            return value is not RAISED and compare(value, bound)

        return Code(compare_constant, Type.BOOLEAN, fallible=True)
    right = cast("_IntOperand", _operand(node.right, Type.INTEGER)[0])

    def comparison(event: Event, errors: list[str]) -> Value:
        value = left(event, errors)
        other = right(event, errors)
        if value is RAISED or other is RAISED:
            return False
        return compare(value, other)

    return Code(comparison, Type.BOOLEAN, fallible=True)


def _arithmetic(node: Binary) -> Code:
    left = cast("_IntOperand", _operand(node.left, Type.INTEGER)[0])
    right = cast("_IntOperand", _operand(node.right, Type.INTEGER)[0])
    apply = _ARITHMETIC[node.op]

    def arithmetic(event: Event, errors: list[str]) -> Value:
        x = left(event, errors)
        y = right(event, errors)
        if x is RAISED or y is RAISED:
            return 0
        return apply(x, y, errors)

    return Code(arithmetic, Type.INTEGER, fallible=True)


def _checked(result: int, errors: list[str]) -> int:
    # The spec is silent on overflow; a result outside 32 bits is a math error, and its value
    # the zero value, as for division by zero (sections 3.1, 3.3).
    if INT_MIN <= result <= INT_MAX:
        return result
    errors.append(MATH)
    return 0


def _add(x: int, y: int, errors: list[str]) -> int:
    return _checked(x + y, errors)


def _subtract(x: int, y: int, errors: list[str]) -> int:
    return _checked(x - y, errors)


def _multiply(x: int, y: int, errors: list[str]) -> int:
    return _checked(x * y, errors)


def _divide(x: int, y: int, errors: list[str]) -> int:
    if y == 0:
        errors.append(MATH)
        return 0
    # Truncated division (3.4.2): Python's // floors, so divide the magnitudes.
    quotient = abs(x) // abs(y)
    return _checked(-quotient if (x < 0) != (y < 0) else quotient, errors)


def _modulo(x: int, y: int, errors: list[str]) -> int:
    if y == 0:
        errors.append(MATH)
        return 0
    # The remainder takes the sign of the dividend (3.4.2), unlike Python's %.
    remainder = abs(x) % abs(y)
    return -remainder if x < 0 else remainder


_ARITHMETIC: Final[dict[str, Callable[[int, int, list[str]], int]]] = {
    "+": _add,
    "-": _subtract,
    "*": _multiply,
    "/": _divide,
    "%": _modulo,
}


# LIKE and IN


def _like(node: Like) -> Code:
    matches = compile_like(node.pattern)
    negated = node.negated
    if isinstance(node.operand, Attribute) and node.operand.name not in _NOT_ATTRIBUTES:
        name = node.operand.name

        def attribute_like(event: Event, errors: list[str]) -> Value:
            value = event.get(name, MISSING)
            if type(value) is not str:
                converted = from_event(value)
                if converted is MISSING:
                    errors.append(MISSING_ATTRIBUTE)
                    return False
                value = to_str(converted, errors)
            return matches(value) is not negated

        return Code(attribute_like, Type.BOOLEAN, fallible=True, zero_when_raising=True)
    # Every value casts to String: only an operand that raised leaves LIKE without a value.
    typed, fallible = _operand(node.operand, Type.STRING)
    text = cast("_StrOperand", typed)

    def like(event: Event, errors: list[str]) -> Value:
        value = text(event, errors)
        return value is not RAISED and matches(value) is not negated

    return Code(like, Type.BOOLEAN, fallible=fallible)


def _in(node: In) -> Code:
    """``x IN (y1, ...)``: each element is cast to the type of ``x`` (sections 3.4.5, 3.7) and
    compared in order; the first equal element decides. An element that fails to cast raises a
    cast error and is compared as the zero value of that type (``0 IN ('a')`` is true); an
    element that raised makes the whole false."""
    left = _compile(node.operand).fn
    negated = node.negated
    if all(isinstance(item, Literal) for item in node.items):
        values = [item.value for item in node.items if isinstance(item, Literal)]
        if isinstance(node.operand, Attribute) and node.operand.name not in _NOT_ATTRIBUTES:
            in_set = _attribute_in_literals(node.operand.name, values, negated)
            return Code(in_set, Type.BOOLEAN, fallible=True)
        return Code(_in_literals(left, values, negated), Type.BOOLEAN, fallible=True)
    items = tuple(_compile(item).fn for item in node.items)

    def contained(event: Event, errors: list[str]) -> Value:
        count = len(errors)
        value = left(event, errors)
        if len(errors) != count:
            for item in items:
                item(event, errors)
            return False
        convert = IMPLICIT_OF_CLASS[type(value)]
        raised = False
        for item in items:
            before = len(errors)
            element = item(event, errors)
            if len(errors) != before:
                raised = True
                continue
            if convert(element, errors) == value:
                return not raised and not negated
        return not raised and negated

    return Code(contained, Type.BOOLEAN, fallible=True)


# An element of a literal set, cast to one type, and whether that cast failed.
_Element = tuple[Value, bool]


def _literal_sets(
    values: list[Value],
) -> tuple[dict[type, frozenset[Value]], dict[type, tuple[_Element, ...]]]:
    """A set of literals cast once per possible type of ``x``: a frozenset where every cast
    succeeds, else the elements in order with the failures marked."""
    sets: dict[type, frozenset[Value]] = {}
    ordered: dict[type, tuple[_Element, ...]] = {}
    for kind, convert in IMPLICIT_OF_CLASS.items():
        converted = tuple(_cast_once(convert, value) for value in values)
        if any(failed for _, failed in converted):
            ordered[kind] = converted
        else:
            sets[kind] = frozenset(element for element, _ in converted)
    return sets, ordered


def _scan(elements: tuple[_Element, ...], value: Value, negated: bool, errors: list[str]) -> bool:
    """IN over elements of which some failed to cast: each failure met raises a cast error,
    and is compared as its zero value."""
    for element, failed in elements:
        if failed:
            errors.append(CAST)
        if element == value:
            return not negated
    return negated


def _in_literals(left: Evaluator, values: list[Value], negated: bool) -> Evaluator:
    sets, ordered = _literal_sets(values)

    def contained(event: Event, errors: list[str]) -> Value:
        count = len(errors)
        value = left(event, errors)
        if len(errors) != count:
            return False
        members = sets.get(type(value))
        if members is not None:
            return (value in members) is not negated
        return _scan(ordered[type(value)], value, negated, errors)

    return contained


def _attribute_in_literals(name: str, values: list[Value], negated: bool) -> Evaluator:
    """``attribute IN ('a', 'b')``, the usual shape, in one closure."""
    sets, ordered = _literal_sets(values)
    strings = sets[str]  # casting to String never fails

    def contained(event: Event, errors: list[str]) -> Value:
        value = event.get(name, MISSING)
        if type(value) is str:
            return (value in strings) is not negated
        converted = from_event(value)
        if converted is MISSING:
            errors.append(MISSING_ATTRIBUTE)
            return False
        members = sets.get(type(converted))
        if members is not None:
            return (converted in members) is not negated
        return _scan(ordered[type(converted)], converted, negated, errors)

    return contained


def _cast_once(convert: Caster, value: Value) -> _Element:
    errors: list[str] = []
    converted = convert(value, errors)
    return converted, bool(errors)


# Functions


def _call(node: Call) -> Code:
    function = resolve(node.name, len(node.args))
    if function is None:

        def missing(event: Event, errors: list[str]) -> Value:
            errors.append(MISSING_FUNCTION)
            return False

        # 3.5: an invocation that cannot be dispatched is false.
        return Code(missing, Type.BOOLEAN, fallible=True, zero_when_raising=True)
    # Arguments follow the operators' rule: one that raised leaves the call at its zero value;
    # one that failed its implicit cast is passed as the zero value of the parameter's type.
    arguments = tuple(
        _operand(argument, function.param_type(index))[0]
        for index, argument in enumerate(node.args)
    )
    implementation = function.impl
    zero = ZERO[function.returns]
    if len(arguments) == 1:
        (only,) = arguments

        def call1(event: Event, errors: list[str]) -> Value:
            value = only(event, errors)
            if value is RAISED:
                return zero
            return implementation(errors, value)

        return Code(call1, function.returns, fallible=True)

    def call(event: Event, errors: list[str]) -> Value:
        values = [argument(event, errors) for argument in arguments]
        if any(value is RAISED for value in values):
            return zero
        return implementation(errors, *values)

    return Code(call, function.returns, fallible=True)
