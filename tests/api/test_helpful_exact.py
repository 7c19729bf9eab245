"""PUT helpful adds one per request, counted once however many replicas nginx tries for it (one balancer
request id), and PUT report moves the summaries exactly once, however many requests run at the same time
(services/api/atelier_api/votes.py)."""

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
# What nginx names its own id of a client request (services/nginx/templates/default.conf.template).
BALANCER_REQUEST_ID = "X-Balancer-Request-Id"


async def helpfulness(db: asyncpg.Connection, review_id: int) -> int:
    return await db.fetchval("SELECT helpfulness FROM reviews WHERE id = $1", review_id)  # type: ignore[no-any-return]


async def vote(
    client: Client,
    review_id: int,
    balancer_id: str | None = None,
    path: str = "helpful",
    *,
    request_id: str | None = None,
) -> int:
    """PUT .../helpful (or `path`) as nginx sends it: `balancer_id` is its id of the client's request, the
    same for every replica it tries; `request_id` the client's own X-Request-Id."""
    headers = {BALANCER_REQUEST_ID: balancer_id} if balancer_id else {}
    if request_id:
        headers["X-Request-Id"] = request_id
    response = await client.put(f"/reviews/{review_id}/{path}", headers=headers)
    await response.read()
    if request_id:
        assert response.headers["X-Request-Id"] == request_id  # the client's, for its logs
    return response.status


async def test_the_same_client_request_id_counts_every_time(client: Client, db: asyncpg.Connection) -> None:
    """The contract: `helpful` adds one. A client's X-Request-Id names its request in the logs; a client
    that reuses one (a fixed id per page, say) still casts a vote each time."""
    review_id = await factories.review(db, 1, helpfulness=7)

    for path in ("helpful", "helpful", "helpful/"):
        assert await vote(client, review_id, path=path, request_id="vote-1") == 204

    assert await helpfulness(db, review_id) == 10
    # Nothing recorded: without nginx's id there is no retry to recognise.
    assert await db.fetchval("SELECT count(*) FROM helpful_votes") == 0


async def test_a_retried_balancer_request_counts_once(client: Client, db: asyncpg.Connection) -> None:
    """nginx passes a failed PUT to the next replica with the same balancer id: counted once."""
    review_id = await factories.review(db, 1, helpfulness=7)

    assert await vote(client, review_id, "balancer-1", request_id="client-a") == 204
    assert await vote(client, review_id, "balancer-1", request_id="client-a") == 204  # the retry
    assert await vote(client, review_id, "balancer-1", path="helpful/") == 204  # the same vote at the alias

    assert await helpfulness(db, review_id) == 8
    assert await db.fetchval("SELECT count(*) FROM helpful_votes WHERE request_id = 'balancer-1'") == 1


async def test_a_balancer_id_that_is_not_a_plain_token_is_ignored(
    client: Client, db: asyncpg.Connection
) -> None:
    review_id = await factories.review(db, 1)

    for balancer_id in ("x" * 65, "not a token", "x" * 65):
        assert await vote(client, review_id, balancer_id) == 204

    assert await helpfulness(db, review_id) == 3
    assert await db.fetchval("SELECT count(*) FROM helpful_votes") == 0


async def test_other_ids_and_other_reviews_count(client: Client, db: asyncpg.Connection) -> None:
    first = await factories.review(db, 1)
    second = await factories.review(db, 1)

    for balancer_id in ("a", "b", "c"):
        assert await vote(client, first, balancer_id) == 204
    assert await vote(client, second, "a") == 204  # the same id for another review is another vote
    assert await vote(client, first) == 204  # no balancer id (a replica reached directly): always counts
    assert await vote(client, first) == 204

    assert (await helpfulness(db, first), await helpfulness(db, second)) == (5, 1)


async def test_an_unknown_review_records_no_vote(client: Client, db: asyncpg.Connection) -> None:
    review_id = await factories.review(db, 1)

    assert await vote(client, review_id + 1, "lost") == 404
    assert await db.fetchval("SELECT count(*) FROM helpful_votes") == 0
    assert await vote(client, review_id, "lost") == 204  # the id was not used up by the 404
    assert await helpfulness(db, review_id) == 1


async def test_concurrent_votes_are_exact(client: Client, db: asyncpg.Connection) -> None:
    """Distinct balancer ids all count; each sent twice at once (a retry racing the first) counts once."""
    review_id = await factories.review(db, 1)
    balancer_ids = [f"concurrent-{n}" for n in range(CONCURRENT_VOTES)]

    async with asyncio.timeout(60):
        statuses = await asyncio.gather(*(vote(client, review_id, i) for i in balancer_ids + balancer_ids))

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
            *(vote(client, reported, path="report", request_id=f"report-{n}") for n in range(100))
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
    # A one-way flag: still 204.
    assert await vote(client, reported, path="report", request_id="report-again") == 204
