"""The change listener's ping (changes.PING_INTERVAL, PING_TIMEOUT) catches a connection that died
silently: no reset reaches the replica, so nothing but the unanswered ping says that notifications have
stopped coming. The cache must then stop and empty, and fill again once the database answers.

The app reaches the database through tests/api/outages.py's proxy, which here holds what the replica
sends without closing any socket (a black hole, as a lost route or a frozen server is), then lets it
through again. test_http_cache.py's outage closes the socket instead, which the termination listener
catches.
"""

from __future__ import annotations

import asyncio
from dataclasses import replace

import asyncpg
from pytest_aiohttp import AiohttpClient

from atelier_api import changes
from atelier_api.app import create_app
from atelier_api.config import Config
from atelier_api.keys import CACHE_KEY
from tests.api import factories
from tests.api.conftest import NOW, until_live
from tests.api.outages import DatabaseProxy

PATH = "/reviews/meta?product_id=2"
# Bounds that only separate "caught" from "never caught": a ping is due every PING_INTERVAL and given up
# after PING_TIMEOUT; reconnecting waits at most the last RECONNECT_DELAYS plus a connect's bound.
CAUGHT_WITHIN = changes.PING_INTERVAL + changes.PING_TIMEOUT + 10
RECONNECTED_WITHIN = changes.RECONNECT_DELAYS[-1] + changes.PING_INTERVAL + changes.PING_TIMEOUT + 10


async def test_a_listener_link_that_dies_silently_is_caught_by_the_ping_and_the_cache_recovers(
    db: asyncpg.Connection, proxy: DatabaseProxy, config: Config, aiohttp_client: AiohttpClient
) -> None:
    await factories.review(db, 2, recommend=True)
    app = create_app(replace(config, database_url=proxy.url(), db_command_timeout=2), clock=lambda: NOW)
    client = await aiohttp_client(app)
    await until_live(client)
    cache = client.app[CACHE_KEY]
    assert (await client.get(PATH)).headers["X-Cache"] == "miss"
    assert (await client.get(PATH)).headers["X-Cache"] == "hit"
    flushes = cache.stats.flushes

    proxy.hold()  # every socket stays open: no termination reaches the listener
    async with asyncio.timeout(CAUGHT_WITHIN):
        while cache.live or len(cache) > 0:
            await asyncio.sleep(0.01)
    assert cache.stats.flushes > flushes
    # A change no notification can reach this replica with while its link is black-holed.
    await db.execute("UPDATE product_summaries SET recommended = recommended + 10 WHERE product_id = 2")

    proxy.release()
    await until_live(client, timeout=RECONNECTED_WITHIN)
    fresh = await client.get(PATH)
    assert fresh.headers["X-Cache"] == "miss"
    assert (await fresh.json())["recommended"]["true"] == "11"  # 1 stored + the 10 nobody notified
    assert (await client.get(PATH)).headers["X-Cache"] == "hit"  # filling again
