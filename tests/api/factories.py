"""Small factories that insert rows directly, as the loader would; each returns the new row's id.
Like the loader, they then compute the product summaries from the rows (atelier_etl.summaries), so the
API finds them as after a load. `review_body` builds a valid POST /reviews body.

Ids come from the tables' identity sequences unless given; after giving ids, `advance_sequences` moves
the sequences past them, as the loader does after a load.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import asyncpg

from atelier_etl import summaries

DEFAULT_DATE = datetime(2021, 3, 4, 5, 6, 7, 890000, tzinfo=UTC)
DEFAULT_BODY = "A long enough review body that says something about the product at hand."


async def characteristic(
    conn: asyncpg.Connection, product_id: int, name: str = "Quality", *, id: int | None = None
) -> int:
    new_id: int = await conn.fetchval(
        """
        INSERT INTO characteristics (id, product_id, name)
        VALUES (coalesce($1, nextval(pg_get_serial_sequence('characteristics', 'id'))), $2, $3)
        RETURNING id
        """,
        id,
        product_id,
        name,
    )
    await _summarize(conn)
    return new_id


async def review(
    conn: asyncpg.Connection,
    product_id: int,
    *,
    id: int | None = None,
    rating: int = 5,
    date: datetime = DEFAULT_DATE,
    summary: str = "Great shades",
    body: str = DEFAULT_BODY,
    recommend: bool = True,
    reported: bool = False,
    reviewer_name: str = "shortandsweeet",
    reviewer_email: str = "secret.reviewer@example.com",
    response: str | None = None,
    helpfulness: int = 0,
) -> int:
    new_id: int = await conn.fetchval(
        """
        INSERT INTO reviews (id, product_id, rating, date, summary, body, recommend, reported,
                             reviewer_name, reviewer_email, response, helpfulness)
        VALUES (coalesce($1, nextval(pg_get_serial_sequence('reviews', 'id'))),
                $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)
        RETURNING id
        """,
        id,
        product_id,
        rating,
        date,
        summary,
        body,
        recommend,
        reported,
        reviewer_name,
        reviewer_email,
        response,
        helpfulness,
    )
    await _summarize(conn)
    return new_id


async def photo(conn: asyncpg.Connection, review_id: int, url: str, *, id: int | None = None) -> int:
    return await conn.fetchval(  # type: ignore[no-any-return]
        """
        INSERT INTO reviews_photos (id, review_id, url)
        VALUES (coalesce($1, nextval(pg_get_serial_sequence('reviews_photos', 'id'))), $2, $3)
        RETURNING id
        """,
        id,
        review_id,
        url,
    )


async def characteristic_rating(
    conn: asyncpg.Connection, characteristic_id: int, review_id: int, value: int
) -> int:
    new_id: int = await conn.fetchval(
        """
        INSERT INTO characteristic_reviews (characteristic_id, review_id, value)
        VALUES ($1, $2, $3)
        RETURNING id
        """,
        characteristic_id,
        review_id,
        value,
    )
    await _summarize(conn)
    return new_id


async def advance_sequences(conn: asyncpg.Connection) -> None:
    """Move every identity sequence past the largest id in its table, as the loader does."""
    for table in ("reviews", "reviews_photos", "characteristics", "characteristic_reviews"):
        await conn.execute(
            f"SELECT setval(pg_get_serial_sequence('{table}', 'id'), coalesce(max(id), 0) + 1, false) "
            f"FROM {table}"
        )


async def _summarize(conn: asyncpg.Connection) -> None:
    """The summaries computed from the rows, as the loader does after a load. The loader's own build on
    emptied tables: DELETE, not summaries.rebuild's TRUNCATE, which costs a new file per table and call on
    these few rows."""
    async with conn.transaction():
        await conn.execute("DELETE FROM product_summaries; DELETE FROM characteristic_summaries")
        await summaries.build(conn)


def review_body(product_id: int, /, **fields: Any) -> dict[str, Any]:
    """A valid POST /reviews body for `product_id`; `fields` replace or add keys."""
    return {
        "product_id": product_id,
        "rating": 4,
        "summary": "Fits well",
        "body": "These fit exactly as described and have held up after many washes.",
        "recommend": True,
        "name": "jackson11",
        "email": "jackson11@example.com",
        **fields,
    }
