"""The API suite's database (one per session, schema applied once) and a client on a fresh app per test."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime

import asyncpg
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from pytest_aiohttp import AiohttpClient

from atelier_api.app import create_app
from atelier_api.config import Config
from atelier_api.keys import CACHE_KEY
from atelier_api.serve import SERVER_OPTIONS
from atelier_etl.schema import apply_schema
from tests.api.outages import DatabaseProxy

# The clock every test app stamps new reviews with.
NOW = datetime(2024, 5, 1, 12, 30, 45, 678901, tzinfo=UTC)
NOW_JSON = "2024-05-01T12:30:45.678Z"

TABLES = (
    "reviews, reviews_photos, characteristics, characteristic_reviews, product_summaries, "
    "characteristic_summaries, helpful_votes, idempotency_keys"
)


async def _apply_schema(url: str) -> None:
    conn = await asyncpg.connect(url)
    try:
        await apply_schema(conn)
    finally:
        await conn.close()


@pytest.fixture(scope="session")
def database_url(make_database: Callable[[str], str]) -> str:
    url = make_database("api")
    with ThreadPoolExecutor(max_workers=1) as pool:  # no event loop of our own at session scope
        pool.submit(asyncio.run, _apply_schema(url)).result()
    return url


@pytest.fixture
def config(database_url: str) -> Config:
    return Config(database_url=database_url, db_pool_min_size=1, db_pool_max_size=4)


@pytest.fixture
async def db(database_url: str) -> AsyncIterator[asyncpg.Connection]:
    """A connection to the suite's database, emptied (ids restarted) before the test."""
    conn = await asyncpg.connect(database_url)
    try:
        await conn.execute(f"TRUNCATE {TABLES} RESTART IDENTITY CASCADE")
        yield conn
    finally:
        await conn.close()


@pytest.fixture
async def client(
    db: asyncpg.Connection, config: Config, aiohttp_client: AiohttpClient
) -> TestClient[web.Request, web.Application]:
    # Started here with the options `atelier-api` serves with (aiohttp_client's server_kwargs reach only
    # the test server's constructor, which does not pass them on).
    server = TestServer(create_app(config, clock=lambda: NOW))
    await server.start_server(**SERVER_OPTIONS)
    client = await aiohttp_client(server)
    # Once its change listener is up, as a serving replica is: the reads go through its cache (which
    # keeps nothing until then), the same way in every test.
    await until_live(client)
    return client


async def until_live(client: TestClient[web.Request, web.Application], timeout: float = 10.0) -> None:
    cache = client.app[CACHE_KEY]
    async with asyncio.timeout(timeout):
        while not cache.live:
            await asyncio.sleep(0.01)


@pytest.fixture
async def proxy(database_url: str) -> AsyncIterator[DatabaseProxy]:
    """A TCP proxy to the suite's database, for tests that cut the database off (tests/api/outages.py)."""
    proxy = DatabaseProxy(database_url)
    await proxy.start()
    yield proxy
    if proxy.server is not None and proxy.server.is_serving():
        await proxy.stop()
