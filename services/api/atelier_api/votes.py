"""Helpful votes, counted exactly once per request.

nginx passes a request to the next replica when one fails (proxy_next_upstream), and it sends the same
X-Request-Id to every replica it tries. A replica may have counted the vote and died before answering,
so the vote is keyed by its request id: the first time an id votes for a review, the vote is recorded
in `helpful_votes` and counted, in one statement (so one transaction); the same id again is a replay,
acknowledged (204) and not counted. A client that retries with its own X-Request-Id gets the same rule.
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
        SELECT id FROM reviews WHERE id = $1
    ), vote AS (
        INSERT INTO helpful_votes (request_id, review_id)
        SELECT $2, id FROM review
        ON CONFLICT (request_id, review_id) DO UPDATE SET voted_at = excluded.voted_at
        WHERE helpful_votes.voted_at < now() - $3::interval
        RETURNING review_id
    ), counted AS (
        UPDATE reviews SET helpfulness = helpfulness + (helpfulness < 2147483647)::int
        WHERE id IN (SELECT review_id FROM vote)
        RETURNING product_id
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
    SELECT
        EXISTS (SELECT FROM review) AS found,
        (SELECT product_id FROM counted) AS counted_for
"""


async def mark_helpful(pool: asyncpg.Pool, review_id: int, request_id: str) -> int | None:
    """Count request `request_id`'s helpful vote for the review, once. Returns the review's product when
    the vote was counted (and notified, atelier_api/changes.py), None when it was counted before.

    Raises ReviewNotFound (and records nothing) when there is no such review.
    """
    async with pool.acquire() as conn:
        outcome = await conn.fetchrow(MARK_HELPFUL, review_id, request_id, VOTE_RETENTION)
        if not outcome["found"]:
            raise ReviewNotFound(review_id)
        counted_for: int | None = outcome["counted_for"]
        if counted_for is not None:
            await changes.notify(pool, conn, counted_for, summary=False)  # a vote moves no summary
    return counted_for
