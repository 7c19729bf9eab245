"""The pool (atelier_api/pool.py). Connections go back to it without session state, since it skips
asyncpg's reset query (keep_session): after every kind of request, no connection holds a session
setting, an advisory lock, a LISTEN or an open transaction. A new connection whose try gets no answer is
tried again within the connect timeout (connect_retrying); a refused one fails at once."""

from __future__ import annotations

import asyncio
import time

import asyncpg
import pytest

from atelier_api import pool
from atelier_api.app import create_app
from atelier_api.config import Config
from atelier_api.keys import POOL_KEY
from tests.api import factories
from tests.api.conftest import NOW
from tests.api.outages import DatabaseProxy, closed_port

SESSION_STATE = """
    SELECT
        -- what RESET ALL would change (asyncpg sets jit back to its own value after its type introspection)
        ARRAY(SELECT name FROM pg_settings WHERE source = 'session' AND setting <> reset_val ORDER BY name)
            AS settings,
        (SELECT count(*) FROM pg_locks WHERE pid = pg_backend_pid() AND locktype = 'advisory') AS locks,
        ARRAY(SELECT pg_listening_channels()) AS channels,
        ARRAY(SELECT name FROM pg_cursors WHERE name <> '') AS cursors,  -- '': this query's own portal
        txid_current_if_assigned() AS transaction
"""
CLEAN = {"settings": [], "locks": 0, "channels": [], "cursors": [], "transaction": None}


async def test_every_request_leaves_its_connection_clean(db: asyncpg.Connection, client) -> None:
    characteristic_id = await factories.characteristic(db, 2, "Fit")
    review_id = await factories.review(db, 2)
    await factories.advance_sequences(db)
    body = factories.review_body(2, characteristics={str(characteristic_id): 4})
    requests = [
        ("GET", "/reviews?product_id=2&sort=helpful&rating=5&with_photos=false", {}, None),
        ("GET", "/reviews/meta/batch?product_ids=2,3", {}, None),
        ("GET", f"/reviews/{review_id}", {}, None),
        ("GET", "/readyz", {}, None),
        ("POST", "/reviews", {"Idempotency-Key": "pool-1"}, body),
        ("POST", "/reviews", {"Idempotency-Key": "pool-1"}, body),  # a replay
        ("POST", "/reviews", {}, {"product_id": 2}),  # refused: 422, rolled back
        ("PUT", f"/reviews/{review_id}/helpful", {}, None),
        ("PUT", f"/reviews/{review_id}/report", {}, None),
    ]
    for method, path, headers, json in requests:
        response = await client.request(method, path, headers=headers, json=json)
        assert response.status < 500, (path, response.status)

    pool = client.app[POOL_KEY]
    connections = [await pool.acquire() for _ in range(pool.get_size())]
    try:
        for conn in connections:
            state = await conn.fetchrow(SESSION_STATE)
            assert dict(state) == CLEAN
    finally:
        for conn in connections:
            await pool.release(conn)


async def test_every_connection_runs_without_jit_and_ends_an_abandoned_transaction(client) -> None:
    """Whatever the server's default: JIT compilation only slows the API's sub-millisecond statements
    (by tens of milliseconds when the planner misjudges a table). And a transaction a replica leaves open
    (frozen or cut off mid-report, its row locks held) is ended by the server, not by TCP hours later."""
    pool = client.app[POOL_KEY]
    connections = [await pool.acquire() for _ in range(pool.get_size())]
    try:
        for conn in connections:
            assert await conn.fetchval("SHOW jit") == "off"
            assert await conn.fetchval("SHOW idle_in_transaction_session_timeout") == "10s"
    finally:
        for conn in connections:
            await pool.release(conn)


async def test_a_request_that_finds_every_connection_held_fails_fast_with_503(
    db: asyncpg.Connection, database_url: str, aiohttp_client
) -> None:
    """A slow database holds every pooled connection for up to DB_COMMAND_TIMEOUT: the other requests
    wait DB_ACQUIRE_TIMEOUT for one, then answer 503 with Retry-After, instead of queueing without end."""
    config = Config(database_url=database_url, db_pool_min_size=2, db_pool_max_size=2, db_acquire_timeout=0.3)
    client = await aiohttp_client(create_app(config, clock=lambda: NOW))
    pool = client.app[POOL_KEY]
    held = [await pool.acquire(timeout=5) for _ in range(2)]
    try:
        async with asyncio.timeout(10):  # it once waited for a connection for as long as they were held
            response = await client.get("/reviews?product_id=1")
        assert (response.status, response.headers["Retry-After"]) == (503, "1")
        assert (await response.json())["error"] == "database unavailable"
    finally:
        for conn in held:
            await pool.release(conn)
    assert (await client.get("/reviews?product_id=1")).status == 200  # served again once one is free


class SilentFirst(DatabaseProxy):
    """Takes the first connection and never answers it (a lookup or a packet lost while a container
    network changes); relays every later one to the database."""

    def __init__(self, server_url: str) -> None:
        super().__init__(server_url)
        self.silent_left = 1
        self.released = asyncio.Event()

    async def _relay(self, client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter) -> None:
        if self.silent_left:
            self.silent_left -= 1
            await self.released.wait()
            client_writer.close()
            return
        await super()._relay(client_reader, client_writer)


async def test_a_connection_try_that_gets_no_answer_is_given_up_and_tried_again(database_url: str) -> None:
    proxy = SilentFirst(database_url)
    await proxy.start()
    try:
        started = time.monotonic()
        conn = await pool.connect_retrying(proxy.url(), timeout=2.0)
        try:
            assert await conn.fetchval("SELECT 1") == 1
        finally:
            await conn.close()
        assert proxy.silent_left == 0  # the first try met the silent server, and was given up
        assert time.monotonic() - started >= 2.0 * pool.FIRST_TRY_SHARE
    finally:
        proxy.released.set()
        await proxy.stop()


async def test_a_refused_connection_is_not_tried_again(monkeypatch: pytest.MonkeyPatch) -> None:
    """A database that is down is answered 503 at once, not after the connect timeout: one try, no more."""
    tries = []
    real_connect = asyncpg.connect

    async def counted(*args: object, **kwargs: object) -> asyncpg.Connection:
        tries.append(args)
        return await real_connect(*args, **kwargs)

    monkeypatch.setattr(pool.asyncpg, "connect", counted)
    with pytest.raises(ConnectionRefusedError):
        await pool.connect_retrying(f"postgresql://postgres@127.0.0.1:{closed_port()}/postgres", timeout=5.0)
    assert len(tries) == 1
