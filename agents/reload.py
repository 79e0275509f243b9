"""Hot-reload the segment file, the content map and the trigger rules when they change on disk (:mod:`app.rules`).

:meth:`app.rules.Rules.reload_if_changed` never raises: a refused change is logged and shown at ``GET /v1/models``,
and the timer goes on looking.
"""

from __future__ import annotations

from agents.ingest import rules
from app.main import app

CHECK_EVERY_S = 1.0


@app.timer(CHECK_EVERY_S, name="reload_rules")
async def reload_rules() -> None:
    rules.reload_if_changed()
