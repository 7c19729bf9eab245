"""The database pool: asyncpg's, with every acquire() timed into a histogram, and a new connection
tried again when the server's name does not resolve or a try gets no answer (connect_retrying).

Every statement goes through acquire() (Pool.fetchval and friends call it too), so the histogram
shows how long requests queue for a connection: the first sign that DB_POOL_MAX_SIZE is too small.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import time
from collections.abc import Awaitable, Generator
from types import TracebackType
from typing import Any

import asyncpg
from prometheus_client import Histogram

log = logging.getLogger(__name__)

# A new connection's first try gets at most this share of the connect timeout; the tries after it share
# what is left, after a pause that doubles from RETRY_PAUSE up to MAX_RETRY_PAUSE.
FIRST_TRY_SHARE = 0.5
RETRY_PAUSE = 0.05
MAX_RETRY_PAUSE = 0.5


class InstrumentedPool(asyncpg.Pool):
    __slots__ = ("_acquire_timeout", "_acquire_wait")

    def __init__(
        self,
        dsn: str,
        *,
        acquire_wait: Histogram,
        acquire_timeout: float | None,
        min_size: int,
        max_size: int,
        **connect_kwargs: Any,
    ) -> None:
        # asyncpg.create_pool's defaults, spelled out: create_pool always builds a plain Pool.
        super().__init__(
            dsn,
            min_size=min_size,
            max_size=max_size,
            max_queries=50_000,
            max_inactive_connection_lifetime=300.0,
            connect=connect_retrying,
            reset=keep_session,
            loop=None,
            connection_class=asyncpg.Connection,
            record_class=asyncpg.Record,
            **connect_kwargs,
        )
        self._acquire_wait = acquire_wait
        self._acquire_timeout = acquire_timeout

    def acquire(self, *, timeout: float | None = None) -> TimedAcquire:
        """A connection, waited for at most `timeout` (default: the pool's acquire timeout, which every
        pool.fetch and friends get too). When the database is slow rather than down, every connection is
        held for up to DB_COMMAND_TIMEOUT: requests then fail fast with 503 (a TimeoutError) instead of
        queueing without end."""
        wait = self._acquire_timeout if timeout is None else timeout
        return TimedAcquire(super().acquire(), self._acquire_wait, wait)


async def connect_retrying(*args: Any, timeout: float = 60.0, **kwargs: Any) -> asyncpg.Connection:
    """asyncpg.connect, tried again within the same `timeout` (DB_COMMAND_TIMEOUT) when the server's
    name did not resolve or a try got no answer. The pool opens connections while requests wait for them,
    and a container network answers a name lookup with an error, or not at all, while containers start
    or stop on it (seen with compose: "Name or service not known" for `postgres` once in 6,833 lookups
    while other containers came and went). A first try that hangs is given up at half the timeout, so
    that a fresh one has time to succeed. (It did not save the requests of a CI run in which new
    connections took over 5 s for seconds on end: for those, DB_POOL_MIN_SIZE connections are opened
    before the replica serves; docs/tuning.md, "Pools and connections".) A refused connection, a server
    starting up or anything the server answers (a wrong password, an unknown database) fails at once, as
    before: a database that is down is answered 503 without delay."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    pause = RETRY_PAUSE
    attempt_timeout = timeout * FIRST_TRY_SHARE
    while True:
        try:
            return await asyncpg.connect(*args, timeout=attempt_timeout, **kwargs)
        except (socket.gaierror, TimeoutError) as error:
            left = deadline - loop.time() - pause
            if left <= 0:
                raise
            log.info("cannot reach the database (%r); trying again in %.2f s", error, pause)
            await asyncio.sleep(pause)
            pause = min(2 * pause, MAX_RETRY_PAUSE)
            attempt_timeout = left


async def keep_session(conn: asyncpg.Connection) -> None:
    """What a connection goes through on its way back to the pool: nothing beyond asyncpg's own rollback
    of a transaction left open.

    asyncpg's default reset sends `pg_advisory_unlock_all(); CLOSE ALL; UNLISTEN *; RESET ALL` on every
    release: one more round trip per request, about a tenth of a replica's CPU (bench/cpu_profile.py). The
    API leaves no session state to reset: its advisory locks are transaction-level, its settings
    `SET LOCAL`, it opens no cursors outside a transaction and listens on a connection of its own
    (changes.py). tests/api/test_pool.py checks that every connection goes back clean.
    """


class TimedAcquire:
    """asyncpg's acquire context (`async with pool.acquire()` or `await pool.acquire()`), timed, and
    given up after `timeout` seconds (TimeoutError). The timeout is asyncio.timeout's, not asyncpg's own
    acquire(timeout=...), which runs every acquire in a task of its own (asyncio.wait_for): a cost on each
    cache miss and write. asyncpg puts the connection back when its acquire is cancelled."""

    __slots__ = ("_context", "_timeout", "_wait")

    def __init__(self, context: Any, wait: Histogram, timeout: float | None) -> None:
        self._context = context
        self._wait = wait
        self._timeout = timeout

    async def __aenter__(self) -> asyncpg.Connection:
        return await self._timed(self._context.__aenter__())

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self._context.__aexit__(exc_type, exc, tb)

    def __await__(self) -> Generator[Any, None, asyncpg.Connection]:
        return self._timed(self._context).__await__()

    async def _timed(self, acquiring: Awaitable[asyncpg.Connection]) -> asyncpg.Connection:
        start = time.perf_counter()
        try:
            async with asyncio.timeout(self._timeout):
                return await acquiring
        finally:  # a wait that ended in a timeout counts too
            self._wait.observe(time.perf_counter() - start)
