"""The reviews data layer: each statement a named constant next to the function that runs it.

Functions take the pool, return values in the contract's shape and raise domain errors. No statement
selects `reviewer_email`: it is stored, never returned.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import asyncpg

from atelier_api import changes, idempotency, summaries
from atelier_api.errors import ReviewNotFound
from atelier_api.review_draft import ReviewDraft
from atelier_api.validation import ReviewsQuery, Sort

Json = dict[str, Any]

_REVIEW_COLUMNS = "id, rating, summary, recommend, response, body, date, reviewer_name, helpfulness"

# `relevant`: (1 + helpfulness) decayed with a one-year half-life, i.e. log2(1 + helpfulness) plus the
# review's age in Julian years (31557600 s). Each doubling of helpful votes is worth one year of
# recency. The score needs no clock, so a page stays put between requests.
RELEVANCE = "ln(helpfulness + 1::float8) / ln(2::float8) + extract(epoch FROM date)::float8 / 31557600"

# Every order ends in id DESC so that ties never move between pages.
_ORDER_BY = {
    Sort.NEWEST: "date DESC, id DESC",
    Sort.HELPFUL: "helpfulness DESC, date DESC, id DESC",
    Sort.RELEVANT: f"{RELEVANCE} DESC, id DESC",
}
# The filters of GET /reviews; each is added only when asked for, so every statement keeps a plan of
# its own. The product's reviews come from reviews_product_date_idx, photos from reviews_photos_review_idx.
_BY_RATING = "AND rating = any($4::smallint[])"
_WITH_PHOTOS = "AND EXISTS (SELECT 1 FROM reviews_photos AS p WHERE p.review_id = reviews.id)"

# Keyed by (sort, by rating, with photos). $4, when there, is the list of stars.
LIST_REVIEWS = {
    (sort, by_rating, with_photos): f"""
        SELECT {_REVIEW_COLUMNS}
        FROM reviews
        WHERE product_id = $1 AND NOT reported
            {_BY_RATING if by_rating else ""}
            {_WITH_PHOTOS if with_photos else ""}
        ORDER BY {order}
        LIMIT $2 OFFSET $3
    """
    for sort, order in _ORDER_BY.items()
    for by_rating in (False, True)
    for with_photos in (False, True)
}

GET_REVIEW = f"SELECT {_REVIEW_COLUMNS} FROM reviews WHERE id = $1 AND NOT reported"

LIST_PHOTOS = "SELECT id, review_id, url FROM reviews_photos WHERE review_id = any($1::bigint[]) ORDER BY id"

# A product is known when it has characteristics or reviews (reported ones too).
KNOWN_PRODUCT = """
    SELECT
        EXISTS (SELECT 1 FROM reviews WHERE product_id = $1) AS has_reviews,
        ARRAY(SELECT id FROM characteristics WHERE product_id = $1) AS characteristic_ids
"""

# A new review in one statement (one round trip, one implicit transaction): the review, its photos (ids
# in the order given, the order GET lists them in), its characteristic ratings, its product's counts and
# its characteristics' sums (what a report takes out again: summaries.REMOVE_FROM_PRODUCT_COUNTS and
# REMOVE_FROM_CHARACTERISTIC_SUMS), and the change notification every replica's cache hears at commit.
# `sums` reads `counts` in an InitPlan, so the product's summary row is locked before any characteristic
# row, the order every writer keeps (see summaries.py): two writes of one product never deadlock.
STORE_REVIEW = """
    WITH review AS (
        INSERT INTO reviews (
            product_id, rating, date, summary, body, recommend, reviewer_name, reviewer_email
        )
        VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
        RETURNING id
    ), photos AS (
        INSERT INTO reviews_photos (review_id, url)
        SELECT review.id, given.url
        FROM review, unnest($9::text[]) WITH ORDINALITY AS given (url, position)
        ORDER BY given.position
    ), ratings AS (
        INSERT INTO characteristic_reviews (characteristic_id, review_id, value)
        SELECT given.characteristic_id, review.id, given.value
        FROM review, unnest($10::bigint[], $11::smallint[]) AS given (characteristic_id, value)
    ), counts AS (
        INSERT INTO product_summaries AS s (product_id, ratings, recommended, not_recommended)
        VALUES (
            $1,
            ARRAY(SELECT (stars = $2)::integer FROM generate_series(1, 5) AS stars ORDER BY stars),
            $6::boolean::integer,
            (NOT $6::boolean)::integer
        )
        ON CONFLICT (product_id) DO UPDATE SET
            ratings[$2] = s.ratings[$2] + 1,
            recommended = s.recommended + excluded.recommended,
            not_recommended = s.not_recommended + excluded.not_recommended
        RETURNING product_id
    ), sums AS (
        UPDATE characteristic_summaries AS s
        SET rating_sum = s.rating_sum + given.value_sum, rating_count = s.rating_count + given.ratings
        FROM (
            SELECT characteristic_id, sum(value) AS value_sum, count(*) AS ratings
            FROM unnest($10::bigint[], $11::smallint[]) AS rating (characteristic_id, value)
            GROUP BY characteristic_id
        ) AS given
        WHERE s.characteristic_id = given.characteristic_id AND (SELECT count(*) FROM counts) = 1
    ), notified AS (
        SELECT pg_notify('atelier_changes', $1::text)
    )
    SELECT review.id, (SELECT count(*) FROM notified) AS notified FROM review
"""

# A report locks the review first: of two concurrent reports, the second waits, then sees it reported
# and changes nothing, so the review leaves its product's summary exactly once.
LOCK_REVIEW = "SELECT product_id, rating, recommend, reported FROM reviews WHERE id = $1 FOR UPDATE"

REPORT = "UPDATE reviews SET reported = true WHERE id = $1"


async def list_reviews(pool: asyncpg.Pool, query: ReviewsQuery) -> list[Json]:
    offset = (query.page - 1) * query.count
    statement = LIST_REVIEWS[query.sort, bool(query.ratings), query.with_photos]
    args: list[Any] = [query.product_id, query.count, offset]
    if query.ratings:
        args.append(list(query.ratings))
    async with pool.acquire() as conn:
        rows = await conn.fetch(statement, *args)
        photos = await _photos(conn, [row["id"] for row in rows])
    return [_review(row, photos[row["id"]]) for row in rows]


async def get_review(pool: asyncpg.Pool, review_id: int) -> Json:
    async with pool.acquire() as conn:
        row = await conn.fetchrow(GET_REVIEW, review_id)
        if row is None:
            raise ReviewNotFound(review_id)
        photos = await _photos(conn, [review_id])
    return _review(row, photos[review_id])


@dataclass(frozen=True, slots=True)
class Created:
    review_id: int
    product_id: int | None  # None for a replay: nothing changed
    replayed: bool = False  # an Idempotency-Key's earlier review, nothing stored now


async def create_review(
    pool: asyncpg.Pool, draft: ReviewDraft, date: datetime, key: idempotency.Claim | None = None
) -> Created:
    """Store a review, its photos and its characteristic ratings in one transaction; return its id.

    With an Idempotency-Key, the key is claimed and recorded in the same transaction, and a key that
    already created a review with this body gives that review back instead (see idempotency.py).
    Raises InvalidInput listing every broken rule, those of the body and those the database decides.
    """
    if draft.product_id is None:  # nothing to look up: report the body's errors without a round trip
        draft.complete(product_known=False, product_characteristic_ids=())
    async with pool.acquire() as conn:
        if key is None:  # two round trips: the product's rules, then the one statement that stores
            return await _store(conn, draft, date)
        async with conn.transaction():
            if (earlier := await idempotency.claim(conn, key)) is not None:
                return Created(earlier, None, replayed=True)
            created = await _store(conn, draft, date)
            await idempotency.record(conn, key, created.review_id)
            return created


async def _store(conn: asyncpg.Connection, draft: ReviewDraft, date: datetime) -> Created:
    known = await conn.fetchrow(KNOWN_PRODUCT, draft.product_id)
    review = draft.complete(
        product_known=known["has_reviews"] or bool(known["characteristic_ids"]),
        product_characteristic_ids=frozenset(known["characteristic_ids"]),
    )
    characteristic_ids, values = (
        zip(*review.characteristics, strict=True) if review.characteristics else ((), ())
    )
    review_id: int = await conn.fetchval(
        STORE_REVIEW,
        review.product_id,
        review.rating,
        date,
        review.summary,
        review.body,
        review.recommend,
        review.name,
        review.email,
        review.photos,
        characteristic_ids,
        values,
    )
    return Created(review_id, review.product_id)


async def report(pool: asyncpg.Pool, review_id: int) -> int | None:
    """Hide the review and take it out of its product's summary, in one transaction; returns its
    product, or None when it was reported already (nothing changes). Raises ReviewNotFound when there
    is no such review."""
    async with pool.acquire() as conn, conn.transaction():
        review = await conn.fetchrow(LOCK_REVIEW, review_id)
        if review is None:
            raise ReviewNotFound(review_id)
        if review["reported"]:
            return None
        await conn.execute(REPORT, review_id)
        await summaries.remove_review(
            conn, review_id, review["product_id"], review["rating"], review["recommend"]
        )
        await changes.notify(conn, review["product_id"])
    return int(review["product_id"])


async def _photos(conn: asyncpg.Connection, review_ids: Sequence[int]) -> dict[int, list[Json]]:
    photos: dict[int, list[Json]] = defaultdict(list)
    if review_ids:
        for row in await conn.fetch(LIST_PHOTOS, review_ids):
            photos[row["review_id"]].append({"id": row["id"], "url": row["url"]})
    return photos


def _review(row: asyncpg.Record, photos: list[Json]) -> Json:
    return {
        "review_id": row["id"],
        "rating": row["rating"],
        "summary": row["summary"],
        "recommend": row["recommend"],
        "response": row["response"],
        "body": row["body"],
        "date": _iso_date(row["date"]),
        "reviewer_name": row["reviewer_name"],
        "helpfulness": row["helpfulness"],
        "photos": photos,
    }


def _iso_date(date: datetime) -> str:
    """UTC with milliseconds and Z, as JavaScript's Date.toISOString() prints it."""
    utc = date.astimezone(UTC)
    return f"{utc:%Y-%m-%dT%H:%M:%S}.{utc.microsecond // 1000:03d}Z"
