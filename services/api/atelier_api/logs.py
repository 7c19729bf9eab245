"""Logs as JSON lines: every record is one JSON object on one line, tracebacks included.

Fields: time (UTC), level, logger, message, the process's static fields (replica), and whatever a
call passes in `extra` (the access log passes request_id, method, route, path, status, duration_ms).
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Mapping
from datetime import UTC, datetime

import orjson

# A record's own attributes; anything else on it came from `extra`.
_RECORD_ATTRIBUTES = frozenset(vars(logging.makeLogRecord({}))) | {"message", "asctime", "taskName"}


class JsonFormatter(logging.Formatter):
    def __init__(self, static: Mapping[str, object] | None = None) -> None:
        super().__init__()
        self.static = dict(static or {})

    def format(self, record: logging.LogRecord) -> str:
        created = datetime.fromtimestamp(record.created, UTC)
        line: dict[str, object] = {
            "time": f"{created:%Y-%m-%dT%H:%M:%S}.{created.microsecond // 1000:03d}Z",
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            **self.static,
        }
        line.update((key, value) for key, value in vars(record).items() if key not in _RECORD_ATTRIBUTES)
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        if record.stack_info:
            line["stack"] = self.formatStack(record.stack_info)
        return orjson.dumps(line, default=repr).decode()


def configure(level: str, replica: str) -> None:
    """JSON lines on standard error for every logger of the process (aiohttp's and asyncio's too)."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter({"replica": replica}))
    logging.basicConfig(level=level, handlers=[handler], force=True)
