"""The switch gives way to the served tables' readers: it waits for its locks only briefly, retries, and
gives up cleanly (nothing switched, the previous data served) when the tables stay busy."""

from __future__ import annotations

import asyncio
import errno

import asyncpg
import pytest

from atelier_etl import rejects, staging
from atelier_etl.load import load
from atelier_etl.summary import LoadError
from tests.etl.loadfiles import review, write_export


@pytest.fixture
def db_url(make_database):
    return make_database("switch")


async def served_review_ids(url: str) -> list[int]:
    conn = await asyncpg.connect(url)
    try:
        return [r["id"] for r in await conn.fetch("SELECT id FROM public.reviews ORDER BY id")]
    finally:
        await conn.close()


WAITING_FOR_A_LOCK = """
    SELECT EXISTS (
        SELECT FROM pg_stat_activity
        WHERE datname = current_database() AND wait_event_type = 'Lock' AND pid <> pg_backend_pid()
    )
"""


async def test_a_switch_blocked_by_a_reader_retries_then_completes(db_url, tmp_path, monkeypatch):
    await load(db_url, write_export(tmp_path / "old", reviews=[review(1)]))
    monkeypatch.setattr(staging, "SWITCH_LOCK_TIMEOUT_MS", 100)
    monkeypatch.setattr(staging, "SWITCH_PAUSE_SECONDS", 0.05)

    reader = await asyncpg.connect(db_url)
    transaction = reader.transaction()
    await transaction.start()
    await reader.fetch("SELECT count(*) FROM public.reviews")  # holds ACCESS SHARE until it ends
    new_load = asyncio.create_task(load(db_url, write_export(tmp_path / "new", reviews=[review(2)])))
    try:
        # The switch has reached the reader's lock: a session of this database waits for one. (Asked on
        # a connection of its own: inside the reader's transaction the activity view would not change.)
        watcher = await asyncpg.connect(db_url)
        try:
            async with asyncio.timeout(30):
                while not await watcher.fetchval(WAITING_FOR_A_LOCK):
                    assert not new_load.done()
                    await asyncio.sleep(0.01)
        finally:
            await watcher.close()
        # While the switch keeps trying, another reader is never queued behind it for long.
        for _ in range(5):
            other = await asyncpg.connect(db_url)
            try:
                assert await other.fetchval("SELECT count(*) FROM public.reviews", timeout=5) == 1
            finally:
                await other.close()
        assert not new_load.done()  # still retrying: the reader holds its lock
    finally:
        await transaction.rollback()
        await reader.close()
    await asyncio.wait_for(new_load, timeout=30)
    assert await served_review_ids(db_url) == [2]


async def test_a_switch_that_never_gets_its_locks_changes_nothing(db_url, tmp_path, monkeypatch):
    await load(db_url, write_export(tmp_path / "old", reviews=[review(1)]))
    monkeypatch.setattr(staging, "SWITCH_LOCK_TIMEOUT_MS", 50)
    monkeypatch.setattr(staging, "SWITCH_PAUSE_SECONDS", 0.01)
    monkeypatch.setattr(staging, "SWITCH_ATTEMPTS", 3)

    reader = await asyncpg.connect(db_url)
    try:
        async with reader.transaction():
            await reader.fetch("SELECT count(*) FROM public.reviews")
            with pytest.raises(LoadError, match="stayed busy"):
                await load(db_url, write_export(tmp_path / "new", reviews=[review(2)]))
    finally:
        await reader.close()
    assert await served_review_ids(db_url) == [1]


async def test_a_report_that_cannot_be_written_switches_nothing(db_url, tmp_path, monkeypatch):
    """The rejects report is written out before the switch: a full disk there leaves the previous data
    served with its own report, as the error says (it once failed after the switch, the new data served
    and the report describing it deleted)."""
    report_path = tmp_path / "rejects.csv"
    await load(db_url, write_export(tmp_path / "old", reviews=[review(1), review(1)]), report_path)
    old_report = report_path.read_bytes()

    def disk_full(source, target):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(rejects.shutil, "copyfileobj", disk_full)
    with pytest.raises(OSError, match="No space left"):
        await load(
            db_url, write_export(tmp_path / "new", reviews=[review(2), review(3, rating=9)]), report_path
        )
    assert await served_review_ids(db_url) == [1]
    assert report_path.read_bytes() == old_report
    assert sorted(path.name for path in tmp_path.iterdir()) == ["new", "old", "rejects.csv"]
