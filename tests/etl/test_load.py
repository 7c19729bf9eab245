"""The loader end to end against a real PostgreSQL: what lands in the tables, and the switch."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import asyncpg
import pytest

from atelier_etl import staging
from atelier_etl.load import load
from atelier_etl.schema import apply_schema
from tests.etl.loadfiles import (
    SAMPLE_CHARACTERISTIC_REVIEWS,
    SAMPLE_CHARACTERISTICS,
    read_rejects,
    review,
    write_export,
)

TABLES = ("reviews", "reviews_photos", "characteristics", "characteristic_reviews")


def at_ms(ms: int) -> datetime:
    return datetime(1970, 1, 1, tzinfo=UTC) + timedelta(milliseconds=ms)


@pytest.fixture
def db_url(make_database):
    return make_database("load")


async def fetch(db_url: str, query: str, *args) -> list[asyncpg.Record]:
    conn = await asyncpg.connect(db_url)
    try:
        return await conn.fetch(query, *args)
    finally:
        await conn.close()


async def snapshot(db_url: str) -> dict[str, object]:
    """Every row of every table, each sequence's state, and the schemas: a database to compare."""
    conn = await asyncpg.connect(db_url)
    try:
        state: dict[str, object] = {}
        for table in TABLES:
            state[table] = [
                tuple(row) for row in await conn.fetch(f"SELECT * FROM public.{table} ORDER BY id")
            ]
            state[f"{table}_id_seq"] = tuple(
                await conn.fetchrow(f"SELECT last_value, is_called FROM public.{table}_id_seq")
            )
        state["schemas"] = sorted(
            row["nspname"]
            for row in await conn.fetch(
                "SELECT nspname FROM pg_namespace WHERE nspname = $1", staging.SCHEMA
            )  # fmt: skip
        )
        return state
    finally:
        await conn.close()


async def test_sample_rows_load_exactly(db_url, tmp_path):
    data = write_export(tmp_path / "data")
    summary = await load(db_url, data)

    reviews = await fetch(db_url, "SELECT * FROM reviews ORDER BY id")
    assert [dict(row) for row in reviews[:3]] == [
        {"id": 1, "product_id": 1, "rating": 5, "date": at_ms(1596080481467),
         "summary": "This product was great!",
         "body": "I really did or did not like this product based on whether it was sustainably sourced.  "
                 "Then I found out that its made from nothing at all.",
         "recommend": True, "reported": False, "reviewer_name": "funtime",
         "reviewer_email": "first.last@gmail.com", "response": None, "helpfulness": 8},
        {"id": 2, "product_id": 1, "rating": 4, "date": at_ms(1610178433963),
         "summary": "This product was ok!",
         "body": "I really did not like this product solely because I am tiny and do not fit into it.",
         "recommend": False, "reported": False, "reviewer_name": "mymainstreammother",
         "reviewer_email": "first.last@gmail.com", "response": None, "helpfulness": 2},
        {"id": 3, "product_id": 2, "rating": 4, "date": at_ms(1609325851021),
         "summary": "I am liking these glasses",
         "body": "They are very dark.  But that's good because I'm in very sunny spots",
         "recommend": True, "reported": False, "reviewer_name": "bigbrotherbenjamin",
         "reviewer_email": "first.last@gmail.com", "response": "Glad you're enjoying the product!",
         "helpfulness": 5},
    ]  # fmt: skip
    assert reviews[3]["reported"] is True
    photos = await fetch(db_url, "SELECT id, review_id, url FROM reviews_photos")
    assert [tuple(row) for row in photos] == [
        (1, 5, "https://images.unsplash.com/photo-1560570803-7474c0f9af99?ixlib=rb-1.2.1"
               "&ixid=eyJhcHBfaWQiOjEyMDd9&auto=format&fit=crop&w=975&q=80"),
    ]  # fmt: skip
    characteristics = await fetch(db_url, "SELECT id, product_id, name FROM characteristics ORDER BY id")
    assert [tuple(row) for row in characteristics] == [
        (1, 1, "Fit"), (2, 1, "Length"), (3, 1, "Comfort"), (4, 1, "Quality"), (5, 2, "Quality"),
        (14, 5, "Size"),
    ]  # fmt: skip
    ratings = await fetch(
        db_url, "SELECT id, characteristic_id, review_id, value FROM characteristic_reviews"
    )
    assert sorted(tuple(row) for row in ratings) == [(1, 1, 1, 4), (2, 2, 1, 3), (3, 3, 1, 5)]

    assert [(f.file, f.read, f.loaded, f.rejected) for f in summary.files] == [
        ("characteristics.csv", 6, 6, 0),
        ("reviews.csv", 4, 4, 0),
        ("reviews_photos.csv", 1, 1, 0),
        ("characteristic_reviews.csv", 3, 3, 0),
    ]
    assert summary.rejects_path == data / "rejects.csv"
    assert read_rejects(summary.rejects_path) == []
    assert not list(data.glob("rejects.csv.partial*"))


async def test_every_served_table_has_planner_statistics_after_a_load(db_url, tmp_path):
    """The summaries are built by INSERT ... SELECT, which leaves no statistics: without an ANALYZE the
    planner guessed thousands of rows per product (and JIT-compiled a batch of summaries)."""
    await load(db_url, write_export(tmp_path / "data"))
    rows = await fetch(
        db_url,
        "SELECT c.relname, c.reltuples, count(s.attname) AS columns_with_statistics"
        " FROM pg_class AS c JOIN pg_namespace AS n ON n.oid = c.relnamespace"
        " LEFT JOIN pg_stats AS s ON s.schemaname = n.nspname AND s.tablename = c.relname"
        " WHERE n.nspname = 'public' AND c.relname = any($1::text[]) GROUP BY c.relname, c.reltuples",
        list(staging.SWITCHED_TABLES),
    )
    assert {row["relname"] for row in rows} == set(staging.SWITCHED_TABLES)
    for row in rows:
        assert row["reltuples"] > 0 and row["columns_with_statistics"] > 0, dict(row)


async def test_dates_keep_every_millisecond(db_url, tmp_path):
    dates = [0, 1, 999, 1609459199999, 1640995200001]
    data = write_export(
        tmp_path, reviews=[review(id=i + 1, date=ms) for i, ms in enumerate(dates)], photos=[],
        characteristic_reviews=[],
    )  # fmt: skip
    await load(db_url, data)
    rows = await fetch(
        db_url, "SELECT (extract(epoch FROM date) * 1000)::bigint AS ms FROM reviews ORDER BY id"
    )
    assert [row["ms"] for row in rows] == dates


@pytest.mark.parametrize("eol", ["\n", "\r\n"], ids=["lf", "crlf"])
@pytest.mark.parametrize("bom", [False, True], ids=["no-bom", "bom"])
async def test_export_quirks(db_url, tmp_path, eol, bom):
    reviews = [
        review(id=40, product_id=9, response="null"),
        review(id=7, product_id=9, response='""', recommend="1", reported="0"),
        review(id=1000, product_id=9, response='"Thanks, ""really"""', recommend="TRUE", reported="False"),
        review(id=12, product_id=9, summary='"a, b and c"',
               body='"first line\nsecond ""quoted"", line\r\nthird"', recommend="0", reported="tRuE"),
        review(id=13, product_id=9, summary="bare text", body="", recommend="FALSE", reported="1"),
    ]  # fmt: skip
    data = write_export(
        tmp_path, reviews=reviews, photos=["900,12,https://x/1.jpg", "3,40,https://x/2.jpg"],
        characteristics=['77,9,"Fit"', '8,9,"Width"'],
        characteristic_reviews=["50,77,12,1", "6,8,1000,5"], eol=eol, bom=bom,
    )  # fmt: skip
    summary = await load(db_url, data)

    assert summary.rejected == 0, read_rejects(summary.rejects_path)
    rows = {
        row["id"]: row
        for row in await fetch(db_url, "SELECT id, summary, body, recommend, reported, response FROM reviews")
    }
    assert sorted(rows) == [7, 12, 13, 40, 1000]
    assert rows[40]["response"] is None
    assert rows[7]["response"] is None
    assert rows[1000]["response"] == 'Thanks, "really"'
    assert rows[12]["summary"] == "a, b and c"
    assert rows[12]["body"] == 'first line\nsecond "quoted", line\r\nthird'
    assert rows[13]["summary"] == "bare text" and rows[13]["body"] == ""
    flags = {id: (row["recommend"], row["reported"]) for id, row in rows.items()}
    assert flags == {40: (True, False), 7: (True, False), 1000: (True, False), 12: (False, True),
                     13: (False, True)}  # fmt: skip
    photos = await fetch(db_url, "SELECT id, review_id FROM reviews_photos ORDER BY id")
    assert [tuple(row) for row in photos] == [(3, 40), (900, 12)]
    ratings = await fetch(
        db_url, "SELECT id, characteristic_id, review_id, value FROM characteristic_reviews"
    )
    assert sorted(tuple(row) for row in ratings) == [(6, 8, 1000, 5), (50, 77, 12, 1)]


async def test_only_the_bare_word_null_and_an_empty_quoted_string_are_no_response(db_url, tmp_path):
    """data.md: `response` is the bare word `null` (unquoted) when there is none, otherwise a quoted
    string, an empty one also meaning none. A quoted "null", `NULL` or ` null` is text as written."""
    written = ["null", '""', '"null"', "NULL", '"Null"', " null", '"null "', "", '"Thanks"']
    reviews = [review(id=id, response=response) for id, response in enumerate(written, 1)]
    reviews.append(review(id=len(written) + 1, response="null", helpfulness='"7"'))  # a quoted number last
    data = write_export(tmp_path, reviews=reviews, photos=[], characteristic_reviews=[])
    summary = await load(db_url, data)

    assert summary.rejected == 0, read_rejects(summary.rejects_path)
    rows = await fetch(db_url, "SELECT response FROM reviews ORDER BY id")
    assert [row["response"] for row in rows] == [
        None, None, "null", "NULL", "Null", " null", "null ", None, "Thanks", None
    ]  # fmt: skip


async def test_sequences_continue_past_the_largest_id(db_url, tmp_path):
    data = write_export(
        tmp_path,
        reviews=[review(id=1000), review(id=3)],
        photos=[],
        characteristics=['70,1,"Fit"', '9,1,"Size"'],
        characteristic_reviews=["5,70,3,2", "400,9,1000,4"],
    )
    await load(db_url, data)
    conn = await asyncpg.connect(db_url)
    try:
        review_id = await conn.fetchval(
            "INSERT INTO reviews (product_id, rating, body, recommend, reviewer_name, reviewer_email) "
            "VALUES (1, 5, 'b', true, 'n', 'n@example.com') RETURNING id"
        )
        characteristic_id = await conn.fetchval(
            "INSERT INTO characteristics (product_id, name) VALUES (1, 'Width') RETURNING id"
        )
        rating_id = await conn.fetchval(
            "INSERT INTO characteristic_reviews (characteristic_id, review_id, value) VALUES ($1, $2, 3) "
            "RETURNING id",
            characteristic_id,
            review_id,
        )
        photo_id = await conn.fetchval(
            "INSERT INTO reviews_photos (review_id, url) VALUES ($1, 'https://x/1.jpg') RETURNING id",
            review_id,
        )
    finally:
        await conn.close()
    assert (review_id, characteristic_id, rating_id, photo_id) == (1001, 71, 401, 1)  # no photos: starts at 1


# Every index and constraint of the served tables, as PostgreSQL prints them.
KEYS_AND_INDEXES = """
    SELECT 'index' AS kind, indexname AS name, indexdef AS definition
    FROM pg_indexes WHERE schemaname = 'public'
    UNION ALL
    SELECT 'constraint', conname, pg_get_constraintdef(oid)
    FROM pg_constraint WHERE connamespace = 'public'::regnamespace
    ORDER BY 1, 2
"""


@pytest.mark.parametrize(
    "export",
    [
        {},
        # A duplicate id stops the key indexes at its table: the first one, then the last one.
        {"characteristics": [*SAMPLE_CHARACTERISTICS, '5,3,"Fit"']},
        {"characteristic_reviews": [*SAMPLE_CHARACTERISTIC_REVIEWS, "3,1,1,2"]},
        # Every key index built, then the keys' transaction fails on a foreign key.
        {"characteristic_reviews": [*SAMPLE_CHARACTERISTIC_REVIEWS, "4,1,999,3"]},
    ],
    ids=["clean", "duplicate characteristic", "duplicate rating", "missing reference"],
)
async def test_the_loader_builds_the_schema_files_keys_and_indexes(db_url, make_database, tmp_path, export):
    """The loader builds keys and indexes in its own order (staging.build_key_indexes), also when a key
    fails first and rows are rejected; what it ends with is what the schema files build."""
    conn = await asyncpg.connect(make_database("schema_files"))
    try:
        await apply_schema(conn)
        expected = [tuple(row) for row in await conn.fetch(KEYS_AND_INDEXES)]
    finally:
        await conn.close()
    await load(db_url, write_export(tmp_path, **export))
    assert [tuple(row) for row in await fetch(db_url, KEYS_AND_INDEXES)] == expected


async def test_second_run_gives_the_same_database(db_url, tmp_path):
    data = write_export(tmp_path, characteristic_reviews=[*SAMPLE_CHARACTERISTIC_REVIEWS, "4,4,999,1"])
    first = await load(db_url, data)
    after_first = await snapshot(db_url)
    second = await load(db_url, data)
    assert await snapshot(db_url) == after_first
    assert after_first["schemas"] == []  # the staging schema is gone
    assert first.files == second.files
    assert read_rejects(second.rejects_path)[0]["line"] == "5"


async def test_a_load_replaces_the_served_data(db_url, tmp_path):
    await load(db_url, write_export(tmp_path / "a"))
    await load(db_url, write_export(tmp_path / "b", reviews=[review(id=77, product_id=3)], photos=[],
                                    characteristics=[], characteristic_reviews=[]))  # fmt: skip
    assert [row["id"] for row in await fetch(db_url, "SELECT id FROM reviews")] == [77]
    assert await fetch(db_url, "SELECT id FROM characteristics") == []
    keys = await fetch(
        db_url,
        "SELECT conname FROM pg_constraint "
        "WHERE conrelid = 'public.reviews'::regclass AND contype IN ('p', 'c', 'f')",
    )
    assert {row["conname"] for row in keys} == {"reviews_pkey", "reviews_product_id_check",
                                                  "reviews_rating_check", "reviews_response_check",
                                                  "reviews_helpfulness_check"}  # fmt: skip


async def test_a_failed_load_leaves_the_previous_data_served(db_url, tmp_path, monkeypatch):
    await load(db_url, write_export(tmp_path / "a"))
    before = await snapshot(db_url)
    rejects_before = (tmp_path / "a" / "rejects.csv").read_bytes()

    async def fail(conn):
        raise asyncpg.DiskFullError("could not extend file")

    monkeypatch.setattr(staging, "build_keys", fail)
    data = write_export(tmp_path / "a", reviews=[review(id=77, product_id=3)], photos=["1,1,not-a-review"])
    with pytest.raises(asyncpg.DiskFullError):
        await load(db_url, data)

    assert await snapshot(db_url) == before  # staging schema dropped too
    assert (tmp_path / "a" / "rejects.csv").read_bytes() == rejects_before
    assert not list((tmp_path / "a").glob("rejects.csv.partial*"))


async def test_a_load_left_behind_is_replaced_by_the_next_run(db_url, tmp_path):
    conn = await asyncpg.connect(db_url)
    try:  # what a killed run leaves: a half-built staging schema
        await conn.execute(f"CREATE SCHEMA {staging.SCHEMA}; CREATE TABLE {staging.SCHEMA}.reviews (id int)")
    finally:
        await conn.close()
    summary = await load(db_url, write_export(tmp_path))
    assert summary["reviews.csv"].loaded == 4
    assert (await snapshot(db_url))["schemas"] == []


async def test_a_second_loader_at_once_is_refused(db_url, tmp_path):
    from atelier_etl.summary import LoadError

    conn = await asyncpg.connect(db_url)
    try:
        assert await staging.try_lock(conn)
        with pytest.raises(
            LoadError, match=r"another atelier-load \(or an atelier-verify --repair\) is running"
        ):
            await load(db_url, write_export(tmp_path))
    finally:
        await conn.close()


async def test_a_load_if_empty_into_a_database_serving_data_does_not_wait_for_the_lock(db_url, tmp_path):
    """compose's ETL runs `atelier-load --if-empty` at every `up`: while an atelier-verify --repair holds
    the loader's lock, it failed ("another atelier-load is running"), and compose then started no API."""
    await load(db_url, write_export(tmp_path / "first"))
    conn = await asyncpg.connect(db_url)
    try:
        assert await staging.try_lock(conn)  # as a repair holds it
        assert await load(db_url, write_export(tmp_path / "second"), if_empty=True) is None
    finally:
        await conn.close()
