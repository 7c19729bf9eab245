"""End to end through the load balancer: real nginx, three real API processes, one real PostgreSQL,
data loaded by the real loader from a generated export."""

from __future__ import annotations

import asyncio
import signal

import aiohttp
import asyncpg
import pytest

from tests.e2e.conftest import LocalStack


@pytest.fixture
async def http(local_stack: LocalStack):
    async with aiohttp.ClientSession(local_stack.url) as session:
        yield session


@pytest.fixture
async def product(local_stack: LocalStack) -> dict:
    """A product with reviews and characteristics, from the loaded data."""
    conn = await asyncpg.connect(local_stack.database_url)
    try:
        row = await conn.fetchrow(
            "SELECT r.product_id, count(*) AS reviews FROM reviews r WHERE NOT r.reported "
            "AND EXISTS (SELECT 1 FROM characteristics c WHERE c.product_id = r.product_id) "
            "GROUP BY r.product_id ORDER BY count(*) DESC, r.product_id LIMIT 1"
        )
        characteristic_ids = [
            r["id"]
            for r in await conn.fetch(
                "SELECT id FROM characteristics WHERE product_id = $1 ORDER BY id", row["product_id"]
            )
        ]
    finally:
        await conn.close()
    return {"id": row["product_id"], "reviews": row["reviews"], "characteristics": characteristic_ids}


def new_review(product: dict, **overrides) -> dict:
    return {
        "product_id": product["id"],
        "rating": 4,
        "summary": "Through the balancer",
        "body": "Posted end to end through nginx to one of three replicas; " * 2,
        "recommend": True,
        "name": "e2e",
        "email": "e2e@example.com",
        "photos": ["https://images.example/e2e.jpg"],
        "characteristics": {str(c): 3 for c in product["characteristics"]},
    } | overrides


def replica(response: aiohttp.ClientResponse) -> str:
    return response.headers["X-Upstream"].split(", ")[-1]


async def test_every_endpoint_works_through_the_balancer(http, product):
    async with http.get("/reviews", params={"product_id": product["id"], "count": 1000}) as r:
        assert r.status == 200
        listing = await r.json()
    assert listing["product"] == str(product["id"]) and len(listing["results"]) == product["reviews"]

    async with http.get("/reviews/meta/", params={"product_id": product["id"]}) as r:
        assert r.status == 200
        assert (await r.json())["product_id"] == str(product["id"])

    async with http.post("/reviews", json=new_review(product)) as r:
        assert r.status == 201 and await r.text() == "Created"
        review_id = int(r.headers["Location"].rsplit("/", 1)[1])

    async with http.put(f"/reviews/{review_id}/helpful") as r:
        assert r.status == 204
    async with http.put(f"/reviews/{review_id}/report") as r:
        assert r.status == 204
    async with http.put("/reviews/999999999/helpful") as r:
        assert r.status == 404 and "error" in await r.json()
    async with http.get("/reviews", params={"product_id": "hello"}) as r:
        assert r.status == 422
        assert (await r.json())["details"][0]["field"] == "product_id"
    async with http.delete("/reviews") as r:
        assert r.status == 405


async def test_requests_reach_all_three_replicas(http, local_stack, product):
    seen = set()
    for _ in range(30):
        async with http.get("/reviews/meta", params={"product_id": product["id"]}) as r:
            assert r.status == 200
            seen.add(replica(r))
    expected = {f"127.0.0.1:{port}" for port in local_stack.replica_ports.values()}
    assert seen == expected


async def test_a_write_through_one_replica_is_read_by_every_replica(http, local_stack, product):
    async with http.get("/reviews/meta", params={"product_id": product["id"]}) as r:
        before = await r.json()
    async with http.post("/reviews", json=new_review(product, rating=1)) as r:
        assert r.status == 201
        writer = replica(r)

    readers: dict[str, dict] = {}
    for _ in range(30):
        async with http.get("/reviews/meta", params={"product_id": product["id"]}) as r:
            readers[replica(r)] = await r.json()
    assert len(readers) == 3, f"written through {writer}, read through {sorted(readers)}"
    expected_ones = int(before["ratings"].get("1", "0")) + 1
    for meta in readers.values():
        assert meta["ratings"]["1"] == str(expected_ones)


async def test_killing_a_replica_while_requests_flow_fails_no_get(http, local_stack, product):
    victim = "api-2"
    statuses: list[int] = []

    async def reader(n: int) -> None:
        for _ in range(n):
            async with http.get("/reviews", params={"product_id": product["id"], "sort": "newest"}) as r:
                await r.read()
                statuses.append(r.status)

    readers = [asyncio.create_task(reader(60)) for _ in range(8)]
    while len(statuses) < 100:
        await asyncio.sleep(0.01)
    local_stack.replicas[victim].send_signal(signal.SIGKILL)
    try:
        await asyncio.wait_for(asyncio.gather(*readers), timeout=60)
        assert len(statuses) == 480
        assert set(statuses) == {200}, {s: statuses.count(s) for s in set(statuses)}
    finally:
        local_stack.replicas[victim].wait()
        local_stack.start_replica(victim, local_stack.replica_ports[victim])  # back for what runs next
        local_stack.wait_for_replicas()
