"""The contract every Nudge model keeps, checked over all of them (like River's ``check_estimator``).

A model pickles and its copy predicts the same; learning and predicting leave the caller's dict alone; new and missing
features raise nothing and give a finite prediction; two instances with the same seed fed the same stream agree.
A new model joins by adding one :class:`Adapter` to ``MODELS``.
"""

from __future__ import annotations

import copy
import math
import pickle
import random
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest

from models.clusters import FEATURES as CLUSTER_FEATURES
from models.clusters import BehaviourClusters
from models.intent import IntentModel


@dataclass(frozen=True)
class Adapter:
    """How the contract drives one model: build it seeded, predict a number, learn a sample (label or not)."""

    name: str
    build: Callable[[int], Any]
    predict: Callable[[Any, dict[str, float]], float]
    learn: Callable[[Any, dict[str, float], bool], None]
    #: The features the model is meant for, so the stream exercises what it learns from.
    features: tuple[str, ...]
    scale: float = 1.0


def _score(model: Any, x: dict[str, float]) -> float:
    return float(model.score(x))


def _learn_labelled(model: Any, x: dict[str, float], y: bool) -> None:
    model.learn(x, y)


def _assign(model: Any, x: dict[str, float]) -> float:
    return float(model.assign(x))


def _learn_unlabelled(model: Any, x: dict[str, float], y: bool) -> None:
    model.learn(x)


INTENT_FEATURES = ("orders_log", "revenue_log", "views_log", "has_cart", "cart_value_log")
MODELS = [
    Adapter(
        "intent-logistic",
        build=lambda seed: IntentModel("logistic", seed=seed),
        predict=_score,
        learn=_learn_labelled,
        features=INTENT_FEATURES,
    ),
    Adapter(
        "intent-forest",
        build=lambda seed: IntentModel("forest", seed=seed),
        predict=_score,
        learn=_learn_labelled,
        features=INTENT_FEATURES,
    ),
    Adapter(
        "clusters",
        build=lambda seed: BehaviourClusters(seed=seed),
        predict=_assign,
        learn=_learn_unlabelled,
        features=CLUSTER_FEATURES,
        scale=50.0,  # plain units: counts, days and money, not log-compressed features
    ),
]


def stream(adapter: Adapter, n: int = 300, seed: int = 0) -> list[tuple[dict[str, float], bool]]:
    """A seeded stream whose label depends on the first feature, in the adapter's units."""
    rng = random.Random(seed)
    samples = []
    for _ in range(n):
        x = {name: round(rng.random() * adapter.scale, 3) for name in adapter.features}
        samples.append((x, x[adapter.features[0]] + rng.gauss(0, 0.1 * adapter.scale) > 0.5 * adapter.scale))
    return samples


def trained(adapter: Adapter, seed: int = 42) -> Any:
    model = adapter.build(seed)
    for x, y in stream(adapter):
        adapter.learn(model, x, y)
    return model


def probes(adapter: Adapter) -> list[dict[str, float]]:
    return [x for x, _ in stream(adapter, n=40, seed=1)]


@pytest.fixture(params=MODELS, ids=[adapter.name for adapter in MODELS])
def adapter(request: pytest.FixtureRequest) -> Adapter:
    return request.param  # type: ignore[no-any-return]


def test_a_pickled_copy_predicts_the_same_and_keeps_learning_the_same(adapter: Adapter) -> None:
    model = trained(adapter)
    copied = pickle.loads(pickle.dumps(model))
    predictions = [adapter.predict(model, x) for x in probes(adapter)]
    assert len(set(predictions)) > 1, "the trained model predicts one value for all probes: the check would be vacuous"
    assert [adapter.predict(copied, x) for x in probes(adapter)] == predictions
    assert copied.version == model.version
    for x, y in stream(adapter, n=20, seed=2):
        adapter.learn(model, x, y)
        adapter.learn(copied, x, y)
    assert [adapter.predict(copied, x) for x in probes(adapter)] == [adapter.predict(model, x) for x in probes(adapter)]


def test_learning_and_predicting_leave_the_input_alone(adapter: Adapter) -> None:
    model = adapter.build(42)
    for x, y in stream(adapter, n=100):
        frozen = copy.deepcopy(x)
        adapter.learn(model, x, y)
        adapter.predict(model, x)
        assert x == frozen


def test_new_and_missing_features_are_tolerated(adapter: Adapter) -> None:
    fresh = adapter.build(42)
    model = trained(adapter)
    first, *others = adapter.features
    odd = [
        {},
        {"brand_new": 3.0},
        {first: 0.5 * adapter.scale},
        {**dict.fromkeys(others, 0.2 * adapter.scale), "brand_new": -1.0},
    ]
    for x in odd:
        for each in (fresh, model):
            assert math.isfinite(adapter.predict(each, x))
            adapter.learn(each, x, True)
            assert math.isfinite(adapter.predict(each, x))


def test_two_models_with_the_same_seed_fed_the_same_stream_agree(adapter: Adapter) -> None:
    first, second = trained(adapter), trained(adapter)
    assert [adapter.predict(first, x) for x in probes(adapter)] == [adapter.predict(second, x) for x in probes(adapter)]
    assert first.version == second.version == len(stream(adapter))
