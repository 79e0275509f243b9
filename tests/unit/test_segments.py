"""The expression language and the segment file: what users write works, what attackers write is refused."""

from __future__ import annotations

from collections.abc import Mapping

import pytest

from models.expressions import MAX_DEPTH, ExpressionError, VariableType, compile_expression
from models.segments import SegmentFileError, load_segments, transitions
from models.variables import CLOCK_VARIABLES, VARIABLES

KNOWN: dict[str, VariableType] = {
    "views": "number",
    "category": "text",
    "cart_value": "number",
    "orders": "number",
    "session_top_category_views": "number",
    "cart.value": "number",
}


def refused(source: object, known: Mapping[str, VariableType] | None = None) -> str:
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
    # Without types (no ``known``) text arithmetic compiles; evaluating it must not build a terabyte string.
    assert not compile_expression("category * 999999999999 == 1").holds({"category": "x"})


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
        ("views > 1e999", "the number at column 9 is out of range: numbers are finite"),
        ("views > -" + "9" * 400, "the number at column 10 is out of range"),
    ],
)
def test_hostile_or_broken_expressions_are_refused_with_a_reason(source: str, reason: str) -> None:
    assert reason in refused(source, KNOWN)


@pytest.mark.parametrize(
    ("source", "reason"),
    [
        ("revenue >= '500'", "revenue is a number but '500' is text: '>=' compares numbers with numbers"),
        ("'500' <= revenue", "'500' is text but revenue is a number"),
        ("event == 5", "event is text but 5 is a number: '==' compares numbers with numbers and text with text"),
        ("event != views", "event is text but views is a number"),
        ("1 == 'a'", "1 is a number but 'a' is text"),
        ("event + 'x' == 'y'", "arithmetic needs numbers, but event is text"),
        ("-event < 0", "arithmetic needs numbers, but event is text"),
        ("cart_items in 5", "'in' needs a list on its right, such as 'cart_items in [...]', not 5"),
        ("views not in orders", "'not in' needs a list on its right, such as 'views not in [...]', not orders"),
        ("event in 'Product Added'", "'in' needs a list on its right"),
        ("event in ['Product Added', 3]", "event is text but the list after 'in' holds 3, a number: its items must be"),
        ("cluster not in ['a']", "cluster is a number but the list after 'not in' holds 'a', text"),
        ("views == [1]", "[1] is a list: a list may only follow 'in' or 'not in'"),
        ("days_since_order == null", "'days_since_order == null' is never true: a condition naming a variable without"),
        ("null == intent", "'intent == null' is never true"),
        ("intent == None", "'intent == null' is never true"),
        ("intent > null", "null may only be compared with '!=', as in 'intent != null'"),
        ("null != null", "null may only be compared with '!='"),
        ("views in [1, null]", "null may only be compared with '!='"),
        ("null + 1 > 0", "arithmetic needs numbers, but null is null"),
    ],
)
def test_a_condition_that_could_never_hold_is_refused_naming_the_variable_and_types(source: str, reason: str) -> None:
    assert reason in refused(source, VARIABLES), refused(source, VARIABLES)


def test_conditions_mixing_numbers_and_text_correctly_still_compile() -> None:
    condition = compile_expression(
        "event in ['Product Added', 'Order Completed'] and cart_value >= 50 or event == '' and views > 2",
        known=VARIABLES,
    )
    assert condition.holds({"event": "Product Added", "cart_value": 60, "views": 0})
    assert condition.holds({"event": "", "cart_value": 0, "views": 3})
    assert not condition.holds({"event": "Product Viewed", "cart_value": 60, "views": 3})
    has_intent = compile_expression("intent != null and intent > 0.5", known=VARIABLES)
    assert has_intent.holds({"intent": 0.7}) and not has_intent.holds({})
    assert compile_expression("None != intent", known=VARIABLES).holds({"intent": 0.1})
    assert compile_expression("(views > 3) == true and cluster not in [1, 2]", known=VARIABLES).holds(
        {"views": 4, "cluster": 3}
    )
    assert compile_expression("category == 5").names == {"category"}  # no types given: not checked


def test_a_type_mismatch_in_a_segment_file_is_refused_with_file_and_line() -> None:
    text = "segments:\n  ok:\n    when: views > 1\n  big:\n    when: revenue >= '500'\n"
    with pytest.raises(SegmentFileError) as error:
        load_segments(text, source="segments.yaml", known=VARIABLES, clock=CLOCK_VARIABLES)
    assert str(error.value) == (
        "segments.yaml:5: segment 'big': revenue is a number but '500' is text:"
        " '>=' compares numbers with numbers and text with text"
    )


def test_a_clock_variable_may_be_tested_for_a_value_with_not_equal_null() -> None:
    text = "segments:\n  buyer:\n    when: days_since_order != null and days_since_order < 30\n"
    loaded = load_segments(text, source="segments.yaml", known=VARIABLES, clock=CLOCK_VARIABLES)
    assert loaded.clock_thresholds == {"days_since_order": {30.0}}
    assert loaded.memberships({"days_since_order": 2}) == {"buyer"}
    assert loaded.memberships({}) == set()


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


def test_a_condition_may_have_spaces_around_it() -> None:
    text = "segments:\n  idle:\n    when: '  cart_items > 0 and minutes_since_cart_change >= 15 '\n"
    loaded = load_segments(text, source="segments.yaml", known=VARIABLES, clock=CLOCK_VARIABLES)
    assert loaded.clock_thresholds == {"minutes_since_cart_change": {15.0}}
    assert loaded.memberships({"cart_items": 1, "minutes_since_cart_change": 16}) == {"idle"}


@pytest.mark.parametrize(
    ("when", "message"),
    [
        (
            "minutes_since_cart_change >= 2 * 60",
            "minutes_since_cart_change changes with the clock: compare it directly",
        ),
        (
            "minutes_since_cart_change / 60 >= 2",
            "minutes_since_cart_change changes with the clock: compare it directly",
        ),
        ("minutes_since_seen > views", "minutes_since_seen changes with the clock: compare it directly"),
        ("minutes_since_cart_change >= 1e999", "the number at column 30 is out of range"),
        ("days_since_order > 1e12", "days_since_order is compared with 1e+12; at most 1e+09"),
    ],
)
def test_a_clock_variable_is_only_compared_directly_with_a_number_the_clock_can_reach(when: str, message: str) -> None:
    with pytest.raises(SegmentFileError) as error:
        load_segments(f"segments:\n  a:\n    when: {when}\n", source="s.yaml", known=VARIABLES, clock=CLOCK_VARIABLES)
    assert str(error.value).startswith(f"s.yaml:3: segment 'a': {message}"), str(error.value)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("segments:\n  a:\n    when: views > 1\n    description: !!python/name:os.system x\n", "s.yaml:4: YAML tags"),
        ("segments:\n  a: !!map\n    when: views > 1\n", "s.yaml:2: YAML tags such as !!map are not allowed"),
        ("segments: !custom\n  a:\n    when: views > 1\n", "s.yaml:1: YAML tags such as !custom are not allowed"),
    ],
)
def test_a_yaml_tag_on_any_node_is_refused_with_its_line(text: str, message: str) -> None:
    with pytest.raises(SegmentFileError) as error:
        load_segments(text, source="s.yaml", known=KNOWN)
    assert str(error.value).startswith(message), str(error.value)
