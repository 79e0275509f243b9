"""Tune the worker's garbage collector once its tables are recovered (see :mod:`app.gc_tuning`)."""

from __future__ import annotations

import logging
from typing import cast

from faust.tables.manager import TableManager

from app.gc_tuning import tune_gc
from app.main import app

log = logging.getLogger(__name__)


@app.task
async def tune_gc_after_recovery() -> None:
    await cast(TableManager, app.tables).recovery.completed.wait()
    tune_gc()
    log.info("garbage collector tuned: recovered state frozen, young-generation threshold 50,000")
