"""Exact counters through the local stack: helpful votes through nginx while a replica is SIGKILLed or
after one counted a vote and failed to answer, and Idempotency-Key retries through nginx. nginx passes a
failed PUT helpful to the next replica with the same X-Balancer-Request-Id (its own id of the client's
request), and the API counts a vote once per such id (services/api/atelier_api/votes.py). That a client's
own ids never merge its votes is checked in balanced.py, against both stacks."""

from __future__ import annotations

import asyncio
import signal
from collections.abc import AsyncIterator

import aiohttp
import asyncpg
import pytest
from aiohttp import web

from tests.e2e.balanced import GENERATED_ID, new_review
from tests.e2e.conftest import LocalStack, nginx_in_front

VICTIM = "api-3"
VOTES = 1_000
WORKERS = 50
KILL_AFTER = 300  # votes answered before the victim is killed: mid-run
# What a replica that counts a vote then fails passes on of the request nginx sent it.
FORWARDED = ("X-Request-Id", "X-Balancer-Request-Id")


@pytest.fixture
async def http(local_stack: LocalStack):
    # One connection per worker, so nginx sees 50 requests at once.
    async with aiohttp.ClientSession(
        local_stack.url, connector=aiohttp.TCPConnector(limit=WORKERS)
    ) as session:
        yield session


@pytest.fixture
async def review_id(http: aiohttp.ClientSession) -> int:
    """A new review of product 1 (every generated export gives it characteristics)."""
    async with http.get("/reviews/meta", params={"product_id": 1}) as r:
        meta = await r.json()
    product = {"id": 1, "characteristics": [c["id"] for c in meta["characteristics"].values()]}
    async with http.post("/reviews", json=new_review(product, summary="Exact counters")) as r:
        assert r.status == 201, await r.text()
        return int(r.headers["Location"].removeprefix("/reviews/"))


async def helpfulness(local_stack: LocalStack, review_id: int) -> int:
    conn = await asyncpg.connect(local_stack.database_url)
    try:
        return await conn.fetchval("SELECT helpfulness FROM reviews WHERE id = $1", review_id)  # type: ignore[no-any-return]
    finally:
        await conn.close()


async def test_1000_concurrent_votes_count_exactly_while_a_replica_is_killed(
    local_stack: LocalStack, http: aiohttp.ClientSession, review_id: int
) -> None:
    before = await helpfulness(local_stack, review_id)
    statuses: list[int] = []
    upstreams: list[str] = []  # nginx's X-Upstream: every replica tried, comma-separated
    victim = local_stack.replicas[VICTIM]
    queue = iter(range(VOTES))

    async def worker() -> None:
        for _ in queue:  # shared: 1,000 votes in all
            async with http.put(f"/reviews/{review_id}/helpful") as r:
                await r.read()
                statuses.append(r.status)
                upstreams.append(r.headers.get("X-Upstream", ""))

    workers = [asyncio.create_task(worker()) for _ in range(WORKERS)]
    try:
        async with asyncio.timeout(60):
            while len(statuses) < KILL_AFTER:
                await asyncio.sleep(0.005)
        victim.send_signal(signal.SIGKILL)
        await asyncio.to_thread(victim.wait, 10)
        await asyncio.wait_for(asyncio.gather(*workers), timeout=120)
    finally:
        for task in workers:
            task.cancel()
        if local_stack.replicas[VICTIM].poll() is not None:
            await asyncio.to_thread(local_stack.restart_replica, VICTIM)

    retried = sum("," in upstream for upstream in upstreams)
    print(
        f"\n{VOTES} votes, {WORKERS} workers: {retried} passed to another replica after {VICTIM} was killed"
    )
    assert len(statuses) == VOTES
    assert {status: statuses.count(status) for status in set(statuses)} == {204: VOTES}
    assert retried > 0, "no vote was retried on another replica: the kill did not land mid-run"
    assert await helpfulness(local_stack, review_id) == before + VOTES


@pytest.fixture
async def counts_then_fails(local_stack: LocalStack) -> AsyncIterator[tuple[int, list[str]]]:
    """A replica that counts a vote and dies before answering, every time: it passes the request to a real
    replica with the headers nginx set, then answers 502 (nginx then tries the next replica). Its port, and
    the X-Balancer-Request-Id of each request it passed on."""
    real = f"http://127.0.0.1:{local_stack.replica_ports['api-1']}"
    passed_on: list[str] = []

    async def count_then_fail(request: web.Request) -> web.Response:
        headers = {name: request.headers[name] for name in FORWARDED if name in request.headers}
        passed_on.append(headers.get("X-Balancer-Request-Id", ""))
        async with aiohttp.ClientSession() as session:
            async with session.request(request.method, real + request.path_qs, headers=headers) as r:
                assert r.status == 204, await r.text()
        return web.Response(status=502)

    app = web.Application()
    app.router.add_route("*", "/{path:.*}", count_then_fail)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    try:
        yield runner.addresses[0][1], passed_on
    finally:
        await runner.cleanup()


async def test_a_vote_counted_by_a_replica_that_failed_to_answer_is_not_counted_again(
    local_stack: LocalStack,
    tmp_path_factory: pytest.TempPathFactory,
    counts_then_fails: tuple[int, list[str]],
    review_id: int,
) -> None:
    """What nginx's retry of a vote meets when a replica dies between its commit and its answer, made
    certain: each vote nginx sends first to `counts_then_fails` is counted there, then tried again on the
    real replica with the same X-Balancer-Request-Id, which acknowledges it without counting it again.
    Without a failure first, a vote goes to the real replica alone: counted once either way."""
    failing_port, passed_on = counts_then_fails
    before = await helpfulness(local_stack, review_id)
    prefix = tmp_path_factory.mktemp("nginx-counts-then-fails")
    upstreams = []
    with nginx_in_front([failing_port, local_stack.replica_ports["api-2"]], prefix) as port:
        async with aiohttp.ClientSession(f"http://127.0.0.1:{port}") as http:
            # least_conn takes the two in turn, so one of the first two votes meets the failure (after
            # it, nginx leaves that replica out for fail_timeout). The same client id each time: a vote each.
            for _ in range(4):
                headers = {"X-Request-Id": "e2e-retried-vote"}
                async with http.put(f"/reviews/{review_id}/helpful", headers=headers) as r:
                    assert r.status == 204, await r.text()
                    upstreams.append(r.headers["X-Upstream"])
    retried = [upstream for upstream in upstreams if "," in upstream]
    assert retried and len(retried) == len(passed_on), (upstreams, passed_on)
    assert all(GENERATED_ID.fullmatch(balancer_id) for balancer_id in passed_on), passed_on
    assert await helpfulness(local_stack, review_id) == before + len(upstreams)


async def test_idempotency_key_through_the_balancer(
    local_stack: LocalStack, http: aiohttp.ClientSession
) -> None:
    """Concurrent retries of one keyed POST reach several replicas: one review, the others replay or 409."""
    async with http.get("/reviews/meta", params={"product_id": 2}) as r:
        meta = await r.json()
    product = {"id": 2, "characteristics": [c["id"] for c in meta["characteristics"].values()]}
    body = new_review(product, summary="Posted once")
    headers = {"Idempotency-Key": "e2e-order-1"}

    async def post() -> tuple[int, str | None, str | None]:
        async with http.post("/reviews", json=body, headers=headers) as r:
            await r.read()
            return r.status, r.headers.get("Location"), r.headers.get("Idempotent-Replayed")

    async with asyncio.timeout(30):
        answers = await asyncio.gather(*(post() for _ in range(20)))
        answers.append(await post())  # after all of them: a replay
    assert {status for status, _, _ in answers} <= {201, 409}, answers
    created = [(location, replayed) for status, location, replayed in answers if status == 201]
    assert [replayed for _, replayed in created].count(None) == 1
    assert len({location for location, _ in created}) == 1 and answers[-1][2] == "true"

    conn = await asyncpg.connect(local_stack.database_url)
    try:
        assert await conn.fetchval("SELECT count(*) FROM reviews WHERE summary = 'Posted once'") == 1
    finally:
        await conn.close()
