"""POST /reviews, PUT helpful and PUT report: what is stored, in one transaction, and what GETs show after."""

from __future__ import annotations

import logging
from typing import Any

import asyncpg
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient

from tests.api import factories
from tests.api.conftest import NOW, NOW_JSON
from tests.api.factories import review_body

Client = TestClient[web.Request, web.Application]
# What a 404 for an unknown review names (contract: error bodies name the field at fault).
REVIEW_ID_DETAIL = {"field": "review_id", "message": "no such review"}


def new_review(product_id: int, **fields: Any) -> dict[str, Any]:
    return review_body(product_id, **fields)


async def post_review(client: Client, body: dict[str, Any], path: str = "/reviews") -> int:
    response = await client.post(path, json=body, allow_redirects=False)
    assert response.status == 201, await response.text()
    assert await response.text() == "Created"
    assert response.content_type == "text/plain"
    location = response.headers["Location"]
    assert location.startswith("/reviews/")
    return int(location.removeprefix("/reviews/"))


@pytest.mark.parametrize("path", ["/reviews", "/reviews/"])
async def test_post_stores_review_photos_and_ratings(
    client: Client, db: asyncpg.Connection, path: str
) -> None:
    fit = await factories.characteristic(db, 40, "Fit")
    length = await factories.characteristic(db, 40, "Length")
    photos = ["https://img.example/2.jpg", "http://img.example/1.jpg"]

    review_id = await post_review(
        client, new_review(40, photos=photos, characteristics={str(fit): 2, str(length): 5}), path
    )

    stored = await db.fetchrow("SELECT * FROM reviews WHERE id = $1", review_id)
    assert dict(stored) | {"id": None} == {
        "id": None,
        "product_id": 40,
        "rating": 4,
        "date": NOW.replace(microsecond=678000),  # the clock's reading to the millisecond, as clients see it
        "summary": "Fits well",
        "body": new_review(40)["body"],
        "recommend": True,
        "reported": False,
        "reviewer_name": "jackson11",
        "reviewer_email": "jackson11@example.com",
        "response": None,
        "helpfulness": 0,
    }
    ratings = await db.fetch(
        "SELECT characteristic_id, value FROM characteristic_reviews WHERE review_id = $1 ORDER BY 1",
        review_id,
    )
    assert [tuple(row) for row in ratings] == [(fit, 2), (length, 5)]

    response = await client.get(f"/reviews/{review_id}")
    item = await response.json()
    assert [photo["url"] for photo in item["photos"]] == photos  # kept in the order given
    assert item["date"] == NOW_JSON
    assert item["helpfulness"] == 0 and item["response"] is None


async def test_post_minimal_review_of_product_known_by_reviews_only(
    client: Client, db: asyncpg.Connection
) -> None:
    await factories.review(db, 77)  # no characteristics: still a known product
    body = new_review(77)
    del body["summary"]

    review_id = await post_review(client, body)

    row = await db.fetchrow("SELECT summary FROM reviews WHERE id = $1", review_id)
    assert row["summary"] == ""  # a missing summary is stored empty
    assert await db.fetchval("SELECT count(*) FROM reviews_photos") == 0


async def test_post_product_known_by_a_reported_review(client: Client, db: asyncpg.Connection) -> None:
    await factories.review(db, 78, reported=True)

    await post_review(client, new_review(78, photos=[], characteristics={}))


async def test_meta_and_list_are_exact_right_after_a_post(client: Client, db: asyncpg.Connection) -> None:
    quality = await factories.characteristic(db, 5, "Quality")
    old = await factories.review(db, 5, rating=2, recommend=False)
    await factories.characteristic_rating(db, quality, old, 1)

    new = await post_review(
        client, new_review(5, rating=5, recommend=True, characteristics={str(quality): 4})
    )

    meta = await (await client.get("/reviews/meta?product_id=5")).json()
    assert meta == {
        "product_id": "5",
        "ratings": {"2": "1", "5": "1"},
        "recommended": {"false": "1", "true": "1"},
        "characteristics": {"Quality": {"id": quality, "value": "2.5000000000000000"}},
    }
    listed = await (await client.get("/reviews?product_id=5&sort=newest")).json()
    assert [item["review_id"] for item in listed["results"]] == [new, old]


async def test_new_ids_continue_past_loaded_ids(client: Client, db: asyncpg.Connection) -> None:
    quality = await factories.characteristic(db, 9, "Quality", id=3_000_000)
    loaded = await factories.review(db, 9, id=5_774_952)
    await factories.photo(db, loaded, "https://img.example/old.jpg", id=2_742_540)
    await factories.advance_sequences(db)  # as the loader does after COPY

    review_id = await post_review(
        client, new_review(9, photos=["https://img.example/new.jpg"], characteristics={str(quality): 3})
    )

    assert review_id == 5_774_953
    photo_id = await db.fetchval("SELECT id FROM reviews_photos WHERE review_id = $1", review_id)
    assert photo_id == 2_742_541


async def test_post_is_one_transaction(
    client: Client, db: asyncpg.Connection, caplog: pytest.LogCaptureFixture
) -> None:
    """A failure while storing the photos leaves no review and no ratings behind."""
    quality = await factories.characteristic(db, 1, "Quality")
    await db.execute(
        """
        CREATE FUNCTION refuse_photo() RETURNS trigger LANGUAGE plpgsql AS
        $$ BEGIN RAISE EXCEPTION 'photo storage is broken'; END $$;
        CREATE TRIGGER refuse_photo BEFORE INSERT ON reviews_photos
            FOR EACH ROW EXECUTE FUNCTION refuse_photo();
        """
    )
    try:
        response = await client.post(
            "/reviews",
            json=new_review(1, photos=["https://img.example/1.jpg"], characteristics={str(quality): 3}),
        )
    finally:
        await db.execute("DROP TRIGGER refuse_photo ON reviews_photos; DROP FUNCTION refuse_photo();")

    assert response.status == 500
    assert await response.json() == {"error": "internal server error", "details": []}
    assert await db.fetchval("SELECT count(*) FROM reviews") == 0
    assert await db.fetchval("SELECT count(*) FROM characteristic_reviews") == 0
    # Logged once, with its traceback, for the operator; the client saw none of it.
    errors = [record for record in caplog.records if record.levelno >= logging.ERROR]
    assert len(errors) == 1 and errors[0].exc_info is not None
    assert "photo storage is broken" in str(errors[0].exc_info[1])


async def test_helpful_adds_one_each_time(client: Client, db: asyncpg.Connection) -> None:
    review_id = await factories.review(db, 1, helpfulness=7)
    other = await factories.review(db, 1, helpfulness=7)

    for path in (f"/reviews/{review_id}/helpful", f"/reviews/{review_id}/helpful/"):
        response = await client.put(path)
        assert response.status == 204
        assert await response.read() == b""

    assert await db.fetchval("SELECT helpfulness FROM reviews WHERE id = $1", review_id) == 9
    assert await db.fetchval("SELECT helpfulness FROM reviews WHERE id = $1", other) == 7


async def test_helpful_saturates_instead_of_failing(client: Client, db: asyncpg.Connection) -> None:
    review_id = await factories.review(db, 1, helpfulness=2147483647)

    for headers in ({}, {"X-Balancer-Request-Id": "saturated"}):  # counted as is, and recorded (votes.py)
        assert (await client.put(f"/reviews/{review_id}/helpful", headers=headers)).status == 204
    assert await db.fetchval("SELECT helpfulness FROM reviews WHERE id = $1", review_id) == 2147483647


async def test_report_hides_everywhere_and_is_idempotent(client: Client, db: asyncpg.Connection) -> None:
    quality = await factories.characteristic(db, 1, "Quality")
    kept = await factories.review(db, 1, rating=5)
    reported = await factories.review(db, 1, rating=1, recommend=False)
    await factories.characteristic_rating(db, quality, kept, 5)
    await factories.characteristic_rating(db, quality, reported, 1)

    for _ in range(2):
        response = await client.put(f"/reviews/{reported}/report")
        assert response.status == 204
        assert await response.read() == b""

    assert await db.fetchval("SELECT reported FROM reviews WHERE id = $1", reported) is True
    listed = await (await client.get("/reviews?product_id=1")).json()
    assert [item["review_id"] for item in listed["results"]] == [kept]
    assert (await client.get(f"/reviews/{reported}")).status == 404
    meta = await (await client.get("/reviews/meta?product_id=1")).json()
    assert meta["ratings"] == {"5": "1"}
    assert meta["recommended"] == {"false": "0", "true": "1"}
    assert meta["characteristics"]["Quality"]["value"] == "5.0000000000000000"


@pytest.mark.parametrize("action", ["helpful", "report"])
@pytest.mark.parametrize("review_id", ["424242", "0", str(2**63 - 1), str(2**63), "9" * 40])
async def test_unknown_review_is_404(
    client: Client, db: asyncpg.Connection, action: str, review_id: str
) -> None:
    await factories.review(db, 1)

    response = await client.put(f"/reviews/{review_id}/{action}")

    assert response.status == 404
    assert await response.json() == {"error": "review not found", "details": [REVIEW_ID_DETAIL]}


@pytest.mark.parametrize("action", ["helpful", "report"])
@pytest.mark.parametrize("review_id", ["abc", "-1", "1.5", "%C2%B3", "%D9%A3", "1e3"])
async def test_non_digit_review_id_is_404(client: Client, action: str, review_id: str) -> None:
    response = await client.put(f"/reviews/{review_id}/{action}")

    assert response.status == 404
    assert await response.json() == {"error": "not found", "details": []}
