"""asyncpg's pool warnings while the database is down: one line each, no traceback.

With DB_POOL_MIN_SIZE above 0, asyncpg (0.32+) reopens the pool's floor connections in the background
when they die, retrying with a backoff from 1 s to 60 s, and logs every failed attempt at WARNING with
a full traceback. During an outage that is a traceback every few seconds saying what the API's own
"database unavailable" line per failed request already says. Requests do not depend on it: each
acquire() opens a connection itself when the pool has none, so a replica recovers on its first request
after the database is back, whatever the backoff.
"""

from __future__ import annotations

import logging

FLOOR_RETRY = "Failed to restore the pool connection floor"


class FloorRetryWithoutTraceback(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        if record.exc_info and str(record.msg).startswith(FLOOR_RETRY):
            error = record.exc_info[1]
            record.msg = (
                "database unavailable: cannot reopen the pool's DB_POOL_MIN_SIZE connections: %r; retrying"
            )
            record.args = (error,)
            record.exc_info = None
            record.exc_text = None
        return True


def quiet_floor_retries() -> None:
    logging.getLogger("asyncpg.pool").addFilter(FloorRetryWithoutTraceback())
