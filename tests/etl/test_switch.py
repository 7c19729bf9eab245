"""The switch gives way to the served tables' readers: it waits for its locks only briefly, retries, and
gives up cleanly (nothing switched, the previous data served) when the tables stay busy. It takes its
locks in the API writers' order, tries again when chosen to end a deadlock all the same, and forgets the
requests the API remembered of the data it replaces."""

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


HELD_BY_THE_WAITING_SWITCH = """
    SELECT array_agg(c.relname::text ORDER BY c.relname)
    FROM pg_locks AS l
    JOIN pg_class AS c ON c.oid = l.relation
    JOIN pg_namespace AS n ON n.oid = c.relnamespace
    JOIN pg_stat_activity AS a ON a.pid = l.pid
    WHERE l.granted AND n.nspname = 'public' AND a.datname = current_database()
      AND a.wait_event_type = 'Lock' AND c.relkind = 'r'
"""


async def waiting_for_a_lock(url: str, new_load: asyncio.Task) -> None:
    """Until the switch has reached a lock another session holds: a session of this database waits for
    one. (Asked on a connection of its own: inside the holder's transaction the activity view would not
    change.)"""
    watcher = await asyncpg.connect(url)
    try:
        async with asyncio.timeout(30):
            while not await watcher.fetchval(WAITING_FOR_A_LOCK):
                assert not new_load.done()
                await asyncio.sleep(0.01)
    finally:
        await watcher.close()


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
        await waiting_for_a_lock(db_url, new_load)
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


def test_the_switch_locks_every_switched_table():
    assert sorted(staging.LOCK_ORDER) == sorted(staging.SWITCHED_TABLES + staging.REQUEST_TABLES)


@pytest.mark.parametrize(
    ("holds", "then"),
    [
        # A report: its review, then the ratings of its characteristics.
        (
            "SELECT 1 FROM public.reviews WHERE id = 1 FOR UPDATE",
            "SELECT count(*) FROM public.characteristic_reviews",
        ),
        # A POST with an Idempotency-Key: the key's table, then reviews (the statement's order).
        ("SELECT count(*) FROM public.idempotency_keys", "SELECT count(*) FROM public.reviews"),
    ],
)
async def test_a_switch_waiting_for_what_a_writer_holds_holds_nothing_the_writer_wants_next(
    db_url, tmp_path, holds, then
):
    """The switch waiting for a lock must hold none of the tables the writer holding it may take next, or
    the two deadlock: it dropped `characteristics` CASCADE first (which locked characteristic_reviews too)
    while a report held its review; it held `reviews` when it came to empty idempotency_keys, which a
    keyed POST reads before `reviews`."""
    await load(db_url, write_export(tmp_path / "old", reviews=[review(1)]))
    writer = await asyncpg.connect(db_url)
    transaction = writer.transaction()
    await transaction.start()
    await writer.fetch(holds)
    new_load = asyncio.create_task(load(db_url, write_export(tmp_path / "new", reviews=[review(2)])))
    try:
        await waiting_for_a_lock(db_url, new_load)
        wanted_next = then.rsplit("public.", 1)[1]
        assert wanted_next not in (await writer.fetchval(HELD_BY_THE_WAITING_SWITCH) or [])
        await writer.fetchval(then, timeout=5)
    finally:
        await transaction.rollback()
        await writer.close()
    await asyncio.wait_for(new_load, timeout=30)
    assert await served_review_ids(db_url) == [2]


async def test_a_switch_chosen_to_end_a_deadlock_tries_again(db_url, tmp_path, make_database):
    """Another session taking the served tables in another order (here an operator's transaction: a
    product's summary, then `reviews`) can still deadlock with the switch; PostgreSQL rolls the switch
    back, and it tries again like a lock not granted in time."""
    await load(db_url, write_export(tmp_path / "old", reviews=[review(1)]))
    admin = await asyncpg.connect(db_url)
    try:  # the loader's sessions check for deadlocks after 100 ms instead of 1 s: its check runs first
        await admin.execute(
            f"ALTER DATABASE {await admin.fetchval('SELECT current_database()')} "
            "SET deadlock_timeout = '100ms'"
        )
    finally:
        await admin.close()
    operator = await asyncpg.connect(db_url)
    # The ALTER reaches every new session, this one too: it waits a minute before checking, so the
    # switch's check (after 100 ms) always finds the deadlock first and the switch is the one rolled back.
    await operator.execute("SET deadlock_timeout = '60s'")
    transaction = operator.transaction()
    await transaction.start()
    await operator.fetch("SELECT 1 FROM public.product_summaries FOR UPDATE")
    new_load = asyncio.create_task(load(db_url, write_export(tmp_path / "new", reviews=[review(2)])))
    try:
        await waiting_for_a_lock(db_url, new_load)  # holding `reviews`, waiting for product_summaries
        # Waits for the switch's `reviews` until PostgreSQL ends the deadlock by rolling the switch back.
        assert await operator.fetchval("SELECT count(*) FROM public.reviews", timeout=10) == 1
    finally:
        await transaction.rollback()
        await operator.close()
    await asyncio.wait_for(new_load, timeout=30)
    assert await served_review_ids(db_url) == [2]


async def test_a_reload_forgets_the_requests_of_the_data_it_replaces(db_url, tmp_path):
    """Votes counted and Idempotency-Keys name reviews of the replaced data, whose ids the API hands out
    again: a key kept would replay "your review is /reviews/N" for another client's review N."""
    await load(db_url, write_export(tmp_path / "old", reviews=[review(1)]))
    conn = await asyncpg.connect(db_url)
    try:
        await conn.execute("INSERT INTO helpful_votes (request_id, review_id) VALUES ('r-1', 1)")
        await conn.execute(
            "INSERT INTO idempotency_keys (key, request_hash, review_id) VALUES ('k-1', '\\x00', 2)"
        )
        await load(db_url, write_export(tmp_path / "new", reviews=[review(1)]))
        assert await conn.fetchval("SELECT count(*) FROM helpful_votes") == 0
        assert await conn.fetchval("SELECT count(*) FROM idempotency_keys") == 0
    finally:
        await conn.close()
