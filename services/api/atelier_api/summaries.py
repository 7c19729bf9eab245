"""Product summaries (GET /reviews/meta and /reviews/meta/batch) and the writes that keep them exact.

The summaries live in their own tables (services/postgres/01-tables.sql): per product the reviews per
star and per recommendation, per characteristic the sum and count of its ratings. The loader builds them
(atelier_etl/summaries.py); every write that moves them changes them inside its own transaction (a new
review in reviews.STORE_REVIEW, a report by `remove_review`), so a summary always equals what the stored
reviews give (`atelier-verify` checks).

Reading is one statement for any number of products: a primary-key row and a product's few
characteristic rows each, never the reviews. One statement sees one snapshot, and the single meta is a
batch of one, so the two endpoints cannot disagree.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import asyncpg

from atelier_api.validation import INT32_MAX

Json = dict[str, Any]

# The rows of the products asked for, in no particular order: each product's counts (a row with no
# characteristic) and each of its characteristics (a row with no counts). Two index scans that take all
# the ids at once (`= ANY`), and no per-product subquery or sort: product_summaries() assembles each
# summary (a quarter to a third less time inside PostgreSQL than one subquery per product that sorted its
# characteristics twice, docs/tuning.md). The mean is
# round(rating_sum::numeric / rating_count, 16): avg() of a smallint is that very numeric division, so
# the string is exactly round(avg(value), 16)::text, 16 decimals whatever the mean (avg() alone prints 20
# when it is a whole number).
PRODUCT_SUMMARIES = """
    SELECT s.product_id, s.ratings, s.recommended, s.not_recommended,
        NULL::bigint AS characteristic_id, NULL::text AS name, NULL::text AS mean
    FROM product_summaries AS s
    WHERE s.product_id = ANY ($1::int[])
    UNION ALL
    SELECT cs.product_id, NULL, NULL, NULL,
        cs.characteristic_id, cs.name, round(cs.rating_sum::numeric / nullif(cs.rating_count, 0), 16)::text
    FROM characteristic_summaries AS cs
    WHERE cs.product_id = ANY ($1::int[])
"""

# A reported review leaves its product's counts. (A new review enters them in reviews.STORE_REVIEW, which
# creates the row with the product's first review.) Its product has a row (it has this review); an
# UPDATE, not an upsert, since PostgreSQL checks an upsert's proposed row, negative counts and all, before
# it finds the conflict.
REMOVE_FROM_PRODUCT_COUNTS = """
    UPDATE product_summaries
    SET ratings[$2] = ratings[$2] - 1,
        recommended = recommended - $3::boolean::integer,
        not_recommended = not_recommended - (NOT $3::boolean)::integer
    WHERE product_id = $1
"""

# ... and its characteristic ratings leave their characteristics' sums, read straight from
# characteristic_reviews (characteristic_reviews_review_idx).
REMOVE_FROM_CHARACTERISTIC_SUMS = """
    UPDATE characteristic_summaries AS s
    SET rating_sum = s.rating_sum - given.value_sum, rating_count = s.rating_count - given.ratings
    FROM (
        SELECT characteristic_id, sum(value) AS value_sum, count(*) AS ratings
        FROM characteristic_reviews
        WHERE review_id = $1
        GROUP BY characteristic_id
    ) AS given
    WHERE s.characteristic_id = given.characteristic_id
"""


async def product_summaries(pool: asyncpg.Pool, product_ids: Sequence[int]) -> list[Json]:
    """The meta object of each product, in the order given (a repeated id is repeated)."""
    counts: dict[int, asyncpg.Record] = {}
    characteristics: dict[int, list[tuple[int, str, str | None]]] = {}
    # An id past the column's range names no product: an unknown product's summary, without asking.
    known_range = [product_id for product_id in dict.fromkeys(product_ids) if product_id <= INT32_MAX]
    for row in await pool.fetch(PRODUCT_SUMMARIES, known_range) if known_range else []:
        if row["characteristic_id"] is None:
            counts[row["product_id"]] = row
        else:
            characteristics.setdefault(row["product_id"], []).append(
                (row["characteristic_id"], row["name"], row["mean"])
            )
    return [
        _summary(product_id, counts.get(product_id), characteristics.get(product_id, []))
        for product_id in product_ids
    ]


def _summary(
    product_id: int, counts: asyncpg.Record | None, characteristics: list[tuple[int, str, str | None]]
) -> Json:
    summary: Json = {"product_id": str(product_id), "ratings": {}, "recommended": {}, "characteristics": {}}
    if counts is not None and any(counts["ratings"]):  # a review that is not reported
        summary["ratings"] = {
            str(stars): str(count) for stars, count in enumerate(counts["ratings"], 1) if count
        }
        # Both keys whenever there is a review: a missing one made storefront widgets show "NaN%".
        summary["recommended"] = {"false": str(counts["not_recommended"]), "true": str(counts["recommended"])}
    # In id order, so the JSON comes out the same each time; when two characteristics of a product share
    # a name (the export has such products), the response is keyed by name and the lowest id wins.
    named: dict[str, Json] = {}
    for characteristic_id, name, mean in sorted(characteristics):
        named.setdefault(name, {"id": characteristic_id, "value": mean})
    summary["characteristics"] = named
    return summary


# Every writer locks the product's row first, then its characteristics' rows: two writes of one product
# queue on the product's row and never deadlock.


async def remove_review(
    conn: asyncpg.Connection, review_id: int, product_id: int, rating: int, recommend: bool
) -> None:
    """Take a review out of its product's summary (it was reported); call inside that transaction."""
    await conn.execute(REMOVE_FROM_PRODUCT_COUNTS, product_id, rating, recommend)
    await conn.execute(REMOVE_FROM_CHARACTERISTIC_SUMS, review_id)
