"""Connections go back to the pool without session state, since the pool skips asyncpg's reset query
(atelier_api/pool.py, keep_session): after every kind of request, no connection holds a session
setting, an advisory lock, a LISTEN or an open transaction."""

from __future__ import annotations

import asyncpg

from atelier_api.keys import POOL_KEY
from tests.api import factories

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


async def test_every_connection_runs_without_jit(client) -> None:
    """Whatever the server's default: JIT compilation only slows the API's sub-millisecond statements
    (by tens of milliseconds when the planner misjudges a table)."""
    pool = client.app[POOL_KEY]
    connections = [await pool.acquire() for _ in range(pool.get_size())]
    try:
        for conn in connections:
            assert await conn.fetchval("SHOW jit") == "off"
    finally:
        for conn in connections:
            await pool.release(conn)
