"""The per-product summaries (product_summaries, characteristic_summaries), computed from the reviews.

The loader builds them with these GROUP BYs in its staging schema, after the four export tables are
complete; from then on the API keeps them exact in the same transaction as each write that moves them
(atelier_api/summaries.py). `atelier-verify` (verify.py) runs the same GROUP BYs against what is stored.

Nothing here is schema-qualified: the caller's search_path decides which tables are read and written.
"""

from __future__ import annotations

import asyncpg

TABLES = ("product_summaries", "characteristic_summaries")

# A product's counts over its reviews; reported reviews count nowhere.
PRODUCT_COUNTS = """
        ARRAY[
            count(*) FILTER (WHERE rating = 1 AND NOT reported),
            count(*) FILTER (WHERE rating = 2 AND NOT reported),
            count(*) FILTER (WHERE rating = 3 AND NOT reported),
            count(*) FILTER (WHERE rating = 4 AND NOT reported),
            count(*) FILTER (WHERE rating = 5 AND NOT reported)
        ]::integer[] AS ratings,
        (count(*) FILTER (WHERE recommend AND NOT reported))::integer AS recommended,
        (count(*) FILTER (WHERE NOT recommend AND NOT reported))::integer AS not_recommended
"""
# Every product with a review, reported or not.
PRODUCT_SUMMARY_ROWS = f"""
    SELECT product_id, {PRODUCT_COUNTS}
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

# Repairs while the API writes (atelier-verify --repair). Every write moves a stored summary row and the
# reviews it sums by the same amount in one transaction, so a row's error (the recomputation minus the
# stored value, both read in verify's one snapshot) stays the same whatever is written after that
# snapshot: adding the error to the row as it is now makes it exact, with no table lock, no rebuild, and
# no write held back. That holds for rows that exist: a write never creates a characteristic's row, and
# a report skips a missing product row. So a repair first adds every missing row, computed from the
# reviews (ADD_MISSING_*; not zeros, which a report would take below zero against the CHECKs), checks
# again, and corrects the rows as they then are. $1 is the rows' keys, then one array of errors per
# column.
ADD_MISSING_PRODUCT_ROWS = f"""
    INSERT INTO product_summaries (product_id, ratings, recommended, not_recommended)
    SELECT product_id, {PRODUCT_COUNTS}
    FROM reviews
    WHERE product_id = ANY($1::integer[])
    GROUP BY product_id
    ON CONFLICT (product_id) DO NOTHING
"""
ADD_MISSING_CHARACTERISTIC_ROWS = """
    INSERT INTO characteristic_summaries (characteristic_id, product_id, name, rating_sum, rating_count)
    SELECT c.id, c.product_id, c.name, coalesce(sum(cr.value), 0), count(cr.value)
    FROM characteristics AS c
    LEFT JOIN (characteristic_reviews AS cr JOIN reviews AS r ON r.id = cr.review_id AND NOT r.reported)
           ON cr.characteristic_id = c.id
    WHERE c.id = ANY($1::bigint[])
    GROUP BY c.id, c.product_id, c.name
    ON CONFLICT (characteristic_id) DO NOTHING
"""
# A batch's rows locked first, products then characteristics, each in key order: the order the API's
# writers take them (a product's row, then its characteristics' rows), so a repair and a write wait for
# each other but never deadlock.
LOCK_PRODUCT_ROWS = """
    SELECT FROM product_summaries WHERE product_id = ANY($1::integer[]) ORDER BY product_id FOR UPDATE
"""
LOCK_CHARACTERISTIC_ROWS = """
    SELECT FROM characteristic_summaries WHERE characteristic_id = ANY($1::bigint[])
    ORDER BY characteristic_id FOR UPDATE
"""
CORRECT_PRODUCT_ROWS = """
    UPDATE product_summaries AS s
    SET ratings = ARRAY[s.ratings[1] + e.r1, s.ratings[2] + e.r2, s.ratings[3] + e.r3,
                        s.ratings[4] + e.r4, s.ratings[5] + e.r5],
        recommended = s.recommended + e.recommended,
        not_recommended = s.not_recommended + e.not_recommended
    FROM unnest($1::integer[], $2::integer[], $3::integer[], $4::integer[], $5::integer[], $6::integer[],
                $7::integer[], $8::integer[])
         AS e(product_id, r1, r2, r3, r4, r5, recommended, not_recommended)
    WHERE s.product_id = e.product_id
"""
# A row of a product without reviews (none is stored for such a product): its errors took it to zeros.
DROP_EXTRA_PRODUCT_ROWS = """
    DELETE FROM product_summaries AS s
    WHERE s.product_id = ANY($1::integer[])
      AND NOT EXISTS (SELECT FROM reviews AS r WHERE r.product_id = s.product_id)
"""
# The same for characteristics; product_id and name are not moved by writes: set to the recomputation's.
CORRECT_CHARACTERISTIC_ROWS = """
    UPDATE characteristic_summaries AS s
    SET rating_sum = s.rating_sum + e.rating_sum, rating_count = s.rating_count + e.rating_count,
        product_id = coalesce(e.product_id, s.product_id), name = coalesce(e.name, s.name)
    FROM unnest($1::bigint[], $2::bigint[], $3::bigint[], $4::integer[], $5::text[])
         AS e(characteristic_id, rating_sum, rating_count, product_id, name)
    WHERE s.characteristic_id = e.characteristic_id
"""
DROP_EXTRA_CHARACTERISTIC_ROWS = """
    DELETE FROM characteristic_summaries AS s
    WHERE s.characteristic_id = ANY($1::bigint[])
      AND NOT EXISTS (SELECT FROM characteristics AS c WHERE c.id = s.characteristic_id)
"""


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


async def add_missing_rows(
    conn: asyncpg.Connection, product_ids: list[int], characteristic_ids: list[int]
) -> None:
    """Add these products' and characteristics' rows, computed from the reviews, where still missing."""
    async with conn.transaction():
        await conn.execute(ADD_MISSING_PRODUCT_ROWS, product_ids)
        await conn.execute(ADD_MISSING_CHARACTERISTIC_ROWS, characteristic_ids)


async def correct(
    conn: asyncpg.Connection, lock_products: list[int], products: list[list], characteristics: list[list]
) -> None:
    """Add each row's errors to it, inside the caller's transaction: `products` rows of [product_id, the
    five star counts' errors, recommended's, not_recommended's], `characteristics` rows of
    [characteristic_id, rating_sum's error, rating_count's, the product_id and name to set (None:
    keep)]. `lock_products`: every product whose rows these are, locked first (LOCK_PRODUCT_ROWS)."""
    await conn.execute(LOCK_PRODUCT_ROWS, sorted(lock_products))
    await conn.execute(LOCK_CHARACTERISTIC_ROWS, sorted(row[0] for row in characteristics))
    if products:
        await conn.execute(CORRECT_PRODUCT_ROWS, *zip(*products, strict=True))
        await conn.execute(DROP_EXTRA_PRODUCT_ROWS, [row[0] for row in products])
    if characteristics:
        await conn.execute(CORRECT_CHARACTERISTIC_ROWS, *zip(*characteristics, strict=True))
        await conn.execute(DROP_EXTRA_CHARACTERISTIC_ROWS, [row[0] for row in characteristics])


def _row_count(status: str) -> int:
    return int(status.rsplit(" ", 1)[1])
