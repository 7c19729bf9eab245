"""The reviews data layer: each statement a named constant next to the function that runs it.

Functions take the pool, return values in the contract's shape and raise domain errors. No statement
selects `reviewer_email`: it is stored, never returned.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
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
# Each review's photos as (id, url) records, in id order: read with the review, in the same round trip.
_PHOTOS = "ARRAY(SELECT ROW(p.id, p.url) FROM reviews_photos AS p WHERE p.review_id = page.id ORDER BY p.id)"

# Keyed by (sort, by rating, with photos). $4, when there, is the list of stars. The page is chosen
# first, then its photos are read: only for the page's rows, never for those OFFSET skips.
LIST_REVIEWS = {
    (sort, by_rating, with_photos): f"""
        SELECT page.*, {_PHOTOS} AS photos
        FROM (
            SELECT {_REVIEW_COLUMNS}
            FROM reviews
            WHERE product_id = $1 AND NOT reported
                {_BY_RATING if by_rating else ""}
                {_WITH_PHOTOS if with_photos else ""}
            ORDER BY {order}
            LIMIT $2 OFFSET $3
        ) AS page
        ORDER BY {order}
    """
    for sort, order in _ORDER_BY.items()
    for by_rating in (False, True)
    for with_photos in (False, True)
}

# Every review of a product that is not reported, newest first, when it has at most $2 - 1 of them (at $2
# rows the caller knows there are more and asks page by page instead), each with its photos and its
# `relevant` score as PostgreSQL computes it. all_reviews() puts them in the two other orders by the very
# keys of those orders' ORDER BYs, so that cutting a page out of these rows gives the bytes LIST_REVIEWS
# gives for any sort, filter and page; sorting a few rows in Python costs less than a Sort node each.
ALL_REVIEWS = f"""
    SELECT page.*, {_PHOTOS} AS photos
    FROM (
        SELECT {_REVIEW_COLUMNS}, {RELEVANCE} AS relevance
        FROM reviews
        WHERE product_id = $1 AND NOT reported
        ORDER BY {_ORDER_BY[Sort.NEWEST]}
        LIMIT $2
    ) AS page
    ORDER BY {_ORDER_BY[Sort.NEWEST]}
"""

GET_REVIEW = f"""
    SELECT page.*, {_PHOTOS} AS photos
    FROM (SELECT {_REVIEW_COLUMNS} FROM reviews WHERE id = $1 AND NOT reported) AS page
"""

# A new review in one statement (one round trip, one implicit transaction). `known` (KNOWN_PRODUCT,
# also read alone for a body with errors of its own) reads the two rules only the database can decide:
# the product is known (it has reviews, reported ones too, or characteristics) and every characteristic
# rated is one of its own. The review is stored only when both hold, and the statement answers the facts
# either way, so that ReviewDraft.complete names each broken rule. With the review: its photos (ids in
# the order given, the order GET lists them in), its characteristic ratings, its product's counts and
# its characteristics' sums (what a report takes out again: summaries.REMOVE_FROM_PRODUCT_COUNTS and
# REMOVE_FROM_CHARACTERISTIC_SUMS). Every replica's cache hears of it once it commits (changes.notify).
# `sums` reads `counts` in an InitPlan, so the product's summary row is locked before any characteristic
# row, the order every writer keeps (see summaries.py): two writes of one product never deadlock.
# The date is stored to the millisecond, all that clients see of it (_iso_date): two reviews within one
# millisecond then tie and go by id descending, in PostgreSQL's orders and all_reviews' alike. With
# microseconds, the later clock reading could get the smaller id (two replicas) and come first.
KNOWN_PRODUCT = """
    SELECT
        EXISTS (SELECT 1 FROM reviews WHERE product_id = $1) AS has_reviews,
        ARRAY(SELECT id FROM characteristics WHERE product_id = $1) AS characteristic_ids
"""
_RULES_HOLD = """
    (known.has_reviews OR cardinality(known.characteristic_ids) > 0)
    AND $10::bigint[] <@ known.characteristic_ids
"""


def _store_steps(condition: str) -> str:
    return f"""
    known AS ({KNOWN_PRODUCT}), review AS (
        INSERT INTO reviews (
            product_id, rating, date, summary, body, recommend, reviewer_name, reviewer_email
        )
        SELECT $1, $2, date_trunc('milliseconds', $3::timestamptz), $4, $5, $6, $7, $8
        FROM known
        WHERE {condition}
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
        SELECT
            $1,
            ARRAY(SELECT (stars = $2)::integer FROM generate_series(1, 5) AS stars ORDER BY stars),
            $6::boolean::integer,
            (NOT $6::boolean)::integer
        FROM review
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
    )
    """


_STORED = "(SELECT id FROM review) AS review_id, known.has_reviews, known.characteristic_ids"
STORE_REVIEW = f"WITH {_store_steps(_RULES_HOLD)} SELECT {_STORED} FROM known"
# The same with an Idempotency-Key ($12, the body's hash $13, its retention $14), claimed, looked up and
# recorded in the same statement (idempotency.py): stored only when this request claimed the key and the
# key has no live record; that record (the review to replay, or the other body's hash) is answered.
STORE_REVIEW_WITH_KEY = f"""
    WITH {idempotency.claim_steps("$12", "$14")},
    {_store_steps(f"{_RULES_HOLD} AND (SELECT claimed FROM claim) AND NOT EXISTS (SELECT FROM earlier)")},
    {idempotency.record_steps("review", "$12", "$13", "$14")}
    SELECT {_STORED}, (SELECT claimed FROM claim) AS claimed,
        (SELECT request_hash FROM earlier) AS earlier_hash, (SELECT review_id FROM earlier) AS earlier_id
    FROM known
"""
_store_statement = {False: STORE_REVIEW, True: STORE_REVIEW_WITH_KEY}  # by: has an Idempotency-Key

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
    rows = await pool.fetch(statement, *args)
    return [_review(row) for row in rows]


@dataclass(frozen=True, slots=True)
class AllReviews:
    """A product's reviews that are not reported: `newest` in that order, and each sort's order as
    indexes into it."""

    newest: list[Json]
    orders: dict[Sort, list[int]]


async def all_reviews(pool: asyncpg.Pool, product_id: int, at_most: int) -> AllReviews | None:
    """Every review of the product that GET /reviews lists, or None when it has more than `at_most`."""
    rows = await pool.fetch(ALL_REVIEWS, product_id, at_most + 1)
    if len(rows) > at_most:
        return None
    places = range(len(rows))
    # _ORDER_BY's keys, all descending; ids are unique, so no two rows tie. The score is PostgreSQL's own
    # float8, compared as it compares them.
    return AllReviews(
        newest=[_review(row) for row in rows],
        orders={
            Sort.NEWEST: list(places),
            Sort.HELPFUL: sorted(
                places,
                key=lambda i: (rows[i]["helpfulness"], rows[i]["date"], rows[i]["id"]),
                reverse=True,
            ),
            Sort.RELEVANT: sorted(places, key=lambda i: (rows[i]["relevance"], rows[i]["id"]), reverse=True),
        },
    )


async def get_review(pool: asyncpg.Pool, review_id: int) -> Json:
    row = await pool.fetchrow(GET_REVIEW, review_id)
    if row is None:
        raise ReviewNotFound(review_id)
    return _review(row)


@dataclass(frozen=True, slots=True)
class Created:
    review_id: int
    product_id: int
    replayed: bool = False  # an Idempotency-Key's earlier review, nothing stored now


async def create_review(
    pool: asyncpg.Pool, draft: ReviewDraft, date: datetime, key: idempotency.Claim | None = None
) -> Created:
    """Store a review, its photos and its characteristic ratings in one transaction, then notify every
    replica of the change (changes.notify); return its id.

    With an Idempotency-Key, the key is claimed and recorded with the review in the same statement, and
    a key that already created a review with this body gives that review back instead (idempotency.py),
    notifying again: the request that stored it may have ended between its commit and its notification.
    Raises InvalidInput listing every broken rule, those of the body and those the database decides.
    """
    if draft.product_id is None:  # nothing to look up: report the body's errors without a round trip
        draft.complete(product_known=False, product_characteristic_ids=())
    async with pool.acquire() as conn:
        if key is None:  # one statement checks the product's rules and stores
            created = await _store(conn, draft, date)
        else:
            try:
                created = await _store(conn, draft, date, key)
            except asyncpg.UniqueViolationError as error:
                if error.constraint_name != idempotency.TAKEN_MEANWHILE:
                    raise
                raise idempotency.RequestInProgress() from None  # rolled back: the retry is replayed
        await changes.notify(pool, conn, created.product_id)
        return created


async def _store(
    conn: asyncpg.Connection, draft: ReviewDraft, date: datetime, key: idempotency.Claim | None = None
) -> Created:
    review = draft.review
    if review is None:  # the body's own errors, and the product's rules if it names a product
        await _facts_and_errors(conn, draft)
    assert review is not None
    characteristic_ids, values = (
        zip(*review.characteristics, strict=True) if review.characteristics else ((), ())
    )
    keyed = () if key is None else (key.key, key.request_hash, idempotency.KEY_RETENTION)
    stored = await conn.fetchrow(
        _store_statement[key is not None],
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
        *keyed,
    )
    if key is not None:
        earlier = idempotency.earlier_review(
            key, stored["claimed"], stored["earlier_hash"], stored["earlier_id"]
        )
        if earlier is not None:  # the same body, so the same product
            return Created(earlier, review.product_id, replayed=True)
    # The same rules in Python name every broken one; the statement stored nothing when one is broken.
    draft.complete(
        product_known=stored["has_reviews"] or bool(stored["characteristic_ids"]),
        product_characteristic_ids=frozenset(stored["characteristic_ids"]),
    )
    if stored["review_id"] is None:
        raise RuntimeError("STORE_REVIEW stored nothing for a review that breaks no rule")
    return Created(stored["review_id"], review.product_id)


async def _facts_and_errors(conn: asyncpg.Connection, draft: ReviewDraft) -> None:
    """A body with errors of its own: raise InvalidInput naming them with the product's (if known)."""
    known = await conn.fetchrow(KNOWN_PRODUCT, draft.product_id) if draft.product_id is not None else None
    draft.complete(
        product_known=bool(known and (known["has_reviews"] or known["characteristic_ids"])),
        product_characteristic_ids=frozenset(known["characteristic_ids"]) if known else (),
    )


async def report(pool: asyncpg.Pool, review_id: int) -> int:
    """Hide the review and take it out of its product's summary, in one transaction, then notify every
    replica; returns its product. A review reported already changes nothing but is notified again: the
    request that reported it may have ended between its commit and its notification (nginx then retries
    on another replica). Raises ReviewNotFound when there is no such review."""
    async with pool.acquire() as conn:
        async with conn.transaction():
            review = await conn.fetchrow(LOCK_REVIEW, review_id)
            if review is None:
                raise ReviewNotFound(review_id)
            if not review["reported"]:
                await conn.execute(REPORT, review_id)
                await summaries.remove_review(
                    conn, review_id, review["product_id"], review["rating"], review["recommend"]
                )
        await changes.notify(pool, conn, review["product_id"])
    return int(review["product_id"])


def _review(row: asyncpg.Record) -> Json:
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
        "photos": [{"id": photo_id, "url": url} for photo_id, url in row["photos"]],
    }


_UTC_OFFSET = timedelta(0)


def _iso_date(date: datetime) -> str:
    """UTC with milliseconds (truncated) and Z, as JavaScript's Date.toISOString() prints it, four
    digits of year included. asyncpg gives timestamptz in UTC already; isoformat() is C and takes half
    the time of strftime's format, which was 6.7% of a reviews miss's samples (docs/tuning.md)."""
    if date.utcoffset() != _UTC_OFFSET:  # another zone, or none (naive): made UTC, so it ends in +00:00
        date = date.astimezone(UTC)
    return date.isoformat(timespec="milliseconds")[:-6] + "Z"  # "+00:00" is the last 6 characters
