"""Graceful drain of one `atelier-api` process on SIGTERM (serve.py).

A request is made slow honestly: `PUT /reviews/{id}/report` updates a review row on which the test's
own transaction holds `SELECT ... FOR UPDATE`, so the request waits in PostgreSQL exactly as long as
the test wants. SIGTERM arrives while it waits.
"""

from __future__ import annotations

import asyncio
import signal
from collections.abc import AsyncIterator, Callable

import aiohttp
import asyncpg
import pytest

from atelier_api.config import Config, ConfigError
from atelier_etl.schema import apply_schema
from tests.api import factories
from tests.faults.conftest import ApiProcess, backends, eventually, port_open


def test_shutdown_timeout_is_a_setting() -> None:
    url = "postgresql://u@h/db"
    assert Config.from_env({"DATABASE_URL": url}).shutdown_timeout == 8.0
    assert Config.from_env({"DATABASE_URL": url, "SHUTDOWN_TIMEOUT": "2.5"}).shutdown_timeout == 2.5
    with pytest.raises(ConfigError, match="SHUTDOWN_TIMEOUT='0' is invalid"):
        Config.from_env({"DATABASE_URL": url, "SHUTDOWN_TIMEOUT": "0"})


@pytest.fixture
async def database_url(make_database: Callable[[str], str]) -> AsyncIterator[str]:
    url = make_database("faults_drain")
    conn = await asyncpg.connect(url)
    try:
        await apply_schema(conn)
    finally:
        await conn.close()
    yield url


async def no_backends(database_url: str) -> bool:
    return await backends(database_url) == 0


async def report_waiting_on_lock(database_url: str) -> bool:
    conn = await asyncpg.connect(database_url)
    try:
        return bool(
            await conn.fetchval(
                "SELECT EXISTS (SELECT FROM pg_stat_activity WHERE datname = current_database() "
                "AND application_name = 'atelier-api' AND wait_event_type = 'Lock')"
            )
        )
    finally:
        await conn.close()


async def start_slow_report(
    database_url: str, api: ApiProcess, http: aiohttp.ClientSession
) -> tuple[asyncpg.Connection, asyncpg.transaction.Transaction, int, asyncio.Task[int]]:
    """A report request blocked on the review's row lock, which the returned transaction holds."""
    holder = await asyncpg.connect(database_url)
    review_id = await factories.review(holder, 1)
    await api.wait_serving()
    lock = holder.transaction()
    await lock.start()
    await holder.execute("SELECT FROM reviews WHERE id = $1 FOR UPDATE", review_id)

    async def report() -> int:
        async with http.put(f"{api.url}/reviews/{review_id}/report") as response:
            return response.status

    request = asyncio.create_task(report())
    await eventually(lambda: report_waiting_on_lock(database_url), 10, "the report waits on the row lock")
    return holder, lock, review_id, request


async def test_a_request_in_flight_at_sigterm_completes_then_the_process_exits_0(
    database_url: str, start_api: Callable[..., ApiProcess]
) -> None:
    api = start_api(database_url, SHUTDOWN_TIMEOUT="20", DB_COMMAND_TIMEOUT="20")
    async with aiohttp.ClientSession() as http:
        holder, lock, review_id, request = await start_slow_report(database_url, api, http)
        try:
            api.process.send_signal(signal.SIGTERM)
            # Draining: the listening socket is closed at once (nginx's new connections go elsewhere)...
            await eventually(
                lambda: asyncio.to_thread(lambda: not port_open(api.port)), 5, "the port is closed"
            )
            await asyncio.sleep(0.5)
            # ...while the process waits for the request it already received.
            assert api.process.poll() is None and not request.done()
        finally:
            await lock.commit()  # the row lock goes: the report proceeds
        assert await asyncio.wait_for(request, 10) == 204
        assert await asyncio.to_thread(api.process.wait, 10) == 0
    try:
        assert await holder.fetchval("SELECT reported FROM reviews WHERE id = $1", review_id) is True
    finally:
        await holder.close()
    # The pool was closed: its sessions end (the log says it closed before the process exited).
    await eventually(lambda: no_backends(database_url), 5, "the API's database sessions end")
    log = api.log_text()
    assert "received SIGTERM" in log and "stopped; database pool closed" in log, log
    assert "Traceback" not in log, log


async def test_a_request_outliving_shutdown_timeout_is_cancelled_and_the_process_still_exits_0(
    database_url: str, start_api: Callable[..., ApiProcess]
) -> None:
    api = start_api(database_url, SHUTDOWN_TIMEOUT="1", DB_COMMAND_TIMEOUT="20")
    async with aiohttp.ClientSession() as http:
        holder, lock, review_id, request = await start_slow_report(database_url, api, http)
        try:
            api.process.send_signal(signal.SIGTERM)
            # Exits while the lock is still held: it did not wait for the request (DB_COMMAND_TIMEOUT 20 s).
            assert await asyncio.to_thread(api.process.wait, 10) == 0
            with pytest.raises(aiohttp.ClientError):  # never acknowledged
                await asyncio.wait_for(request, 10)
            await eventually(lambda: no_backends(database_url), 5, "the API's database sessions end")
        finally:
            await lock.commit()
    try:
        # The cancelled request's transaction was rolled back: it changed nothing.
        assert await holder.fetchval("SELECT reported FROM reviews WHERE id = $1", review_id) is False
    finally:
        await holder.close()
    # It drained with SHUTDOWN_TIMEOUT (the request then cancelled), and only then stopped.
    log = api.log_text()
    draining = log.find("draining: no new connections, up to 1s for requests in flight")
    assert 0 <= draining < log.find("stopped; database pool closed"), log
