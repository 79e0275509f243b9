"""Personal fields, encrypted at the edge with a key per user, so erasing the key shreds every copy.

The collector and the gateway encrypt the fields named in :data:`PERSONAL_FIELDS` (email, name, phone, address, IP)
before an event reaches ``nudge.events``; the topic, the changelogs and any backup of them hold only
``enc:v1:<base64url(nonce + AES-256-GCM ciphertext)>`` tokens. The key lives in Redis under
``<app id>:key:<user id>`` (:mod:`app.keys`); erasure deletes it, after which no copy of those fields can be read
(crypto-shredding). The user id is bound into each token (authenticated data), so a token cannot be moved to
another user's record and decrypted with that user's key.

Pure functions: the caller fetches the key.
"""

from __future__ import annotations

import base64
import os
from collections.abc import Iterable, Mapping
from typing import Any, Final

import orjson
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

PREFIX: Final = "enc:v1:"
KEY_BYTES: Final = 32
#: Dotted paths of the fields treated as personal data; ``NUDGE_PERSONAL_FIELDS`` adds more (see ``Settings``).
PERSONAL_FIELDS: Final = (
    "traits.email",
    "traits.name",
    "traits.firstName",
    "traits.lastName",
    "traits.phone",
    "traits.address",
    "context.ip",
    "context.traits.email",
    "context.traits.name",
    "context.traits.phone",
    "properties.email",
)


class Unreadable(ValueError):
    """A token cannot be decrypted: the user's key is gone (erased) or it is not this user's token."""


def new_key() -> bytes:
    return AESGCM.generate_key(bit_length=KEY_BYTES * 8)


def has_personal_fields(event: Mapping[str, Any], fields: Iterable[str] = PERSONAL_FIELDS) -> bool:
    return any(_get(event, path) is not None for path in fields)


def encrypt_fields(
    event: Mapping[str, Any], key: bytes, user_id: str, fields: Iterable[str] = PERSONAL_FIELDS
) -> dict[str, Any]:
    """A copy of ``event`` with each personal field present replaced by a token; tokens already there stay."""
    result = _copy(event)
    for path in fields:
        value = _get(result, path)
        if value is None or is_token(value):
            continue
        _set(result, path, encrypt_value(value, key, user_id))
    return result


def decrypt_fields(
    data: Mapping[str, Any], key: bytes | None, user_id: str, fields: Iterable[str] = PERSONAL_FIELDS
) -> dict[str, Any]:
    """A copy of ``data`` with tokens at ``fields`` decrypted; raises :class:`Unreadable` if one cannot be."""
    result = _copy(data)
    for path in fields:
        value = _get(result, path)
        if is_token(value):
            _set(result, path, decrypt_value(value, key, user_id))
    return result


def encrypt_value(value: Any, key: bytes, user_id: str) -> str:
    nonce = os.urandom(12)
    sealed = AESGCM(key).encrypt(nonce, orjson.dumps(value), user_id.encode("utf-8", "surrogatepass"))
    return PREFIX + base64.urlsafe_b64encode(nonce + sealed).decode()


def decrypt_value(token: str, key: bytes | None, user_id: str) -> Any:
    if key is None:
        raise Unreadable("no key for this user: erased, or never had personal data")
    try:
        raw = base64.urlsafe_b64decode(token.removeprefix(PREFIX))
        opened = AESGCM(key).decrypt(raw[:12], raw[12:], user_id.encode("utf-8", "surrogatepass"))
    except (InvalidTag, ValueError) as error:
        raise Unreadable("the token does not open with this user's key") from error
    return orjson.loads(opened)


def is_token(value: object) -> bool:
    return isinstance(value, str) and value.startswith(PREFIX)


def _get(data: Mapping[str, Any], path: str) -> Any:
    node: Any = data
    for part in path.split("."):
        if not isinstance(node, Mapping):
            return None
        node = node.get(part)
    return node


def _set(data: dict[str, Any], path: str, value: Any) -> None:
    *parents, last = path.split(".")
    node = data
    for part in parents:
        node = node[part]
    node[last] = value


def _copy(data: Mapping[str, Any]) -> dict[str, Any]:
    """Deep enough: the dicts along personal paths are copied, the rest shared (nothing here mutates them)."""
    result = dict(data)
    for top in ("traits", "context", "properties"):
        if isinstance(result.get(top), Mapping):
            result[top] = dict(result[top])
    context = result.get("context")
    if isinstance(context, dict) and isinstance(context.get("traits"), Mapping):
        context["traits"] = dict(context["traits"])
    return result
