"""Faust codecs for table keys and profile values.

``utf8`` keys make Faust's table routing hash the same bytes as every other producer keying by user id (see
:mod:`app.partitioning`). ``profile`` values are orjson-encoded :class:`tables.profile.Profile` dataclasses; the
bulk changelog writer (:mod:`tables.changelog`) encodes with the same functions, so recovery reads what it wrote.
"""

from __future__ import annotations

from typing import Any

import orjson
from faust.serializers import codecs

from tables.profile import Profile


def encode_key(key: str) -> bytes:
    return key.encode()


def encode_profile(profile: Profile) -> bytes:
    return orjson.dumps(profile)


def decode_profile(data: bytes) -> Profile:
    return Profile.from_dict(orjson.loads(data))


class Utf8Codec(codecs.Codec):
    def _dumps(self, obj: Any) -> bytes:
        return obj if isinstance(obj, bytes) else str(obj).encode()

    def _loads(self, s: bytes) -> Any:
        return s.decode()


class ProfileCodec(codecs.Codec):
    def _dumps(self, obj: Any) -> bytes:
        return encode_profile(obj)

    def _loads(self, s: bytes) -> Any:
        return decode_profile(s)


def register() -> None:
    """Make the codecs known to Faust by name; idempotent."""
    codecs.register("utf8", Utf8Codec())
    codecs.register("profile", ProfileCodec())
