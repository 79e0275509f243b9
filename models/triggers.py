"""Trigger rules: when to message a user and what to say, loaded strictly and decided by pure transitions.

    cap_per_user_per_day: 3          # messages a user can get per UTC day, all triggers together
    triggers:
      cart_recovery:
        description: cart untouched for 15 minutes
        when: {inactive: 15m}        # or {event: Product Added}, {entered: cart_waiting},
                                     #    {after: Checkout Started, without: Order Completed, within: 2h}
        if: cart_items > 0           # optional condition, the language of segments.yaml
        message:
          title: Still thinking about {top_cart_item}?
          body: Your cart holds {cart_items} items worth {cart_value}.
        priority: 10                 # higher goes first when several fire at once (default 0)
        cooldown: 24h                # at most one message of this trigger per user per cooldown (default 0)
        consent: marketing           # the purpose the user must have granted (required)
        holdout: 10                  # percent of users in the control group, fixed per user and trigger (0-100)

Four kinds of ``when``: an event arrives; the user enters a segment; the user is inactive (no event) for a
duration; or an ``after`` event is not followed by a ``without`` event ``within`` a duration. The last two arm a
deadline in the user's :class:`TriggerState`; an event re-arms (``inactive``) or cancels (``without``) it, and
:func:`on_clock` fires it when the partition clock passes it: on event time, exactly once per arming.

Every trigger that comes due yields a :class:`Decision`, sent or suppressed, with the reason and what was read.
Checks in order: consent (no consent: suppressed, nothing counted), cooldown, the daily cap, then the holdout: a
control-group user gets ``outcome: "suppressed", reason: "holdout"`` (recorded as "would have sent") and it counts
against cooldown and cap exactly like a sent message, so both arms see the same pressure. The message id is a hash
of user, trigger and the moment it fired: a replay or a redelivery produces the same id, which the browser SDK uses
to drop duplicates.
"""

from __future__ import annotations

import functools
import hashlib
import math
import re
import string
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field, replace
from typing import Any, Literal

import yaml

from models import rulefile
from models.consent import PURPOSES
from models.expressions import Expression, ExpressionError, VariableType, compile_expression

DAY_MS = 86_400_000
MAX_TRIGGERS = 200
MAX_TEMPLATE_CHARS = 1_000
MAX_DURATION_MS = 30 * DAY_MS
#: Template-only names, besides the rule variables: filled from the profile by the caller (see ``TEMPLATE_NAMES``).
TEMPLATE_EXTRAS = {
    "top_cart_item": "the name (else the product id) of the most valuable item in the cart",
    "recommended_item": "the most recently viewed product that is not in the cart",
}
_DURATION = re.compile(r"^(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)$")
_UNIT_MS = {"ms": 1, "s": 1_000, "m": 60_000, "h": 3_600_000, "d": DAY_MS}
_TRIGGER_KEYS = {"description", "when", "if", "message", "priority", "cooldown", "consent", "holdout"}
_WHEN_KINDS = {"event", "entered", "inactive", "after"}

Kind = Literal["event", "entered", "inactive", "after"]


class TriggerFileError(rulefile.RuleFileError):
    """The trigger file is refused; ``str(error)`` starts with ``file:line:``."""


@dataclass(frozen=True)
class Template:
    source: str
    names: frozenset[str]

    def render(self, values: Mapping[str, Any]) -> str:
        """Fill ``{name}`` placeholders; numbers as people read them; a missing value leaves an empty string."""
        out = []
        for literal, name, _, _ in string.Formatter().parse(self.source):
            out.append(literal)
            if name is not None:
                out.append(_show(values.get(name)))
        return "".join(out)


@dataclass(frozen=True)
class Trigger:
    name: str
    kind: Kind
    #: ``event``/``after``: the event name; ``entered``: the segment; ``inactive``: unused.
    subject: str
    delay_ms: int
    #: ``after`` only: the event that cancels the deadline.
    cancel_on: str
    condition: Expression | None
    title: Template
    body: Template
    consent: str
    priority: int = 0
    cooldown_ms: int = 0
    holdout_percent: float = 0.0
    description: str = ""

    @property
    def reads(self) -> frozenset[str]:
        """The variables this trigger's condition and message read: what a decision records."""
        names = self.condition.names if self.condition else frozenset()
        return names | self.title.names | self.body.names


@dataclass(frozen=True)
class TriggerSet:
    version: str
    triggers: tuple[Trigger, ...]
    cap_per_day: int

    def by_name(self, name: str) -> Trigger | None:
        return self.named.get(name)

    @functools.cached_property
    def named(self) -> dict[str, Trigger]:
        """The triggers by name (looked up for every armed deadline at every event of a user)."""
        return {t.name: t for t in self.triggers}


@dataclass(frozen=True, slots=True)
class Armed:
    trigger: str
    due_ms: int
    armed_at_ms: int


@dataclass(frozen=True, slots=True)
class TriggerState:
    """Per user: armed deadlines, when each trigger last counted, and messages counted on the current UTC day."""

    armed: tuple[Armed, ...] = ()
    last_counted: Mapping[str, int] = field(default_factory=dict)
    day: int = 0
    counted_today: int = 0

    def due_ms(self) -> int | None:
        return min((a.due_ms for a in self.armed), default=None)


@dataclass(frozen=True, slots=True)
class Decision:
    """One trigger coming due for one user, and what became of it: the explanation of every message."""

    message_id: str
    user_id: str
    trigger: str
    version: str
    at_ms: int
    cause: str
    outcome: Literal["sent", "suppressed"]
    reason: Literal["consent", "cooldown", "daily_cap", "holdout"] | None
    #: The purpose the trigger needs: should the user withdraw it, a message not shown yet must not be shown.
    consent: str
    arm: Literal["treatment", "control"]
    priority: int
    title: str
    body: str
    values: Mapping[str, Any]
    cap: Mapping[str, int]


def on_event(
    state: TriggerState,
    rules: TriggerSet,
    *,
    user_id: str,
    event: str,
    entered: Collection[str],
    values: Mapping[str, Any],
    consent: Mapping[str, bool],
    now_ms: int,
) -> tuple[TriggerState, list[Decision]]:
    """An event of the user (already folded into ``values``): fire, arm, re-arm and cancel triggers."""
    named = rules.named
    armed = {a.trigger: a for a in state.armed if a.trigger in named}
    due: list[tuple[Trigger, str]] = []
    for trigger in rules.triggers:
        if trigger.kind == "event" and trigger.subject == event:
            due.append((trigger, event))
        elif trigger.kind == "entered" and trigger.subject in entered:
            due.append((trigger, f"entered {trigger.subject}"))
        elif trigger.kind == "inactive":
            armed[trigger.name] = Armed(trigger.name, now_ms + trigger.delay_ms, now_ms)
        elif trigger.kind == "after":
            if event == trigger.cancel_on:
                armed.pop(trigger.name, None)
            elif event == trigger.subject:
                armed[trigger.name] = Armed(trigger.name, now_ms + trigger.delay_ms, now_ms)
    rearmed = tuple(sorted(armed.values(), key=lambda a: (a.due_ms, a.trigger)))
    day = now_ms // DAY_MS
    # One new state with the day rolled over too: _decide then finds it current.
    counted = state.counted_today if day == state.day else 0
    state = TriggerState(rearmed, state.last_counted, day, counted)
    return _decide(state, rules, due, user_id=user_id, values=values, consent=consent, now_ms=now_ms)


def on_clock(
    state: TriggerState,
    rules: TriggerSet,
    *,
    user_id: str,
    values: Mapping[str, Any],
    consent: Mapping[str, bool],
    now_ms: int,
    entered: Collection[str] = (),
) -> tuple[TriggerState, list[Decision]]:
    """The partition clock reached ``now_ms``: fire every armed deadline that passed, once, and the ``entered``
    triggers of segments the clock alone put the user in."""
    passed = [a for a in state.armed if a.due_ms <= now_ms]
    due = [(t, f"entered {t.subject}") for t in rules.triggers if t.kind == "entered" and t.subject in entered]
    if not passed and not due:
        return state, []
    state = replace(state, armed=tuple(a for a in state.armed if a.due_ms > now_ms))
    due += [(t, "clock") for a in passed if (t := rules.by_name(a.trigger)) is not None]
    return _decide(state, rules, due, user_id=user_id, values=values, consent=consent, now_ms=now_ms)


def in_holdout(user_id: str, trigger: str, percent: float) -> bool:
    """Deterministic per user and trigger: the same user is always in the same arm of the same trigger."""
    digest = hashlib.sha256(f"{trigger}\x00{user_id}".encode()).digest()
    return int.from_bytes(digest[:8]) % 10_000 < percent * 100


def message_id(user_id: str, trigger: str, at_ms: int) -> str:
    return hashlib.sha256(f"{user_id}\x00{trigger}\x00{at_ms}".encode()).hexdigest()[:32]


def _decide(
    state: TriggerState,
    rules: TriggerSet,
    due: list[tuple[Trigger, str]],
    *,
    user_id: str,
    values: Mapping[str, Any],
    consent: Mapping[str, bool],
    now_ms: int,
) -> tuple[TriggerState, list[Decision]]:
    day = now_ms // DAY_MS
    if day != state.day:
        state = replace(state, day=day, counted_today=0)
    decisions = []
    for trigger, cause in sorted(due, key=lambda item: (-item[0].priority, item[0].name)):
        if trigger.condition is not None and not trigger.condition.holds(values):
            continue
        reason: Literal["consent", "cooldown", "daily_cap", "holdout"] | None = None
        last = state.last_counted.get(trigger.name)
        if not consent.get(trigger.consent, False):
            reason = "consent"
        elif last is not None and now_ms - last < trigger.cooldown_ms:
            reason = "cooldown"
        elif state.counted_today >= rules.cap_per_day:
            reason = "daily_cap"
        control = in_holdout(user_id, trigger.name, trigger.holdout_percent)
        if reason is None:
            if control:
                reason = "holdout"
            state = replace(
                state,
                last_counted={**state.last_counted, trigger.name: now_ms},
                counted_today=state.counted_today + 1,
            )
        decisions.append(
            Decision(
                message_id=message_id(user_id, trigger.name, now_ms),
                user_id=user_id,
                trigger=trigger.name,
                version=rules.version,
                at_ms=now_ms,
                cause=cause,
                outcome="sent" if reason is None else "suppressed",
                reason=reason,
                consent=trigger.consent,
                arm="control" if control else "treatment",
                priority=trigger.priority,
                title=trigger.title.render(values),
                body=trigger.body.render(values),
                values={name: values.get(name) for name in sorted(trigger.reads)},
                cap={"counted_today": state.counted_today, "limit": rules.cap_per_day},
            )
        )
    return state, decisions


def _show(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        if not math.isfinite(value):
            return ""  # int() raises on it, in a timer that would take the worker down; blank beats a crash loop
        return f"{value:,.2f}" if value != int(value) else f"{int(value):,}"
    if isinstance(value, int) and not isinstance(value, bool):
        return f"{value:,}"
    return str(value)


# -- loading ---------------------------------------------------------------------------------------------------------


def load_triggers(
    text: str, *, source: str, known: Mapping[str, VariableType], segments: Collection[str]
) -> TriggerSet:
    """Parse and compile a trigger file, or raise :class:`TriggerFileError` naming the line at fault.

    ``known``: the rule variables conditions and templates may name (templates also :data:`TEMPLATE_EXTRAS`), with
    their types (:data:`models.variables.VARIABLES`), as :func:`models.segments.load_segments` takes them;
    ``segments``: the declared segment names ``entered`` may refer to.
    """
    top = _pairs(rulefile.compose(text, source, TriggerFileError), source)
    unknown = set(top) - {"triggers", "cap_per_user_per_day"}
    if unknown:
        key = sorted(unknown)[0]
        raise _refuse(source, top[key][0], f"unknown top-level key {key!r}")
    if "triggers" not in top:
        raise TriggerFileError(f"{source}:1: missing 'triggers'")
    cap = 3
    if "cap_per_user_per_day" in top:
        cap = _whole(top["cap_per_user_per_day"][1], source, "cap_per_user_per_day", low=0, high=1_000)
    body = top["triggers"][1]
    if not isinstance(body, yaml.MappingNode):
        raise _refuse(source, body, "'triggers' must map names to triggers")
    entries = _pairs(body, source)
    if len(entries) > MAX_TRIGGERS:
        raise _refuse(source, body, f"more than {MAX_TRIGGERS} triggers")
    triggers = tuple(
        _trigger(name, key, node, source, known, frozenset(segments)) for name, (key, node) in entries.items()
    )
    return TriggerSet(rulefile.version(text), triggers, cap)


def _trigger(
    name: str,
    key: yaml.Node,
    node: yaml.Node,
    source: str,
    known: Mapping[str, VariableType],
    segments: frozenset[str],
) -> Trigger:
    where = f"trigger {name!r}"
    if not re.fullmatch(r"[A-Za-z0-9_-]{1,64}", name):
        raise _refuse(source, key, f"{where}: a name is 1-64 letters, digits, '_' or '-'")
    if not isinstance(node, yaml.MappingNode):
        raise _refuse(source, node, f"{where}: expected a mapping with 'when', 'message' and 'consent'")
    fields = _pairs(node, source)
    for extra in sorted(set(fields) - _TRIGGER_KEYS):
        raise _refuse(source, fields[extra][0], f"{where}: unknown key {extra!r}")
    for required in ("when", "message", "consent"):
        if required not in fields:
            raise _refuse(source, node, f"{where}: missing {required!r}")
    kind, subject, delay_ms, cancel_on = _when(fields["when"][1], source, where, segments)
    condition = None
    if "if" in fields:
        text = _text(fields["if"][1], source, f"{where}: 'if'")
        try:
            condition = compile_expression(text, known=known)
        except ExpressionError as error:
            raise _refuse(source, fields["if"][1], f"{where}: 'if': {error}") from None
    title, body = _message(fields["message"][1], source, where, frozenset(known) | TEMPLATE_EXTRAS.keys())
    consent = _text(fields["consent"][1], source, f"{where}: 'consent'")
    if consent not in PURPOSES:
        raise _refuse(source, fields["consent"][1], f"{where}: consent {consent!r}: one of {', '.join(PURPOSES)}")
    return Trigger(
        name=name,
        kind=kind,
        subject=subject,
        delay_ms=delay_ms,
        cancel_on=cancel_on,
        condition=condition,
        title=title,
        body=body,
        consent=consent,
        priority=_whole(fields["priority"][1], source, f"{where}: 'priority'", -1000, 1000)
        if "priority" in fields
        else 0,
        cooldown_ms=_duration(fields["cooldown"][1], source, f"{where}: 'cooldown'") if "cooldown" in fields else 0,
        holdout_percent=_percent(fields["holdout"][1], source, where) if "holdout" in fields else 0.0,
        description=_text(fields["description"][1], source, f"{where}: 'description'")
        if "description" in fields
        else "",
    )


def _when(node: yaml.Node, source: str, where: str, segments: frozenset[str]) -> tuple[Kind, str, int, str]:
    if not isinstance(node, yaml.MappingNode):
        raise _refuse(source, node, f"{where}: 'when' must be a mapping: event, entered, inactive or after")
    fields = _pairs(node, source)
    kinds = sorted(set(fields) & _WHEN_KINDS)
    if len(kinds) != 1:
        raise _refuse(source, node, f"{where}: 'when' needs exactly one of event, entered, inactive, after")
    kind: Kind = kinds[0]  # type: ignore[assignment]
    allowed = {"after": {"after", "without", "within"}}.get(kind, {kind})
    for extra in sorted(set(fields) - allowed):
        raise _refuse(source, fields[extra][0], f"{where}: 'when: {kind}' does not take {extra!r}")
    value = fields[kind][1]
    if kind == "inactive":
        return kind, "", _duration(value, source, f"{where}: 'inactive'"), ""
    subject = _text(value, source, f"{where}: '{kind}'")
    if kind == "entered" and subject not in segments:
        known = ", ".join(sorted(segments)) or "none"
        raise _refuse(source, value, f"{where}: unknown segment {subject!r} (known: {known})")
    if kind != "after":
        return kind, subject, 0, ""
    for required in ("without", "within"):
        if required not in fields:
            raise _refuse(source, node, f"{where}: 'when: after' needs {required!r}")
    within = _duration(fields["within"][1], source, f"{where}: 'within'")
    without = _text(fields["without"][1], source, f"{where}: 'without'")
    if without == subject:
        reason = f"'without' is the 'after' event {subject!r}: it would cancel the deadline it arms, so it never fires"
        raise _refuse(source, fields["without"][1], f"{where}: {reason}")
    return kind, subject, within, without


def _message(node: yaml.Node, source: str, where: str, names: frozenset[str]) -> tuple[Template, Template]:
    if not isinstance(node, yaml.MappingNode):
        raise _refuse(source, node, f"{where}: 'message' must map 'title' and 'body' to text")
    fields = _pairs(node, source)
    for extra in sorted(set(fields) - {"title", "body"}):
        raise _refuse(source, fields[extra][0], f"{where}: message: unknown key {extra!r}")
    if "title" not in fields:
        raise _refuse(source, node, f"{where}: message: missing 'title'")
    title = _template(fields["title"][1], source, f"{where}: title", names)
    body = (
        _template(fields["body"][1], source, f"{where}: body", names) if "body" in fields else Template("", frozenset())
    )
    return title, body


def _template(node: yaml.Node, source: str, where: str, names: frozenset[str]) -> Template:
    text = _text(node, source, where)
    if len(text) > MAX_TEMPLATE_CHARS:
        raise _refuse(source, node, f"{where}: over {MAX_TEMPLATE_CHARS} characters")
    used = set()
    try:
        parts = list(string.Formatter().parse(text))
    except ValueError as error:
        raise _refuse(source, node, f"{where}: {error} (write {{{{ and }}}} for braces)") from None
    for _, name, spec, conversion in parts:
        if name is None:
            continue
        if spec or conversion or not name.isidentifier():
            raise _refuse(source, node, f"{where}: placeholder {{{name}}} must be a plain name, like {{cart_value}}")
        if name not in names:
            raise _refuse(source, node, f"{where}: unknown placeholder {{{name}}}")
        used.add(name)
    return Template(text, frozenset(used))


def _duration(node: yaml.Node, source: str, where: str) -> int:
    text = node.value if isinstance(node, yaml.ScalarNode) else ""
    match = _DURATION.match(str(text).strip())
    if not match:
        raise _refuse(source, node, f"{where}: expected a duration such as 90s, 15m, 2h or 1d")
    # Compared as a float first: a few hundred digits make it infinite, which int() refuses with OverflowError.
    ms = float(match.group(1)) * _UNIT_MS[match.group(2)]
    if not 1 <= ms <= MAX_DURATION_MS:
        raise _refuse(source, node, f"{where}: a duration is over 0 and at most 30d")
    return int(ms)


def _percent(node: yaml.Node, source: str, where: str) -> float:
    try:
        value = float(node.value) if isinstance(node, yaml.ScalarNode) and node.tag.endswith(("int", "float")) else -1
    except ValueError:
        value = -1
    if not 0 <= value <= 100:
        raise _refuse(source, node, f"{where}: 'holdout' is a percentage from 0 to 100")
    return value


def _whole(node: yaml.Node, source: str, where: str, low: int, high: int) -> int:
    try:
        value = int(node.value) if isinstance(node, yaml.ScalarNode) and node.tag.endswith(":int") else None
    except ValueError:  # YAML 1.1 ints such as 0x1f or 1_000: refused rather than guessed
        value = None
    if value is None:
        raise _refuse(source, node, f"{where}: expected a whole number")
    if not low <= value <= high:
        raise _refuse(source, node, f"{where}: expected {low}..{high}")
    return value


def _text(node: yaml.Node, source: str, where: str) -> str:
    if not isinstance(node, yaml.ScalarNode) or not node.tag.endswith(":str") or not node.value:
        raise _refuse(source, node, f"{where}: expected text")
    return str(node.value)


def _pairs(node: yaml.MappingNode, source: str) -> dict[str, tuple[yaml.Node, yaml.Node]]:
    return rulefile.pairs(node, source, TriggerFileError)


def _refuse(source: str, node: yaml.Node, reason: str) -> rulefile.RuleFileError:
    return rulefile.refuse(source, node, reason, TriggerFileError)
