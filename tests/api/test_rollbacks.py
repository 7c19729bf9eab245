"""A transaction PostgreSQL rolls back (class 40: a deadlock, a serialization failure) answers 503 with
Retry-After and changes nothing: the request may simply be sent again (errors.error_middleware).

API writes keep one lock order and never deadlock among themselves; another transaction taking the same
locks in another order can (a load's switch, an operator's session). Played here for real: the test's
transaction locks the product's summary row, the report locks its review and waits on that row, then the
test's transaction asks for the review. Whichever session's deadlock check (after deadlock_timeout) runs
first finds the cycle and is aborted: the test's session waits 60 s before it would check, the report's
1 s (the server's default), so the report is always the one aborted, however the two waits are timed.
"""

from __future__ import annotations

import asyncio

import asyncpg
from aiohttp import web
from aiohttp.test_utils import TestClient

from tests.api import factories

Client = TestClient[web.Request, web.Application]
PRODUCT = 80
WAITING_ON_A_LOCK = """
    SELECT count(*) FROM pg_stat_activity
    WHERE datname = current_database() AND application_name = 'atelier-api' AND wait_event_type = 'Lock'
"""


async def test_a_deadlocked_report_is_503_with_retry_after_and_changes_nothing(
    client: Client, db: asyncpg.Connection, database_url: str
) -> None:
    review_id = await factories.review(db, PRODUCT)
    other = await asyncpg.connect(database_url)
    try:
        # Never the victim: the report's backend checks for the deadlock (1 s) long before this one would.
        await other.execute("SET deadlock_timeout = '60s'")
        transaction = other.transaction()
        await transaction.start()
        await other.execute("SELECT 1 FROM product_summaries WHERE product_id = $1 FOR UPDATE", PRODUCT)
        report = asyncio.create_task(client.put(f"/reviews/{review_id}/report"))
        async with asyncio.timeout(10):
            while await db.fetchval(WAITING_ON_A_LOCK) < 1 and not report.done():
                await asyncio.sleep(0.01)
            # Closes the cycle; returns once PostgreSQL has aborted the report and freed its review.
            await other.execute("SELECT 1 FROM reviews WHERE id = $1 FOR UPDATE", review_id)
            response = await report
        await transaction.rollback()
    finally:
        await other.close()

    assert response.status == 503
    assert response.headers["Retry-After"] == "1"
    assert response.headers["Cache-Control"] == "no-store"
    assert await response.json() == {
        "error": "the database rolled the request back, nothing was changed; send it again",
        "details": [],
    }
    assert await db.fetchval("SELECT reported FROM reviews WHERE id = $1", review_id) is False

    retry = await client.put(f"/reviews/{review_id}/report")
    assert retry.status == 204
    assert await db.fetchval("SELECT reported FROM reviews WHERE id = $1", review_id) is True
