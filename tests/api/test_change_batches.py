"""The bounds on batching changes: a notification carries at most changes.MAX_IDS_PER_NOTIFICATION ids
(PostgreSQL refuses a payload of 8,000 bytes or more), the rest follow in the next ones; and the cache
remembers at most cache.MAX_REMEMBERED_INVALIDATIONS invalidations for its overlap check, past which it
counts them as a flush, so a read that overlapped one that was forgotten is still not stored.

Both limits are made small here; notifications go through a real pool to the suite's database and are
heard by a real listener, as test_http_cache.py does.
"""

from __future__ import annotations

import asyncio

import asyncpg
import pytest

from atelier_api import cache as cache_module
from atelier_api import changes
from atelier_api.cache import ResponseCache

NOTIFICATION_WAIT = 5.0  # seconds; a notification takes milliseconds
MAX_IDS = 5
PRODUCTS = [str(product_id) for product_id in range(9301, 9313)]  # 12: more than two notifications' worth


async def test_waiting_ids_are_split_into_notifications_of_at_most_the_maximum(
    database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(changes, "MAX_IDS_PER_NOTIFICATION", MAX_IDS)
    heard: asyncio.Queue[str] = asyncio.Queue()
    listener = await asyncpg.connect(database_url)
    await listener.add_listener(changes.CHANNEL, lambda _c, _pid, _ch, payload: heard.put_nowait(payload))
    try:
        async with asyncpg.create_pool(database_url, min_size=4, max_size=4) as pool:
            connections = [await pool.acquire() for _ in range(4)]
            try:
                async with asyncio.timeout(NOTIFICATION_WAIT):
                    await asyncio.gather(
                        *(
                            changes.notify(pool, connections[n % 4], int(product_id))
                            for n, product_id in enumerate(PRODUCTS)
                        )
                    )
            finally:
                for conn in connections:
                    await pool.release(conn)
        payloads: list[list[str]] = []
        async with asyncio.timeout(NOTIFICATION_WAIT):
            while sorted(i for ids in payloads for i in ids) != PRODUCTS:
                ids = (await heard.get()).split(changes.SEPARATOR)
                if set(ids) <= set(PRODUCTS):  # anything else is not this test's
                    payloads.append(ids)
    finally:
        await listener.close()

    assert sorted(i for ids in payloads for i in ids) == PRODUCTS  # every id, each once
    assert max(len(ids) for ids in payloads) == MAX_IDS, payloads  # shared, up to the maximum, no more
    assert changes._waiting == {}


def test_invalidations_past_the_remembered_maximum_count_as_a_flush(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(cache_module, "MAX_REMEMBERED_INVALIDATIONS", 2)
    cache = ResponseCache(max_bytes=64_000, ttl=60, clock=lambda: 0.0)
    cache.live = True
    token = cache.token()  # a read of product 4 starts
    for product_id in (1, 2, 3):  # the third forgets the first two
        cache.invalidate(product_id)
    cache.put(4, "summary", b"read across forgotten invalidations", token)
    cache.put(1, "summary", b"read across a forgotten invalidation of its own", token)
    assert len(cache) == 0
    assert cache.get(4, "summary") is None and cache.get(1, "summary") is None

    cache.put(4, "summary", b"read after them", cache.token())  # reads started since are kept
    assert cache.get(4, "summary") is not None
