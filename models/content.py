"""The content map: the JSON content blocks the decision API returns to a user, chosen by the segments they are in.

    default:
      banner: {title: "Welcome", body: "New arrivals every week."}
      cta: {text: "Shop now", href: "/"}
    rules:
      - segment: cart_waiting
        priority: 100
        blocks:
          banner: {title: "Your cart is waiting", body: "Complete your order.", style: urgent}
          cta: {text: "Complete your order", href: "/cart"}

A decision holds at most one block per slot (``banner``, ``recommendation``, ``cta``), and each slot is chosen on its
own: of the rules whose segment the user is in and that have a block for the slot, the one with the highest
``priority`` (0 when left out) wins, the earlier rule in the file winning a tie; a slot no such rule fills takes the
``default`` block, or stays out of the decision. So a user in two segments may get the banner of one and the
recommendation of the other. Each returned block carries ``segment``: the winning rule's segment, or ``None`` for the
default, so no block may have a field of that name.

A block maps field names to JSON scalars (string, number, true/false, null) or to lists of them; YAML types the values,
so quote a string YAML would read as something else (``"yes"``, ``"1:30"``, ``"2024-01-01"``). A bad file is refused
as a whole with ``file:line: reason`` (:class:`ContentFileError`); the caller keeps serving the version it has. Pass the
declared segment names as ``segments`` so that a rule for a segment nobody declared is refused.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, cast

import yaml

from models import rulefile

MAX_RULES = 1_000
MAX_BLOCK_FIELDS = 20
MAX_LIST_ITEMS = 50
MAX_STRING_CHARS = 1_000
# Larger integers lose precision in JavaScript clients, which read every JSON number as a double.
MAX_JSON_INTEGER = 2**53 - 1
SLOTS = ("banner", "recommendation", "cta")
_TOP_KEYS = {"default", "rules"}
_RULE_KEYS = {"segment", "priority", "blocks"}

_STR = "tag:yaml.org,2002:str"
_INT = "tag:yaml.org,2002:int"
_YAML_TAG = "tag:yaml.org,2002:"
# Composing gives nodes tagged by YAML's own type rules (explicit tags are refused by rulefile.compose); only these
# tags become values, through PyYAML's safe constructors, so a timestamp is refused rather than turned into something
# JSON cannot carry.
_CONSTRUCTOR = yaml.constructor.SafeConstructor()
_SCALARS: dict[str, Callable[[yaml.ScalarNode], object]] = {
    _STR: _CONSTRUCTOR.construct_yaml_str,
    _INT: _CONSTRUCTOR.construct_yaml_int,
    "tag:yaml.org,2002:float": _CONSTRUCTOR.construct_yaml_float,
    "tag:yaml.org,2002:bool": _CONSTRUCTOR.construct_yaml_bool,
    "tag:yaml.org,2002:null": _CONSTRUCTOR.construct_yaml_null,
}

Scalar = str | int | float | bool | None


class ContentFileError(rulefile.RuleFileError):
    """The content map is refused; ``str(error)`` starts with ``file:line:``."""


@dataclass(frozen=True)
class ContentRule:
    """The blocks shown, slot by slot, to users in ``segment`` unless a rule of higher priority fills the slot."""

    segment: str
    priority: int
    blocks: Mapping[str, Mapping[str, Any]]
    line: int


@dataclass(frozen=True)
class ContentMap:
    """One loaded version of the content map; ``rules`` run from the highest priority down, ties in file order."""

    version: str
    rules: tuple[ContentRule, ...]
    default: Mapping[str, Mapping[str, Any]]

    def blocks_for(self, segments: Collection[str]) -> dict[str, dict[str, Any]]:
        """For each slot, the block of the highest-priority rule whose segment the user is in, else the default.

        Each block is a fresh dict with ``"segment"`` added (``None`` for the default): the caller may change it.
        """
        member = frozenset(segments)
        chosen: dict[str, tuple[str | None, Mapping[str, Any]]] = {}
        for rule in self.rules:
            if rule.segment in member:
                for slot, block in rule.blocks.items():
                    chosen.setdefault(slot, (rule.segment, block))
        for slot, block in self.default.items():
            chosen.setdefault(slot, (None, block))
        return {slot: _fresh(*chosen[slot]) for slot in SLOTS if slot in chosen}


def load_content(text: str, *, source: str, segments: Collection[str] | None = None) -> ContentMap:
    """Parse and check a content map, or raise :class:`ContentFileError` naming the line at fault.

    ``segments`` are the declared segment names; when given, a rule for any other name is refused.
    """
    top = _pairs(rulefile.compose(text, source, ContentFileError), source)
    unknown = set(top) - _TOP_KEYS
    if unknown:
        key = sorted(unknown)[0]
        raise _refuse(source, top[key][0], f"unknown top-level key {key!r} (expected 'default' and 'rules')")
    # An anchored block used by many rules is one node: checking it once keeps aliases from multiplying the work.
    checked: dict[yaml.Node, Mapping[str, Any]] = {}
    default: Mapping[str, Mapping[str, Any]] = MappingProxyType({})
    if "default" in top:
        default = _blocks(top["default"][1], source, "'default'", checked, allow_empty=True)
    rules: list[ContentRule] = []
    if "rules" in top:
        body = top["rules"][1]
        if not isinstance(body, yaml.SequenceNode):
            raise _refuse(source, body, "'rules' must be a list of rules")
        if len(body.value) > MAX_RULES:
            raise _refuse(source, body, f"more than {MAX_RULES} rules")
        lines: dict[str, int] = {}
        for number, node in enumerate(body.value, start=1):
            rules.append(_rule(number, node, source, segments, lines, checked))
    return ContentMap(rulefile.version(text), tuple(sorted(rules, key=lambda rule: -rule.priority)), default)


def _rule(
    number: int,
    node: yaml.Node,
    source: str,
    segments: Collection[str] | None,
    lines: dict[str, int],
    checked: dict[yaml.Node, Mapping[str, Any]],
) -> ContentRule:
    if not isinstance(node, yaml.MappingNode):
        raise _refuse(source, node, f"rule {number}: expected a mapping with 'segment' and 'blocks'")
    fields = _pairs(node, source)
    unknown = set(fields) - _RULE_KEYS
    if unknown:
        field = sorted(unknown)[0]
        raise _refuse(source, fields[field][0], f"rule {number}: unknown key {field!r}")
    for required in ("segment", "blocks"):
        if required not in fields:
            raise _refuse(source, node, f"rule {number}: missing {required!r}")
    name_node = fields["segment"][1]
    if not isinstance(name_node, yaml.ScalarNode) or name_node.tag != _STR:
        raise _refuse(source, name_node, f"rule {number}: 'segment' must be a segment name")
    name = str(name_node.value)
    if not name.replace("_", "").replace("-", "").isalnum():
        raise _refuse(source, name_node, f"rule {number}: segment {name!r}: only letters, digits, '_' and '-'")
    if segments is not None and name not in segments:
        known = ", ".join(sorted(segments)) or "none"
        raise _refuse(source, name_node, f"rule {number}: unknown segment {name!r} (known: {known})")
    if name in lines:
        raise _refuse(source, name_node, f"rule {number}: segment {name!r} already has a rule at line {lines[name]}")
    lines[name] = _line(node)
    where = f"rule {name!r}"
    priority = _priority(fields["priority"][1], source, where) if "priority" in fields else 0
    blocks = _blocks(fields["blocks"][1], source, f"{where}: 'blocks'", checked, allow_empty=False)
    return ContentRule(name, priority, blocks, _line(node))


def _priority(node: yaml.Node, source: str, where: str) -> int:
    reason = f"{where}: 'priority' must be a whole number, 0 or more"
    if not isinstance(node, yaml.ScalarNode) or node.tag != _INT:
        raise _refuse(source, node, reason)
    value = _scalar(node, source, where)
    if not isinstance(value, int) or value < 0:
        raise _refuse(source, node, reason)
    return value


def _blocks(
    node: yaml.Node, source: str, where: str, checked: dict[yaml.Node, Mapping[str, Any]], *, allow_empty: bool
) -> Mapping[str, Mapping[str, Any]]:
    if not isinstance(node, yaml.MappingNode):
        raise _refuse(source, node, f"{where} must map slots ({', '.join(SLOTS)}) to blocks")
    pairs = _pairs(node, source)
    if not pairs and not allow_empty:
        raise _refuse(source, node, f"{where}: a rule needs at least one block")
    blocks: dict[str, Mapping[str, Any]] = {}
    for slot, (key, value) in pairs.items():
        if slot not in SLOTS:
            raise _refuse(source, key, f"{where}: unknown slot {slot!r} (slots: {', '.join(SLOTS)})")
        blocks[slot] = _block(value, source, f"{where}: slot {slot!r}", checked)
    return MappingProxyType(blocks)


def _block(node: yaml.Node, source: str, where: str, checked: dict[yaml.Node, Mapping[str, Any]]) -> Mapping[str, Any]:
    if node in checked:
        return checked[node]
    if not isinstance(node, yaml.MappingNode):
        raise _refuse(source, node, f"{where}: a block must map field names to values")
    pairs = _pairs(node, source)
    if not pairs:
        raise _refuse(source, node, f"{where}: a block needs at least one field")
    if len(pairs) > MAX_BLOCK_FIELDS:
        raise _refuse(source, node, f"{where}: more than {MAX_BLOCK_FIELDS} fields in one block")
    fields: dict[str, Any] = {}
    for name, (key, value) in pairs.items():
        if key.tag != _STR:
            raise _refuse(source, key, f"{where}: field names must be strings, not {_tag_name(key.tag)} {name!r}")
        if name == "segment":
            raise _refuse(source, key, f"{where}: 'segment' is reserved: the decision adds it to every block")
        if len(name) > MAX_STRING_CHARS:
            raise _refuse(source, key, f"{where}: a field name is longer than {MAX_STRING_CHARS} characters")
        fields[name] = _field(value, source, f"{where}: field {name!r}")
    block = MappingProxyType(fields)
    checked[node] = block
    return block


def _field(node: yaml.Node, source: str, where: str) -> Scalar | tuple[Scalar, ...]:
    if isinstance(node, yaml.MappingNode):
        raise _refuse(source, node, f"{where}: nested mappings are not allowed; a field holds a value or a list")
    if not isinstance(node, yaml.SequenceNode):
        return _scalar(node, source, where)
    if len(node.value) > MAX_LIST_ITEMS:
        raise _refuse(source, node, f"{where}: more than {MAX_LIST_ITEMS} items in one list")
    items: list[Scalar] = []
    for item in node.value:
        if not isinstance(item, yaml.ScalarNode):
            raise _refuse(source, item, f"{where}: a list holds only strings, numbers, true/false and null")
        items.append(_scalar(item, source, where))
    # A tuple keeps the loaded map immutable; blocks_for hands out a list.
    return tuple(items)


def _scalar(node: yaml.ScalarNode, source: str, where: str) -> Scalar:
    construct = _SCALARS.get(node.tag)
    if construct is None:
        raise _refuse(source, node, f"{where}: a {_tag_name(node.tag)} is not allowed; quote it to make it a string")
    try:
        value = construct(node)
    except ValueError:
        # Python refuses to convert integers of thousands of digits.
        raise _refuse(source, node, f"{where}: {_tag_name(node.tag)} {node.value[:40]!r} cannot be read") from None
    if isinstance(value, str) and len(value) > MAX_STRING_CHARS:
        raise _refuse(source, node, f"{where}: a string is longer than {MAX_STRING_CHARS} characters")
    if isinstance(value, int) and not isinstance(value, bool) and abs(value) > MAX_JSON_INTEGER:
        raise _refuse(source, node, f"{where}: an integer is beyond ±{MAX_JSON_INTEGER}; quote it to make it a string")
    if isinstance(value, float) and not math.isfinite(value):
        raise _refuse(source, node, f"{where}: {node.value!r} has no JSON form; use a finite number")
    return cast(Scalar, value)  # the five constructors in _SCALARS return exactly these types


def _fresh(segment: str | None, block: Mapping[str, Any]) -> dict[str, Any]:
    fresh = {name: list(value) if isinstance(value, tuple) else value for name, value in block.items()}
    fresh["segment"] = segment
    return fresh


def _tag_name(tag: str) -> str:
    return tag.removeprefix(_YAML_TAG)


def _pairs(node: yaml.MappingNode, source: str) -> dict[str, tuple[yaml.Node, yaml.Node]]:
    return rulefile.pairs(node, source, ContentFileError)


def _refuse(source: str, node: yaml.Node, reason: str) -> rulefile.RuleFileError:
    return rulefile.refuse(source, node, reason, ContentFileError)


_line = rulefile.line
