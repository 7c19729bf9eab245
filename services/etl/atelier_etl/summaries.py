"""The per-product summaries (product_summaries, characteristic_summaries), computed from the reviews.

The loader builds them with these GROUP BYs in its staging schema, after the four export tables are
complete; from then on the API keeps them exact in the same transaction as each write that moves them
(atelier_api/summaries.py). `atelier-verify` (verify.py) runs the same GROUP BYs against what is stored.

Nothing here is schema-qualified: the caller's search_path decides which tables are read and written.
"""

from __future__ import annotations

import asyncpg

TABLES = ("product_summaries", "characteristic_summaries")

# Every product with a review, reported or not; reported reviews count nowhere.
PRODUCT_SUMMARY_ROWS = """
    SELECT
        product_id,
        ARRAY[
            count(*) FILTER (WHERE rating = 1 AND NOT reported),
            count(*) FILTER (WHERE rating = 2 AND NOT reported),
            count(*) FILTER (WHERE rating = 3 AND NOT reported),
            count(*) FILTER (WHERE rating = 4 AND NOT reported),
            count(*) FILTER (WHERE rating = 5 AND NOT reported)
        ]::integer[] AS ratings,
        (count(*) FILTER (WHERE recommend AND NOT reported))::integer AS recommended,
        (count(*) FILTER (WHERE NOT recommend AND NOT reported))::integer AS not_recommended
    FROM reviews
    GROUP BY product_id
"""

# Every characteristic, with the sum and count of its ratings by reviews that are not reported. The
# ratings are aggregated per characteristic first (one pass over characteristic_reviews, leaving out the
# few reported reviews), then joined to the characteristics, so no row of the big table is joined twice.
CHARACTERISTIC_SUMMARY_ROWS = """
    SELECT
        c.id AS characteristic_id,
        c.product_id,
        c.name,
        coalesce(rated.rating_sum, 0)::bigint AS rating_sum,
        coalesce(rated.rating_count, 0)::bigint AS rating_count
    FROM characteristics AS c
    LEFT JOIN (
        SELECT cr.characteristic_id, sum(cr.value) AS rating_sum, count(*) AS rating_count
        FROM characteristic_reviews AS cr
        WHERE NOT EXISTS (SELECT FROM reviews AS r WHERE r.id = cr.review_id AND r.reported)
        GROUP BY cr.characteristic_id
    ) AS rated ON rated.characteristic_id = c.id
"""

BUILD_PRODUCT_SUMMARIES = f"""
    INSERT INTO product_summaries (product_id, ratings, recommended, not_recommended)
    {PRODUCT_SUMMARY_ROWS}
"""

BUILD_CHARACTERISTIC_SUMMARIES = f"""
    INSERT INTO characteristic_summaries (characteristic_id, product_id, name, rating_sum, rating_count)
    {CHARACTERISTIC_SUMMARY_ROWS}
"""

EMPTY = "TRUNCATE product_summaries, characteristic_summaries"


async def build(conn: asyncpg.Connection) -> tuple[int, int]:
    """Fill the (empty) summary tables from the reviews; returns the product and characteristic rows."""
    products = await conn.execute(BUILD_PRODUCT_SUMMARIES)
    characteristics = await conn.execute(BUILD_CHARACTERISTIC_SUMMARIES)
    return _row_count(products), _row_count(characteristics)


async def rebuild(conn: asyncpg.Connection) -> tuple[int, int]:
    """Empty the summary tables and build them again, in one transaction (repairs any difference)."""
    async with conn.transaction():
        await conn.execute(EMPTY)
        return await build(conn)


def _row_count(status: str) -> int:
    return int(status.rsplit(" ", 1)[1])
