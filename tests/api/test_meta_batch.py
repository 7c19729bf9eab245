"""GET /reviews/meta/batch: the single meta of each product, in order, from one statement."""

from __future__ import annotations

import dataclasses

import asyncpg
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient
from pytest_aiohttp import AiohttpClient

from atelier_api import summaries
from atelier_api.app import create_app
from atelier_api.config import Config
from atelier_api.keys import POOL_KEY
from tests.api import factories

Client = TestClient[web.Request, web.Application]


async def get_batch(client: Client, product_ids: str, path: str = "/reviews/meta/batch") -> list[dict]:
    response = await client.get(path, params={"product_ids": product_ids}, allow_redirects=False)
    assert response.status == 200, await response.text()
    assert response.content_type == "application/json"
    payload = await response.json()
    assert list(payload) == ["results"]
    return payload["results"]  # type: ignore[no-any-return]


async def get_meta(client: Client, product_id: int | str) -> dict:
    response = await client.get("/reviews/meta", params={"product_id": str(product_id)})
    assert response.status == 200, await response.text()
    return await response.json()


async def rated_review(
    db: asyncpg.Connection,
    product_id: int,
    rating: int,
    recommend: bool,
    *ratings: tuple[int, int],
    **kw: bool,
) -> int:
    """A review of `product_id` with (characteristic id, value) ratings."""
    review_id = await factories.review(db, product_id, rating=rating, recommend=recommend, **kw)
    for characteristic_id, value in ratings:
        await factories.characteristic_rating(db, characteristic_id, review_id, value)
    return review_id


async def seed(db: asyncpg.Connection) -> None:
    """Products 1-6, each a different case of the single meta; 999 is unknown."""
    # 1: the contract's example.
    quality = await factories.characteristic(db, 1, "Quality", id=5)
    for rating, recommend, value in [(2, False, 4), (3, True, 5), (4, True, 4), (4, True, 4)]:
        await rated_review(db, 1, rating, recommend, (quality, value))
    # 2: characteristics, no reviews.
    await factories.characteristic(db, 2, "Comfort")
    # 3: reviews only, one reported, all recommending; a characteristic rated only by the reported one.
    fit = await factories.characteristic(db, 3, "Fit")
    width = await factories.characteristic(db, 3, "Width")
    await rated_review(db, 3, 5, True, (fit, 1), (width, 2))
    await rated_review(db, 3, 5, True, (fit, 2))
    await rated_review(db, 3, 1, False, (fit, 5), (width, 5), reported=True)
    # 4: only reported reviews.
    length = await factories.characteristic(db, 4, "Length")
    await rated_review(db, 4, 2, False, (length, 3), reported=True)
    # 5: two characteristics sharing a name (the lowest id wins); means needing rounding.
    later = await factories.characteristic(db, 5, "Size", id=40)
    earlier = await factories.characteristic(db, 5, "Size", id=30)
    for value in (1, 2, 2):
        await rated_review(db, 5, 3, False, (earlier, value), (later, 5))
    # 6: reviews without characteristics.
    await factories.review(db, 6, rating=1, recommend=False)
    await factories.advance_sequences(db)


async def test_contract_example_and_each_case(client: Client, db: asyncpg.Connection) -> None:
    await seed(db)

    results = await get_batch(client, "1,2,3,4,5,6,999")

    assert results == [
        {
            "product_id": "1",
            "ratings": {"2": "1", "3": "1", "4": "2"},
            "recommended": {"false": "1", "true": "3"},
            "characteristics": {"Quality": {"id": 5, "value": "4.2500000000000000"}},
        },
        {
            "product_id": "2",
            "ratings": {},
            "recommended": {},
            "characteristics": {
                "Comfort": {"id": results[1]["characteristics"]["Comfort"]["id"], "value": None}
            },
        },
        {
            "product_id": "3",
            "ratings": {"5": "2"},
            "recommended": {"false": "0", "true": "2"},
            "characteristics": {
                "Fit": {"id": results[2]["characteristics"]["Fit"]["id"], "value": "1.5000000000000000"},
                "Width": {"id": results[2]["characteristics"]["Width"]["id"], "value": "2.0000000000000000"},
            },
        },
        {
            "product_id": "4",
            "ratings": {},
            "recommended": {},
            "characteristics": {
                "Length": {"id": results[3]["characteristics"]["Length"]["id"], "value": None}
            },
        },
        {
            "product_id": "5",
            "ratings": {"3": "3"},
            "recommended": {"false": "3", "true": "0"},
            "characteristics": {"Size": {"id": 30, "value": "1.6666666666666667"}},
        },
        {
            "product_id": "6",
            "ratings": {"1": "1"},
            "recommended": {"false": "1", "true": "0"},
            "characteristics": {},
        },
        {"product_id": "999", "ratings": {}, "recommended": {}, "characteristics": {}},
    ]


async def test_each_result_is_the_single_meta(client: Client, db: asyncpg.Connection) -> None:
    await seed(db)
    order = [6, 999, 3, 1, 5, 2, 4]

    response = await client.get("/reviews/meta/batch", params={"product_ids": ",".join(map(str, order))})
    results = (await response.json())["results"]

    assert results == [await get_meta(client, product_id) for product_id in order]
    # Byte for byte too, key order included: one code path serves both.
    text = await response.text()
    for product_id in order:
        single = await (await client.get("/reviews/meta", params={"product_id": str(product_id)})).text()
        assert single in text


async def test_order_is_kept_and_repeats_are_repeated(client: Client, db: asyncpg.Connection) -> None:
    await seed(db)

    results = await get_batch(client, "3,1,999,1,3,3")

    assert [meta["product_id"] for meta in results] == ["3", "1", "999", "1", "3", "3"]
    assert results[1] == results[3] and results[0] == results[4] == results[5]


@pytest.mark.parametrize("path", ["/reviews/meta/batch", "/reviews/meta/batch/"])
async def test_with_and_without_trailing_slash(client: Client, db: asyncpg.Connection, path: str) -> None:
    await factories.review(db, 7, rating=4)

    assert await get_batch(client, "7", path) == [await get_meta(client, 7)]


async def test_leading_zeros_name_the_same_product(client: Client, db: asyncpg.Connection) -> None:
    await factories.review(db, 7, rating=4)

    assert await get_batch(client, "007,7") == [await get_meta(client, 7)] * 2


async def test_reported_reviews_count_nowhere(client: Client, db: asyncpg.Connection) -> None:
    fit = await factories.characteristic(db, 1, "Fit")
    await rated_review(db, 1, 4, True, (fit, 4))
    await rated_review(db, 1, 1, False, (fit, 1), reported=True)
    await rated_review(db, 2, 1, False, reported=True)

    assert await get_batch(client, "1,2") == [
        {
            "product_id": "1",
            "ratings": {"4": "1"},
            "recommended": {"false": "0", "true": "1"},
            "characteristics": {"Fit": {"id": fit, "value": "4.0000000000000000"}},
        },
        {"product_id": "2", "ratings": {}, "recommended": {}, "characteristics": {}},
    ]


async def test_a_hundred_ids_are_fine(client: Client, db: asyncpg.Connection) -> None:
    await seed(db)
    product_ids = [*range(1, 100), 1]

    results = await get_batch(client, ",".join(map(str, product_ids)))

    assert [meta["product_id"] for meta in results] == [str(product_id) for product_id in product_ids]
    assert results[0] == results[99] == await get_meta(client, 1)
    assert results[50] == {"product_id": "51", "ratings": {}, "recommended": {}, "characteristics": {}}


async def test_a_hundred_and_one_are_too_many(client: Client) -> None:
    response = await client.get("/reviews/meta/batch", params={"product_ids": ",".join(["1"] * 101)})

    assert response.status == 422
    assert await response.json() == {
        "error": "invalid product_ids provided",
        "details": [{"field": "product_ids", "message": "must list at most 100 ids"}],
    }


LIST_MESSAGE = "must be a comma-separated list of positive integers"


@pytest.mark.parametrize(
    ("query", "message"),
    [
        ("", "is required"),
        ("product_id=1", "is required"),
        ("product_ids=1&product_ids=2", "must be given once"),
        ("product_ids=", LIST_MESSAGE),
        ("product_ids=,", LIST_MESSAGE),
        ("product_ids=1,", LIST_MESSAGE),
        ("product_ids=,1", LIST_MESSAGE),
        ("product_ids=1,,2", LIST_MESSAGE),
        ("product_ids=0", LIST_MESSAGE),
        ("product_ids=1,0", LIST_MESSAGE),
        ("product_ids=-1", LIST_MESSAGE),
        ("product_ids=hello", LIST_MESSAGE),
        ("product_ids=null", LIST_MESSAGE),
        ("product_ids=5.55", LIST_MESSAGE),
        ("product_ids=1;2", LIST_MESSAGE),
        ("product_ids=1%202", LIST_MESSAGE),
        ("product_ids=1,%202", LIST_MESSAGE),
        ("product_ids=%2B5", LIST_MESSAGE),
        ("product_ids=%D9%A3", LIST_MESSAGE),
        ("product_ids=1,9223372036854775808", "must each be at most 9223372036854775807"),
        ("product_ids=" + "9" * 5000, "must each be at most 9223372036854775807"),
        ("product_ids=" + ",".join(["x"] * 101), LIST_MESSAGE),
    ],
)
async def test_bad_product_ids(client: Client, query: str, message: str) -> None:
    response = await client.get(f"/reviews/meta/batch?{query}")

    assert response.status == 422
    assert await response.json() == {
        "error": "invalid product_ids provided",
        "details": [{"field": "product_ids", "message": message}],
    }


async def test_ids_at_the_limit_are_fine(client: Client) -> None:
    assert await get_batch(client, "2147483647") == [
        {"product_id": "2147483647", "ratings": {}, "recommended": {}, "characteristics": {}}
    ]


async def test_post_is_405(client: Client) -> None:
    response = await client.post("/reviews/meta/batch?product_ids=1")

    assert response.status == 405


@pytest.mark.parametrize(
    ("path", "summaries_returned"),
    [("/reviews/meta/batch?product_ids=1,2,3,4,5,6,999,1", 8), ("/reviews/meta?product_id=3", 1)],
)
async def test_one_statement_whatever_the_batch(
    db: asyncpg.Connection, config: Config, aiohttp_client: AiohttpClient, path: str, summaries_returned: int
) -> None:
    """Every statement the app's only connection runs for one request: a loop over ids would show."""
    await seed(db)
    client = await aiohttp_client(
        create_app(dataclasses.replace(config, db_pool_min_size=1, db_pool_max_size=1))
    )
    statements: list[str] = []
    async with client.app[POOL_KEY].acquire() as conn:
        reset = conn.get_reset_query()  # what asyncpg's pool would send on release; ours does not
        conn.add_query_logger(lambda record: statements.append(record.query))
    # The first use of an array type on a connection makes asyncpg look the type up (three statements
    # of its own, once per connection); one request first, so only the request's own statements count.
    assert (await client.get("/reviews/meta/batch?product_ids=1")).status == 200
    statements.clear()

    response = await client.get(path)

    assert response.status == 200
    payload = await response.json()
    assert len(payload.get("results", [payload])) == summaries_returned
    assert statements == [summaries.PRODUCT_SUMMARIES]
    assert reset not in statements  # the pool gives the connection back without a round trip (pool.py)
