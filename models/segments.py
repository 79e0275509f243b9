"""Declared segments: a YAML file of named conditions, loaded strictly, evaluated on every profile change.

    segments:
      category_binge:
        description: more than 5 product views in one category this session
        when: session_top_category_views > 5

A bad file is refused as a whole with ``file:line: reason`` (:class:`SegmentFileError`); the caller keeps serving the
version it has. Conditions use :mod:`models.expressions` over the variables the caller names as ``known``.
"""

from __future__ import annotations

import ast
import itertools
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from typing import Any

import yaml

from models import rulefile
from models.expressions import Expression, ExpressionError, VariableType, compile_expression

MAX_SEGMENTS = 1_000
#: The largest number a clock variable may be compared with: a billion days is still a millisecond time in 64 bits.
MAX_CLOCK_THRESHOLD = 1e9
_SEGMENT_KEYS = {"when", "description"}


class SegmentFileError(rulefile.RuleFileError):
    """The segment file is refused; ``str(error)`` starts with ``file:line:``."""


@dataclass(frozen=True)
class Segment:
    name: str
    condition: Expression
    description: str = ""


@dataclass(frozen=True)
class SegmentSet:
    """One loaded version of the segment file."""

    version: str
    segments: tuple[Segment, ...]
    #: Clock variables (see :data:`models.variables.CLOCK_VARIABLES`) -> the numbers conditions compare them with.
    clock_thresholds: Mapping[str, frozenset[float]] = field(default_factory=dict)

    def memberships(self, variables: Mapping[str, Any]) -> frozenset[str]:
        return frozenset(s.name for s in self.segments if s.condition.holds(variables))


def transitions(before: frozenset[str], after: frozenset[str]) -> tuple[list[str], list[str]]:
    """Segments entered and exited between two membership sets, sorted by name."""
    return sorted(after - before), sorted(before - after)


def load_segments(
    text: str,
    *,
    source: str,
    known: Mapping[str, VariableType],
    clock: Collection[str] = (),
) -> SegmentSet:
    """Parse and compile a segment file, or raise :class:`SegmentFileError` naming the line at fault.

    ``known``: the variables conditions may name, with their types (:data:`models.variables.VARIABLES`), so that a
    comparison with the other type (``revenue >= '500'``) is refused.

    ``clock``: the variables that change with time alone; a condition may only compare them directly with a number
    (see :func:`clock_comparisons`), and those numbers are collected in :attr:`SegmentSet.clock_thresholds` so the
    caller can re-evaluate memberships when one is crossed.
    """
    top = _pairs(rulefile.compose(text, source, SegmentFileError), source)
    unknown = set(top) - {"segments"}
    if unknown:
        key = sorted(unknown)[0]
        raise SegmentFileError(f"{source}:{_line(top[key][0])}: unknown top-level key {key!r}")
    if "segments" not in top:
        raise SegmentFileError(f"{source}:1: missing 'segments'")
    body = top["segments"][1]
    if not isinstance(body, yaml.MappingNode):
        raise SegmentFileError(f"{source}:{_line(body)}: 'segments' must map names to segments")
    entries = _pairs(body, source)
    if len(entries) > MAX_SEGMENTS:
        raise SegmentFileError(f"{source}:{_line(body)}: more than {MAX_SEGMENTS} segments")
    segments: list[Segment] = []
    thresholds: dict[str, set[float]] = {}
    for name, (key, value) in entries.items():
        segment, comparisons = _segment(name, key, value, source, known, clock)
        segments.append(segment)
        for variable, number in comparisons:
            thresholds.setdefault(variable, set()).add(number)
    frozen = {variable: frozenset(numbers) for variable, numbers in thresholds.items()}
    return SegmentSet(rulefile.version(text), tuple(segments), frozen)


def clock_comparisons(condition: Expression, clock: Collection[str]) -> list[tuple[str, float]]:
    """``(variable, number)`` for every comparison of a clock variable with a number in ``condition``.

    Raises :class:`ExpressionError` when a clock variable is used any other way (``x / 60 >= 2``, ``x >= 2 * 60``,
    ``x > views``) or compared with a number beyond :data:`MAX_CLOCK_THRESHOLD`: the moment such a condition flips
    is not known in advance, so it would change only at the user's next event.
    """
    tree = ast.parse(condition.source, mode="eval")
    found: list[tuple[str, float]] = []
    compared: set[ast.AST] = set()
    for node in ast.walk(tree):
        if not isinstance(node, ast.Compare):
            continue
        operands = [node.left, *node.comparators]
        for left, right in itertools.pairwise(operands):
            for name, number in ((left, right), (right, left)):
                value = _number(number)
                if isinstance(name, ast.Name) and name.id in clock and value is not None:
                    if abs(value) > MAX_CLOCK_THRESHOLD:
                        raise ExpressionError(f"{name.id} is compared with {value:g}; at most {MAX_CLOCK_THRESHOLD:g}")
                    found.append((name.id, value))
                    compared.add(name)
                elif isinstance(name, ast.Name) and _is_null(number):
                    compared.add(name)  # 'x != null' (x has a value) changes with events, not with the clock
    for node in ast.walk(tree):
        if isinstance(node, ast.Name) and node.id in clock and node not in compared:
            raise ExpressionError(
                f"{node.id} changes with the clock: compare it directly with a number, as in '{node.id} >= 120'"
            )
    return found


def _is_null(node: ast.AST) -> bool:
    if isinstance(node, ast.Constant):
        return node.value is None
    return isinstance(node, ast.Name) and node.id in ("null", "None")


def _number(node: ast.AST) -> float | None:
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub):
        number = _number(node.operand)
        return None if number is None else -number
    if isinstance(node, ast.Constant) and isinstance(node.value, (int, float)) and not isinstance(node.value, bool):
        return float(node.value)
    return None


def _segment(
    name: str, key: yaml.Node, node: yaml.Node, source: str, known: Mapping[str, VariableType], clock: Collection[str]
) -> tuple[Segment, list[tuple[str, float]]]:
    where = f"{source}:{_line(key)}: segment {name!r}"
    if not name.replace("_", "").replace("-", "").isalnum():
        raise SegmentFileError(f"{where}: a name may hold only letters, digits, '_' and '-'")
    if not isinstance(node, yaml.MappingNode):
        raise SegmentFileError(f"{where}: expected a mapping with 'when'")
    fields = _pairs(node, source)
    unknown = set(fields) - _SEGMENT_KEYS
    if unknown:
        field = sorted(unknown)[0]
        raise SegmentFileError(f"{source}:{_line(fields[field][0])}: segment {name!r}: unknown key {field!r}")
    if "when" not in fields:
        raise SegmentFileError(f"{where}: missing 'when'")
    when = fields["when"][1]
    if not isinstance(when, yaml.ScalarNode) or when.tag != "tag:yaml.org,2002:str":
        raise SegmentFileError(f"{source}:{_line(when)}: segment {name!r}: 'when' must be a string")
    try:
        condition = compile_expression(when.value, known=known)
        comparisons = clock_comparisons(condition, clock)
    except ExpressionError as error:
        raise SegmentFileError(f"{source}:{_line(when)}: segment {name!r}: {error}") from None
    description = fields["description"][1] if "description" in fields else None
    if description is not None and not isinstance(description, yaml.ScalarNode):
        # A list or mapping would be kept as the text of its nodes, which aliases can make exponentially long.
        raise SegmentFileError(f"{source}:{_line(description)}: segment {name!r}: 'description' must be text")
    return Segment(name, condition, description.value if description is not None else ""), comparisons


def _pairs(node: yaml.MappingNode, source: str) -> dict[str, tuple[yaml.Node, yaml.Node]]:
    return rulefile.pairs(node, source, SegmentFileError)


_line = rulefile.line
