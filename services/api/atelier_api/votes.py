"""Helpful votes, counted exactly once per request.

nginx passes a request to the next replica when one fails (proxy_next_upstream), and it sends the same
X-Request-Id to every replica it tries. A replica may have counted the vote and died before answering,
so the vote is keyed by its request id: the first time an id votes for a review, the vote is recorded
in `helpful_votes` and counted, in one statement (so one transaction); the same id again is a replay,
acknowledged (204) and not counted. A client that retries with its own X-Request-Id gets the same rule.
A replay notifies the change again (changes.notify): the replica that counted the vote may have died
between its commit and its notification, which is when nginx retries, and the caches must still hear of it.
Recorded votes expire after VOTE_RETENTION (services/postgres/04-requests.sql).
"""

from __future__ import annotations

from datetime import timedelta

import asyncpg

from atelier_api import changes
from atelier_api.errors import ReviewNotFound

VOTE_RETENTION = timedelta(hours=24)

# `vote` records nothing for an unknown review, nor for a request id recorded for it within the
# retention (a concurrent insert of the same id waits for the first one's transaction, then conflicts
# or not); an expired record is renewed, as if absent. `counted` adds one only for a vote just recorded,
# saturating at the column's maximum (every replica's cache hears of it after the commit, from
# changes.notify). `expired` keeps the table bounded: up to two other votes past the retention go with
# each vote, skipping any that another transaction holds, so votes never wait on each other for it.
MARK_HELPFUL = """
    WITH review AS (
        SELECT id, product_id FROM reviews WHERE id = $1
    ), vote AS (
        INSERT INTO helpful_votes (request_id, review_id)
        SELECT $2, id FROM review
        ON CONFLICT (request_id, review_id) DO UPDATE SET voted_at = excluded.voted_at
        WHERE helpful_votes.voted_at < now() - $3::interval
        RETURNING review_id
    ), counted AS (
        UPDATE reviews SET helpfulness = helpfulness + (helpfulness < 2147483647)::int
        WHERE id IN (SELECT review_id FROM vote)
    ), expired AS (
        DELETE FROM helpful_votes
        WHERE (request_id, review_id) IN (
            SELECT request_id, review_id FROM helpful_votes
            WHERE voted_at < now() - $3::interval AND request_id <> $2
            ORDER BY voted_at
            LIMIT 2
            FOR UPDATE SKIP LOCKED
        )
    )
    SELECT product_id FROM review
"""


async def mark_helpful(pool: asyncpg.Pool, review_id: int, request_id: str) -> int:
    """Count request `request_id`'s helpful vote for the review, once, and notify every replica
    (atelier_api/changes.py), a replay too; returns the review's product.

    Raises ReviewNotFound (and records nothing) when there is no such review.
    """
    async with pool.acquire() as conn:
        product_id: int | None = await conn.fetchval(MARK_HELPFUL, review_id, request_id, VOTE_RETENTION)
        if product_id is None:
            raise ReviewNotFound(review_id)
        await changes.notify(pool, conn, product_id, summary=False)  # a vote moves no summary
    return product_id
