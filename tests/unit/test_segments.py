"""The expression language and the segment file: what users write works, what attackers write is refused."""

from __future__ import annotations

import pytest

from models.expressions import MAX_DEPTH, ExpressionError, compile_expression
from models.segments import SegmentFileError, load_segments, transitions

KNOWN = {"views", "category", "cart_value", "orders", "session_top_category_views", "cart.value"}


def refused(source: object, known: set[str] | None = None) -> str:
    with pytest.raises(ExpressionError) as error:
        compile_expression(source, known=known)  # type: ignore[arg-type]
    return str(error.value)


def test_conditions_users_write_evaluate_as_expected() -> None:
    condition = compile_expression("views > 5 and category in ['shoes', 'bags'] or orders >= 3", known=KNOWN)
    assert condition.holds({"views": 6, "category": "shoes", "orders": 0})
    assert not condition.holds({"views": 6, "category": "tools", "orders": 0})
    assert condition.holds({"views": 0, "category": "tools", "orders": 3})
    assert condition.names == {"views", "category", "orders"}
    assert compile_expression("cart.value * 2 >= 100", known=KNOWN).holds({"cart.value": 50})
    assert compile_expression("1 < views <= 3", known=KNOWN).holds({"views": 3})
    assert compile_expression("not (orders == 0)", known=KNOWN).holds({"orders": 1})
    assert compile_expression("category != null", known=KNOWN).holds({"category": "x"})


def test_evaluation_never_raises() -> None:
    condition = compile_expression("cart_value / orders > 10 and views > 1", known=KNOWN)
    assert condition.holds({"cart_value": 100, "orders": 2, "views": 2})
    assert not condition.holds({"cart_value": 100, "orders": 0, "views": 2})  # division by zero
    assert not condition.holds({"cart_value": "a lot", "orders": 2, "views": 2})  # wrong type
    assert not condition.holds({"views": 2})  # missing variables
    assert not compile_expression("category * 999999999999 == 1", known=KNOWN).holds({"category": "x"})


@pytest.mark.parametrize(
    ("source", "reason"),
    [
        ('__import__("os").system("id")', "a function call is not allowed"),
        ("views.__class__", "names may not start with '_'"),
        ("_secret > 1", "names may not start with '_'"),
        ("(1).real", "not allowed in a dotted name"),
        ("views[0]", "indexing is not allowed"),
        ("2 ** 99999999", "operator Pow is not allowed"),
        ("lambda: 1", "a lambda is not allowed"),
        ("[x for x in views]", "a comprehension is not allowed"),
        ("views if orders else 0", "a conditional expression is not allowed"),
        ("(views := 1)", "an assignment is not allowed"),
        ("{'a': 1}", "a dict is not allowed"),
        ("f'{views}'", "an f-string is not allowed"),
        ("not " * (MAX_DEPTH + 5) + "views", f"nested more than {MAX_DEPTH} levels"),
        ("(" * 250 + "1" + ")" * 250, "too many nested parentheses"),
        ("views > " + " + ".join(["1"] * 600), "limit is 1000"),
        ("x" * 5000, "limit is 1000"),
        ("views >", "syntax error"),
        ("", "empty"),
        ("unknown_thing > 1", "unknown name 'unknown_thing'"),
        ("views in [" + ",".join(["1"] * 101) + "]", "at most 100 items"),
    ],
)
def test_hostile_or_broken_expressions_are_refused_with_a_reason(source: str, reason: str) -> None:
    assert reason in refused(source, KNOWN)


def test_non_string_expression_is_refused() -> None:
    assert "must be a string" in refused(42)


SEGMENTS = """\
segments:
  category_binge:
    description: more than 5 product views in one category this session
    when: session_top_category_views > 5
  big_cart:
    when: cart_value >= 100
"""


def test_a_segment_file_loads_and_memberships_follow_the_variables() -> None:
    loaded = load_segments(SEGMENTS, source="segments.yaml", known=KNOWN)
    assert [s.name for s in loaded.segments] == ["category_binge", "big_cart"]
    assert loaded.segments[0].description.startswith("more than 5")
    before = loaded.memberships({"session_top_category_views": 3, "cart_value": 150})
    after = loaded.memberships({"session_top_category_views": 6, "cart_value": 20})
    assert before == {"big_cart"} and after == {"category_binge"}
    assert transitions(before, after) == (["category_binge"], ["big_cart"])
    assert load_segments(SEGMENTS, source="s", known=KNOWN).version == loaded.version
    assert load_segments(SEGMENTS + "\n", source="s", known=KNOWN).version != loaded.version


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("segments:\n  a:\n    when: views >\n", "segments.yaml:3: segment 'a': syntax error"),
        ("segments:\n  a:\n    when: nope > 1\n", "segments.yaml:3: segment 'a': unknown name 'nope'"),
        (
            "segments:\n  a:\n    when: views > 1\n    colour: red\n",
            "segments.yaml:4: segment 'a': unknown key 'colour'",
        ),
        ("segments:\n  a:\n    description: x\n", "segments.yaml:2: segment 'a': missing 'when'"),
        ("segments:\n  a:\n    when: 5\n", "segments.yaml:3: segment 'a': 'when' must be a string"),
        ("segments:\n  a: {when: views > 1}\n  a: {when: views > 2}\n", "segments.yaml:3: 'a' appears twice"),
        ("segments:\n  bad name!:\n    when: views > 1\n", "segments.yaml:2: segment 'bad name!'"),
        ("segmentz: {}\n", "segments.yaml:1: unknown top-level key 'segmentz'"),
        ("segments: [1, 2]\n", "segments.yaml:1: 'segments' must map names"),
        ("segments:\n  a: [\n", "segments.yaml:3: not valid YAML"),
        ("- just a list\n", "segments.yaml:1: expected a mapping"),
    ],
)
def test_a_bad_segment_file_is_refused_with_file_line_and_reason(text: str, message: str) -> None:
    with pytest.raises(SegmentFileError) as error:
        load_segments(text, source="segments.yaml", known=KNOWN)
    assert str(error.value).startswith(message), str(error.value)
