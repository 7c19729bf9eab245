"""A statement that hangs in the database is given up after DB_COMMAND_TIMEOUT: the request answers 503
with Retry-After, its transaction changes nothing, and the replica goes on serving.

Made to hang honestly: the test's own transaction holds the review's row lock (`SELECT ... FOR UPDATE`),
so the report's first statement waits in PostgreSQL for as long as the test wants.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import replace

import asyncpg
import pytest
from pytest_aiohttp import AiohttpClient

from atelier_api.app import create_app
from atelier_api.config import Config
from tests.api import factories
from tests.api.conftest import NOW

COMMAND_TIMEOUT = 1.0  # seconds: DB_COMMAND_TIMEOUT of the app under test
# Far beyond COMMAND_TIMEOUT: only separates "answered after its timeout" from "waited for the lock".
HANG_GUARD = 15.0
API_SESSIONS_BUSY = """
    SELECT count(*) FROM pg_stat_activity
    WHERE datname = current_database() AND application_name = 'atelier-api' AND state <> 'idle'
"""


async def test_a_statement_past_the_command_timeout_is_503_and_changes_nothing(
    db: asyncpg.Connection,
    database_url: str,
    config: Config,
    aiohttp_client: AiohttpClient,
    caplog: pytest.LogCaptureFixture,
) -> None:
    review_id = await factories.review(db, 1)
    client = await aiohttp_client(
        create_app(replace(config, db_command_timeout=COMMAND_TIMEOUT), clock=lambda: NOW)
    )
    holder = await asyncpg.connect(database_url)
    try:
        async with holder.transaction():
            await holder.execute("SELECT FROM reviews WHERE id = $1 FOR UPDATE", review_id)
            with caplog.at_level(logging.WARNING, logger="atelier_api.errors"):
                async with asyncio.timeout(HANG_GUARD):  # without the timeout it waits for the lock
                    response = await client.put(f"/reviews/{review_id}/report")
            # Still inside the lock: the answer came while the statement would still be waiting.
            assert (response.status, response.headers["Retry-After"]) == (503, "1"), await response.text()
            assert await response.json() == {"error": "database unavailable", "details": []}
    finally:
        await holder.close()

    # The hung statement was cancelled, not left to run once the lock went: nothing was reported.
    assert await db.fetchval("SELECT reported FROM reviews WHERE id = $1", review_id) is False
    assert await db.fetchval(API_SESSIONS_BUSY) == 0
    timed_out = [r for r in caplog.records if r.getMessage().startswith("database unavailable: PUT")]
    assert len(timed_out) == 1 and "TimeoutError" in timed_out[0].getMessage(), caplog.text

    # The replica answers normally afterwards, on the same pool.
    assert (await client.get(f"/reviews/{review_id}")).status == 200
    assert (await client.put(f"/reviews/{review_id}/report")).status == 204
    assert await db.fetchval("SELECT reported FROM reviews WHERE id = $1", review_id) is True
    assert (await client.get(f"/reviews/{review_id}")).status == 404  # a reported review is hidden
