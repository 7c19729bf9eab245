"""GET /reviews (and GET /reviews/{id}): shapes, types, every order, paging, photos, hidden reviews."""

from __future__ import annotations

import asyncio
import math
from dataclasses import replace
from datetime import UTC, datetime, timedelta, timezone

import asyncpg
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient
from pytest_aiohttp import AiohttpClient

from atelier_api.app import create_app
from atelier_api.config import Config
from atelier_api.keys import CACHE_KEY
from tests.api import factories
from tests.api.conftest import NOW, NOW_JSON

Client = TestClient[web.Request, web.Application]

BASE = datetime(2020, 1, 1, tzinfo=UTC)


async def get_reviews(client: Client, path: str = "/reviews", **params: object) -> dict:
    response = await client.get(path, params={k: str(v) for k, v in params.items()})
    assert response.status == 200, await response.text()
    assert response.content_type == "application/json"
    return await response.json()


def ids(payload: dict) -> list[int]:
    return [item["review_id"] for item in payload["results"]]


async def test_response_shape_and_types(client: Client, db: asyncpg.Connection) -> None:
    review_id = await factories.review(
        db,
        2,
        rating=3,
        summary="I'm enjoying wearing these shades",
        body="Comfortable and practical." * 3,
        recommend=False,
        date=datetime(2019, 4, 14, tzinfo=UTC),
        reviewer_name="shortandsweeet",
        helpfulness=5,
    )
    first = await factories.photo(db, review_id, "https://images.example/1.jpg")

    payload = await get_reviews(client, product_id=2)

    assert payload == {
        "product": "2",
        "page": 0,
        "count": 5,
        "results": [
            {
                "review_id": review_id,
                "rating": 3,
                "summary": "I'm enjoying wearing these shades",
                "recommend": False,
                "response": None,
                "body": "Comfortable and practical." * 3,
                "date": "2019-04-14T00:00:00.000Z",
                "reviewer_name": "shortandsweeet",
                "helpfulness": 5,
                "photos": [{"id": first, "url": "https://images.example/1.jpg"}],
            }
        ],
    }
    item = payload["results"][0]
    assert [type(item[key]) for key in ("review_id", "rating", "helpfulness")] == [int, int, int]
    assert type(item["photos"][0]["id"]) is int


async def test_response_text_date_in_utc_with_milliseconds_and_no_photos(
    client: Client, db: asyncpg.Connection
) -> None:
    last_moment = datetime(2022, 12, 31, 23, 59, 59, 999999, tzinfo=UTC)
    await factories.review(db, 7, response="Thanks for your review!", date=last_moment)

    (item,) = (await get_reviews(client, product_id=7))["results"]

    assert item["response"] == "Thanks for your review!"
    assert item["date"] == "2022-12-31T23:59:59.999Z"  # truncated, never rounded into the next year
    assert item["photos"] == []


@pytest.mark.parametrize(
    ("stored", "printed"),
    [
        # A moment given in another zone is printed in UTC.
        (
            datetime(2021, 6, 1, 1, 30, 0, 250000, tzinfo=timezone(timedelta(hours=2))),
            "2021-05-31T23:30:00.250Z",
        ),
        # Four digits of year, as JavaScript's toISOString prints years 0-9999 (strftime's %Y does not pad).
        (datetime(999, 3, 4, 5, 6, 7, 8000, tzinfo=UTC), "0999-03-04T05:06:07.008Z"),
        (datetime(2020, 2, 29, 0, 0, 0, 999, tzinfo=UTC), "2020-02-29T00:00:00.000Z"),
    ],
)
async def test_dates_are_printed_as_javascripts_to_iso_string(
    client: Client, db: asyncpg.Connection, stored: datetime, printed: str
) -> None:
    review_id = await factories.review(db, 8, date=stored)

    (item,) = (await get_reviews(client, product_id=8))["results"]
    single = await client.get(f"/reviews/{review_id}")

    assert item["date"] == printed
    assert (await single.json())["date"] == printed


async def test_photos_belong_to_their_review_in_id_order(client: Client, db: asyncpg.Connection) -> None:
    first = await factories.review(db, 1, date=BASE)
    second = await factories.review(db, 1, date=BASE - timedelta(days=1))
    p3 = await factories.photo(db, first, "https://img.example/c.jpg", id=30)
    p1 = await factories.photo(db, first, "https://img.example/a.jpg", id=10)
    p2 = await factories.photo(db, second, "https://img.example/b.jpg", id=20)

    results = (await get_reviews(client, product_id=1, sort="newest"))["results"]

    assert [photo["id"] for photo in results[0]["photos"]] == [p1, p3]
    assert results[1]["photos"] == [{"id": p2, "url": "https://img.example/b.jpg"}]


async def test_only_the_products_unreported_reviews(client: Client, db: asyncpg.Connection) -> None:
    shown = await factories.review(db, 1)
    await factories.review(db, 1, reported=True)
    await factories.review(db, 2)

    assert ids(await get_reviews(client, product_id=1)) == [shown]
    assert (await get_reviews(client, product_id=999))["results"] == []


@pytest.mark.parametrize("path", ["/reviews", "/reviews/"])
async def test_with_and_without_trailing_slash(client: Client, db: asyncpg.Connection, path: str) -> None:
    review_id = await factories.review(db, 1)

    response = await client.get(path, params={"product_id": "1"}, allow_redirects=False)

    assert response.status == 200
    assert ids(await response.json()) == [review_id]


async def test_reviewer_email_is_never_returned(client: Client, db: asyncpg.Connection) -> None:
    review_id = await factories.review(db, 1, reviewer_email="hidden.person@example.com")
    await factories.photo(db, review_id, "https://img.example/1.jpg")

    for path in ("/reviews?product_id=1", f"/reviews/{review_id}", "/reviews/meta?product_id=1"):
        text = await (await client.get(path)).text()
        assert "hidden.person" not in text
        assert "email" not in text


async def test_newest_is_date_descending_ties_by_id_descending(
    client: Client, db: asyncpg.Connection
) -> None:
    old = await factories.review(db, 1, date=BASE - timedelta(days=30), helpfulness=50)
    tie_low = await factories.review(db, 1, date=BASE)
    tie_high = await factories.review(db, 1, date=BASE)
    new = await factories.review(db, 1, date=BASE + timedelta(seconds=1))

    assert ids(await get_reviews(client, product_id=1, sort="newest")) == [new, tie_high, tie_low, old]


async def test_helpful_is_helpfulness_then_date_then_id(client: Client, db: asyncpg.Connection) -> None:
    most = await factories.review(db, 1, helpfulness=9, date=BASE - timedelta(days=900))
    older = await factories.review(db, 1, helpfulness=4, date=BASE - timedelta(days=1))
    newer_low = await factories.review(db, 1, helpfulness=4, date=BASE)
    newer_high = await factories.review(db, 1, helpfulness=4, date=BASE)
    none = await factories.review(db, 1, helpfulness=0, date=BASE + timedelta(days=5))

    payload = await get_reviews(client, product_id=1, sort="helpful")

    assert ids(payload) == [most, newer_high, newer_low, older, none]


def relevance(helpfulness: int, date: datetime) -> float:
    """The documented formula, independently: log2(1 + helpfulness) + age in Julian years."""
    return math.log2(1 + helpfulness) + date.timestamp() / (365.25 * 24 * 3600)


async def test_relevant_is_the_documented_score(client: Client, db: asyncpg.Connection) -> None:
    # (helpfulness, days after BASE): chosen so that no two scores are within rounding of each other.
    cases = [(0, 0), (1, -200), (3, -500), (7, -800), (15, -1000), (0, 100), (2, 30), (100, -3000), (5, -10)]
    expected = []
    for helpfulness, days in cases:
        date = BASE + timedelta(days=days)
        review_id = await factories.review(db, 1, helpfulness=helpfulness, date=date)
        expected.append((relevance(helpfulness, date), review_id))
    expected.sort(reverse=True)

    payload = await get_reviews(client, product_id=1, count=100)  # relevant is the default sort

    assert ids(payload) == [review_id for _, review_id in expected]
    assert ids(await get_reviews(client, product_id=1, count=100, sort="relevant")) == ids(payload)


async def test_relevant_trades_a_doubling_of_votes_for_a_year(client: Client, db: asyncpg.Connection) -> None:
    year = timedelta(days=365.25)
    fresh = await factories.review(db, 1, helpfulness=0, date=BASE)
    # Three doublings (0 -> 7 votes) outweigh two years, but not four.
    two_years_old = await factories.review(db, 1, helpfulness=7, date=BASE - 2 * year)
    four_years_old = await factories.review(db, 1, helpfulness=7, date=BASE - 4 * year)

    assert ids(await get_reviews(client, product_id=1)) == [two_years_old, fresh, four_years_old]


async def test_relevant_ties_by_id_descending(client: Client, db: asyncpg.Connection) -> None:
    low = await factories.review(db, 1, helpfulness=3, date=BASE)
    high = await factories.review(db, 1, helpfulness=3, date=BASE)

    assert ids(await get_reviews(client, product_id=1)) == [high, low]


@pytest.mark.parametrize("sort", ["newest", "helpful", "relevant"])
async def test_pages_partition_the_whole_list(client: Client, db: asyncpg.Connection, sort: str) -> None:
    for n in range(12):
        # Many ties (4 distinct dates, 3 distinct helpfulness values) to prove paging is stable.
        await factories.review(db, 1, date=BASE + timedelta(days=n % 4), helpfulness=n % 3)

    everything = ids(await get_reviews(client, product_id=1, sort=sort, count=1000000))
    pages = [await get_reviews(client, product_id=1, sort=sort, count=5, page=page) for page in (1, 2, 3, 4)]

    assert len(everything) == 12
    assert [len(page["results"]) for page in pages] == [5, 5, 2, 0]  # full, full, partial, beyond the end
    assert [page["page"] for page in pages] == [0, 1, 2, 3]
    assert [page["count"] for page in pages] == [5, 5, 5, 5]
    assert sum((ids(page) for page in pages), []) == everything


async def test_last_full_page_then_empty(client: Client, db: asyncpg.Connection) -> None:
    for _ in range(10):
        await factories.review(db, 1)

    assert len((await get_reviews(client, product_id=1, count=5, page=2))["results"]) == 5
    assert (await get_reviews(client, product_id=1, count=5, page=3))["results"] == []
    far = await get_reviews(client, product_id=1, count=1000000, page=2147483647)
    assert far["results"] == [] and far["page"] == 2147483646


async def test_count_up_to_the_maximum_is_echoed_never_capped(client: Client, db: asyncpg.Connection) -> None:
    await factories.review(db, 1)

    payload = await get_reviews(client, product_id=1, count=1000000)
    assert payload["count"] == 1000000 and len(payload["results"]) == 1

    response = await client.get("/reviews", params={"product_id": "1", "count": "1000001"})
    assert response.status == 422
    assert (await response.json())["details"] == [{"field": "count", "message": "must be at most 1000000"}]


async def test_count_maximum_comes_from_config(
    db: asyncpg.Connection, config: Config, aiohttp_client: AiohttpClient
) -> None:
    small = Config(database_url=config.database_url, reviews_max_count=50)
    client = await aiohttp_client(create_app(small))

    assert (await client.get("/reviews?product_id=1&count=50")).status == 200
    response = await client.get("/reviews?product_id=1&count=51")
    assert response.status == 422
    assert (await response.json())["details"] == [{"field": "count", "message": "must be at most 50"}]


async def test_get_one_review(client: Client, db: asyncpg.Connection) -> None:
    review_id = await factories.review(db, 1, helpfulness=2)
    photo_id = await factories.photo(db, review_id, "https://img.example/x.png")
    reported = await factories.review(db, 1, reported=True)

    response = await client.get(f"/reviews/{review_id}")
    assert response.status == 200
    item = await response.json()
    listed = (await get_reviews(client, product_id=1))["results"]
    assert item == listed[0]
    assert item["photos"] == [{"id": photo_id, "url": "https://img.example/x.png"}]

    for missing in (reported, 424242, 2**63, 10**30):
        response = await client.get(f"/reviews/{missing}")
        assert response.status == 404
        assert await response.json() == {
            "error": "review not found",
            "details": [{"field": "review_id", "message": "no such review"}],
        }


async def test_new_review_date_uses_the_app_clock(client: Client, db: asyncpg.Connection) -> None:
    await factories.characteristic(db, 1)
    body = {
        "product_id": 1,
        "rating": 4,
        "body": "x" * 50,
        "recommend": True,
        "name": "n",
        "email": "n@example.com",
    }
    assert (await client.post("/reviews", json=body)).status == 201

    (item,) = (await get_reviews(client, product_id=1))["results"]
    assert item["date"] == f"{NOW:%Y-%m-%dT%H:%M:%S}.{NOW.microsecond // 1000:03d}Z"


@pytest.mark.parametrize("cached", [True, False], ids=["cached", "uncached"])
async def test_reviews_posted_within_one_millisecond_tie_by_id(
    db: asyncpg.Connection, config: Config, aiohttp_client: AiohttpClient, cached: bool
) -> None:
    """Two posts that read the clock within one millisecond may be stored in the other order (the later
    reading gets the smaller id, on another replica say). Clients see both at the same millisecond, so
    that is a tie, broken by review_id descending in every order; the stored date keeps no more than
    clients see. Pages cut from the replica's cache (http_cache.py) and read as asked agree."""
    readings = iter([NOW, NOW - timedelta(microseconds=801)])  # .678901, then .678100
    settings = replace(config, cache_max_bytes=config.cache_max_bytes if cached else 0)
    client = await aiohttp_client(create_app(settings, clock=lambda: next(readings)))
    cache = client.app[CACHE_KEY]
    async with asyncio.timeout(10):
        while cached and not cache.live:  # the cache keeps nothing until its change listener is up
            await asyncio.sleep(0.01)
    await factories.characteristic(db, 1)
    posted = []
    for _ in range(2):
        response = await client.post("/reviews", json=factories.review_body(1))
        assert response.status == 201, await response.text()
        posted.append(int(response.headers["Location"].rsplit("/", 1)[1]))

    for sort in ("newest", "helpful", "relevant"):
        async with asyncio.timeout(10):
            while True:  # cached: until a page is cut from the cache (a post's notification empties it)
                response = await client.get("/reviews", params={"product_id": "1", "sort": sort})
                payload = await response.json()
                assert ids(payload) == posted[::-1], sort
                assert {item["date"] for item in payload["results"]} == {NOW_JSON}
                if response.headers["X-Cache"] == ("hit" if cached else "miss"):
                    break
                await asyncio.sleep(0.01)
    stored = await db.fetch("SELECT date FROM reviews ORDER BY id")
    assert [row["date"] for row in stored] == [NOW.replace(microsecond=678000)] * 2
