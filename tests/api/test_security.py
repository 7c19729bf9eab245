"""Security of the API's responses: every one forbids MIME sniffing, and no failure, unexpected or from
the database, shows the client anything of its cause (no traceback, no SQL, no message)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import asyncpg
import orjson
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient
from pytest_aiohttp import AiohttpClient

from atelier_api import reviews
from atelier_api.app import create_app
from atelier_api.config import Config
from tests.api import factories

Client = TestClient[web.Request, web.Application]

INTERNAL_ERROR = {"error": "internal server error", "details": []}
# What a leak would look like: Python's and asyncpg's words, the SQL, the paths of the code.
LEAKS = ("Traceback", 'File "', ".py", "asyncpg", "relation", "SELECT", "select ", 'reviews"', "Error")


def assert_no_leak(body: bytes) -> None:
    text = body.decode("utf-8", "replace")
    for leak in LEAKS:
        assert leak not in text, f"{leak!r} reached the client: {text[:300]}"


@pytest.mark.parametrize(
    ("method", "path", "body", "status"),
    [
        ("GET", "/healthz", None, 200),
        ("GET", "/reviews?product_id=1", None, 200),
        ("GET", "/reviews/meta?product_id=1", None, 200),
        ("GET", "/reviews?product_id=hello", None, 422),
        ("GET", "/reviews/424242", None, 404),
        ("GET", "/nowhere", None, 404),
        ("DELETE", "/reviews", None, 405),
        ("POST", "/reviews", b"{not json", 400),
        ("POST", "/reviews", b"x" * 70_000, 413),
        ("PUT", "/reviews/424242/helpful", None, 404),
        ("GET", "/openapi.json", None, 200),
        ("GET", "/docs", None, 200),
        ("GET", "/metrics", None, 200),
    ],
)
async def test_every_response_forbids_mime_sniffing(
    client: Client, method: str, path: str, body: bytes | None, status: int
) -> None:
    response = await client.request(method, path, data=body)

    assert response.status == status
    assert response.headers.getall("X-Content-Type-Options") == ["nosniff"]


async def test_a_docs_asset_forbids_mime_sniffing(client: Client) -> None:
    page = await (await client.get("/docs")).text()
    asset = page.split('src="', 1)[1].split('"', 1)[0]

    response = await client.get(asset)

    assert response.status == 200
    assert response.headers["X-Content-Type-Options"] == "nosniff"


async def test_an_unexpected_exception_shows_nothing_of_itself(
    client: Client, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    async def broken(*args: object) -> None:
        raise RuntimeError('secret detail: File "/srv/app/reviews.py", line 3, password=hunter2')

    monkeypatch.setattr(reviews, "list_reviews", broken)
    monkeypatch.setattr(reviews, "all_reviews", broken)  # what a replica whose cache keeps answers reads

    response = await client.get("/reviews?product_id=1", headers={"X-Request-Id": "leak-check-1"})

    assert response.status == 500
    body = await response.read()
    assert orjson.loads(body) == INTERNAL_ERROR
    assert_no_leak(body)
    assert b"hunter2" not in body and b"secret" not in body
    assert response.headers["X-Content-Type-Options"] == "nosniff"
    assert response.headers["X-Request-Id"] == "leak-check-1"  # what the client quotes to find the log
    logged = [record for record in caplog.records if record.levelname == "ERROR"]
    assert len(logged) == 1 and logged[0].exc_info is not None  # the cause is in the log, once


async def test_a_database_error_shows_nothing_of_itself(
    make_database: Callable[[str], str], aiohttp_client: AiohttpClient
) -> None:
    """A real database error: the app against a database that has no schema (relation does not exist)."""
    url = make_database("api_security_no_schema")
    client = await aiohttp_client(
        create_app(Config(database_url=url, db_pool_min_size=1, db_pool_max_size=2))
    )

    for path in ("/reviews?product_id=1", "/reviews/meta?product_id=1", "/reviews/1"):
        response = await client.get(path)
        assert response.status == 500, path
        body = await response.read()
        assert orjson.loads(body) == INTERNAL_ERROR
        assert_no_leak(body)

    response = await client.put("/reviews/1/helpful")
    assert response.status == 500
    assert_no_leak(await response.read())


async def test_a_database_error_on_write_shows_nothing_of_itself(
    client: Client, db: asyncpg.Connection, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A constraint the database enforces, raised from inside a real transaction."""
    await factories.characteristic(db, 2, "Quality", id=5)

    async def violating(pool: asyncpg.Pool, *args: object) -> int:
        async with pool.acquire() as conn:
            await conn.execute("INSERT INTO reviews_photos (id, review_id, url) VALUES (1, 999999, 'x')")
        return 0

    monkeypatch.setattr(reviews, "create_review", violating)
    review = {
        "product_id": 2,
        "rating": 5,
        "summary": "",
        "body": "b" * 60,
        "recommend": True,
        "name": "n",
        "email": "n@example.com",
    }

    response = await client.post("/reviews", json=review)

    assert response.status == 500
    body = await response.read()
    assert orjson.loads(body) == INTERNAL_ERROR
    assert_no_leak(body)


async def test_malformed_http_to_a_replica_shows_no_traceback(client: Client) -> None:
    """Below the app: aiohttp's own answer to bytes that are not HTTP (nginx answers these in front)."""
    assert client.port is not None
    reader, writer = await asyncio.open_connection("127.0.0.1", client.port)
    writer.write(b"GARBAGE\x00 / HTTP/9.9\r\n\r\n")
    await writer.drain()
    answer = await asyncio.wait_for(reader.read(65536), timeout=5)
    writer.close()

    assert answer.startswith(b"HTTP/1.") and b" 400 " in answer.split(b"\r\n", 1)[0]
    assert b"Traceback" not in answer and b".py" not in answer
