"""Least privilege: the API serves every endpoint as a member of atelier_api (05-privileges.sql), that role
can do nothing else (no DDL, no TRUNCATE or DELETE of the data, no reading of reviewer e-mails), and a
reload, which replaces the data tables, leaves it exactly the same privileges."""

from __future__ import annotations

import sys
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime
from pathlib import Path

import asyncpg
import pytest
from pytest_aiohttp import AiohttpClient

from atelier_api.app import create_app
from atelier_api.config import Config
from atelier_etl.load import load
from atelier_etl.schema import PRIVILEGES_FILE, schema_sql
from tests.conftest import ROOT
from tests.etl.loadfiles import write_export

sys.path.insert(0, str(ROOT / "scripts"))
import stack  # noqa: E402  (scripts/stack.py: the same login helper `make up` uses)

NOW = datetime(2024, 5, 1, 12, 30, 45, tzinfo=UTC)
ROLE = "atelier_api_test"

TABLES = ("reviews", "reviews_photos", "characteristics", "characteristic_reviews", "product_summaries",
          "characteristic_summaries", "helpful_votes", "idempotency_keys")  # fmt: skip
SEQUENCES = (
    "reviews_id_seq",
    "reviews_photos_id_seq",
    "characteristics_id_seq",
    "characteristic_reviews_id_seq",
)

REVIEW_COLUMNS = (
    "id",
    "product_id",
    "rating",
    "date",
    "summary",
    "body",
    "recommend",
    "reported",
    "reviewer_name",
    "response",
    "helpfulness",
)  # fmt: skip, every one but reviewer_email
# (object, column or "", privilege): everything the role holds, and nothing else is allowed.
EXPECTED = (
    {("reviews", column, "SELECT") for column in REVIEW_COLUMNS}
    | {
        ("reviews", column, "INSERT")
        for column in (
            "product_id",
            "rating",
            "date",
            "summary",
            "body",
            "recommend",
            "reviewer_name",
            "reviewer_email",
        )
    }  # fmt: skip
    | {("reviews", "helpfulness", "UPDATE"), ("reviews", "reported", "UPDATE")}
    | {("reviews_photos", column, "SELECT") for column in ("id", "review_id", "url")}
    | {("reviews_photos", column, "INSERT") for column in ("review_id", "url")}
    | {("reviews_photos", "", "SELECT")}
    | {("characteristics", column, "SELECT") for column in ("id", "product_id", "name")}
    | {("characteristics", "", "SELECT")}
    | {
        ("characteristic_reviews", column, "SELECT")
        for column in ("id", "characteristic_id", "review_id", "value")
    }
    | {("characteristic_reviews", column, "INSERT") for column in ("characteristic_id", "review_id", "value")}
    | {("characteristic_reviews", "", "SELECT")}
    | {
        ("product_summaries", column, privilege)
        for column in ("product_id", "ratings", "recommended", "not_recommended")
        for privilege in ("SELECT", "INSERT")
    }  # fmt: skip
    | {("product_summaries", column, "UPDATE") for column in ("ratings", "recommended", "not_recommended")}
    | {("product_summaries", "", "SELECT")}
    | {
        ("characteristic_summaries", column, "SELECT")
        for column in ("characteristic_id", "product_id", "name", "rating_sum", "rating_count")
    }  # fmt: skip
    | {("characteristic_summaries", column, "UPDATE") for column in ("rating_sum", "rating_count")}
    | {("characteristic_summaries", "", "SELECT")}
    | {
        ("helpful_votes", column, privilege)
        for column in ("request_id", "review_id", "voted_at")
        for privilege in ("SELECT", "INSERT")
    }  # fmt: skip
    | {
        ("helpful_votes", "voted_at", "UPDATE"),
        ("helpful_votes", "", "SELECT"),
        ("helpful_votes", "", "INSERT"),
        ("helpful_votes", "", "DELETE"),
    }  # fmt: skip
    | {
        ("idempotency_keys", column, privilege)
        for column in ("key", "request_hash", "review_id", "created_at")
        for privilege in ("SELECT", "INSERT")
    }  # fmt: skip
    | {("idempotency_keys", column, "UPDATE") for column in ("request_hash", "review_id", "created_at")}
    | {
        ("idempotency_keys", "", "SELECT"),
        ("idempotency_keys", "", "INSERT"),
        ("idempotency_keys", "", "DELETE"),
    }
    | {
        (sequence, "", "USAGE")
        for sequence in ("reviews_id_seq", "reviews_photos_id_seq", "characteristic_reviews_id_seq")
    }  # fmt: skip
)

PRIVILEGES = """
SELECT c.relname AS object, a.attname AS column, p.privilege
FROM pg_class AS c
JOIN pg_attribute AS a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped
CROSS JOIN unnest(ARRAY['SELECT', 'INSERT', 'UPDATE', 'REFERENCES']) AS p (privilege)
WHERE c.relnamespace = 'public'::regnamespace AND c.relname = any($2::text[])
  AND has_column_privilege($1, c.oid, a.attnum, p.privilege)
UNION ALL
SELECT c.relname, '', p.privilege
FROM pg_class AS c
CROSS JOIN unnest(ARRAY['SELECT', 'INSERT', 'UPDATE', 'DELETE', 'TRUNCATE', 'REFERENCES', 'TRIGGER'])
    AS p (privilege)
WHERE c.relnamespace = 'public'::regnamespace AND c.relname = any($2::text[])
  AND has_table_privilege($1, c.oid, p.privilege)
UNION ALL
SELECT c.relname, '', p.privilege
FROM pg_class AS c
CROSS JOIN unnest(ARRAY['USAGE', 'SELECT', 'UPDATE']) AS p (privilege)
WHERE c.relnamespace = 'public'::regnamespace AND c.relname = any($3::text[])
  AND has_sequence_privilege($1, c.oid, p.privilege)
UNION ALL
SELECT 'public', '', 'CREATE' WHERE has_schema_privilege($1, 'public', 'CREATE')
"""


async def privileges(conn: asyncpg.Connection) -> set[tuple[str, str, str]]:
    rows = await conn.fetch(PRIVILEGES, ROLE, list(TABLES), list(SEQUENCES))
    return {(row["object"], row["column"], row["privilege"]) for row in rows}


@pytest.fixture
async def owner_url(make_database: Callable[[str], str], tmp_path: Path) -> str:
    """A database loaded by the real loader (which applies 05-privileges.sql in its switch)."""
    url = make_database("least_privilege")
    await load(url, write_export(tmp_path / "export"))
    return url


@pytest.fixture
async def api_url(owner_url: str) -> str:
    url = stack.api_login(owner_url, ROLE)
    assert url != owner_url  # the embedded server's role may create roles: no fallback here
    return url


@pytest.fixture
async def as_api(api_url: str) -> AsyncIterator[asyncpg.Connection]:
    conn = await asyncpg.connect(api_url)
    try:
        yield conn
    finally:
        await conn.close()


async def test_every_endpoint_works_as_the_api_role(api_url: str, aiohttp_client: AiohttpClient) -> None:
    config = Config(database_url=api_url, db_pool_min_size=1, db_pool_max_size=4)
    client = await aiohttp_client(create_app(config, clock=lambda: NOW))

    response = await client.get("/readyz")
    assert response.status == 200, await response.text()
    response = await client.get("/reviews", params={"product_id": "1", "sort": "relevant"})
    assert response.status == 200
    assert sorted(item["review_id"] for item in (await response.json())["results"]) == [1, 2]
    response = await client.get(
        "/reviews", params={"product_id": "1", "rating": "4,5", "with_photos": "true"}
    )
    assert response.status == 200
    response = await client.get("/reviews/meta", params={"product_id": "1"})
    assert response.status == 200 and (await response.json())["ratings"] == {"4": "1", "5": "1"}
    response = await client.get("/reviews/meta/batch", params={"product_ids": "1,2"})
    assert response.status == 200 and len((await response.json())["results"]) == 2

    body = {
        "product_id": 1,
        "rating": 4,
        "summary": "Fits well",
        "body": "These fit exactly as described and have held up after many washes.",
        "recommend": True,
        "name": "jackson11",
        "email": "jackson11@example.com",
        "photos": ["https://example.com/a.jpg", "https://example.com/b.jpg"],
        "characteristics": {"1": 4, "2": 3, "3": 5, "4": 2},
    }
    headers = {"Idempotency-Key": "least-privilege-1"}
    response = await client.post("/reviews", json=body, headers=headers, allow_redirects=False)
    assert response.status == 201, await response.text()
    location = response.headers["Location"]
    response = await client.post("/reviews", json=body, headers=headers, allow_redirects=False)
    assert response.status == 201 and response.headers["Idempotent-Replayed"] == "true"
    assert response.headers["Location"] == location

    response = await client.get(location)
    assert response.status == 200, await response.text()
    review = await response.json()
    assert len(review["photos"]) == 2 and "reviewer_email" not in review

    # A vote nginx names (recorded, then replayed by its retry), and one it does not (counted as is).
    for headers in ({"X-Balancer-Request-Id": "vote-1"}, {"X-Balancer-Request-Id": "vote-1"}, {}):
        response = await client.put(f"{location}/helpful", headers=headers)
        assert response.status == 204, await response.text()
    response = await client.get(location)
    assert (await response.json())["helpfulness"] == 2
    response = await client.put(f"{location}/report")
    assert response.status == 204, await response.text()
    response = await client.get(location)
    assert response.status == 404


@pytest.mark.parametrize(
    "statement",
    [
        "CREATE TABLE sneaky (id int)",
        "CREATE TEMPORARY TABLE sneaky (id int)",
        "DROP TABLE reviews",
        "DROP TABLE helpful_votes",
        "TRUNCATE reviews",
        "TRUNCATE helpful_votes",
        "DELETE FROM reviews",
        "DELETE FROM reviews_photos",
        "DELETE FROM characteristic_reviews",
        "ALTER TABLE reviews ADD COLUMN sneaky int",
        "ALTER TABLE reviews DISABLE TRIGGER ALL",
        "CREATE INDEX sneaky ON reviews (reviewer_email)",
        "SELECT reviewer_email FROM reviews",
        "SELECT * FROM reviews",
        "UPDATE reviews SET body = 'rewritten'",
        "UPDATE reviews SET reviewer_email = 'me@example.com'",
        "INSERT INTO reviews (id, product_id, rating, body, recommend, reviewer_name, reviewer_email)"
        " VALUES (999, 1, 5, 'b', true, 'n', 'e')",
        "INSERT INTO characteristics (product_id, name) VALUES (1, 'Sneaky')",
        "UPDATE characteristic_reviews SET value = 1",
        "DELETE FROM product_summaries",
        "TRUNCATE characteristic_summaries",
        "UPDATE characteristic_summaries SET name = 'Sneaky'",
        "UPDATE product_summaries SET product_id = 1",
    ],
)
async def test_the_api_role_cannot(as_api: asyncpg.Connection, statement: str) -> None:
    with pytest.raises(asyncpg.InsufficientPrivilegeError):
        await as_api.execute(statement)


async def test_a_reload_keeps_exactly_the_privileges(
    owner_url: str, api_url: str, as_api: asyncpg.Connection, tmp_path: Path
) -> None:
    owner = await asyncpg.connect(owner_url)
    try:
        assert await privileges(owner) == EXPECTED
        await load(owner_url, write_export(tmp_path / "again"))  # new tables, switched in
        assert await privileges(owner) == EXPECTED
        await owner.execute(schema_sql(PRIVILEGES_FILE))  # applying the file again changes nothing either
        assert await privileges(owner) == EXPECTED
    finally:
        await owner.close()
    assert await as_api.fetchval("SELECT count(*) FROM reviews WHERE product_id = 1") == 2
    with pytest.raises(asyncpg.InsufficientPrivilegeError):
        await as_api.execute("TRUNCATE reviews")
