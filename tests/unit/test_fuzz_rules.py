"""Fuzzing the rule files and the expression language: a bad file is refused with ``file:line: reason``, never a crash.

Inputs: YAML-ish text built from the files' own vocabulary (keys, anchors and aliases, flow and block collections,
tags, tabs, hostile scalars), raw text, and mutations of the shipped ``segments.yaml``, ``triggers.yaml`` and
``content.yaml`` (a value replaced by any YAML value, a key dropped, a line deleted, duplicated or replaced). The
property: the loader returns a rule set that works (conditions evaluate, templates render, content blocks encode as
JSON), or raises its own error starting with ``<file>:<line>: `` and a reason. The expression compiler gets
arbitrary Python-like text: it compiles only the whitelisted node types, raises nothing but ``ExpressionError``,
and evaluation never raises nor calls anything it is handed.
"""

from __future__ import annotations

import ast
import re
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
import yaml
from hypothesis import example, given, settings
from hypothesis import strategies as st

from models.content import ContentFileError, load_content
from models.expressions import ExpressionError, compile_expression
from models.rulefile import RuleFileError
from models.segments import SegmentFileError, load_segments
from models.triggers import TriggerFileError, load_triggers
from models.variables import CLOCK_VARIABLES, VARIABLES

EXAMPLES = settings().max_examples  # the profile tests/conftest.py loaded
ROOT = Path(__file__).resolve().parents[2]
SHIPPED = {name: (ROOT / f"{name}.yaml").read_text(encoding="utf-8") for name in ("segments", "triggers", "content")}
SEGMENT_NAMES = [s.name for s in load_segments(SHIPPED["segments"], source="s", known=VARIABLES).segments]


def load_segments_file(text: str) -> Any:
    return load_segments(text, source="segments.yaml", known=VARIABLES, clock=CLOCK_VARIABLES)


def load_triggers_file(text: str) -> Any:
    return load_triggers(text, source="triggers.yaml", known=VARIABLES, segments=SEGMENT_NAMES)


def load_content_file(text: str) -> Any:
    return load_content(text, source="content.yaml", segments=SEGMENT_NAMES)


LOADERS: dict[str, tuple[Callable[[str], Any], type[RuleFileError]]] = {
    "segments": (load_segments_file, SegmentFileError),
    "triggers": (load_triggers_file, TriggerFileError),
    "content": (load_content_file, ContentFileError),
}

SAMPLE_VALUES = {name: value for name, value in zip(VARIABLES, [3, 7, 0.5, "shoes", 2, 250.0] * 10, strict=False)}


def check_loads_or_refuses(kind: str, text: str) -> None:
    """The property every rule file load must have."""
    load, error_type = LOADERS[kind]
    source = f"{kind}.yaml"
    try:
        loaded = load(text)
    except error_type as error:
        match = re.match(rf"{re.escape(source)}:(\d+): (.+)", str(error), re.DOTALL)
        assert match, f"no file:line in {str(error)!r:.200}"
        assert 1 <= int(match[1]) <= text.count("\n") + 2, f"line {match[1]} is outside the file"
        assert match[2].strip()
        return
    assert loaded.version
    if kind == "segments":
        assert all(len(segment.description) <= len(text) for segment in loaded.segments), "a description grew"
        loaded.memberships(SAMPLE_VALUES)
        loaded.memberships({})
    elif kind == "triggers":
        for trigger in loaded.triggers:
            trigger.title.render(SAMPLE_VALUES)
            trigger.body.render({})
            if trigger.condition is not None:
                trigger.condition.holds(SAMPLE_VALUES)
    else:
        orjson.dumps(loaded.blocks_for(SEGMENT_NAMES))  # the decision API sends these as JSON


KEYS = [
    "segments",
    "triggers",
    "rules",
    "default",
    "cap_per_user_per_day",
    "when",
    "if",
    "description",
    "message",
    "title",
    "body",
    "consent",
    "priority",
    "cooldown",
    "holdout",
    "inactive",
    "event",
    "entered",
    "after",
    "without",
    "within",
    "segment",
    "blocks",
    "banner",
    "recommendation",
    "cta",
    *SEGMENT_NAMES,
    "x",
    "é",
    "<<",
    "? complex",
]
SCALARS = [
    "views > 5",
    "cart_items > 0 and minutes_since_cart_change >= 120",
    "views is 1",
    "__import__('os')",
    "15m",
    "0s",
    "1" * 400 + "s",
    "2h",
    "31d",
    "marketing",
    "{cart_value}",
    "{0}",
    "{x!r}",
    "{",
    "-1",
    "101",
    "0x1f",
    "1_000",
    "9" * 5000,
    ".nan",
    ".inf",
    "1e999",
    "~",
    "null",
    "yes",
    "2024-01-01",
    "!!binary aGk=",
    "!!python/object:os.system",
    "&a [x, y]",
    "*a",
    "*undefined",
    "&b {k: v}",
    "'quoted'",
    '"\\x00"',
    '"\\ud800"',
    "\u202eevil",
    "[1, [2, [3]]]",
    "{a: 1, a: 2}",
    "|\n  block",
    "",
]
INDENTS = ["", "  ", "    ", "      ", "\t", "- ", "  - "]
LINE = st.builds(
    lambda indent, key, sep, value: f"{indent}{key}{sep}{value}",
    st.sampled_from(INDENTS),
    st.sampled_from(KEYS),
    st.sampled_from([": ", ":", " ", ": &a ", ": *a "]),
    st.sampled_from(SCALARS) | st.text(max_size=12),
)
YAMLISH = st.one_of(
    st.lists(LINE, max_size=14).map("\n".join),
    st.text(max_size=200),
    st.lists(
        st.sampled_from(["[", "{", "]", "}", ",", ":", "- ", "\n", "&a ", "*a", "a", "? ", "!!str "]), max_size=60
    ).map("".join),
)


@settings(max_examples=EXAMPLES * 2)
@given(kind=st.sampled_from(sorted(LOADERS)), text=YAMLISH)
@example(kind="segments", text="[" * 5_000)  # was RecursionError from PyYAML's composer
@example(kind="content", text="{a: " * 3_000)
@example(kind="triggers", text="triggers: \ud800")  # was UnicodeEncodeError
@example(kind="segments", text="segments:\n  s:\n    when: views is 1\n")  # was KeyError from the expression compiler
@example(kind="triggers", text=SHIPPED["triggers"].replace("cooldown: 24h", "cooldown: " + "1" * 400 + "h"))
# (that one was OverflowError: a duration of 400 digits is an infinite float)
def test_yamlish_text_loads_or_is_refused_with_file_and_line(kind: str, text: str, fuzz_cases: Counter[str]) -> None:
    fuzz_cases["rules"] += 1
    check_loads_or_refuses(kind, text)


JSONISH = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20) | st.sampled_from(SCALARS),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8) | st.sampled_from(KEYS), inner, max_size=3)
    ),
    max_leaves=8,
)


@st.composite
def mutated_structure(draw: st.DrawFn, kind: str) -> str:
    """The shipped file with one value somewhere in it replaced, or one key dropped, then written back as YAML."""
    data = yaml.safe_load(SHIPPED[kind])
    node = data
    path: list[Any] = []
    while isinstance(node, (dict, list)) and node and draw(st.integers(0, 3)) > 0:
        key = draw(st.sampled_from(sorted(node) if isinstance(node, dict) else list(range(len(node)))))
        path.append(key)
        node = node[key]
    if not path:
        return yaml.safe_dump(draw(JSONISH), allow_unicode=True)
    parent = data
    for key in path[:-1]:
        parent = parent[key]
    if draw(st.booleans()) and isinstance(parent, dict):
        del parent[path[-1]]
    else:
        parent[path[-1]] = draw(JSONISH)
    return yaml.safe_dump(data, allow_unicode=True, sort_keys=False)


@st.composite
def mutated_text(draw: st.DrawFn, kind: str) -> str:
    """The shipped file with one line deleted, duplicated or replaced, or cut short."""
    lines = SHIPPED[kind].split("\n")
    at = draw(st.integers(0, len(lines) - 1))
    how = draw(st.sampled_from(["delete", "duplicate", "replace", "cut", "append"]))
    if how == "delete":
        del lines[at]
    elif how == "duplicate":
        lines.insert(at, lines[at])
    elif how == "replace":
        indent = lines[at][: len(lines[at]) - len(lines[at].lstrip())]
        lines[at] = indent + draw(LINE | st.text(max_size=30))
    elif how == "cut":
        return SHIPPED[kind][: draw(st.integers(0, len(SHIPPED[kind])))]
    else:
        lines.append(draw(LINE))
    return "\n".join(lines)


@settings(max_examples=EXAMPLES * 2)
@given(data=st.data(), kind=st.sampled_from(sorted(LOADERS)))
def test_mutated_shipped_files_load_or_are_refused_with_file_and_line(
    data: st.DataObject, kind: str, fuzz_cases: Counter[str]
) -> None:
    fuzz_cases["rules"] += 1
    text = data.draw(mutated_structure(kind) | mutated_text(kind))
    check_loads_or_refuses(kind, text)


def test_the_shipped_files_load() -> None:
    for kind, text in SHIPPED.items():
        LOADERS[kind][0](text)


@settings(max_examples=10)
@given(levels=st.integers(1, 5))
@example(levels=4)  # the description was kept as the text of 9**4 nested nodes: 3.4 MB from a 300-byte file
def test_an_alias_bomb_does_not_expand(levels: int, fuzz_cases: Counter[str]) -> None:
    """Nine aliases per level: 9**levels copies of one list if anything expands them."""
    fuzz_cases["rules"] += 1
    text = "segments:\n  s0:\n    when: views > 1\n    description: &l0 [x, x, x, x, x, x, x, x, x]\n"
    for level in range(1, levels + 1):
        aliases = ", ".join([f"*l{level - 1}"] * 9)
        text += f"  s{level}:\n    when: views > 1\n    description: &l{level} [{aliases}]\n"
    check_loads_or_refuses("segments", text)


# -- expressions ------------------------------------------------------------------------------------------------

ALLOWED_NODES = (
    ast.Expression,
    ast.BoolOp,
    ast.And,
    ast.Or,
    ast.UnaryOp,
    ast.Not,
    ast.USub,
    ast.UAdd,
    ast.BinOp,
    ast.Add,
    ast.Sub,
    ast.Mult,
    ast.Div,
    ast.Mod,
    ast.Compare,
    ast.Eq,
    ast.NotEq,
    ast.Lt,
    ast.LtE,
    ast.Gt,
    ast.GtE,
    ast.In,
    ast.NotIn,
    ast.Constant,
    ast.List,
    ast.Tuple,
    ast.Name,
    ast.Attribute,
    ast.Load,
)
ATOMS = st.sampled_from(
    [
        "views",
        "cart_value",
        "event",
        "boom",
        "x.y",
        "x.__class__",
        "_secret",
        "__import__",
        "open",
        "true",
        "None",
        "1",
        "0",
        "-0.0",
        "1e999",
        "9" * 300,
        "0x1f",
        "1_000",
        "1j",
        "'a'",
        "b'x'",
        "f'{boom}'",
        "...",
        "'\\x00'",
        "'é\u202e'",
    ]
)
BINARY = [" + ", " - ", " * ", " / ", " % ", " ** ", " // ", " << ", " & ", " | ", " @ ", " and ", " or "]
COMPARE = [" == ", " != ", " < ", " >= ", " in ", " not in ", " is ", " is not "]


def _compound(inner: st.SearchStrategy[str]) -> st.SearchStrategy[str]:
    pair = st.tuples(inner, inner)
    return st.one_of(
        st.builds(lambda p, op: f"({p[0]}{op}{p[1]})", pair, st.sampled_from(BINARY + COMPARE)),
        st.builds(lambda a, op: f"{op}{a}", inner, st.sampled_from(["not ", "-", "+", "~", "await ", "*"])),
        st.builds(lambda p: f"{p[0]}({p[1]})", pair),
        st.builds(lambda p: f"{p[0]}[{p[1]}]", pair),
        st.builds(lambda a: f"{a}.real", inner),
        st.builds(lambda p: f"[{p[0]}, {p[1]}]", pair),
        st.builds(lambda p: f"({p[0]}, {p[1]})", pair),
        st.builds(lambda p: f"{{{p[0]}: {p[1]}}}", pair),
        st.builds(lambda a: f"lambda: {a}", inner),
        st.builds(lambda p: f"[{p[0]} for boom in {p[1]}]", pair),
        st.builds(lambda a: f"(boom := {a})", inner),
        st.builds(lambda p: f"{p[0]} if {p[1]} else 0", pair),
    )


EXPRESSIONS = st.one_of(
    st.recursive(ATOMS, _compound, max_leaves=12),
    st.text(max_size=40),
    st.builds(lambda n, atom: "(" * n + atom + ")" * n, st.integers(0, 120), ATOMS),
    st.builds(lambda n, atom: "-" * n + atom, st.integers(0, 120), ATOMS),
)


class Canary:
    """A value that must never be called, nor have an attribute read, by an evaluation."""

    calls = 0

    def __call__(self, *args: Any, **kwargs: Any) -> None:
        Canary.calls += 1

    def __getattr__(self, name: str) -> Any:
        Canary.calls += 1
        raise AttributeError(name)


@settings(max_examples=EXAMPLES * 4)
@given(source=EXPRESSIONS, restrict=st.booleans(), values=st.lists(st.integers() | st.floats() | st.text(max_size=5)))
@example(source="views is 1", restrict=True, values=[])  # was KeyError: <class 'ast.Is'>
@example(source="'\ud800' == event", restrict=False, values=[])  # was UnicodeEncodeError from the parser
def test_the_expression_compiler_allows_only_its_whitelist(
    source: str, restrict: bool, values: list[Any], fuzz_cases: Counter[str]
) -> None:
    fuzz_cases["expressions"] += 1
    try:
        expression = compile_expression(source, known=VARIABLES if restrict else None)
    except ExpressionError as error:
        assert str(error).strip()
        return
    tree = ast.parse(source.strip(), mode="eval")
    outside = {type(node).__name__ for node in ast.walk(tree) if not isinstance(node, ALLOWED_NODES)}
    assert not outside, f"compiled {source!r} despite {outside}"
    if restrict:
        assert expression.names <= set(VARIABLES)
    assert all(not part.startswith("_") for name in expression.names for part in name.split("."))
    canary = Canary()
    variables: dict[str, Any] = {"boom": canary, "x.y": canary, "open": canary, **SAMPLE_VALUES}
    for name, value in zip(sorted(expression.names), values, strict=False):
        variables[name] = value
    calls = Canary.calls
    expression.evaluate(variables)
    expression.holds({})
    assert Canary.calls == calls, "evaluation touched a value beyond comparing it"
