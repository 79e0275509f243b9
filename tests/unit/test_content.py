"""The content map: the shipped file loads, priority picks each slot, the default fills the rest, bad files fail."""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

import pytest

from models.content import (
    MAX_BLOCK_FIELDS,
    MAX_LIST_ITEMS,
    MAX_RULES,
    MAX_STRING_CHARS,
    ContentFileError,
    load_content,
)
from models.rulefile import MAX_FILE_BYTES
from models.segments import load_segments
from models.variables import VARIABLES

ROOT = Path(__file__).resolve().parents[2]
KNOWN = {"cart_waiting", "category_binge", "frequent_high_value", "new_visitor_browsing"}

CONTENT = """\
default:
  banner: {title: "New in", body: "Fresh arrivals"}
  cta: {text: "Shop now", href: "/"}
rules:
  - segment: category_binge
    priority: 50
    blocks:
      recommendation: {slot: "home-top", strategy: "top_category", count: 4, tags: [shoes, 2, true, null]}
  - segment: cart_waiting
    priority: 100
    blocks:
      banner: {title: "Your cart is waiting", body: "Still there", style: "urgent"}
      cta: {text: "Complete your order", href: "/cart"}
  - segment: new_visitor_browsing
    blocks:
      banner: {title: "Welcome"}
  - segment: frequent_high_value
    priority: 50
    blocks:
      recommendation: {slot: "home-top", strategy: "personal_picks", count: 6}
      cta: {text: "See your picks", href: "/for-you"}
"""


def refused(text: str, message: str, segments: set[str] | None = None) -> None:
    with pytest.raises(ContentFileError, match="^" + re.escape(message)):
        load_content(text, source="content.yaml", segments=segments)


def rule(blocks: str, segment: str = "cart_waiting") -> str:
    """A file of one rule whose ``blocks`` mapping is the given text, starting on line 4."""
    return f"rules:\n  - segment: {segment}\n    blocks:\n{blocks}"


def test_the_shipped_content_map_loads_against_the_shipped_segments() -> None:
    declared = load_segments((ROOT / "segments.yaml").read_text(), source="segments.yaml", known=VARIABLES)
    names = {segment.name for segment in declared.segments}
    loaded = load_content((ROOT / "content.yaml").read_text(), source="content.yaml", segments=names)
    assert {r.segment for r in loaded.rules} == names
    assert set(loaded.default) == {"banner", "recommendation", "cta"}
    assert loaded.blocks_for(["cart_waiting"])["cta"]["segment"] == "cart_waiting"


def test_rules_run_from_the_highest_priority_down_with_ties_in_file_order() -> None:
    loaded = load_content(CONTENT, source="content.yaml", segments=KNOWN)
    assert [(r.segment, r.priority, r.line) for r in loaded.rules] == [
        ("cart_waiting", 100, 9),
        ("category_binge", 50, 5),
        ("frequent_high_value", 50, 17),
        ("new_visitor_browsing", 0, 14),
    ]


def test_each_slot_goes_to_the_highest_priority_rule_the_user_is_in() -> None:
    loaded = load_content(CONTENT, source="content.yaml", segments=KNOWN)
    everything = loaded.blocks_for(KNOWN)
    assert everything["banner"]["segment"] == "cart_waiting"
    assert everything["cta"] == {"text": "Complete your order", "href": "/cart", "segment": "cart_waiting"}
    # category_binge and frequent_high_value share priority 50: the earlier rule in the file wins the slot.
    assert everything["recommendation"]["segment"] == "category_binge"
    without_cart = loaded.blocks_for({"frequent_high_value", "new_visitor_browsing"})
    assert without_cart["banner"] == {"title": "Welcome", "segment": "new_visitor_browsing"}
    assert without_cart["recommendation"]["strategy"] == "personal_picks"
    assert without_cart["cta"]["segment"] == "frequent_high_value"


def test_the_default_fills_slots_no_rule_fills_and_carries_no_segment() -> None:
    loaded = load_content(CONTENT, source="content.yaml", segments=KNOWN)
    assert loaded.blocks_for(set()) == {
        "banner": {"title": "New in", "body": "Fresh arrivals", "segment": None},
        "cta": {"text": "Shop now", "href": "/", "segment": None},
    }
    binge = loaded.blocks_for({"category_binge", "a_segment_without_rules"})
    assert list(binge) == ["banner", "recommendation", "cta"]
    assert binge["banner"]["segment"] is None and binge["cta"]["segment"] is None
    assert binge["recommendation"]["segment"] == "category_binge"


def test_values_keep_their_yaml_types_and_blocks_handed_out_are_fresh() -> None:
    loaded = load_content(CONTENT, source="content.yaml", segments=KNOWN)
    first = loaded.blocks_for({"category_binge"})["recommendation"]
    assert first["count"] == 4 and first["tags"] == ["shoes", 2, True, None]
    first["tags"].append("changed")
    first["count"] = 0
    second = loaded.blocks_for({"category_binge"})["recommendation"]
    assert second["count"] == 4 and second["tags"] == ["shoes", 2, True, None]
    quoted = load_content(rule('      banner: {a: "yes", b: yes, c: "1", d: 1.5, e: ~}\n'), source="c")
    assert quoted.blocks_for({"cart_waiting"})["banner"] == {
        "a": "yes",
        "b": True,
        "c": "1",
        "d": 1.5,
        "e": None,
        "segment": "cart_waiting",
    }


def test_an_anchored_block_can_serve_several_rules() -> None:
    text = (
        "rules:\n"
        "  - {segment: a, blocks: {cta: &checkout {text: Checkout, href: /cart}}}\n"
        "  - {segment: b, blocks: {cta: *checkout}}\n"
    )
    loaded = load_content(text, source="content.yaml")
    # One node in the YAML is one checked block: aliases cannot multiply the work of loading.
    assert loaded.rules[0].blocks["cta"] is loaded.rules[1].blocks["cta"]
    assert loaded.blocks_for({"b"})["cta"] == {"text": "Checkout", "href": "/cart", "segment": "b"}


def test_the_version_is_the_start_of_the_sha256_of_the_text() -> None:
    loaded = load_content(CONTENT, source="content.yaml", segments=KNOWN)
    assert loaded.version == hashlib.sha256(CONTENT.encode()).hexdigest()[:12]
    assert load_content(CONTENT + "\n", source="content.yaml", segments=KNOWN).version != loaded.version


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (rule("      hero: {title: x}\n"), "content.yaml:4: rule 'cart_waiting': 'blocks': unknown slot 'hero'"),
        ("default:\n  footer: {text: x}\n", "content.yaml:2: 'default': unknown slot 'footer'"),
        (
            rule("      banner: {title: {text: x}}\n"),
            "content.yaml:4: rule 'cart_waiting': 'blocks': slot 'banner': field 'title': nested mappings",
        ),
        (
            rule("      banner:\n        tags:\n          - a\n          - [b]\n"),
            "content.yaml:7: rule 'cart_waiting': 'blocks': slot 'banner': field 'tags': a list holds only",
        ),
        (
            rule("      banner: {title: x, 1: y}\n"),
            "content.yaml:4: rule 'cart_waiting': 'blocks': slot 'banner': field names must be strings, not int '1'",
        ),
        (
            rule("      banner: {title: x, [a]: y}\n"),
            "content.yaml:4: keys must be plain names",
        ),
        (
            rule(f"      banner: {{title: {'x' * (MAX_STRING_CHARS + 1)}}}\n"),
            f"content.yaml:4: rule 'cart_waiting': 'blocks': slot 'banner': field 'title': a string is longer than "
            f"{MAX_STRING_CHARS}",
        ),
        (
            rule("      banner:\n" + "".join(f"        f{i}: x\n" for i in range(MAX_BLOCK_FIELDS + 1))),
            f"content.yaml:5: rule 'cart_waiting': 'blocks': slot 'banner': more than {MAX_BLOCK_FIELDS} fields",
        ),
        (
            rule(f"      banner: {{tags: [{', '.join(['x'] * (MAX_LIST_ITEMS + 1))}]}}\n"),
            f"content.yaml:4: rule 'cart_waiting': 'blocks': slot 'banner': field 'tags': more than {MAX_LIST_ITEMS}",
        ),
        (
            rule("      banner: {title: x, segment: other}\n"),
            "content.yaml:4: rule 'cart_waiting': 'blocks': slot 'banner': 'segment' is reserved",
        ),
        (
            rule("      banner: {title: x, starts: 2024-01-01}\n"),
            "content.yaml:4: rule 'cart_waiting': 'blocks': slot 'banner': field 'starts': a timestamp is not allowed",
        ),
        (rule("      banner: {title: !custom x}\n"), "content.yaml:4: YAML tags such as !custom are not allowed"),
        (
            rule("      banner:\n        title: x\n        t: !!python/object/apply:os.system [id]\n"),
            "content.yaml:6: YAML tags such as !!python/object/apply:os.system are not allowed",
        ),
        (rule("      banner: !!map {title: x}\n"), "content.yaml:4: YAML tags such as !!map are not allowed"),
        (
            rule("      banner: {ratio: .nan}\n"),
            "content.yaml:4: rule 'cart_waiting': 'blocks': slot 'banner': field 'ratio': '.nan' has no JSON form",
        ),
        (
            rule(f"      banner: {{count: {2**53}}}\n"),
            "content.yaml:4: rule 'cart_waiting': 'blocks': slot 'banner': field 'count': an integer is beyond",
        ),
        (
            rule(f"      banner: {{count: {'9' * 5000}}}\n"),
            "content.yaml:4: rule 'cart_waiting': 'blocks': slot 'banner': field 'count': int '999",
        ),
        (rule("      banner: {}\n"), "content.yaml:4: rule 'cart_waiting': 'blocks': slot 'banner': a block needs"),
        (
            rule("      banner: just text\n"),
            "content.yaml:4: rule 'cart_waiting': 'blocks': slot 'banner': a block must",
        ),
        (rule("      {}\n"), "content.yaml:4: rule 'cart_waiting': 'blocks': a rule needs at least one block"),
        (rule("      - banner\n"), "content.yaml:4: rule 'cart_waiting': 'blocks' must map slots"),
        ("rulez: []\n", "content.yaml:1: unknown top-level key 'rulez'"),
        ("rules:\n  - segment: cart_waiting\n    colour: red\n", "content.yaml:3: rule 1: unknown key 'colour'"),
        ("rules:\n  - priority: 3\n    blocks: {cta: {text: x}}\n", "content.yaml:2: rule 1: missing 'segment'"),
        ("rules:\n  - segment: cart_waiting\n", "content.yaml:2: rule 1: missing 'blocks'"),
        ("rules:\n  - segment: 5\n    blocks: {cta: {text: x}}\n", "content.yaml:2: rule 1: 'segment' must be"),
        (
            "rules:\n  - segment: bad name!\n    blocks: {cta: {text: x}}\n",
            "content.yaml:2: rule 1: segment 'bad name!'",
        ),
        *[
            (
                f"rules:\n  - segment: cart_waiting\n    priority: {priority}\n    blocks: {{cta: {{text: x}}}}\n",
                "content.yaml:3: rule 'cart_waiting': 'priority' must be a whole number, 0 or more",
            )
            for priority in ("high", "-1", "1.5", "true", "[1]")
        ],
        ("default: {}\ndefault: {}\n", "content.yaml:2: 'default' appears twice"),
        (rule("      cta: {text: x}\n      cta: {text: y}\n"), "content.yaml:5: 'cta' appears twice"),
        (rule("      cta: {text: x, text: y}\n"), "content.yaml:4: 'text' appears twice"),
        (
            "rules:\n  - segment: cart_waiting\n    segment: category_binge\n    blocks: {cta: {text: x}}\n",
            "content.yaml:3: 'segment' appears twice",
        ),
        (
            "rules:\n  - {segment: cart_waiting, blocks: {cta: {text: x}}}\n"
            "  - {segment: cart_waiting, blocks: {banner: {title: y}}}\n",
            "content.yaml:3: rule 2: segment 'cart_waiting' already has a rule at line 2",
        ),
        ("rules: {cart_waiting: {}}\n", "content.yaml:1: 'rules' must be a list of rules"),
        ("rules:\n  - cart_waiting\n", "content.yaml:2: rule 1: expected a mapping with 'segment' and 'blocks'"),
        ("default:\n  banner: [\n", "content.yaml:3: not valid YAML"),
        ("- just a list\n", "content.yaml:1: expected a mapping"),
        ("", "content.yaml:1: expected a mapping"),
        ("# " + "x" * MAX_FILE_BYTES + "\n", f"content.yaml:1: the file is over {MAX_FILE_BYTES} bytes"),
        (
            "rules:\n"
            + "".join(f"  - {{segment: s{i}, blocks: {{cta: {{text: x}}}}}}\n" for i in range(MAX_RULES + 1)),
            f"content.yaml:2: more than {MAX_RULES} rules",
        ),
    ],
)
def test_a_bad_content_map_is_refused_with_file_line_and_reason(text: str, message: str) -> None:
    refused(text, message)


def test_a_rule_for_an_undeclared_segment_is_refused_naming_the_declared_ones() -> None:
    text = "rules:\n  - segment: cart_waiting\n    blocks: {cta: {text: x}}\n  - segment: vip\n    blocks: {}\n"
    declared = {"cart_waiting", "category_binge"}
    refused(text, "content.yaml:4: rule 2: unknown segment 'vip' (known: cart_waiting, category_binge)", declared)
    refused(text, "content.yaml:2: rule 1: unknown segment 'cart_waiting' (known: none)", set())
