"""GET /reviews/meta: shapes, string counts, both recommended keys, 16-digit means, what is left out."""

from __future__ import annotations

from decimal import ROUND_HALF_UP, Decimal

import asyncpg
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient

from tests.api import factories

Client = TestClient[web.Request, web.Application]


async def get_meta(client: Client, product_id: int | str, path: str = "/reviews/meta") -> dict:
    response = await client.get(path, params={"product_id": str(product_id)}, allow_redirects=False)
    assert response.status == 200, await response.text()
    assert response.content_type == "application/json"
    return await response.json()


async def rated_review(
    db: asyncpg.Connection, product_id: int, rating: int, recommend: bool, **values: int
) -> int:
    """A review of `product_id` with characteristic ratings given as {characteristic id (str): value}."""
    review_id = await factories.review(db, product_id, rating=rating, recommend=recommend)
    for characteristic_id, value in values.items():
        await factories.characteristic_rating(db, int(characteristic_id.lstrip("c")), review_id, value)
    return review_id


async def test_contract_example(client: Client, db: asyncpg.Connection) -> None:
    quality = await factories.characteristic(db, 2, "Quality", id=5)
    for rating, recommend, value in [(2, False, 4), (3, True, 5), (4, True, 4), (4, True, 4)]:
        await rated_review(db, 2, rating, recommend, **{f"c{quality}": value})

    assert await get_meta(client, 2) == {
        "product_id": "2",
        "ratings": {"2": "1", "3": "1", "4": "2"},
        "recommended": {"false": "1", "true": "3"},
        "characteristics": {"Quality": {"id": 5, "value": "4.2500000000000000"}},
    }


@pytest.mark.parametrize("path", ["/reviews/meta", "/reviews/meta/"])
async def test_with_and_without_trailing_slash(client: Client, db: asyncpg.Connection, path: str) -> None:
    await factories.review(db, 3, rating=5)

    assert (await get_meta(client, 3, path))["ratings"] == {"5": "1"}


async def test_both_recommended_keys_even_when_one_is_zero(client: Client, db: asyncpg.Connection) -> None:
    await factories.review(db, 1, recommend=True)
    await factories.review(db, 1, recommend=True)
    await factories.review(db, 4, recommend=False)

    assert (await get_meta(client, 1))["recommended"] == {"false": "0", "true": "2"}
    assert (await get_meta(client, 4))["recommended"] == {"false": "1", "true": "0"}


async def test_counts_are_strings_and_empty_stars_are_left_out(
    client: Client, db: asyncpg.Connection
) -> None:
    for rating in (1, 1, 5, 5, 5):
        await factories.review(db, 1, rating=rating)

    meta = await get_meta(client, 1)

    assert meta["ratings"] == {"1": "2", "5": "3"}
    assert all(isinstance(count, str) for count in meta["recommended"].values())


@pytest.mark.parametrize(
    ("values", "expected"),
    [
        ([1], "1.0000000000000000"),  # plain avg() would print 20 zeros here
        ([5, 5, 5], "5.0000000000000000"),
        ([1, 2], "1.5000000000000000"),
        ([1, 2, 2], "1.6666666666666667"),  # rounded half away from zero at the 16th digit
        ([4, 4, 3], "3.6666666666666667"),
        ([1, 1, 2], "1.3333333333333333"),
        ([2, 3, 3, 4, 5, 5, 5], "3.8571428571428571"),
    ],
)
async def test_characteristic_means_have_exactly_sixteen_digits(
    client: Client, db: asyncpg.Connection, values: list[int], expected: str
) -> None:
    fit = await factories.characteristic(db, 1, "Fit")
    for value in values:
        await rated_review(db, 1, 3, True, **{f"c{fit}": value})

    value = (await get_meta(client, 1))["characteristics"]["Fit"]["value"]

    assert value == expected
    assert value == half_away_from_zero(sum(values), len(values))


def half_away_from_zero(total: int, count: int) -> str:
    """The contract's digits: the mean rounded to 16 places, a tie away from zero (PostgreSQL's round()
    on numeric); Python's round() of a Decimal would round a tie to even."""
    return str((Decimal(total) / Decimal(count)).quantize(Decimal(1).scaleb(-16), rounding=ROUND_HALF_UP))


async def test_a_mean_halfway_between_two_16_digit_values_rounds_away_from_zero(
    client: Client, db: asyncpg.Connection
) -> None:
    """131,073 / 131,072 = 1.00000762939453125 exactly: a tie at the 17th digit, which no handful of
    ratings gives. Half away from zero gives ...313, half to even ...312. Played on the stored summary
    (the sum and count of 131,072 ratings), which is what the API reads."""
    fit = await factories.characteristic(db, 1, "Fit")
    await rated_review(db, 1, 3, True, **{f"c{fit}": 2})
    await db.execute(
        "UPDATE characteristic_summaries SET rating_sum = 131073, rating_count = 131072 "
        "WHERE characteristic_id = $1",
        fit,
    )

    value = (await get_meta(client, 1))["characteristics"]["Fit"]["value"]

    assert value == "1.0000076293945313" == half_away_from_zero(131073, 131072)


async def test_unrated_characteristic_is_null(client: Client, db: asyncpg.Connection) -> None:
    size = await factories.characteristic(db, 1, "Size")
    width = await factories.characteristic(db, 1, "Width")
    await rated_review(db, 1, 4, True, **{f"c{size}": 2})

    assert (await get_meta(client, 1))["characteristics"] == {
        "Size": {"id": size, "value": "2.0000000000000000"},
        "Width": {"id": width, "value": None},
    }


async def test_product_without_reviews(client: Client, db: asyncpg.Connection) -> None:
    comfort = await factories.characteristic(db, 8, "Comfort")

    assert await get_meta(client, 8) == {
        "product_id": "8",
        "ratings": {},
        "recommended": {},
        "characteristics": {"Comfort": {"id": comfort, "value": None}},
    }


async def test_unknown_product(client: Client, db: asyncpg.Connection) -> None:
    assert await get_meta(client, 12345) == {
        "product_id": "12345",
        "ratings": {},
        "recommended": {},
        "characteristics": {},
    }


async def test_reported_reviews_count_nowhere(client: Client, db: asyncpg.Connection) -> None:
    length = await factories.characteristic(db, 1, "Length")
    shown = await factories.review(db, 1, rating=4, recommend=True)
    hidden = await factories.review(db, 1, rating=1, recommend=False, reported=True)
    await factories.characteristic_rating(db, length, shown, 4)
    await factories.characteristic_rating(db, length, hidden, 1)
    only_reported = await factories.characteristic(db, 6, "Fit")
    hidden_too = await factories.review(db, 6, reported=True)
    await factories.characteristic_rating(db, only_reported, hidden_too, 3)

    assert await get_meta(client, 1) == {
        "product_id": "1",
        "ratings": {"4": "1"},
        "recommended": {"false": "0", "true": "1"},
        "characteristics": {"Length": {"id": length, "value": "4.0000000000000000"}},
    }
    # Every review reported: as if it had none.
    assert await get_meta(client, 6) == {
        "product_id": "6",
        "ratings": {},
        "recommended": {},
        "characteristics": {"Fit": {"id": only_reported, "value": None}},
    }


async def test_shared_characteristic_name_lowest_id_wins(client: Client, db: asyncpg.Connection) -> None:
    # Stored neither in id order nor in its reverse.
    later = await factories.characteristic(db, 1, "Quality", id=20)
    earlier = await factories.characteristic(db, 1, "Quality", id=10)
    last = await factories.characteristic(db, 1, "Quality", id=30)
    review_id = await factories.review(db, 1)
    await factories.characteristic_rating(db, later, review_id, 1)
    await factories.characteristic_rating(db, earlier, review_id, 5)
    await factories.characteristic_rating(db, last, review_id, 2)

    assert (await get_meta(client, 1))["characteristics"] == {
        "Quality": {"id": earlier, "value": "5.0000000000000000"}
    }


async def test_other_products_do_not_leak_in(client: Client, db: asyncpg.Connection) -> None:
    mine = await factories.characteristic(db, 1, "Quality")
    theirs = await factories.characteristic(db, 2, "Quality")
    await rated_review(db, 1, 5, True, **{f"c{mine}": 5})
    await rated_review(db, 2, 1, False, **{f"c{theirs}": 1})

    meta = await get_meta(client, 1)

    assert meta["ratings"] == {"5": "1"}
    assert meta["characteristics"] == {"Quality": {"id": mine, "value": "5.0000000000000000"}}
