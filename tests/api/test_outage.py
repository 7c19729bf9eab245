"""The database going away: 503 with Retry-After while it is gone, back to normal when it returns, and a
clear failure when it is not there at start-up.

The app reaches the test server through a small TCP proxy, so a test can cut every connection and refuse
new ones (as a restarting or unreachable database does) and then bring it back, without touching the
server the other tests use.
"""

from __future__ import annotations

import asyncio
import os
import socket
import sys
from collections.abc import AsyncIterator
from urllib.parse import parse_qs, urlsplit, urlunsplit

import asyncpg
import pytest
from aiohttp import web
from pytest_aiohttp import AiohttpClient

from atelier_api.app import DatabaseUnreachable, create_app
from atelier_api.config import Config
from tests.api import factories


class DatabaseProxy:
    """Listens on 127.0.0.1 and relays each connection to the database server of `server_url`."""

    def __init__(self, server_url: str) -> None:
        parts = urlsplit(server_url)
        self.server_url = server_url
        self.host = parse_qs(parts.query).get("host", [parts.hostname or "localhost"])[0]
        self.port = parts.port or 5432
        self.listen_port = 0
        self.server: asyncio.Server | None = None
        self.writers: set[asyncio.StreamWriter] = set()
        self.tasks: set[asyncio.Task[None]] = set()

    def url(self) -> str:
        """server_url, reached through the proxy."""
        parts = urlsplit(self.server_url)
        auth = parts.netloc.rsplit("@", 1)[0] + "@" if "@" in parts.netloc else ""
        return urlunsplit(("postgresql", f"{auth}127.0.0.1:{self.listen_port}", parts.path, "", ""))

    async def start(self) -> None:
        self.server = await asyncio.start_server(self._relay, "127.0.0.1", self.listen_port)
        self.listen_port = self.server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        """Refuse new connections and cut the open ones."""
        assert self.server is not None
        self.server.close()
        for writer in list(self.writers):
            writer.close()
        for task in list(self.tasks):
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)
        for writer in list(self.writers):
            await writer.wait_closed()
        await self.server.wait_closed()
        self.writers.clear()

    async def _relay(self, client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter) -> None:
        if self.host.startswith("/"):
            server = await asyncio.open_unix_connection(f"{self.host}/.s.PGSQL.{self.port}")
        else:
            server = await asyncio.open_connection(self.host, self.port)
        server_reader, server_writer = server
        self.writers.update((client_writer, server_writer))
        pipes = [
            asyncio.ensure_future(self._pipe(client_reader, server_writer)),
            asyncio.ensure_future(self._pipe(server_reader, client_writer)),
        ]
        self.tasks.update(pipes)
        try:
            await asyncio.wait(pipes, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for pipe in pipes:
                pipe.cancel()
            for writer in (client_writer, server_writer):
                writer.close()
            self.tasks.difference_update(pipes)

    @staticmethod
    async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()


@pytest.fixture
async def proxy(database_url: str) -> AsyncIterator[DatabaseProxy]:
    proxy = DatabaseProxy(database_url)
    await proxy.start()
    yield proxy
    if proxy.server is not None and proxy.server.is_serving():
        await proxy.stop()


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


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


async def run_api_command(**settings: str) -> tuple[int | None, bytes]:
    """`python -m atelier_api` with these settings; its exit code and standard error."""
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "atelier_api",
        env={**os.environ, **settings},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    _, stderr = await asyncio.wait_for(process.communicate(), timeout=60)
    return process.returncode, stderr


async def test_the_command_exits_with_a_clear_message_without_a_database() -> None:
    code, stderr = await run_api_command(
        DATABASE_URL=f"postgresql://atelier@127.0.0.1:{closed_port()}/atelier"
    )
    assert code == 1
    assert b"atelier-api: cannot connect to the database at 127.0.0.1:" in stderr


async def test_the_command_refuses_bad_settings() -> None:
    code, stderr = await run_api_command(DATABASE_URL="postgresql://u@h/db", API_PORT="eighty")
    assert code == 1
    assert b"API_PORT='eighty' is invalid" in stderr
