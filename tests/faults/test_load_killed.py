"""`atelier-load` killed (SIGKILL, no chance to clean up) in the middle of a load.

The database serves a small complete load. A bigger export is then loaded and the loader is killed
inside its COPY of reviews.csv, or while its switch transaction waits for a lock the test holds. After
each kill the served tables must be exactly the previous load (counts and a checksum of every row), the
API must answer with the old data, the left-over staging schema and the dead session's advisory lock must
not get in the way, and running the loader again must complete and serve the new data.

The API's view is read with its response cache off (CACHE_MAX_BYTES=0): every answer comes from the
tables, so it shows what the tables hold, not what a cache kept from before the kill.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
from collections.abc import Callable
from pathlib import Path

import asyncpg
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient
from pytest_aiohttp import AiohttpClient

from atelier_api.app import create_app
from atelier_api.config import Config
from tests.api.conftest import until_live
from tests.conftest import BIN
from tests.faults.conftest import eventually

TABLES = ("characteristics", "reviews", "reviews_photos", "characteristic_reviews")
# Big enough that the COPY of reviews.csv lasts long enough to be caught (115,563 reviews).
BIG_PRODUCTS = 20_000


def generate(out: Path, products: int, seed: int) -> Path:
    subprocess.run(
        [
            BIN / "atelier-generate",
            "--out",
            out,
            "--products",
            str(products),
            "--seed",
            str(seed),
            "--no-progress",
        ],
        check=True,
        capture_output=True,
        timeout=60,
    )
    return out


@pytest.fixture(scope="module")
def exports(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return {
        "previous": generate(tmp_path_factory.mktemp("previous"), 50, seed=1),
        "small": generate(tmp_path_factory.mktemp("small"), 60, seed=2),
        "big": generate(tmp_path_factory.mktemp("big"), BIG_PRODUCTS, seed=3),
    }


def start_load(database_url: str, data: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [BIN / "atelier-load", "--data", data, "--no-progress", "--json"],
        env=os.environ | {"DATABASE_URL": database_url},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )


def load(database_url: str, data: Path) -> dict:
    loader = start_load(database_url, data)
    stdout, stderr = loader.communicate(timeout=60)
    assert loader.returncode == 0, stderr
    return json.loads(stdout)  # type: ignore[no-any-return]


@pytest.fixture
def database_url(make_database: Callable[[str], str], exports: dict[str, Path]) -> str:
    url = make_database("faults_load_killed")
    load(url, exports["previous"])
    return url


@pytest.fixture
async def db(database_url: str):
    conn = await asyncpg.connect(database_url)
    yield conn
    await conn.close()


Client = TestClient[web.Request, web.Application]


async def uncached_app(database_url: str, aiohttp_client: AiohttpClient) -> Client:
    """An app reading every answer from the tables: its response cache off."""
    config = Config(database_url=database_url, db_command_timeout=5, cache_max_bytes=0)
    return await aiohttp_client(create_app(config))


@pytest.fixture
async def api(database_url: str, aiohttp_client: AiohttpClient) -> Client:
    return await uncached_app(database_url, aiohttp_client)


@pytest.fixture
async def cached_api(database_url: str, aiohttp_client: AiohttpClient) -> Client:
    """An app as it serves: its response cache on, filled from the old data before the kill."""
    config = Config(database_url=database_url, db_command_timeout=5)
    client = await aiohttp_client(create_app(config))
    await until_live(client)
    return client


async def served(db: asyncpg.Connection) -> dict[str, tuple[int, str]]:
    """Every served table's row count and the md5 of all its rows in id order."""
    return {
        table: tuple(
            await db.fetchrow(
                "SELECT count(*), md5(coalesce(string_agg(t::text, '|' ORDER BY t.id), '')) "
                f"FROM public.{table} t"
            )
        )
        for table in TABLES
    }


async def api_view(api: Client) -> list[tuple[int, bytes]]:
    """What the API serves of a few products: statuses and exact bodies (reviews lists and summaries)."""
    view = []
    for path in ("/readyz", "/reviews?product_id=1&count=1000&sort=newest", "/reviews/meta?product_id=1",
                 "/reviews/meta?product_id=55", "/reviews/meta/batch?product_ids=2,3,4"):  # fmt: skip
        response = await api.get(path)
        view.append((response.status, await response.read()))
    return view


async def gone(db: asyncpg.Connection, pid: int) -> bool:
    """The loader's database session has ended, and with it its advisory lock."""
    return not await db.fetchval(
        "SELECT EXISTS (SELECT FROM pg_stat_activity WHERE pid = $1) "
        "OR EXISTS (SELECT FROM pg_locks WHERE locktype = 'advisory' AND pid = $1)",
        pid,
    )


async def rerun_completes(
    database_url: str,
    db: asyncpg.Connection,
    api: Client,
    cached_api: Client,
    aiohttp_client: AiohttpClient,
    data: Path,
    before,
) -> None:
    summary = await asyncio.to_thread(load, database_url, data)
    assert summary["ok"] is True
    after = await served(db)
    loaded = {f["file"].removesuffix(".csv"): f["loaded"] for f in summary["files"]}
    assert {table: after[table][0] for table in TABLES} == loaded
    assert not await db.fetchval("SELECT EXISTS (SELECT FROM pg_namespace WHERE nspname = 'atelier_load')")
    view = await api_view(api)
    assert all(status == 200 for status, _ in view) and view != before
    # Exactly what an app started on the new data serves; and the app whose cache held the old answers
    # through the kill and the rerun kept none of them (the switch's notification emptied it).
    assert view == await api_view(await uncached_app(database_url, aiohttp_client))
    assert await api_view(cached_api) == view


async def test_a_loader_killed_inside_its_copy_leaves_the_previous_load_served(
    database_url: str,
    db: asyncpg.Connection,
    api: Client,
    cached_api: Client,
    aiohttp_client: AiohttpClient,
    exports: dict[str, Path],
) -> None:
    before, before_view = await served(db), await api_view(api)
    assert await api_view(cached_api) == before_view  # and it now holds the old answers
    assert before["reviews"][0] > 0 and all(status == 200 for status, _ in before_view)

    answers: list[list[tuple[int, bytes]]] = []
    stop_polling = asyncio.Event()

    async def poll_api() -> None:  # a client reading all along: it must see the old data, always
        while not stop_polling.is_set():
            answers.append(await api_view(api))

    poller = asyncio.create_task(poll_api())
    loader = start_load(database_url, exports["big"])
    try:

        async def copying_reviews() -> bool:
            assert loader.poll() is None, "the load ended before the COPY of reviews.csv was caught"
            return bool(
                await db.fetchval(
                    "SELECT EXISTS (SELECT FROM pg_stat_progress_copy WHERE datname = current_database() "
                    "AND relid = to_regclass('atelier_load.raw_reviews') AND tuples_processed > 0)"
                )
            )

        await eventually(copying_reviews, 20, "the loader COPYing reviews.csv")
        pid = await db.fetchval(
            "SELECT pid FROM pg_stat_progress_copy WHERE relid = to_regclass('atelier_load.raw_reviews')"
        )
        copied = await db.fetchval("SELECT tuples_processed FROM pg_stat_progress_copy WHERE pid = $1", pid)
        loader.send_signal(signal.SIGKILL)
        assert loader.wait(10) == -signal.SIGKILL
        await eventually(lambda: gone(db, pid), 10, "the killed loader's session and advisory lock end")
    finally:
        if loader.poll() is None:
            loader.kill()
        loader.communicate(timeout=10)  # reaps it and closes its pipes
        stop_polling.set()
        await poller

    assert 0 < copied < 115_563, copied  # killed mid-file
    assert await served(db) == before
    assert answers and all(view == before_view for view in answers)
    assert await api_view(api) == before_view
    # The staging schema is left behind, half built; the API never looks there and the rerun drops it.
    assert await db.fetchval("SELECT EXISTS (SELECT FROM pg_namespace WHERE nspname = 'atelier_load')")
    await rerun_completes(database_url, db, api, cached_api, aiohttp_client, exports["big"], before_view)


async def test_a_loader_killed_inside_its_switch_leaves_the_previous_load_served(
    database_url: str,
    db: asyncpg.Connection,
    api: Client,
    cached_api: Client,
    aiohttp_client: AiohttpClient,
    exports: dict[str, Path],
) -> None:
    before, before_view = await served(db), await api_view(api)
    assert await api_view(cached_api) == before_view  # and it now holds the old answers
    # A reader's lock on the served tables: the switch's first LOCK TABLE waits for it, in its transaction.
    reader = await asyncpg.connect(database_url)
    lock = reader.transaction()
    await lock.start()
    await reader.execute(f"LOCK TABLE {', '.join(TABLES)} IN ACCESS SHARE MODE")
    loader = start_load(database_url, exports["small"])
    try:

        async def switching() -> bool:
            assert loader.poll() is None, "the load ended without waiting for the lock"
            return bool(
                await db.fetchval(
                    "SELECT EXISTS (SELECT FROM pg_stat_activity WHERE datname = current_database() "
                    "AND wait_event_type = 'Lock' AND query LIKE 'LOCK TABLE public.%')"
                )
            )

        await eventually(switching, 20, "the loader's switch waiting for the lock")
        pid = await db.fetchval(
            "SELECT pid FROM pg_stat_activity WHERE datname = current_database() "
            "AND query LIKE 'LOCK TABLE public.%'"
        )
        loader.send_signal(signal.SIGKILL)
        assert loader.wait(10) == -signal.SIGKILL
    finally:
        await lock.commit()  # the killed session's LOCK now runs, then PostgreSQL finds its client gone
        await reader.close()
        if loader.poll() is None:
            loader.kill()
        loader.communicate(timeout=10)  # reaps it and closes its pipes
    await eventually(lambda: gone(db, pid), 10, "the killed loader's session and advisory lock end")

    assert await served(db) == before  # the half-done switch was rolled back whole
    assert await api_view(api) == before_view
    await rerun_completes(database_url, db, api, cached_api, aiohttp_client, exports["small"], before_view)
