"""Readiness: the database answers and holds data. What GET /readyz asks before a replica takes traffic."""

from __future__ import annotations

import asyncio

import asyncpg

from atelier_api.errors import DATABASE_UNAVAILABLE, NotReady

# A probe must answer quickly whatever the database does: a hung one counts as unreachable.
TIMEOUT = 1.0  # seconds

TABLES = ["reviews", "reviews_photos", "characteristics", "characteristic_reviews"]
# to_regclass resolves a name as the API's own queries do (search_path), and is null when it is missing.
MISSING_TABLES = "SELECT name FROM unnest($1::text[]) AS name WHERE to_regclass(name) IS NULL"
# At least one product: a product is known by its characteristics or its reviews.
HAS_A_PRODUCT = "SELECT EXISTS (SELECT FROM characteristics) OR EXISTS (SELECT FROM reviews)"


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
