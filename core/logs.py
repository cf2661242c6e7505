"""JSON-lines logging for the API and the workers: one object per line on stderr."""

from __future__ import annotations

import json
import logging
import sys
from datetime import UTC, datetime

CONTEXT_FIELDS = ("task_id", "task_type", "queue", "priority", "attempt", "duration_ms", "state", "error", "path")
"""Attributes passed with `extra=` that are copied into the JSON record when present."""


class JsonFormatter(logging.Formatter):
    """Format a record as one JSON object: time, level, logger, message and task context."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, object] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        for name in CONTEXT_FIELDS:
            value = getattr(record, name, None)
            if value is not None:
                entry[name] = value
        if record.exc_info and record.exc_info[0] is not None:
            entry["exc"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)


def setup(level: str = "INFO") -> None:
    """Send every logger's records to stderr as JSON lines (idempotent)."""
    root = logging.getLogger()
    if not any(isinstance(h.formatter, JsonFormatter) for h in root.handlers):
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(JsonFormatter())
        root.addHandler(handler)
    root.setLevel(level.upper())
    # pika narrates every socket step, and logs each refused connection as several errors;
    # bridge.amqp reports every failure itself, once, in its own words.
    logging.getLogger("pika").setLevel(logging.CRITICAL)
    # RQ adds its own coloured handler to 'rq.worker' unless one is there already.
    rq_logger = logging.getLogger("rq.worker")
    rq_logger.handlers = [h for h in root.handlers if isinstance(h.formatter, JsonFormatter)]
    rq_logger.propagate = False
