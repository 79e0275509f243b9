"""Log output of a worker and a gateway: ``NUDGE_LOG_FORMAT=text`` (the default) or ``json``.

With ``json`` every record is one JSON object on one line -- ``ts`` (UTC, ISO-8601 with milliseconds), ``level``,
``logger``, ``message``, ``process``, and ``exc`` with the formatted traceback when there is one -- so a log shipper
needs no parsing rules. The gateway calls :func:`configure`; the worker hands :func:`logging_config` to Faust, which
sets logging up itself when the worker starts.
"""

from __future__ import annotations

import logging
import logging.config
from datetime import UTC, datetime
from typing import Any, Final

import orjson

TEXT_FORMAT: Final = "[%(asctime)s] [%(process)d] [%(levelname)s] %(name)s: %(message)s"


class JsonFormatter(logging.Formatter):
    """One JSON object per record, on one line."""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            "process": record.process,
        }
        if record.exc_info:
            line["exc"] = self.formatException(record.exc_info)
        elif record.exc_text:
            line["exc"] = record.exc_text
        if record.stack_info:
            line["stack"] = self.formatStack(record.stack_info)
        return orjson.dumps(line, default=str).decode()


def level_name(level: str) -> str:
    """``NUDGE_LOG_LEVEL`` (``crit``, ``error``, ``warn``, ``info``, ``debug``) as :mod:`logging` names it."""
    return {"crit": "CRITICAL", "warn": "WARNING"}.get(level, level.upper())


def logging_config(level: str, log_format: str) -> dict[str, Any]:
    """A :func:`logging.config.dictConfig` for the root logger: ``level`` and ``log_format`` as in the settings."""
    formatter = {"()": JsonFormatter} if log_format == "json" else {"format": TEXT_FORMAT}
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"nudge": formatter},
        "handlers": {"nudge": {"class": "logging.StreamHandler", "formatter": "nudge", "stream": "ext://sys.stderr"}},
        "root": {"level": level_name(level), "handlers": ["nudge"]},
    }


def configure(level: str, log_format: str) -> None:
    """Set up the root logger of a process that configures logging itself (the gateway)."""
    logging.config.dictConfig(logging_config(level, log_format))
