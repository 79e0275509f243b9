"""Log each held partition's progressive intent metrics every minute: the model's quality shows in the logs too."""

from __future__ import annotations

import logging

from agents.ingest import pipeline
from app.main import app

log = logging.getLogger(__name__)
REPORT_EVERY_S = 60.0


@app.timer(REPORT_EVERY_S, name="report_models")
async def report_models() -> None:
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
