"""Product summaries (GET /reviews/meta and /reviews/meta/batch): one statement for any number of products.

One statement sees one snapshot, so the counts and the means always describe the same set of reviews,
and a batch costs one round trip whatever its size. The single meta is a batch of one, so the two
endpoints cannot disagree.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import asyncpg

Json = dict[str, Any]

# One row per product that has a non-reported review or a characteristic; a product with neither gets
# no row and the empty summary. Each list is ordered (stars ascending, characteristics by id) so the
# JSON comes out in the same order every time.
#
# The response is keyed by name, so when two characteristics of a product share one (the export has
# such products) the lowest id wins. round(..., 16) prints exactly 16 decimals whatever the mean;
# avg() alone prints 20 when the mean is a whole number. Each characteristic's ratings come from
# characteristic_reviews_characteristic_idx, their reviews' `reported` from the primary key.
PRODUCT_SUMMARIES = """
    WITH rating_count AS (
        SELECT product_id, rating, count(*) AS reviews, count(*) FILTER (WHERE recommend) AS recommending
        FROM reviews
        WHERE product_id = any($1::int[]) AND NOT reported
        GROUP BY product_id, rating
    ),
    rating_summary AS (
        SELECT
            product_id,
            array_agg(rating ORDER BY rating) AS stars,
            array_agg(reviews ORDER BY rating) AS star_counts,
            sum(reviews - recommending)::bigint AS not_recommending,
            sum(recommending)::bigint AS recommending
        FROM rating_count
        GROUP BY product_id
    ),
    named_characteristic AS (
        SELECT DISTINCT ON (product_id, name) product_id, name, id
        FROM characteristics
        WHERE product_id = any($1::int[])
        ORDER BY product_id, name, id
    ),
    characteristic_summary AS (
        SELECT
            c.product_id,
            array_agg(c.name ORDER BY c.id) AS names,
            array_agg(c.id ORDER BY c.id) AS ids,
            array_agg(mean.value ORDER BY c.id) AS means
        FROM named_characteristic AS c
        CROSS JOIN LATERAL (
            SELECT round(avg(cr.value), 16)::text AS value
            FROM characteristic_reviews AS cr
            JOIN reviews AS r ON r.id = cr.review_id
            WHERE cr.characteristic_id = c.id AND NOT r.reported
        ) AS mean
        GROUP BY c.product_id
    )
    SELECT product_id, stars, star_counts, not_recommending, recommending, names, ids, means
    FROM rating_summary
    FULL JOIN characteristic_summary USING (product_id)
"""


async def product_summaries(pool: asyncpg.Pool, product_ids: Sequence[int]) -> list[Json]:
    """The meta object of each product, in the order given (a repeated id is repeated)."""
    rows = await pool.fetch(PRODUCT_SUMMARIES, list(dict.fromkeys(product_ids)))
    by_product = {row["product_id"]: row for row in rows}
    return [_summary(product_id, by_product.get(product_id)) for product_id in product_ids]


async def product_summary(pool: asyncpg.Pool, product_id: int) -> Json:
    (summary,) = await product_summaries(pool, [product_id])
    return summary


def _summary(product_id: int, row: asyncpg.Record | None) -> Json:
    summary: Json = {"product_id": str(product_id), "ratings": {}, "recommended": {}, "characteristics": {}}
    if row is None:  # an unknown product
        return summary
    if row["stars"] is not None:
        summary["ratings"] = {
            str(stars): str(reviews) for stars, reviews in zip(row["stars"], row["star_counts"], strict=True)
        }
        # Both keys whenever there is a review: a missing one made storefront widgets show "NaN%".
        summary["recommended"] = {"false": str(row["not_recommending"]), "true": str(row["recommending"])}
    if row["names"] is not None:
        summary["characteristics"] = {
            name: {"id": characteristic_id, "value": value}
            for name, characteristic_id, value in zip(row["names"], row["ids"], row["means"], strict=True)
        }
    return summary
