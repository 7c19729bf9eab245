"""PostgreSQL stopped and started under three running `atelier-api` processes.

A dedicated PostgreSQL (pgserver's binaries, its own data folder) is loaded with a small generated
export by the real loader and served by three real API processes with DB_COMMAND_TIMEOUT=2. Reviews
are written (201 acknowledged), then the server is stopped with `pg_ctl stop`: every request must fail
fast with the contract's 503, /readyz must say not ready. Once the server is started again, every
replica must serve again by itself within 5 s, and every acknowledged review must be there.
"""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import aiohttp
import asyncpg
import pytest

from tests.conftest import generate_and_load, stack
from tests.e2e.balanced import new_review
from tests.faults.conftest import ApiProcess, eventually

COMMAND_TIMEOUT = 2.0  # DB_COMMAND_TIMEOUT of the replicas
HANG_MARGIN = 3.0  # a failure slower than COMMAND_TIMEOUT + this counts as a hang
RECOVERY = 5.0  # seconds every replica has to serve again once PostgreSQL is back


class Postgres:
    """A PostgreSQL server of our own, which the test may stop and start (pg_ctl on pgserver's data)."""

    def __init__(self, pgdata: Path) -> None:
        # The embedded server's binaries and its way of running as root.
        self.server = stack.embedded_server(pgdata, cleanup_mode=None)  # cleanup() stops it
        self.pg_ctl = str(self.server.bin_path / "pg_ctl")
        self.pgdata = str(pgdata)
        self.user = self.server.system_user  # postgres refuses to run as root: pgserver's own user then
        self.socket_dir = self.server.get_postmaster_info().socket_dir
        self.url = self.server.get_uri()

    def _pg_ctl(self, *args: str) -> None:
        # Output to a file, not a pipe: the postmaster started by `pg_ctl start` would hold a pipe open.
        subprocess.run(
            [self.pg_ctl, "-D", self.pgdata, "-w", "-t", "20", *args],
            user=self.user,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            check=True,
            timeout=30,
        )

    def stop(self, mode: str) -> None:
        self._pg_ctl("-m", mode, "stop")

    def start(self) -> None:
        # As pgserver starts it: Unix socket only, in the same folder, so the URL stays the same.
        log = str(Path(self.pgdata) / "log")
        self._pg_ctl("-o", '-h ""', "-o", f"-k {self.socket_dir}", "-l", log, "start")

    def running(self) -> bool:
        status = subprocess.run(
            [self.pg_ctl, "-D", self.pgdata, "status"], user=self.user, capture_output=True, check=False
        )
        return status.returncode == 0

    def cleanup(self) -> None:
        # Stopped here: pgserver would only stop the postmaster it started itself, not a restarted one.
        if self.running():
            self._pg_ctl("-m", "fast", "stop")
        self.server.cleanup()


@pytest.fixture
def loaded_postgres(tmp_path: Path) -> Iterator[Postgres]:
    # Not under pytest's temporary folder, as tests/conftest.py's server: run as root, the server runs as
    # its own user, and a pytest run starting meanwhile makes /tmp/pytest-of-<user> private again.
    pgdata = Path(tempfile.mkdtemp(prefix="atelier-outage-pg-"))
    postgres = Postgres(pgdata)
    try:
        generate_and_load(tmp_path / "export", postgres.url, "--products", "50")
        yield postgres
    finally:
        postgres.cleanup()
        shutil.rmtree(pgdata, ignore_errors=True)


async def request(
    http: aiohttp.ClientSession, method: str, url: str, body: dict | None = None
) -> tuple[int, dict[str, str], bytes, float]:
    started = time.monotonic()
    async with http.request(method, url, json=body) as response:
        return response.status, dict(response.headers), await response.read(), time.monotonic() - started


async def count_reviews(database_url: str) -> int:
    conn = await asyncpg.connect(database_url)
    try:
        return int(await conn.fetchval("SELECT count(*) FROM reviews"))
    finally:
        await conn.close()


@pytest.mark.parametrize("stop_mode", ["fast", "immediate"])
async def test_postgres_stopped_gives_fast_503s_and_every_replica_recovers_with_every_acknowledged_write(
    loaded_postgres: Postgres, start_api: Callable[..., ApiProcess], stop_mode: str
) -> None:
    settings = {"DB_COMMAND_TIMEOUT": str(COMMAND_TIMEOUT), "DB_POOL_MIN_SIZE": "1", "DB_POOL_MAX_SIZE": "4"}
    replicas = [start_api(loaded_postgres.url, f"api-{i}", **settings) for i in (1, 2, 3)]
    for api in replicas:
        await api.wait_serving()

    async with aiohttp.ClientSession() as http:
        async with http.get(f"{replicas[0].url}/reviews/meta", params={"product_id": "1"}) as r:
            meta = await r.json()
        product = {"id": 1, "characteristics": [c["id"] for c in meta["characteristics"].values()]}
        reviews_before = await count_reviews(loaded_postgres.url)

        acknowledged: list[str] = []  # Location of every 201
        for api in replicas:
            for n in range(3):
                status, headers, body, _ = await request(
                    http, "POST", f"{api.url}/reviews", new_review(product, summary=f"{api.name} #{n}")
                )
                assert status == 201, body
                acknowledged.append(headers["Location"])

        await asyncio.to_thread(loaded_postgres.stop, stop_mode)

        one = acknowledged[0]
        during = [
            ("GET", "/reviews?product_id=1", None),
            ("GET", "/reviews/meta?product_id=1", None),
            ("GET", one, None),
            ("POST", "/reviews", new_review(product, summary="during the outage")),
            ("PUT", f"{one}/helpful", None),
            ("PUT", f"{one}/report", None),
        ]
        for api in replicas:
            for method, path, payload in during:
                status, headers, raw, took = await request(http, method, api.url + path, payload)
                assert status == 503, (api.name, method, path, raw)
                assert headers["Retry-After"] == "1" and headers["Content-Type"] == "application/json"
                assert raw == b'{"error":"database unavailable","details":[]}'
                assert took < COMMAND_TIMEOUT + HANG_MARGIN, (api.name, method, path, took)
            status, headers, raw, took = await request(http, "GET", f"{api.url}/readyz")
            assert status == 503 and headers["Retry-After"] == "1", raw
            assert b'"unreachable"' in raw and took < COMMAND_TIMEOUT + HANG_MARGIN

        await asyncio.to_thread(loaded_postgres.start)

        async def serves(api: ApiProcess) -> bool:
            statuses = [
                (await request(http, "GET", f"{api.url}{path}"))[0]
                for path in ("/readyz", "/reviews?product_id=1", "/reviews/meta?product_id=1")
            ]
            return statuses == [200, 200, 200]

        # One clock for all three: each must be back within RECOVERY of PostgreSQL's start.
        await asyncio.gather(
            *(
                eventually(lambda api=api: serves(api), RECOVERY, f"{api.name} serves again")
                for api in replicas
            )  # type: ignore[misc]
        )

        for api in replicas:
            for location in acknowledged:
                status, _, raw, _ = await request(http, "GET", api.url + location)
                assert status == 200, (api.name, location, raw)
            status, _, _, _ = await request(http, "POST", f"{api.url}/reviews", new_review(product))
            assert status == 201
    # Nothing acknowledged was lost, and nothing refused with 503 was written.
    assert await count_reviews(loaded_postgres.url) == reviews_before + len(acknowledged) + len(replicas)
    for api in replicas:
        log = api.log_text()
        assert "database unavailable" in log
        assert "Traceback" not in log, log  # asyncpg's floor retries included (pool_log.py)
