"""Faust codecs for table keys, profile and insight values.

``utf8`` keys make Faust's table routing hash the same bytes as every other producer keying by user id (see
:mod:`app.partitioning`). ``profile`` values are orjson-encoded :class:`tables.profile.Profile` dataclasses; the
bulk changelog writer (:mod:`tables.changelog`) encodes with the same functions, so recovery reads what it wrote.
"""

from __future__ import annotations

from typing import Any

import orjson
from faust.serializers import codecs

from models.features import FEATURE_NAMES
from models.insight import Insight
from models.labels import Sample
from models.triggers import Armed, TriggerState
from tables.profile import Profile


def encode_key(key: str) -> bytes:
    return key.encode()


def encode_profile(profile: Profile) -> bytes:
    return orjson.dumps(profile)


def decode_profile(data: bytes) -> Profile:
    return Profile.from_dict(orjson.loads(data))


def encode_insight(insight: Insight) -> bytes:
    """Pending samples are stored as ``[time, score, baseline, packed features, extra features]`` (see ``Sample``)."""
    return orjson.dumps(
        {
            "intent": insight.intent,
            "model_version": insight.model_version,
            "segments": insight.segments,
            "cluster": insight.cluster,
            "pending": [[s.timestamp_ms, s.score, s.baseline, s.packed, s.extra] for s in insight.pending],
            "recheck_ms": insight.recheck_ms,
            "as_of_ms": insight.as_of_ms,
            "triggers": {
                "armed": [[a.trigger, a.due_ms, a.armed_at_ms] for a in insight.triggers.armed],
                "last_counted": insight.triggers.last_counted,
                "day": insight.triggers.day,
                "counted_today": insight.triggers.counted_today,
            },
            "source": insight.source,
        }
    )


def decode_insight(data: bytes) -> Insight:
    raw = orjson.loads(data)
    pending = tuple(
        Sample(ts, tuple(packed), extra, score, baseline)
        for ts, score, baseline, packed, extra in raw["pending"]
        if len(packed) == len(FEATURE_NAMES)  # written before the feature set changed: unusable, dropped
    )
    return Insight(
        intent=raw["intent"],
        model_version=raw["model_version"],
        segments=tuple(raw["segments"]),
        cluster=raw["cluster"],
        pending=pending,
        recheck_ms=raw["recheck_ms"],
        as_of_ms=raw["as_of_ms"],
        triggers=TriggerState(
            armed=tuple(Armed(*armed) for armed in raw["triggers"]["armed"]),
            last_counted=raw["triggers"]["last_counted"],
            day=raw["triggers"]["day"],
            counted_today=raw["triggers"]["counted_today"],
        ),
        source=(raw["source"][0], raw["source"][1]) if "source" in raw else (-1, -1),
    )


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


class JsonCodec(codecs.Codec):
    """Plain JSON values (lists and dicts) with orjson."""

    def _dumps(self, obj: Any) -> bytes:
        return orjson.dumps(obj)

    def _loads(self, s: bytes) -> Any:
        return orjson.loads(s)


class InsightCodec(codecs.Codec):
    def _dumps(self, obj: Any) -> bytes:
        return encode_insight(obj)

    def _loads(self, s: bytes) -> Any:
        return decode_insight(s)


def register() -> None:
    """Make the codecs known to Faust by name; idempotent."""
    codecs.register("utf8", Utf8Codec())
    codecs.register("profile", ProfileCodec())
    codecs.register("insight", InsightCodec())
    codecs.register("orjson", JsonCodec())
