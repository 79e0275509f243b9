"""Features, delayed labels, metrics and the intent model's contract."""

from __future__ import annotations

import copy
import math
import pickle
import random
from collections.abc import Mapping
from typing import Any

import pytest

from app.events import Event
from models import labels
from models.features import FEATURE_NAMES, features, product_seen_before
from models.intent import IntentModel
from models.metrics import log_loss, roc_auc
from tables.profile import Profile, fold

T0 = 1_767_225_600_000  # 2026-01-01T00:00:00Z
HORIZON = 300_000


def event(name: str, ts: int = T0, **props: object) -> Event:
    return Event("track", name, "u1", f"m{ts}{name}", ts, props, {"userAgent": "Mozilla/5.0 (iPhone)"})


def test_features_describe_the_moment() -> None:
    profile = Profile(user_id="u1")
    for step in (
        event("Product Viewed", T0, product_id="p1", category="shoes", price=20.0),
        event("Product Added", T0 + 60_000, product_id="p1", price=20.0),
    ):
        profile = fold(profile, step)
    x = features(profile, event("Cart Viewed", T0 + 180_000), seen_before=True)
    assert x["has_cart"] == 1.0
    assert x["cart_value_log"] == pytest.approx(math.log1p(20.0))
    assert x["cart_idle_log_minutes"] == pytest.approx(math.log1p(2.0))
    assert x["never_ordered"] == 1.0 and x["orders_log"] == 0.0
    assert x["is_cart_view"] == 1.0 and x["is_view"] == 0.0
    assert x["mobile"] == 1.0 and x["product_seen_before"] == 1.0
    assert all(isinstance(v, float) and math.isfinite(v) for v in x.values())


def test_product_seen_before_reads_the_profile_before_the_event() -> None:
    viewed = fold(Profile(user_id="u1"), event("Product Viewed", product_id="p1"))
    assert product_seen_before(viewed, event("Product Viewed", product_id="p1"))
    assert not product_seen_before(viewed, event("Product Viewed", product_id="p2"))
    assert not product_seen_before(None, event("Product Viewed", product_id="p1"))


def test_a_purchase_labels_samples_within_the_horizon_positive_and_older_ones_negative() -> None:
    pending: tuple[labels.Sample, ...] = ()
    for ts in (T0, T0 + 200_000, T0 + 400_000):
        pending = labels.add(pending, labels.Sample.of(ts, {"t": float(ts)}))
    remaining, resolved = labels.on_purchase(pending, T0 + 450_000, HORIZON)
    assert [r.label for r in resolved] == [False, True, True]
    assert remaining == ()


def test_samples_expire_negative_once_their_horizon_passes() -> None:
    pending = (labels.Sample.of(T0, {}), labels.Sample.of(T0 + 100_000, {}))
    remaining, expired = labels.expire(pending, T0 + HORIZON + 1, HORIZON)
    assert [r.label for r in expired] == [False]
    assert [s.timestamp_ms for s in remaining] == [T0 + 100_000]


def test_pending_samples_are_bounded() -> None:
    pending: tuple[labels.Sample, ...] = ()
    for i in range(1000):
        pending = labels.add(pending, labels.Sample.of(T0 + i, {}))
    assert len(pending) == labels.MAX_PENDING
    assert pending[-1].timestamp_ms == T0 + 999


def test_roc_auc_is_exact_with_ties() -> None:
    assert roc_auc([0.1, 0.4, 0.35, 0.8], [False, False, True, True]) == 0.75
    assert roc_auc([0.5, 0.5], [False, True]) == 0.5
    assert math.isnan(roc_auc([0.2, 0.3], [True, True]))
    assert log_loss([0.9, 0.1], [True, False]) == pytest.approx(-math.log(0.9))


def _samples(seed: int, n: int = 400) -> list[tuple[dict[str, float], bool]]:
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        x = {"signal": rng.random(), "noise": rng.random()}
        out.append((x, x["signal"] + rng.gauss(0, 0.1) > 0.6))
    return out


def test_the_intent_model_learns_a_signal_online() -> None:
    model = IntentModel()
    data = _samples(1, 2000)
    for x, y in data:
        model.learn(x, y)
    test = _samples(2)
    assert roc_auc([model.score(x) for x, _ in test], [y for _, y in test]) > 0.9
    assert model.version == 2000


def test_the_intent_model_keeps_the_model_contract() -> None:
    """Pickles, does not mutate its input, tolerates new and missing features, is reproducible."""
    first, second = IntentModel(), IntentModel()
    for x, y in _samples(3):
        frozen = copy.deepcopy(x)
        first.learn(x, y)
        second.learn(x, y)
        assert x == frozen
    probe = {"signal": 0.9, "noise": 0.1}
    assert first.score(probe) == second.score(probe)
    restored = pickle.loads(pickle.dumps(first))
    assert restored.score(probe) == first.score(probe) and restored.version == first.version
    assert 0.0 <= first.score({"signal": 0.9, "brand_new": 3.0}) <= 1.0
    assert 0.0 <= first.score({}) <= 1.0
    first.learn({"brand_new": 1.0}, True)


def test_uci_rows_become_finite_session_features() -> None:
    from app.evaluate import uci_features

    row = {
        "PageValues": "12.5",
        "ExitRates": "0.02",
        "BounceRates": "0.0",
        "ProductRelated": "30",
        "ProductRelated_Duration": "-1",
        "Administrative": "2",
        "Administrative_Duration": "40.5",
        "Month": "Nov",
        "VisitorType": "New_Visitor",
    }
    x = uci_features(row)
    assert x["page_values_log"] == pytest.approx(math.log1p(12.5))
    assert x["product_seconds_log"] == 0.0  # negative durations in the data are clamped
    assert x["month"] == 10.0 and x["new_visitor"] == 1.0
    assert all(math.isfinite(v) for v in x.values())


def test_unknown_model_kind_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown intent model kind"):
        IntentModel("magic")  # type: ignore[arg-type]


def test_the_logistic_score_is_the_river_pipelines_number() -> None:
    """The fused scoring path gives exactly River's ``predict_proba_one``, as the model learns: same sums, same order.

    The stream has what the live features have: dense values, one-hot ``category=<k>`` keys that come and go, a
    feature first seen late, a constant one (zero variance) and a heavy-tailed one the scaler clips.
    """
    rng = random.Random(5)
    model = IntentModel()
    for step in range(3000):
        x = {"signal": rng.gauss(0, 1), "constant": 1.0, "heavy": rng.expovariate(0.1) * (50 if step % 97 == 0 else 1)}
        if rng.random() < 0.4:
            x[f"category={rng.randrange(8)}"] = 1.0
        if step > 1500:
            x["late"] = rng.random()
        river = float(model._pipeline.predict_proba_one(dict(x)).get(True, 0.0))
        assert model.score(x) == river
        model.learn(x, x["signal"] + rng.gauss(0, 0.5) > 0.8)


def _river_state(pipeline: Any) -> tuple[object, ...]:
    """Everything River's ``learn_one`` changes in the logistic pipeline, bit for bit and in key order."""
    scaler, regression = pipeline.steps.values()
    optimizer = regression.optimizer

    def bits(values: Mapping[Any, float]) -> list[tuple[Any, str]]:
        return [(key, float(value).hex()) for key, value in values.items()]

    return (
        bits(regression._weights.to_dict()),
        float(regression.intercept).hex(),
        bits(optimizer.g2),
        optimizer.n_iterations,
        [(key, [float(v).hex() for v in s]) for key, s in scaler._stats.items()],
    )


def _live_like_stream(seed: int, n: int) -> list[tuple[dict[str, float], bool]]:
    """Samples shaped like the live features, plus the extremes: see the test below."""
    rng = random.Random(seed)
    out = []
    for step in range(n):
        x = {name: rng.gauss(0, 1) for name in FEATURE_NAMES[:12] if rng.random() < 0.9}
        x["has_cart"] = float(rng.random() < 0.05)
        x["never_ordered"] = 1.0
        x["cart_value_log"] = rng.expovariate(0.5) * (1e6 if step % 89 == 0 else 1)
        if rng.random() < 0.5:
            x[f"category={rng.randrange(8)}"] = 1.0
        if step % 50 < 5:
            x["campaign=flash"] = rng.choice((1, -1)) * rng.uniform(20.0, 300.0)
        if step > n // 2:
            x["price_log"] = rng.uniform(0, 6)
        signal = x.get("views_log", 0.0) + 3 * x["has_cart"] + x.get("campaign=flash", 0.0)
        out.append((x, signal + rng.gauss(0, 1) > 1.0))
    return out


@pytest.mark.parametrize("clip_gradient", [None, 0.2], ids=["river-default-clip", "clipped-gradient"])
def test_the_logistic_learner_leaves_river_pipelines_state(clip_gradient: float | None) -> None:
    """The fused learner leaves exactly the state River's ``learn_one`` leaves, at every step, to the last bit.

    The stream has what the live features have: dense values with keys that sometimes go missing, ``category=<k>``
    one-hot keys that come and go, a feature first seen halfway, a constant one (zero variance), a heavy-tailed
    one the scaler clips. A ``campaign=<k>`` one-hot key carries large values, so the logit passes the loss
    gradient's cut-offs (margin 18) and the sigmoid's (30) both ways. ``clip_gradient`` of 0.2 makes River clamp
    the loss gradient (its default, 1e12, never does for the log loss).
    """
    model, river = IntentModel(), IntentModel()._pipeline
    if clip_gradient is not None:
        for pipeline in (model._pipeline, river):
            pipeline.steps["LogisticRegression"].clip_gradient = clip_gradient
    logits = []
    for x, y in _live_like_stream(7, 3000):
        scaler, regression = river.steps.values()
        logits.append(regression._raw_dot_one(scaler.transform_one(x)))
        frozen = dict(x)
        model.learn(x, y)
        river.learn_one(dict(x), y)
        assert x == frozen
        assert _river_state(model._pipeline) == _river_state(river)
        expected = river.predict_proba_one(dict(x))
        assert model._pipeline.predict_proba_one(dict(x)) == expected
        assert model.score(x) == expected[True]
    assert model.version == 3000
    for low, high in ((-math.inf, -30), (-30, -18), (18, 30), (30, math.inf)):  # every side of every cut-off
        assert any(low < logit < high for logit in logits), (low, high)


def test_a_restored_logistic_model_keeps_learning_like_river() -> None:
    """A pickled and restored model (as workers hand over) carries on exactly as River's own pipeline would."""
    stream = _live_like_stream(11, 1200)
    model, river = IntentModel(), IntentModel()._pipeline
    for x, y in stream[:600]:
        model.learn(x, y)
        river.learn_one(dict(x), y)
    restored, river = pickle.loads(pickle.dumps(model)), pickle.loads(pickle.dumps(river))
    assert restored.version == 600 and _river_state(restored._pipeline) == _river_state(river)
    for x, y in stream[600:]:
        restored.learn(x, y)
        river.learn_one(dict(x), y)
        assert restored.score(x) == river.predict_proba_one(dict(x))[True]
    assert _river_state(restored._pipeline) == _river_state(river)
    assert _river_state(model._pipeline) != _river_state(restored._pipeline)  # the original was not touched
