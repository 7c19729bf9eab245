"""Helpful votes: each PUT adds one, and nginx's retry of it on another replica adds nothing more.

nginx passes a request to the next replica when one fails (proxy_next_upstream); a replica may have
counted the vote and died before answering. So nginx sends its own id of each client request in a header
of its own (BALANCER_REQUEST_ID: it replaces any value a client sent, and is the same for every replica it
tries for that request), and a vote that carries one is keyed by it: the first time the id votes for a
review, the vote is recorded in `helpful_votes` and counted, in one statement (so one transaction); the
same id again is nginx's retry, acknowledged (204) and not counted. The client's X-Request-Id names the
request in logs and responses only: a client that sends the same one twice votes twice, as the contract
says (`helpful` adds one). A vote without the header (a replica reached directly) always counts.
A replay notifies the change again (changes.notify): the replica that counted the vote may have died
between its commit and its notification, which is when nginx retries, and the caches must still hear of it.
Recorded votes expire after VOTE_RETENTION (services/postgres/04-requests.sql).
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import timedelta

import asyncpg

from atelier_api import changes
from atelier_api.errors import ReviewNotFound
from atelier_api.observability import PLAIN_TOKEN

VOTE_RETENTION = timedelta(hours=24)
# nginx's id of the client request ($request_id, 32 hex digits); nginx replaces any a client sends
# (services/nginx/templates/default.conf.template).
BALANCER_REQUEST_ID = "X-Balancer-Request-Id"

# `vote` records nothing for an unknown review, nor for a balancer request id recorded for it within the
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
# A vote no balancer named (a replica reached directly): no retry will come with its id, so it is
# counted and nothing is recorded, saturating as above.
COUNT_HELPFUL = """
    UPDATE reviews SET helpfulness = helpfulness + (helpfulness < 2147483647)::int
    WHERE id = $1
    RETURNING product_id
"""


def balancer_request_id(headers: Mapping[str, str]) -> str | None:
    """nginx's id of the request, or None without one (a header that is not a plain token is none)."""
    given = headers.get(BALANCER_REQUEST_ID, "")
    return given if PLAIN_TOKEN.fullmatch(given) else None


async def mark_helpful(pool: asyncpg.Pool, review_id: int, balancer_id: str | None) -> int:
    """Count a helpful vote for the review, once per balancer request id when there is one, and notify
    every replica (atelier_api/changes.py), a replay too; returns the review's product.

    Raises ReviewNotFound (and records nothing) when there is no such review.
    """
    async with pool.acquire() as conn:
        if balancer_id is None:
            product_id: int | None = await conn.fetchval(COUNT_HELPFUL, review_id)
        else:
            product_id = await conn.fetchval(MARK_HELPFUL, review_id, balancer_id, VOTE_RETENTION)
        if product_id is None:
            raise ReviewNotFound(review_id)
        await changes.notify(pool, conn, product_id, summary=False)  # a vote moves no summary
    return product_id
