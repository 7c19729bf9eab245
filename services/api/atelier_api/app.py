"""The application factory: everything a running API needs, built from one Config."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from urllib.parse import urlsplit

import asyncpg
from aiohttp import web

from atelier_api.cache import ResponseCache
from atelier_api.changes import listen_for_changes
from atelier_api.config import Config
from atelier_api.errors import DATABASE_UNAVAILABLE, error_middleware
from atelier_api.http_cache import conditional_get
from atelier_api.keys import CACHE_KEY, CLOCK_KEY, CONFIG_KEY, METRICS_KEY, POOL_KEY, Clock
from atelier_api.metrics import Metrics
from atelier_api.observability import observe, send_request_id
from atelier_api.pool import InstrumentedPool
from atelier_api.routes import routes

log = logging.getLogger(__name__)

# Seconds the drain's last step gives the pool to close: asyncpg's close() waits for every connection to be
# released, without end (a request stuck past its cancellation, a leaked connection), and the process
# would then outlive its stop grace period and be killed. After it, the connections are cut.
POOL_CLOSE_TIMEOUT = 2.0


class DatabaseUnreachable(RuntimeError):
    """The pool could not open its first connections at start-up."""


def utc_now() -> datetime:
    return datetime.now(UTC)


def create_app(config: Config, *, clock: Clock = utc_now) -> web.Application:
    # observe is outermost: it counts and logs the response the error middleware made of a failure.
    # conditional_get is innermost: it sees only what a handler answered (ETag, 304).
    app = web.Application(
        middlewares=[observe, error_middleware, conditional_get], client_max_size=config.max_body_bytes
    )
    app[CONFIG_KEY] = config
    app[CLOCK_KEY] = clock
    app[CACHE_KEY] = ResponseCache(max_bytes=config.cache_max_bytes, ttl=config.cache_ttl)
    app[METRICS_KEY] = Metrics(pool=lambda: app.get(POOL_KEY), cache=app[CACHE_KEY])
    app.cleanup_ctx.append(database_pool)
    app.cleanup_ctx.append(listen_for_changes)
    app.on_response_prepare.append(name_the_replica)
    app.on_response_prepare.append(send_request_id)
    app.router.add_routes(routes)
    return app


async def name_the_replica(request: web.Request, response: web.StreamResponse) -> None:
    """Every response says which replica served it, so a balanced deployment can be observed, and
    forbids MIME sniffing (a browser must not run a JSON error or a docs asset as something else)."""
    response.headers["X-Replica"] = request.app[CONFIG_KEY].replica_name
    response.headers["X-Content-Type-Options"] = "nosniff"


async def database_pool(app: web.Application) -> AsyncIterator[None]:
    config = app[CONFIG_KEY]
    try:
        pool = await InstrumentedPool(
            config.database_url,
            acquire_wait=app[METRICS_KEY].pool_acquire_wait,
            acquire_timeout=config.db_acquire_timeout,
            min_size=config.db_pool_min_size,
            max_size=config.db_pool_max_size,
            command_timeout=config.db_command_timeout,
            timeout=config.db_command_timeout,  # for opening each connection
            # jit off: every statement is a sub-millisecond index read or write, which JIT compilation
            # (on by default since PostgreSQL 12) could only slow down, by tens of milliseconds when
            # the planner misjudges a table (atelier.conf sets it too, for the compose server).
            # idle_in_transaction_session_timeout: a replica frozen or cut off in the middle of a
            # transaction (a report holds its review's and product's row locks) is ended by the server
            # within 10 s, not when TCP gives up (hours), which kept every write of that product waiting.
            server_settings={
                "application_name": "atelier-api",
                "jit": "off",
                "idle_in_transaction_session_timeout": "10000",
            },
        )
    except (*DATABASE_UNAVAILABLE, asyncpg.PostgresError, asyncpg.InterfaceError, ValueError) as error:
        # Out of reach, or it answered no (a wrong password, an unknown database), or the URL names a
        # port that is not one: one line naming where, not a traceback.
        where = _database_location(config.database_url)
        log.error("cannot connect to the database at %s: %r", where, error)
        raise DatabaseUnreachable(f"cannot connect to the database at {where}: {error!r}") from error
    app[POOL_KEY] = pool
    try:
        yield
    finally:
        try:
            async with asyncio.timeout(POOL_CLOSE_TIMEOUT):
                await pool.close()
        except TimeoutError:
            log.warning(
                "the database pool did not close within %g s (a connection still in use); cut it",
                POOL_CLOSE_TIMEOUT,
            )
            pool.terminate()


def _database_location(url: str) -> str:
    """host:port/dbname of a database URL: enough to tell where, without the password."""
    parts = urlsplit(url)
    try:
        return f"{parts.hostname or 'localhost'}:{parts.port or 5432}{parts.path}"
    except ValueError:  # a port that is not one, or several hosts (h1:5432,h2:5433): as written
        return f"{parts.netloc.rpartition('@')[2]}{parts.path}"
