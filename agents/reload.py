"""Hot-reload the segment file and the content map when they change on disk (see :mod:`app.rules`)."""

from __future__ import annotations

import logging

from agents.ingest import pipeline, rules
from app.main import app

log = logging.getLogger(__name__)
CHECK_EVERY_S = 1.0
REPORT_EVERY_S = 60.0


@app.timer(CHECK_EVERY_S, name="reload_rules")
async def reload_rules() -> None:
    rules.reload_if_changed()


@app.timer(REPORT_EVERY_S, name="report_models")
async def report_models() -> None:
    """Log each held partition's progressive intent metrics: the model's quality shows in the logs too."""
    for partition, models in sorted(pipeline.learning.models.items()):
        summary = models.progress.summary()
        log.info(
            "partition %d model %s: rolling auc %s (baseline %s), log loss %s over %d samples, %d positive",
            partition,
            models.version,
            summary["auc"],
            summary["baseline_auc"],
            summary["log_loss"],
            summary["samples"],
            summary["positives"],
        )
