"""The purchase-intent model: River behind the small contract every Nudge model keeps.

``score(features) -> float`` is the probability of a purchase within the horizon; ``learn(features, label)`` folds
in one resolved sample (see :mod:`models.labels`). ``version`` counts what it learned, so a decision can say which
model state produced its score. Instances pickle, so a worker can snapshot and hand them over.
"""

from __future__ import annotations

from collections.abc import Mapping

from river import compose, linear_model, optim, preprocessing


class IntentModel:
    """Online logistic regression on standardised features, learning one sample at a time."""

    def __init__(self, *, learning_rate: float = 0.01, l2: float = 1e-4) -> None:
        self._pipeline = compose.Pipeline(
            preprocessing.StandardScaler(),
            linear_model.LogisticRegression(optimizer=optim.SGD(learning_rate), l2=l2),
        )
        self.version = 0

    def score(self, features: Mapping[str, float]) -> float:
        """Purchase probability in [0, 1]; 0.5-ish before any learning."""
        return float(self._pipeline.predict_proba_one(dict(features)).get(True, 0.0))

    def learn(self, features: Mapping[str, float], label: bool) -> None:
        self._pipeline.learn_one(dict(features), label)
        self.version += 1
