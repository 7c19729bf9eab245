"""GET /reviews?rating=…&with_photos=…: each filter alone and combined, with every sort and paging."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import asyncpg
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient

from tests.api import factories

Client = TestClient[web.Request, web.Application]

BASE = datetime(2020, 1, 1, tzinfo=UTC)
SORTS = ["newest", "helpful", "relevant"]


@dataclass(frozen=True)
class Seeded:
    id: int
    rating: int
    date: datetime
    helpfulness: int
    photos: int


async def get_reviews(client: Client, path: str = "/reviews", **params: object) -> dict:
    response = await client.get(path, params={k: str(v) for k, v in params.items()})
    assert response.status == 200, await response.text()
    return await response.json()


def ids(payload: dict) -> list[int]:
    return [item["review_id"] for item in payload["results"]]


async def seed(db: asyncpg.Connection) -> list[Seeded]:
    """Product 1's visible reviews: every star, photos on some, many ties of date and helpfulness.

    Also hidden ones that would match every filter: reported reviews of product 1 and another product's.
    """
    shown = []
    for n in range(20):
        rating, date, helpfulness = n % 5 + 1, BASE + timedelta(days=n % 4), n % 3
        review_id = await factories.review(db, 1, rating=rating, date=date, helpfulness=helpfulness)
        photos = [0, 1, 0, 2][n % 4] if n % 7 else 0
        for k in range(photos):
            await factories.photo(db, review_id, f"https://img.example/{n}-{k}.jpg")
        shown.append(Seeded(review_id, rating, date, helpfulness, photos))
    for rating in (4, 5):
        hidden = await factories.review(db, 1, rating=rating, reported=True, helpfulness=99, date=BASE)
        await factories.photo(db, hidden, "https://img.example/reported.jpg")
    elsewhere = await factories.review(db, 2, rating=5, helpfulness=99, date=BASE)
    await factories.photo(db, elsewhere, "https://img.example/elsewhere.jpg")
    return shown


def expected_order(reviews: list[Seeded], sort: str) -> list[int]:
    """newest and helpful straight from the contract; relevant is checked against the unfiltered list."""
    if sort == "newest":
        return [r.id for r in sorted(reviews, key=lambda r: (r.date, r.id), reverse=True)]
    return [r.id for r in sorted(reviews, key=lambda r: (r.helpfulness, r.date, r.id), reverse=True)]


FILTERS: list[dict[str, str]] = [
    {},
    {"rating": "5"},
    {"rating": "4,5"},
    {"rating": "5,4,4,5"},  # repeats and order do not matter
    {"rating": "1,2,3,4,5"},
    {"with_photos": "true"},
    {"with_photos": "false"},  # no filter
    {"rating": "2,4", "with_photos": "true"},
    {"rating": "1", "with_photos": "false"},
]


def matches(review: Seeded, filters: dict[str, str]) -> bool:
    stars = {int(star) for star in filters.get("rating", "1,2,3,4,5").split(",")}
    return review.rating in stars and (filters.get("with_photos") != "true" or review.photos > 0)


@pytest.mark.parametrize("sort", SORTS)
@pytest.mark.parametrize(
    "filters", FILTERS, ids=lambda f: "&".join(f"{k}={v}" for k, v in f.items()) or "none"
)
async def test_filters_keep_the_sort_order(
    client: Client, db: asyncpg.Connection, sort: str, filters: dict[str, str]
) -> None:
    reviews = await seed(db)
    unfiltered = ids(await get_reviews(client, product_id=1, sort=sort, count=1000))

    payload = await get_reviews(client, product_id=1, sort=sort, count=1000, **filters)

    wanted = {r.id for r in reviews if matches(r, filters)}
    assert wanted  # every case selects something, so an empty answer cannot pass
    assert ids(payload) == [review_id for review_id in unfiltered if review_id in wanted]
    if sort != "relevant":
        assert ids(payload) == expected_order([r for r in reviews if r.id in wanted], sort)
    assert payload["product"] == "1" and payload["count"] == 1000 and payload["page"] == 0


async def test_results_are_what_the_filters_say(client: Client, db: asyncpg.Connection) -> None:
    await seed(db)

    results = (await get_reviews(client, product_id=1, count=1000, rating="2,4", with_photos="true"))[
        "results"
    ]

    assert results
    assert {item["rating"] for item in results} == {2, 4}
    assert all(item["photos"] for item in results)
    # Each item as the unfiltered list shows it: every photo, not only the one that made it match.
    unfiltered = {
        item["review_id"]: item for item in (await get_reviews(client, product_id=1, count=1000))["results"]
    }
    assert all(item == unfiltered[item["review_id"]] for item in results)
    assert any(len(item["photos"]) == 2 for item in results)


@pytest.mark.parametrize("sort", SORTS)
@pytest.mark.parametrize(
    "filters", [{"rating": "3,5"}, {"with_photos": "true"}, {"rating": "1,4", "with_photos": "true"}]
)
async def test_pages_partition_the_filtered_list(
    client: Client, db: asyncpg.Connection, sort: str, filters: dict[str, str]
) -> None:
    await seed(db)
    everything = ids(await get_reviews(client, product_id=1, sort=sort, count=1000, **filters))

    pages = [
        await get_reviews(client, product_id=1, sort=sort, count=2, page=page, **filters)
        for page in range(1, len(everything) // 2 + 3)
    ]

    assert len(everything) >= 4
    assert sum((ids(page) for page in pages), []) == everything
    assert all(len(ids(page)) == 2 for page in pages[: len(everything) // 2])
    assert ids(pages[-1]) == []
    assert [page["page"] for page in pages] == list(range(len(pages)))


async def test_reported_and_other_products_reviews_never_appear(
    client: Client, db: asyncpg.Connection
) -> None:
    reviews = await seed(db)
    visible = {r.id for r in reviews}

    for filters in FILTERS:
        for sort in SORTS:
            assert (
                set(ids(await get_reviews(client, product_id=1, sort=sort, count=1000, **filters))) <= visible
            )


async def test_filters_that_match_nothing(client: Client, db: asyncpg.Connection) -> None:
    await factories.review(db, 1, rating=3)
    reported = await factories.review(db, 1, rating=5, reported=True)
    await factories.photo(db, reported, "https://img.example/r.jpg")

    assert (await get_reviews(client, product_id=1, rating="5"))["results"] == []
    assert (await get_reviews(client, product_id=1, with_photos="true"))["results"] == []
    assert (await get_reviews(client, product_id=404, rating="1,2", with_photos="true"))["results"] == []


async def test_filters_on_the_trailing_slash_path(client: Client, db: asyncpg.Connection) -> None:
    four = await factories.review(db, 1, rating=4)
    await factories.photo(db, four, "https://img.example/4.jpg")
    await factories.review(db, 1, rating=4)
    await factories.review(db, 1, rating=2)

    assert ids(await get_reviews(client, "/reviews/", product_id=1, rating="4", with_photos="true")) == [four]


# --- validation ----------------------------------------------------------------------------------

RATING_MESSAGE = "must be a comma-separated list of stars from 1 to 5"


def detail(field: str, message: str) -> dict[str, str]:
    return {"field": field, "message": message}


@pytest.mark.parametrize(
    "rating",
    ["", "0", "6", "45", "4,", ",4", "4,,5", "4;5", "4 5", " 4", "4, 5", "four", "4.0", "-1", "\u0664", "*"],
)
async def test_bad_rating(client: Client, rating: str) -> None:
    response = await client.get("/reviews", params={"product_id": "1", "rating": rating})

    assert response.status == 422
    assert await response.json() == {
        "error": "invalid rating provided",
        "details": [detail("rating", RATING_MESSAGE)],
    }


@pytest.mark.parametrize("with_photos", ["", "True", "TRUE", "1", "0", "yes", "on", "true ", "null"])
async def test_bad_with_photos(client: Client, with_photos: str) -> None:
    response = await client.get("/reviews", params={"product_id": "1", "with_photos": with_photos})

    assert response.status == 422
    assert await response.json() == {
        "error": "invalid with_photos provided",
        "details": [detail("with_photos", "must be true or false")],
    }


async def test_filters_given_twice(client: Client) -> None:
    response = await client.get("/reviews?product_id=1&rating=4&rating=5&with_photos=true&with_photos=true")

    assert response.status == 422
    assert (await response.json())["details"] == [
        detail("rating", "must be given once"),
        detail("with_photos", "must be given once"),
    ]


async def test_every_broken_rule_at_once(client: Client) -> None:
    response = await client.get("/reviews?product_id=x&page=0&count=0&sort=best&rating=9&with_photos=maybe")

    assert response.status == 422
    assert await response.json() == {
        "error": "invalid product_id, page, count, sort, rating, with_photos provided",
        "details": [
            detail("product_id", "must be a positive integer"),
            detail("page", "must be a positive integer"),
            detail("count", "must be a positive integer"),
            detail("sort", "must be one of newest, helpful, relevant"),
            detail("rating", RATING_MESSAGE),
            detail("with_photos", "must be true or false"),
        ],
    }
