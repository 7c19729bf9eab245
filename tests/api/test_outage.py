"""The database going away: 503 with Retry-After while it is gone, back to normal when it returns, and a
clear failure when it is not there at start-up.

The app reaches the test server through a small TCP proxy, so a test can cut every connection and refuse
new ones (as a restarting or unreachable database does) and then bring it back, without touching the
server the other tests use.
"""

from __future__ import annotations

import asyncio

import asyncpg
import pytest
from aiohttp import web
from pytest_aiohttp import AiohttpClient

from atelier_api import app as app_module
from atelier_api.app import DatabaseUnreachable, create_app
from atelier_api.config import Config
from atelier_api.keys import POOL_KEY
from tests.api import factories
from tests.api.outages import DatabaseProxy, closed_port, run_api_command

REQUESTS = [
    ("GET", "/reviews?product_id=1", None),
    ("GET", "/reviews/1", None),
    ("GET", "/reviews/meta?product_id=1", None),
    (
        "POST",
        "/reviews",
        {
            "product_id": 1,
            "rating": 5,
            "body": "b" * 50,
            "recommend": True,
            "name": "n",
            "email": "n@example.com",
        },
    ),
    ("PUT", "/reviews/1/helpful", None),
    ("PUT", "/reviews/1/report", None),
]


async def test_outage_gives_503_with_retry_after_then_recovers(
    db: asyncpg.Connection, proxy: DatabaseProxy, aiohttp_client: AiohttpClient
) -> None:
    await factories.review(db, 1)
    config = Config(database_url=proxy.url(), db_pool_min_size=1, db_pool_max_size=2, db_command_timeout=2)
    client = await aiohttp_client(create_app(config))
    assert (await client.get("/reviews?product_id=1")).status == 200

    await proxy.stop()
    for method, path, body in REQUESTS:
        response = await client.request(method, path, json=body)
        assert response.status == 503, (method, path, await response.text())
        assert response.headers["Retry-After"] == "1"
        assert await response.json() == {"error": "database unavailable", "details": []}

    await proxy.start()  # the same port: the database is back
    for method, path, body in REQUESTS:
        response = await client.request(method, path, json=body)
        assert response.status in (200, 201, 204), (method, path, await response.text())


async def test_startup_fails_clearly_without_a_database(caplog: pytest.LogCaptureFixture) -> None:
    port = closed_port()
    config = Config(database_url=f"postgresql://atelier:hunter2@127.0.0.1:{port}/atelier")
    runner = web.AppRunner(create_app(config))

    with pytest.raises(
        DatabaseUnreachable, match=f"cannot connect to the database at 127.0.0.1:{port}/atelier"
    ):
        await runner.setup()  # runs the start-up, which opens the pool

    await runner.cleanup()
    assert f"cannot connect to the database at 127.0.0.1:{port}/atelier" in caplog.text
    assert "hunter2" not in caplog.text


async def test_the_drain_ends_even_with_a_connection_never_released(
    config: Config, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """asyncpg's pool.close() waits for every connection to come back, without end: a connection still
    held (a request stuck past its cancellation, a leak) once held the drain until the process was
    killed. The pool gets POOL_CLOSE_TIMEOUT, then its connections are cut."""
    monkeypatch.setattr(app_module, "POOL_CLOSE_TIMEOUT", 0.2, raising=False)
    runner = web.AppRunner(create_app(config))
    await runner.setup()
    await runner.app[POOL_KEY].acquire()  # never released
    async with asyncio.timeout(10):  # it once waited for that connection for good
        await runner.cleanup()
    assert "the database pool did not close within 0.2 s" in caplog.text


async def test_the_command_exits_with_a_clear_message_without_a_database() -> None:
    code, stderr = await run_api_command(
        DATABASE_URL=f"postgresql://atelier@127.0.0.1:{closed_port()}/atelier"
    )
    assert code == 1
    assert b"atelier-api: cannot connect to the database at 127.0.0.1:" in stderr


@pytest.mark.parametrize(
    ("where", "named"),
    [
        ("127.0.0.1:5432/atelier_no_such_database", "InvalidCatalogNameError"),  # the server says no
        ("127.0.0.1:99999/atelier", "127.0.0.1:99999/atelier"),  # a port that is not one
    ],
    ids=["unknown database", "bad port"],
)
async def test_the_command_exits_with_one_line_when_the_database_says_no(where: str, named: str) -> None:
    """A database that answers no, or a URL whose port is not one, stops the start with one line naming
    where (it was a traceback)."""
    code, stderr = await run_api_command(DATABASE_URL=f"postgresql://postgres:hunter2@{where}")
    assert code == 1
    last_line = stderr.strip().splitlines()[-1]
    assert last_line.startswith(b"atelier-api: cannot connect to the database at "), stderr
    assert named.encode() in last_line
    assert b"Traceback" not in stderr and b"hunter2" not in stderr


async def test_the_command_refuses_bad_settings() -> None:
    code, stderr = await run_api_command(DATABASE_URL="postgresql://u@h/db", API_PORT="eighty")
    assert code == 1
    assert b"API_PORT='eighty' is invalid" in stderr


WAITING_API_BACKEND = """
    SELECT pid FROM pg_stat_activity
    WHERE application_name = 'atelier-api' AND wait_event_type = 'Lock' AND datname = current_database()
"""


async def test_a_report_whose_connection_is_lost_inside_its_transaction_is_503(
    db: asyncpg.Connection, database_url: str, client
) -> None:
    """The connection breaks while the report's transaction is open (here: its backend is ended while it
    waits for the review's row lock). asyncpg then raises InterfaceError ("the underlying connection is
    closed") on leaving the transaction, which once answered 500, logged as a bug, and was not retried
    by nginx; it is the database lost, like any other: 503."""
    review_id = await factories.review(db, 1)
    holder = await asyncpg.connect(database_url)
    try:
        async with holder.transaction():
            await holder.execute("SELECT FROM reviews WHERE id = $1 FOR UPDATE", review_id)
            reporting = asyncio.create_task(client.put(f"/reviews/{review_id}/report"))
            async with asyncio.timeout(10):
                while (waiting := await db.fetchval(WAITING_API_BACKEND)) is None:
                    await asyncio.sleep(0.01)
            await db.execute("SELECT pg_terminate_backend($1)", waiting)
            async with asyncio.timeout(10):
                response = await reporting
    finally:
        await holder.close()
    assert (response.status, response.headers["Retry-After"]) == (503, "1")
    assert (await response.json())["error"] == "database unavailable"
    assert await db.fetchval("SELECT reported FROM reviews WHERE id = $1", review_id) is False
