"""What every declared rule file (segments, content map, triggers) shares: strict YAML nodes and ``file:line`` errors.

The files are read with ``yaml.compose`` rather than ``yaml.safe_load`` so that every value keeps the line it came
from: a refusal names the file and the line at fault. Each loader raises its own subclass of :class:`RuleFileError`.
YAML tags (``!!python/object``, ``!!str``, ``!custom``) are refused on every node: a node keeps its tag but the
loaders read its text, so a tagged value would silently mean something else than it says.
"""

from __future__ import annotations

import hashlib

import yaml

MAX_FILE_BYTES = 1_000_000


class RuleFileError(ValueError):
    """A rule file is refused; ``str(error)`` starts with ``file:line:``."""


def decode(data: bytes, source: str) -> str:
    """The text of a rule file read as bytes, or :class:`RuleFileError` naming the line of the first non-UTF-8 byte."""
    try:
        return data.decode()
    except UnicodeDecodeError as problem:
        line = data.count(b"\n", 0, problem.start) + 1
        raise RuleFileError(f"{source}:{line}: not valid UTF-8 text (byte 0x{data[problem.start]:02x})") from None


def compose(text: str, source: str, error: type[RuleFileError]) -> yaml.MappingNode:
    """The file's top-level mapping node, or ``error`` naming the line of the first YAML fault."""
    try:
        size = len(text.encode())
    except UnicodeEncodeError as problem:
        # Text decoded with errors="surrogateescape" (or built in memory) can hold lone surrogates.
        line = text.count("\n", 0, problem.start) + 1
        raise error(f"{source}:{line}: not valid UTF-8 text (a lone surrogate)") from None
    if size > MAX_FILE_BYTES:
        raise error(f"{source}:1: the file is over {MAX_FILE_BYTES} bytes")
    try:
        root = yaml.compose(text, Loader=_UntaggedLoader)
    except _Tagged as tagged:
        tag = tagged.tag.replace(_YAML_TAG, "!!")
        reason = f"YAML tags such as {tag} are not allowed; write plain values, and quote text that starts with '!'"
        raise error(f"{source}:{tagged.line}: {reason}") from None
    except yaml.YAMLError as problem:
        mark = getattr(problem, "problem_mark", None)
        line = mark.line + 1 if mark is not None else 1
        raise error(f"{source}:{line}: not valid YAML: {getattr(problem, 'problem', problem)}") from None
    except RecursionError:
        # PyYAML's composer recurses once per level of nesting; "[[[[..." a few hundred deep exhausts the stack.
        raise error(f"{source}:1: nested too deeply") from None
    if not isinstance(root, yaml.MappingNode):
        raise error(f"{source}:1: expected a mapping at the top of the file")
    return root


_YAML_TAG = "tag:yaml.org,2002:"


class _Tagged(Exception):
    def __init__(self, tag: str, line: int) -> None:
        super().__init__(tag, line)
        self.tag, self.line = tag, line


class _UntaggedLoader(yaml.SafeLoader):
    """PyYAML's safe loader, refusing a node written with an explicit tag (raises :class:`_Tagged`)."""

    def compose_node(self, parent: yaml.Node | None, index: object) -> yaml.Node:
        event = self.peek_event()
        tag = getattr(event, "tag", None)  # an alias has none; an untagged node has None
        if tag is not None:
            raise _Tagged(tag, event.start_mark.line + 1)
        return super().compose_node(parent, index)  # type: ignore[no-any-return]


def pairs(node: yaml.MappingNode, source: str, error: type[RuleFileError]) -> dict[str, tuple[yaml.Node, yaml.Node]]:
    """``name -> (key node, value node)``; refuses non-scalar and repeated keys."""
    found: dict[str, tuple[yaml.Node, yaml.Node]] = {}
    for key, value in node.value:
        if not isinstance(key, yaml.ScalarNode):
            raise refuse(source, key, "keys must be plain names", error)
        if key.value in found:
            raise refuse(source, key, f"{key.value!r} appears twice", error)
        found[key.value] = (key, value)
    return found


def refuse(source: str, node: yaml.Node, reason: str, error: type[RuleFileError]) -> RuleFileError:
    return error(f"{source}:{line(node)}: {reason}")


def line(node: yaml.Node) -> int:
    return int(node.start_mark.line) + 1


def version(text: str) -> str:
    """A short content hash: what a decision or segment change names as the rule file version."""
    return hashlib.sha256(text.encode()).hexdigest()[:12]
