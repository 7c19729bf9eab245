"""The schema files of services/postgres: they apply cleanly, in order, and enforce the data's rules."""

from __future__ import annotations

import asyncpg
import pytest

from atelier_etl.schema import REQUESTS_FILE, apply_schema, schema_files, schema_sql


@pytest.fixture
async def conn(make_database):
    connection = await asyncpg.connect(make_database("schema"))
    await apply_schema(connection)
    yield connection
    await connection.close()


def test_files_apply_in_init_order():
    names = [path.name for path in schema_files()]
    assert names == sorted(names)
    assert names[:4] == ["01-tables.sql", "02-constraints.sql", "03-indexes.sql", "04-requests.sql"]


async def test_the_request_tables_file_applies_again_without_change(conn):
    """The loader applies 04-requests.sql after every load: it must be idempotent."""
    await conn.execute("INSERT INTO helpful_votes (request_id, review_id) VALUES ('r-1', 1)")
    await conn.execute(schema_sql(REQUESTS_FILE))
    assert await conn.fetchval("SELECT count(*) FROM helpful_votes") == 1


async def test_tables_keys_and_indexes_exist(conn):
    tables = {
        r["relname"]
        for r in await conn.fetch(
            "SELECT relname FROM pg_class WHERE relkind = 'r' AND relnamespace = 'public'::regnamespace"
        )
    }
    assert tables == {
        "reviews",
        "reviews_photos",
        "characteristics",
        "characteristic_reviews",
        "product_summaries",
        "characteristic_summaries",
        "helpful_votes",
        "idempotency_keys",
    }
    constraints = {
        r["conname"]
        for r in await conn.fetch("SELECT conname FROM pg_constraint WHERE contype IN ('p', 'f')")
    }
    assert {
        "reviews_pkey",
        "reviews_photos_review_fkey",
        "characteristic_reviews_review_fkey",
        "characteristic_reviews_characteristic_fkey",
        "product_summaries_pkey",
        "characteristic_summaries_pkey",
    } <= constraints


async def insert_review(conn, **overrides) -> int:
    row = {
        "product_id": 1,
        "rating": 5,
        "body": "b" * 50,
        "recommend": True,
        "reviewer_name": "n",
        "reviewer_email": "n@example.com",
    } | overrides
    columns = ", ".join(row)
    placeholders = ", ".join(f"${i}" for i in range(1, len(row) + 1))
    return await conn.fetchval(
        f"INSERT INTO reviews ({columns}) VALUES ({placeholders}) RETURNING id", *row.values()
    )


@pytest.mark.parametrize("rating", [0, 6])
async def test_rating_outside_1_to_5_is_refused(conn, rating):
    with pytest.raises(asyncpg.CheckViolationError):
        await insert_review(conn, rating=rating)


async def test_characteristic_value_outside_1_to_5_is_refused(conn):
    review_id = await insert_review(conn)
    characteristic_id = await conn.fetchval(
        "INSERT INTO characteristics (product_id, name) VALUES (1, 'Fit') RETURNING id"
    )
    with pytest.raises(asyncpg.CheckViolationError):
        await conn.execute(
            "INSERT INTO characteristic_reviews (characteristic_id, review_id, value) VALUES ($1, $2, 6)",
            characteristic_id,
            review_id,
        )


async def test_photo_of_a_missing_review_is_refused(conn):
    with pytest.raises(asyncpg.ForeignKeyViolationError):
        await conn.execute("INSERT INTO reviews_photos (review_id, url) VALUES (999, 'https://x/1.jpg')")


async def test_ids_need_not_be_dense(conn):
    assert await insert_review(conn, id=1_000_000) == 1_000_000
    assert await insert_review(conn, id=7) == 7
    date = await conn.fetchval("SELECT date FROM reviews WHERE id = 7")
    assert date.tzinfo is not None  # timestamptz
