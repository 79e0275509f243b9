"""``nudge eval`` on REES46 measures the score where it is used: at every scored event, whatever the model learns."""

from __future__ import annotations

import pytest

from app.cli import DEFAULT_REES46
from app.evaluate import evaluate_rees46
from models import labels


def test_the_rees46_eval_measures_every_scored_event_whatever_the_model_learns_from(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    thinned = evaluate_rees46(DEFAULT_REES46)
    monkeypatch.setattr(labels, "sampling_due", lambda *_: True)  # learn from every scored event instead
    every = evaluate_rees46(DEFAULT_REES46)
    assert (thinned["scored"], thinned["positives"]) == (every["scored"], every["positives"]) == (14_280, 494)
    assert thinned["baseline_auc"] == every["baseline_auc"]  # the same moments, the same labels
    assert thinned["intent_auc"] != every["intent_auc"]  # but a model that learned from fewer samples
    assert abs(thinned["intent_auc"] - every["intent_auc"]) < 0.005  # measured: 0.6311 against 0.6318
