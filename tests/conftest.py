"""Fixtures shared by every suite: one real PostgreSQL server per test session.

The server is `TEST_DATABASE_URL` when set (any role that may CREATE DATABASE), otherwise an embedded
PostgreSQL started with `pgserver` in a temporary folder and stopped at the end. Each suite takes its
own database from `make_database`, so suites never see each other's rows.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import subprocess
import sys
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import pytest

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent  # the virtualenv's bin: atelier-generate, atelier-load, atelier-api


def generate_and_load(
    out: Path, database_url: str, *generate_args: str, env: dict[str, str] | None = None
) -> dict:
    """The real command lines, end to end: `atelier-generate --out OUT ARGS`, then `atelier-load` of it
    into `database_url`. Returns the generator's manifest."""
    environment = (env or dict(os.environ)) | {"DATABASE_URL": database_url}
    generate = [BIN / "atelier-generate", "--out", out, *generate_args, "--no-progress"]
    subprocess.run(generate, env=environment, check=True, capture_output=True, timeout=120)
    loaded = subprocess.run([BIN / "atelier-load", "--data", out, "--no-progress"], env=environment,
                            capture_output=True, text=True, timeout=300)  # fmt: skip
    assert loaded.returncode == 0, loaded.stderr
    return json.loads((out / "manifest.json").read_text())


def database_url(server_url: str, dbname: str) -> str:
    """The URL of database `dbname` on the server of `server_url` (same host, port, role, options)."""
    parts = urlsplit(server_url)
    return urlunsplit(parts._replace(path="/" + dbname))


async def _recreate(server_url: str, dbname: str) -> None:
    conn = await asyncpg.connect(database_url(server_url, "postgres"))
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{dbname}" WITH (FORCE)')
        await conn.execute(f'CREATE DATABASE "{dbname}"')
    finally:
        await conn.close()


@pytest.fixture(scope="session")
def postgres_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    url = os.environ.get("TEST_DATABASE_URL")
    if url:
        yield url
        return
    import pgserver  # only needed when no server is given

    server = pgserver.get_server(tmp_path_factory.mktemp("pgdata"), cleanup_mode="stop")
    try:
        yield server.get_uri()
    finally:
        server.cleanup()


@pytest.fixture(scope="session")
def make_database(postgres_url: str) -> Callable[[str], str]:
    """Create (or re-create, empty) a database for this session and return its URL."""
    run_id = os.getpid()

    def make(name: str) -> str:
        dbname = f"test_{re.sub(r'[^a-z0-9_]', '_', name.lower())}_{run_id}"
        # A thread of its own, so async fixtures (already inside an event loop) can call this too.
        with ThreadPoolExecutor(max_workers=1) as pool:
            pool.submit(asyncio.run, _recreate(postgres_url, dbname)).result()
        return database_url(postgres_url, dbname)

    return make
