"""The Redis side of message delivery: per-user inbox, presence, and a pub/sub channel per gateway node.

Key schema (``<prefix>`` is ``NUDGE_APP_ID``)::

    <prefix>:inbox:<user id>      HASH  message id -> {"id", "payload", "at_ms", "consent"} (JSON); expires
                                        inbox_ttl_s after the latest message, so an offline user's messages do not
                                        live forever
    <prefix>:presence:<user id>   SET   ids of the gateway nodes holding a socket of the user; expires ttl_s after
                                        the node last refreshed it, so a crashed node drops out by itself
    <prefix>:node:<node id>       pub/sub channel the node subscribes to: {"user", "id", "payload"} (JSON), a
                                  message to push; or {"type": "withdrawn", "user", "purposes"}, a withdrawal

:func:`deliver` writes the inbox (and reads presence) first and publishes second, while a gateway records presence
first and reads the inbox second: so whichever comes first, a connecting browser gets the message, from its inbox or
over the channel, and the hub (:mod:`ws.protocol`) sends it once per tab; the browser drops repeats by id.
:func:`acknowledge` removes an acked message from the inbox.

A user who withdraws consent for a purpose must not be shown a message that needs it, even one decided before: the
worker puts a ``consent_withdrawn`` record on ``nudge.messages`` after the user's decisions, and the deliverer, which
reads a user's records in order, drops the batch's earlier messages of that purpose (:func:`apply_withdrawals`),
removes those waiting in the inbox and publishes the withdrawal to the nodes holding the user's sockets, which take
the pop-ups already on screen back (:func:`withdraw`).

An inbox entry that cannot be read is skipped (:func:`inbox`) with one of :data:`INBOX_SKIP_REASONS`.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

import orjson
from redis.asyncio import Redis

from app.events import parse_timestamp

log = logging.getLogger(__name__)

DEFAULT_INBOX_TTL_S = 86_400
#: The ``type`` of a ``nudge.messages`` record that takes back the user's messages of some purposes.
WITHDRAWAL = "consent_withdrawn"
#: The ``type`` of a publish on a node channel that takes back the user's messages of some purposes.
WITHDRAWN: Final = "withdrawn"
#: Why an inbox entry was skipped: ``not_json``, or ``shape`` (JSON, but not the object :func:`deliver` writes).
INBOX_SKIP_REASONS: Final = ("not_json", "shape")
DEFAULT_PRESENCE_TTL_S = 30


def inbox_key(prefix: str, user_id: str) -> str:
    return f"{prefix}:inbox:{user_id}"


def presence_key(prefix: str, user_id: str) -> str:
    return f"{prefix}:presence:{user_id}"


def channel(prefix: str, node_id: str) -> str:
    return f"{prefix}:node:{node_id}"


@dataclass(frozen=True, slots=True)
class Outgoing:
    """A message for one user, as it leaves ``nudge.messages``."""

    user_id: str
    message_id: str
    payload: dict[str, Any]
    at_ms: int
    #: The purpose the message needs (``None``: not said, as in records from before it was): see :func:`withdraw`.
    consent: str | None = None


@dataclass(frozen=True, slots=True)
class Withdrawal:
    """The user withdrew consent for ``purposes``: their messages that need one of them must not be shown now."""

    user_id: str
    purposes: frozenset[str]

    def covers(self, message: Outgoing) -> bool:
        """Whether ``message`` is this user's and needs a withdrawn purpose (or does not say which it needs)."""
        return message.user_id == self.user_id and (message.consent is None or message.consent in self.purposes)


async def deliver(
    redis: Redis, prefix: str, messages: Sequence[Outgoing], *, inbox_ttl_s: int = DEFAULT_INBOX_TTL_S
) -> int:
    """Keep each message in its user's inbox, then publish it to every node holding a socket of the user.

    Two round trips for the whole batch, whatever its size. Returns how many publishes were made (0: every user is
    offline; the inboxes keep the messages for their next visit). Idempotent per message id: a redelivery rewrites
    the same inbox entry and republishes.
    """
    if not messages:
        return 0
    async with redis.pipeline(transaction=False) as pipe:
        for message in messages:
            key = inbox_key(prefix, message.user_id)
            entry = orjson.dumps(
                {
                    "id": message.message_id,
                    "payload": message.payload,
                    "at_ms": message.at_ms,
                    "consent": message.consent,
                }
            )
            pipe.hset(key, message.message_id, entry)
            pipe.expire(key, inbox_ttl_s)
            pipe.smembers(presence_key(prefix, message.user_id))
        replies = await pipe.execute()
    published = 0
    async with redis.pipeline(transaction=False) as pipe:
        for message, nodes in zip(messages, replies[2::3], strict=True):
            text = orjson.dumps({"user": message.user_id, "id": message.message_id, "payload": message.payload})
            for node in sorted(n.decode() if isinstance(n, bytes) else n for n in nodes):
                pipe.publish(channel(prefix, node), text)
                published += 1
        if published:
            await pipe.execute()
    return published


async def inbox(
    redis: Redis, prefix: str, user_id: str, *, skipped: Counter[str] | None = None
) -> list[tuple[str, dict[str, Any]]]:
    """The user's unacknowledged messages, oldest first, as ``(message id, payload)``.

    An entry that cannot be read (not JSON, or without the fields :func:`deliver` writes) is skipped with a warning
    each and left to expire with the inbox: one damaged entry must not keep the user's sockets from opening. Pass
    ``skipped`` to have each skip counted there by its reason (one of :data:`INBOX_SKIP_REASONS`); an entry is
    skipped again on every read until it expires.
    """
    readable = []
    for raw in (await redis.hgetall(inbox_key(prefix, user_id))).values():
        entry = _inbox_entry(user_id, raw)
        if isinstance(entry, Outgoing):
            readable.append(entry)
            continue
        # Without the user id: it is personal data, and the warning repeats on each of the user's connections.
        log.warning("skipped an unreadable inbox entry of a user: %s", entry)
        if skipped is not None:
            skipped[entry] += 1
    readable.sort(key=lambda entry: (entry.at_ms, entry.message_id))
    return [(entry.message_id, entry.payload) for entry in readable]


def _inbox_entry(user_id: str, raw: bytes | str) -> Outgoing | str:
    """The message an inbox entry holds or, if it is not one :func:`deliver` wrote, why (an ``INBOX_SKIP_REASONS``)."""
    try:
        entry = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return "not_json"
    if not isinstance(entry, dict):
        return "shape"
    at_ms, message_id, payload, consent = (
        entry.get("at_ms"),
        entry.get("id"),
        entry.get("payload"),
        entry.get("consent"),
    )
    if type(at_ms) is not int or not isinstance(message_id, str) or not isinstance(payload, dict):
        return "shape"
    return Outgoing(user_id, message_id, payload, at_ms, consent if isinstance(consent, str) else None)


async def acknowledge(redis: Redis, prefix: str, user_id: str, message_id: str) -> None:
    await redis.hdel(inbox_key(prefix, user_id), message_id)


async def present(
    redis: Redis, prefix: str, user_ids: Iterable[str], node_id: str, *, ttl_s: int = DEFAULT_PRESENCE_TTL_S
) -> None:
    """Record that ``node_id`` holds a socket of each user; call again within ``ttl_s`` while it does."""
    async with redis.pipeline(transaction=False) as pipe:
        for user_id in user_ids:
            key = presence_key(prefix, user_id)
            pipe.sadd(key, node_id)
            pipe.expire(key, ttl_s)
        await pipe.execute()


async def absent(redis: Redis, prefix: str, user_id: str, node_id: str) -> None:
    """The node's last socket of the user closed."""
    await redis.srem(presence_key(prefix, user_id), node_id)


async def withdraw(redis: Redis, prefix: str, withdrawals: Sequence[Withdrawal]) -> int:
    """Take back the messages each withdrawal covers: remove them from the users' inboxes, then publish the withdrawal
    to every node holding a socket of the user, which tells the user's tabs (:meth:`ws.protocol.Hub.withdraw`).

    Returns how many inbox entries were removed. One round trip reads the inboxes, a second removes the covered
    entries and then reads presence, and a third, only if someone is online, publishes: so a tab that opens meanwhile
    either reads its inbox after the removal or is present in time to be told. Told, it may still be replayed what it
    read before the removal: its hub skips those messages (:meth:`ws.protocol.Hub.replay`). Withdrawing again removes
    nothing more.
    """
    if not withdrawals:
        return 0
    async with redis.pipeline(transaction=False) as pipe:
        for withdrawal in withdrawals:
            pipe.hgetall(inbox_key(prefix, withdrawal.user_id))
        inboxes = await pipe.execute()
    # Where the next pipeline's HDEL and SMEMBERS replies are: a user with nothing to remove has no HDEL.
    hdel_replies: list[int] = []
    presence_replies: list[int] = []
    async with redis.pipeline(transaction=False) as pipe:
        for withdrawal, entries in zip(withdrawals, inboxes, strict=True):
            covered = _covered(withdrawal, entries)
            if covered:
                hdel_replies.append(len(pipe))
                pipe.hdel(inbox_key(prefix, withdrawal.user_id), *covered)
            presence_replies.append(len(pipe))
            pipe.smembers(presence_key(prefix, withdrawal.user_id))
        replies = await pipe.execute()
    removed = sum(replies[index] for index in hdel_replies)
    presences = [replies[index] for index in presence_replies]
    published = 0
    async with redis.pipeline(transaction=False) as pipe:
        for withdrawal, nodes in zip(withdrawals, presences, strict=True):
            text = orjson.dumps(
                {"type": WITHDRAWN, "user": withdrawal.user_id, "purposes": sorted(withdrawal.purposes)}
            )
            for node in sorted(n.decode() if isinstance(n, bytes) else n for n in nodes):
                pipe.publish(channel(prefix, node), text)
                published += 1
        if published:
            await pipe.execute()
    return int(removed)


def _covered(withdrawal: Withdrawal, entries: Mapping[bytes | str, bytes | str]) -> list[bytes | str]:
    """The fields of the user's inbox ``entries`` that ``withdrawal`` takes back."""
    covered = []
    for field, raw in entries.items():
        entry = _inbox_entry(withdrawal.user_id, raw)
        # An unreadable entry is not shown anyway: it goes too.
        if not isinstance(entry, Outgoing) or withdrawal.covers(entry):
            covered.append(field)
    return covered


def apply_withdrawals(records: Iterable[Outgoing | Withdrawal]) -> tuple[list[Outgoing], list[Withdrawal]]:
    """A batch of records, in their order on the topic: the messages still to deliver, and the withdrawals.

    A withdrawal drops the messages before it that it covers; the ones after it were decided with the user's new
    consent. Carry out the withdrawals first (they also clear what earlier batches left in the inboxes), then
    deliver the messages.
    """
    messages: list[Outgoing] = []
    withdrawals: list[Withdrawal] = []
    for record in records:
        if isinstance(record, Withdrawal):
            messages = [message for message in messages if not record.covers(message)]
            withdrawals.append(record)
        else:
            messages.append(record)
    return messages, withdrawals


def outgoing(raw: bytes) -> Outgoing | Withdrawal | None:
    """The message a ``nudge.messages`` record asks to push, the withdrawal it states, or ``None`` for a suppressed
    decision.

    Raises :class:`ValueError` with the reason for a record that is neither (see ``app.pipeline.decision_record``
    and ``app.pipeline._withdrawals``): the caller logs it and moves on, since it came from another producer.
    """
    try:
        record = orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise ValueError("not JSON") from None
    if not isinstance(record, dict):
        raise ValueError("not a JSON object")
    if record.get("type") == WITHDRAWAL:
        return _withdrawal(record)
    if record.get("outcome") != "sent":
        if record.get("outcome") == "suppressed":
            return None
        raise ValueError(f"outcome must be sent or suppressed, not {str(record.get('outcome'))[:40]!r}")
    user_id, message_id, message = record.get("userId"), record.get("id"), record.get("message")
    if not isinstance(user_id, str) or not user_id or not isinstance(message_id, str) or not message_id:
        raise ValueError("userId and id must be non-empty strings")
    if not isinstance(message, dict) or not isinstance(message.get("title"), str):
        raise ValueError("message must be an object with a title")
    at_ms = parse_timestamp(record.get("timestamp"), field="timestamp")
    payload = {
        "trigger": record.get("trigger"),
        "title": message["title"],
        "body": message.get("body") or "",
        "priority": record.get("priority", 0),
        "timestamp": record["timestamp"],
    }
    consent = record.get("consent")
    purpose = consent if isinstance(consent, str) else None
    if purpose is not None:
        # In the payload too: the browser takes the pop-ups of a withdrawn purpose off the screen (ws.protocol).
        payload["consent"] = purpose
    return Outgoing(user_id, message_id, payload, at_ms, purpose)


def _withdrawal(record: dict[str, Any]) -> Withdrawal:
    user_id, purposes = record.get("userId"), record.get("purposes")
    if not isinstance(user_id, str) or not user_id:
        raise ValueError("a withdrawal's userId must be a non-empty string")
    if not isinstance(purposes, list) or not purposes or not all(isinstance(p, str) for p in purposes):
        raise ValueError("a withdrawal's purposes must be a non-empty list of names")
    return Withdrawal(user_id, frozenset(purposes))
