"""PUT helpful counts exactly once per request id, and PUT report moves the summaries exactly once, however
many requests run at the same time (services/api/atelier_api/votes.py)."""

from __future__ import annotations

import asyncio
from datetime import timedelta

import asyncpg
from aiohttp import web
from aiohttp.test_utils import TestClient

from atelier_api.votes import VOTE_RETENTION
from tests.api import factories

Client = TestClient[web.Request, web.Application]

CONCURRENT_VOTES = 300


async def helpfulness(db: asyncpg.Connection, review_id: int) -> int:
    return await db.fetchval("SELECT helpfulness FROM reviews WHERE id = $1", review_id)  # type: ignore[no-any-return]


async def vote(client: Client, review_id: int, request_id: str | None = None, path: str = "helpful") -> int:
    headers = {"X-Request-Id": request_id} if request_id else {}
    response = await client.put(f"/reviews/{review_id}/{path}", headers=headers)
    await response.read()
    if request_id:
        assert response.headers["X-Request-Id"] == request_id
    return response.status


async def test_a_replayed_request_id_counts_once(client: Client, db: asyncpg.Connection) -> None:
    review_id = await factories.review(db, 1, helpfulness=7)

    assert await vote(client, review_id, "vote-1") == 204
    assert await vote(client, review_id, "vote-1") == 204  # nginx's retry on another replica, or the client's
    assert await vote(client, review_id, "vote-1", path="helpful/") == 204  # the same vote at the alias

    assert await helpfulness(db, review_id) == 8
    assert await db.fetchval("SELECT count(*) FROM helpful_votes WHERE request_id = 'vote-1'") == 1


async def test_other_ids_and_other_reviews_count(client: Client, db: asyncpg.Connection) -> None:
    first = await factories.review(db, 1)
    second = await factories.review(db, 1)

    for request_id in ("a", "b", "c"):
        assert await vote(client, first, request_id) == 204
    assert await vote(client, second, "a") == 204  # the same id for another review is another vote
    assert await vote(client, first) == 204  # no id: the API makes a new one, so it always counts
    assert await vote(client, first) == 204

    assert (await helpfulness(db, first), await helpfulness(db, second)) == (5, 1)


async def test_an_unknown_review_records_no_vote(client: Client, db: asyncpg.Connection) -> None:
    review_id = await factories.review(db, 1)

    assert await vote(client, review_id + 1, "lost") == 404
    assert await db.fetchval("SELECT count(*) FROM helpful_votes") == 0
    assert await vote(client, review_id, "lost") == 204  # the id was not used up by the 404
    assert await helpfulness(db, review_id) == 1


async def test_concurrent_votes_are_exact(client: Client, db: asyncpg.Connection) -> None:
    """Distinct ids all count; each id sent twice at once (a retry racing the first) counts once."""
    review_id = await factories.review(db, 1)
    request_ids = [f"concurrent-{n}" for n in range(CONCURRENT_VOTES)]

    async with asyncio.timeout(60):
        statuses = await asyncio.gather(*(vote(client, review_id, rid) for rid in request_ids + request_ids))

    assert statuses == [204] * (2 * CONCURRENT_VOTES)
    assert await helpfulness(db, review_id) == CONCURRENT_VOTES
    assert await db.fetchval("SELECT count(*) FROM helpful_votes") == CONCURRENT_VOTES


async def test_votes_expire_after_the_retention(client: Client, db: asyncpg.Connection) -> None:
    review_id = await factories.review(db, 1)
    assert await vote(client, review_id, "yesterday") == 204
    expired = f"now() - interval '{int(VOTE_RETENTION.total_seconds()) + 60} seconds'"
    await db.execute(f"UPDATE helpful_votes SET voted_at = {expired}")
    await db.execute(
        f"INSERT INTO helpful_votes (request_id, review_id, voted_at) SELECT 'old-' || n, $1, {expired} "
        "FROM generate_series(1, 5) AS n",
        review_id,
    )

    # An expired id is no longer remembered: it counts again, and is remembered anew.
    assert await vote(client, review_id, "yesterday") == 204
    assert await helpfulness(db, review_id) == 2
    assert await vote(client, review_id, "yesterday") == 204
    assert await helpfulness(db, review_id) == 2

    # Each vote deletes up to two expired ones: the table does not keep what it no longer needs.
    for n in range(3):
        assert await vote(client, review_id, f"fresh-{n}") == 204
    remembered = await db.fetch(
        "SELECT request_id FROM helpful_votes WHERE voted_at >= now() - $1::interval ORDER BY request_id",
        VOTE_RETENTION,
    )
    assert [row["request_id"] for row in remembered] == ["fresh-0", "fresh-1", "fresh-2", "yesterday"]
    assert await db.fetchval("SELECT count(*) FROM helpful_votes") == 4
    assert await db.fetchval("SELECT max(voted_at) - min(voted_at) FROM helpful_votes") < timedelta(hours=1)


async def test_concurrent_reports_move_the_summaries_once(client: Client, db: asyncpg.Connection) -> None:
    quality = await factories.characteristic(db, 9, "Quality")
    kept = await factories.review(db, 9, rating=5, recommend=True)
    reported = await factories.review(db, 9, rating=2, recommend=False)
    await factories.characteristic_rating(db, quality, kept, 4)
    await factories.characteristic_rating(db, quality, reported, 1)

    async with asyncio.timeout(60):
        statuses = await asyncio.gather(
            *(vote(client, reported, f"report-{n}", "report") for n in range(100))
        )
    assert statuses == [204] * 100

    response = await client.get("/reviews/meta", params={"product_id": "9"})
    assert await response.json() == {
        "product_id": "9",
        "ratings": {"5": "1"},
        "recommended": {"false": "0", "true": "1"},
        "characteristics": {"Quality": {"id": quality, "value": "4.0000000000000000"}},
    }
    assert await db.fetchval("SELECT count(*) FROM reviews WHERE reported") == 1
    assert await vote(client, reported, "report-again", "report") == 204  # a one-way flag: still 204
