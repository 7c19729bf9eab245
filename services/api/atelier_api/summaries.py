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

Json = dict[str, Any]

# One row per product asked for, in no particular order. The response is keyed by name, so when two
# characteristics of a product share one (the export has such products) the lowest id wins. The mean is
# round(rating_sum::numeric / rating_count, 16): avg() of a smallint is that very numeric division, so the
# string is exactly round(avg(value), 16)::text, 16 decimals whatever the mean (avg() alone prints 20 when
# it is a whole number). The characteristics come as one array of (name, id, mean) records ordered by id,
# so the JSON comes out the same each time: sorted by id once, where three array_aggs (one per column)
# each sorted.
PRODUCT_SUMMARIES = """
    SELECT
        asked.product_id, s.ratings, s.recommended, s.not_recommended,
        ARRAY(
            SELECT ROW(
                named.name,
                named.characteristic_id,
                round(named.rating_sum::numeric / nullif(named.rating_count, 0), 16)::text
            )
            FROM (
                SELECT DISTINCT ON (cs.name) cs.name, cs.characteristic_id, cs.rating_sum, cs.rating_count
                FROM characteristic_summaries AS cs
                WHERE cs.product_id = asked.product_id
                ORDER BY cs.name, cs.characteristic_id
            ) AS named
            ORDER BY named.characteristic_id
        ) AS characteristics
    FROM unnest($1::int[]) AS asked (product_id)
    LEFT JOIN product_summaries AS s ON s.product_id = asked.product_id
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
    rows = await pool.fetch(PRODUCT_SUMMARIES, list(dict.fromkeys(product_ids)))
    by_product = {row["product_id"]: row for row in rows}
    return [_summary(product_id, by_product.get(product_id)) for product_id in product_ids]


def _summary(product_id: int, row: asyncpg.Record | None) -> Json:
    summary: Json = {"product_id": str(product_id), "ratings": {}, "recommended": {}, "characteristics": {}}
    if row is None:
        return summary
    if row["ratings"] is not None and any(row["ratings"]):  # a review that is not reported
        summary["ratings"] = {
            str(stars): str(count) for stars, count in enumerate(row["ratings"], 1) if count
        }
        # Both keys whenever there is a review: a missing one made storefront widgets show "NaN%".
        summary["recommended"] = {"false": str(row["not_recommended"]), "true": str(row["recommended"])}
    summary["characteristics"] = {
        name: {"id": characteristic_id, "value": value}
        for name, characteristic_id, value in row["characteristics"]
    }
    return summary


# Every writer locks the product's row first, then its characteristics' rows: two writes of one product
# queue on the product's row and never deadlock.


async def remove_review(
    conn: asyncpg.Connection, review_id: int, product_id: int, rating: int, recommend: bool
) -> None:
    """Take a review out of its product's summary (it was reported); call inside that transaction."""
    await conn.execute(REMOVE_FROM_PRODUCT_COUNTS, product_id, rating, recommend)
    await conn.execute(REMOVE_FROM_CHARACTERISTIC_SUMS, review_id)
