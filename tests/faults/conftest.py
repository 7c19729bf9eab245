"""Fault injection: real processes (`atelier-api`, `atelier-load`) and a real PostgreSQL, broken on purpose.

Each test starts what it breaks and bounds every wait, so a regression fails in seconds, never hangs.
"""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import asyncpg
import pytest

from tests.conftest import BIN


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def port_open(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


async def eventually(check: Callable[[], Awaitable[bool]], timeout: float, what: str) -> float:
    """Polls `check` until it is true; returns the seconds it took, fails the test after `timeout`."""
    start = time.monotonic()
    while not await check():
        if time.monotonic() - start > timeout:
            pytest.fail(f"not within {timeout} s: {what}")
        await asyncio.sleep(0.05)
    return time.monotonic() - start


@dataclass
class ApiProcess:
    """One `atelier-api` process on 127.0.0.1:port, its standard error in a file."""

    name: str
    port: int
    process: subprocess.Popen[bytes]
    log: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def log_text(self) -> str:
        return self.log.read_text(errors="replace")

    async def wait_serving(self, timeout: float = 20.0) -> None:
        async def serving() -> bool:
            if self.process.poll() is not None:
                pytest.fail(f"{self.name} exited with {self.process.returncode}:\n{self.log_text()}")
            return await asyncio.to_thread(port_open, self.port)

        await eventually(serving, timeout, f"{self.name} serving on port {self.port}")

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait(timeout=10)


@pytest.fixture
def start_api(tmp_path: Path) -> Iterator[Callable[..., ApiProcess]]:
    """Starts `atelier-api` processes with the given settings; kills whatever is left at the end."""
    started: list[ApiProcess] = []

    def start(database_url: str, name: str = "api-1", **settings: str) -> ApiProcess:
        port = free_port()
        env = os.environ | {
            "DATABASE_URL": database_url,
            "API_HOST": "127.0.0.1",
            "API_PORT": str(port),
            "REPLICA_NAME": name,
            "LOG_LEVEL": "INFO",
        }
        log = tmp_path / f"{name}.log"
        with log.open("wb") as stderr:
            process = subprocess.Popen([str(BIN / "atelier-api")], env=env | settings, stderr=stderr)
        api = ApiProcess(name, port, process, log)
        started.append(api)
        return api

    yield start
    for api in started:
        api.stop()


async def backends(database_url: str, application_name: str = "atelier-api") -> int:
    """Sessions of `application_name` open on the database of `database_url`."""
    conn = await asyncpg.connect(database_url)
    try:
        return int(
            await conn.fetchval(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                "AND application_name = $1",
                application_name,
            )
        )
    finally:
        await conn.close()


async def get_json(http: aiohttp.ClientSession, url: str) -> tuple[int, dict, dict[str, str]]:
    async with http.get(url) as response:
        return response.status, await response.json(), dict(response.headers)
