"""Readiness: the database answers and holds data. What GET /readyz asks before a replica takes traffic."""

from __future__ import annotations

import asyncio

import asyncpg

from atelier_api.errors import DATABASE_UNAVAILABLE, NotReady

# A probe must answer quickly whatever the database does: a hung one counts as unreachable.
TIMEOUT = 1.0  # seconds

TABLES = [
    "reviews",
    "reviews_photos",
    "characteristics",
    "characteristic_reviews",
    "product_summaries",
    "characteristic_summaries",
]
# to_regclass resolves a name as the API's own queries do (search_path), and is null when it is missing.
MISSING_TABLES = "SELECT name FROM unnest($1::text[]) AS name WHERE to_regclass(name) IS NULL"
# At least one product: a product is known by its characteristics or its reviews.
# The first entry of each product index: one index page, however large or however recently emptied the
# table (an EXISTS over the table itself plans a sequential scan). `reviews` first, as a load's switch
# locks them: the other order could deadlock with it during a reload.
HAS_A_PRODUCT = """
SELECT (SELECT product_id FROM reviews ORDER BY product_id LIMIT 1) IS NOT NULL
    OR (SELECT product_id FROM characteristics ORDER BY product_id LIMIT 1) IS NOT NULL
"""


async def check(pool: asyncpg.Pool, timeout: float = TIMEOUT) -> None:
    """Returns when ready; raises NotReady saying why not."""
    try:
        async with asyncio.timeout(timeout), pool.acquire() as conn:
            missing = await conn.fetch(MISSING_TABLES, TABLES)
            loaded = not missing and await conn.fetchval(HAS_A_PRODUCT)
    except DATABASE_UNAVAILABLE as error:  # TimeoutError included
        raise NotReady("unreachable") from error
    if not loaded:
        raise NotReady("no data loaded")
