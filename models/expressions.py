"""A small, safe expression language for segment and trigger conditions.

Why our own: conditions are tiny (comparisons, ``and``/``or``/``not``, arithmetic, ``in`` a list) and run on every
event, so they are compiled once into plain closures (about a microsecond to evaluate). Python's own parser reads
the text (``ast.parse``, mode ``eval``); only the node types listed in :data:`_ALLOWED` survive, so there is no call,
no attribute access, no subscript, no comprehension, no lambda and no ``**``. Dotted names such as ``cart.value``
are one variable name, looked up in the mapping the caller passes, never ``getattr``.

    >>> known = {"views": "number", "category": "text"}
    >>> condition = compile_expression("views > 5 and category in ['shoes', 'bags']", known=known)
    >>> condition.evaluate({"views": 7, "category": "shoes"})
    True

Evaluation never raises: a missing variable, a type mismatch or a division by zero makes the whole condition false.
So a condition that could never hold is refused when it is compiled: comparing a number with text
(``revenue >= '500'``, with the variables' types given in ``known``), arithmetic on text, ``in`` anything but a
``[list]``, and ``null`` anywhere but ``x != null`` ("x has a value"; ``x == null`` would be false whether or not x
has one).
"""

from __future__ import annotations

import ast
import operator
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

MAX_LENGTH = 1_000
MAX_DEPTH = 32
MAX_LIST = 100

Value = Any
#: What a rule variable holds. ``True`` and ``False`` count as numbers, as they do in Python (``True == 1``).
VariableType = Literal["number", "text"]
Node = Callable[[Mapping[str, Value]], Value]


class ExpressionError(ValueError):
    """The expression is refused; ``str(error)`` says why."""


class _Missing(Exception):
    """Raised inside evaluation when a variable is absent; turns the condition false."""


@dataclass(frozen=True)
class Expression:
    """A compiled condition. :meth:`evaluate` returns its value; :meth:`holds` whether it is truthy."""

    #: The text as parsed: without the whitespace around it, so ``ast.parse(source, mode="eval")`` reads it again.
    source: str
    names: frozenset[str]
    _root: Node

    def evaluate(self, variables: Mapping[str, Value]) -> Value:
        try:
            return self._root(variables)
        except (_Missing, TypeError, ZeroDivisionError, ValueError, OverflowError):
            return False

    def holds(self, variables: Mapping[str, Value]) -> bool:
        return bool(self.evaluate(variables))


def compile_expression(source: str, *, known: Mapping[str, VariableType] | None = None) -> Expression:
    """Parse and compile ``source``; refuse anything outside the language, names not in ``known``, and conditions
    that could never hold, such as comparing a variable with a value of another type than the one ``known`` gives it.

    Without ``known`` any name is accepted, and only constants have a type to check.
    """
    if not isinstance(source, str):
        raise ExpressionError(f"an expression must be a string, not {type(source).__name__}")
    source = source.strip()
    if not source:
        raise ExpressionError("the expression is empty")
    if len(source) > MAX_LENGTH:
        raise ExpressionError(f"the expression is {len(source)} characters long; the limit is {MAX_LENGTH}")
    try:
        tree = ast.parse(source, mode="eval")
    except SyntaxError as error:
        where = f"column {error.offset}" if error.offset else "the end"  # Python says 0 when input ran out
        raise ExpressionError(f"syntax error at {where}: {error.msg}") from None
    except (RecursionError, MemoryError):
        raise ExpressionError(f"the expression is nested more than {MAX_DEPTH} levels deep") from None
    except UnicodeEncodeError:  # the parser reads UTF-8, which has no form for a lone surrogate
        raise ExpressionError("the expression is not valid text (a lone surrogate)") from None
    names: set[str] = set()
    root = _Compiler(names, known).compile(tree.body, depth=0)
    _type_of(tree.body, known or {})
    return Expression(source, frozenset(names), root)


_COMPARE: dict[type[ast.cmpop], Callable[[Value, Value], bool]] = {
    ast.Eq: operator.eq,
    ast.NotEq: operator.ne,
    ast.Lt: operator.lt,
    ast.LtE: operator.le,
    ast.Gt: operator.gt,
    ast.GtE: operator.ge,
    ast.In: lambda a, b: a in b,
    ast.NotIn: lambda a, b: a not in b,
}
_ARITHMETIC: dict[type[ast.operator], Callable[[Value, Value], Value]] = {
    ast.Add: operator.add,
    ast.Sub: operator.sub,
    ast.Mult: operator.mul,
    ast.Div: operator.truediv,
    ast.Mod: operator.mod,
}
_ALLOWED = "comparisons, and/or/not, + - * / %, numbers, strings, true/false, names and [lists]"
_CONSTANTS = {"true": True, "false": False, "True": True, "False": False, "null": None, "None": None}


class _Compiler:
    def __init__(self, names: set[str], known: Mapping[str, VariableType] | None) -> None:
        self.names = names
        self.known = known

    def compile(self, node: ast.AST, depth: int) -> Node:
        if depth > MAX_DEPTH:
            raise ExpressionError(f"the expression is nested more than {MAX_DEPTH} levels deep")
        method = getattr(self, f"_{type(node).__name__}", None)
        if method is None:
            raise ExpressionError(f"{_describe(node)} is not allowed; use {_ALLOWED}")
        return method(node, depth + 1)  # type: ignore[no-any-return]

    def _BoolOp(self, node: ast.BoolOp, depth: int) -> Node:
        parts = [self.compile(value, depth) for value in node.values]
        if isinstance(node.op, ast.And):
            return lambda v: all(part(v) for part in parts)
        return lambda v: any(part(v) for part in parts)

    def _UnaryOp(self, node: ast.UnaryOp, depth: int) -> Node:
        operand = self.compile(node.operand, depth)
        if isinstance(node.op, ast.Not):
            return lambda v: not operand(v)
        if isinstance(node.op, ast.USub):
            return lambda v: -operand(v)
        if isinstance(node.op, ast.UAdd):
            return operand
        raise ExpressionError(f"{_describe(node)} is not allowed; use {_ALLOWED}")

    def _BinOp(self, node: ast.BinOp, depth: int) -> Node:
        apply = _ARITHMETIC.get(type(node.op))
        if apply is None:
            raise ExpressionError(f"operator {type(node.op).__name__} is not allowed; use + - * / %")
        left, right = self.compile(node.left, depth), self.compile(node.right, depth)

        def arithmetic(v: Mapping[str, Value]) -> Value:
            a, b = left(v), right(v)
            # Numbers only: 'x' * 10**12 would allocate a terabyte.
            if not (isinstance(a, (int, float)) and isinstance(b, (int, float))):
                raise TypeError("arithmetic needs numbers")
            return apply(a, b)

        return arithmetic

    def _Compare(self, node: ast.Compare, depth: int) -> Node:
        left = self.compile(node.left, depth)
        pairs = zip(node.ops, node.comparators, strict=True)
        steps = [(self._comparison(op), self.compile(right, depth)) for op, right in pairs]

        def compare(v: Mapping[str, Value]) -> bool:
            current = left(v)
            for check, right in steps:
                following = right(v)
                if not check(current, following):
                    return False
                current = following
            return True

        return compare

    def _comparison(self, op: ast.cmpop) -> Callable[[Value, Value], bool]:
        check = _COMPARE.get(type(op))
        if check is None:  # is, is not: identity means nothing to a rule author
            raise ExpressionError(f"operator {type(op).__name__} is not allowed; use == != < <= > >= in, not in")
        return check

    def _Constant(self, node: ast.Constant, depth: int) -> Node:
        value = node.value
        if value is not None and not isinstance(value, (int, float, str, bool)):
            raise ExpressionError(f"constant {value!r:.40} is not allowed")
        if isinstance(value, (int, float)) and not abs(value) <= sys.float_info.max:
            # 1e999 reads as infinity, which no clock reaches; a 400-digit integer has no float form to compare.
            where = f"the number at column {node.col_offset + 1}"
            raise ExpressionError(f"{where} is out of range: numbers are finite and at most {sys.float_info.max:.3g}")
        return lambda v: value

    def _List(self, node: ast.List, depth: int) -> Node:
        if len(node.elts) > MAX_LIST:
            raise ExpressionError(f"a list may hold at most {MAX_LIST} items")
        items = [self.compile(item, depth) for item in node.elts]
        if all(isinstance(item, ast.Constant) for item in node.elts):
            frozen = frozenset(item(_NO_VARIABLES) for item in items)
            return lambda v: frozen
        return lambda v: [item(v) for item in items]

    _Tuple = _List

    def _Name(self, node: ast.Name, depth: int) -> Node:
        return self._variable(node.id)

    def _Attribute(self, node: ast.Attribute, depth: int) -> Node:
        return self._variable(_dotted(node))

    def _variable(self, name: str) -> Node:
        if name in _CONSTANTS:
            constant = _CONSTANTS[name]
            return lambda v: constant
        if any(part.startswith("_") for part in name.split(".")):
            raise ExpressionError(f"name {name!r} is not allowed: names may not start with '_'")
        if self.known is not None and name not in self.known:
            raise ExpressionError(f"unknown name {name!r}")
        self.names.add(name)

        def lookup(v: Mapping[str, Value]) -> Value:
            try:
                return v[name]
            except KeyError:
                raise _Missing(name) from None

        return lookup


_NO_VARIABLES: Mapping[str, Value] = {}

# Static types, checked once at compile time: a variable's VariableType, or "null", "list", or None (not known until
# evaluation: a name compiled without ``known``).
_Type = Literal["number", "text", "null", "list"] | None


def _type_of(node: ast.AST, types: Mapping[str, VariableType]) -> _Type:
    """The type ``node`` evaluates to; raises :class:`ExpressionError` where it could never hold."""
    if isinstance(node, ast.Constant):
        return _constant_type(node.value)
    if isinstance(node, (ast.Name, ast.Attribute)):
        name = _dotted(node)
        return _constant_type(_CONSTANTS[name]) if name in _CONSTANTS else types.get(name)
    if isinstance(node, (ast.List, ast.Tuple)):
        for item in node.elts:
            _type_of(item, types)
        return "list"
    if isinstance(node, ast.BoolOp):
        for value in node.values:
            _type_of(value, types)
        return "number"  # evaluated with all() and any(): True or False
    if isinstance(node, (ast.BinOp, ast.UnaryOp)):
        operands = [node.left, node.right] if isinstance(node, ast.BinOp) else [node.operand]
        for operand in operands:
            kind = _type_of(operand, types)
            if kind not in (None, "number") and not isinstance(node.op, ast.Not):
                raise ExpressionError(f"arithmetic needs numbers, but {_show(operand)} is {_A[kind]}")
        return "number"
    if isinstance(node, ast.Compare):
        operands = [node.left, *node.comparators]
        kinds = [_type_of(operand, types) for operand in operands]
        for index, op in enumerate(node.ops):
            left, right = operands[index], operands[index + 1]
            if not isinstance(op, (ast.In, ast.NotIn)):
                _check_pair(op, left, kinds[index], right, kinds[index + 1])
            elif not isinstance(right, (ast.List, ast.Tuple)):
                symbol = _SYMBOLS[type(op)]
                raise ExpressionError(
                    f"'{symbol}' needs a list on its right, such as '{_show(left)} {symbol} [...]', not {_show(right)}"
                )
            else:
                for item in right.elts:
                    _check_pair(op, left, kinds[index], item, _type_of(item, types))
        return "number"
    return None  # the compiler refused every other node before this runs


def _check_pair(op: ast.cmpop, left: ast.AST, left_type: _Type, right: ast.AST, right_type: _Type) -> None:
    """Refuse comparing ``left`` with ``right`` (or looking for ``left`` in a list holding ``right``) if never true."""
    symbol = _SYMBOLS[type(op)]
    for side, kind in ((left, left_type), (right, right_type)):
        if kind == "list":
            raise ExpressionError(f"{_show(side)} is a list: a list may only follow 'in' or 'not in'")
    if "null" in (left_type, right_type):
        other = right if left_type == "null" else left
        if left_type == right_type or not isinstance(op, (ast.Eq, ast.NotEq)):
            raise ExpressionError("null may only be compared with '!=', as in 'intent != null' (intent has a value)")
        if isinstance(op, ast.Eq):
            raise ExpressionError(
                f"'{_show(other)} == null' is never true: a condition naming a variable without a value is false"
                f" ('{_show(other)} != null' holds when it has one)"
            )
        return
    if left_type is not None and right_type is not None and left_type != right_type:
        if isinstance(op, (ast.In, ast.NotIn)):
            raise ExpressionError(
                f"{_show(left)} is {_A[left_type]} but the list after '{symbol}' holds {_show(right)},"
                f" {_A[right_type]}: its items must be {_PLURAL[left_type]} too"
            )
        raise ExpressionError(
            f"{_show(left)} is {_A[left_type]} but {_show(right)} is {_A[right_type]}:"
            f" '{symbol}' compares numbers with numbers and text with text"
        )


def _constant_type(value: Value) -> _Type:
    if value is None:
        return "null"
    return "text" if isinstance(value, str) else "number"


def _show(node: ast.AST) -> str:
    return f"{ast.unparse(node):.60}"


_PLURAL = {"number": "numbers", "text": "text"}
_A = {"number": "a number", "text": "text", "null": "null (no value)", "list": "a list"}
_SYMBOLS: dict[type[ast.cmpop], str] = {
    ast.Eq: "==",
    ast.NotEq: "!=",
    ast.Lt: "<",
    ast.LtE: "<=",
    ast.Gt: ">",
    ast.GtE: ">=",
    ast.In: "in",
    ast.NotIn: "not in",
}


def _dotted(node: ast.AST) -> str:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        return f"{_dotted(node.value)}.{node.attr}"
    raise ExpressionError(f"{_describe(node)} is not allowed in a dotted name")


def _describe(node: ast.AST) -> str:
    kinds = {
        "Call": "a function call",
        "Subscript": "indexing",
        "Lambda": "a lambda",
        "ListComp": "a comprehension",
        "GeneratorExp": "a comprehension",
        "DictComp": "a comprehension",
        "SetComp": "a comprehension",
        "Dict": "a dict",
        "Set": "a set",
        "IfExp": "a conditional expression",
        "NamedExpr": "an assignment",
        "Await": "await",
        "Starred": "unpacking",
        "JoinedStr": "an f-string",
    }
    return kinds.get(type(node).__name__, type(node).__name__)
