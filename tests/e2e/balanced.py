"""What every deployment of the service must do through its load balancer: nginx in front of three API
replicas over one PostgreSQL, loaded from a generated export. The same suite runs against the local
stack (tests/e2e/test_local_stack.py) and the compose stack (tests/containers/test_compose_stack.py):
each module subclasses `BalancedDeploymentSuite` and provides a `deployment` fixture."""

from __future__ import annotations

import asyncio
import re
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass

import aiohttp
import pytest

REPLICAS = 3
# How long after a write's response a replica may still serve the answer from before it: the time its
# change notification takes to arrive (milliseconds; see README "Caching"). Asserted through nginx.
STALENESS_BOUND = 0.5  # seconds
# How long nginx leaves a replica out after a failed request (max_fails=1 fail_timeout=2s in both
# nginx configurations).
NGINX_FAIL_TIMEOUT = 2  # seconds
# What nginx's $request_id looks like (and the API's own ids too): 32 hex digits.
GENERATED_ID = re.compile(r"[0-9a-f]{32}")


@dataclass
class Deployment:
    url: str  # nginx's published address
    stop_replica: Callable[[], None]  # takes one replica away, abruptly
    restore_replica: Callable[[], None]  # brings the deployment back to three replicas


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


async def described(http: aiohttp.ClientSession, product_id: int) -> tuple[dict, str] | None:
    """A product as new_review() takes it, and the replica that answered its summary; None when the
    product has no review or no characteristic."""
    async with http.get("/reviews/meta", params={"product_id": product_id}) as response:
        assert response.status == 200
        meta, replica = await response.json(), response.headers["X-Replica"]
    reviews = sum(int(count) for count in meta["ratings"].values())
    if not (reviews and meta["characteristics"]):
        return None
    characteristics = [c["id"] for c in meta["characteristics"].values()]
    return {"id": product_id, "reviews": reviews, "characteristics": characteristics}, replica


class BalancedDeploymentSuite:
    @pytest.fixture
    async def http(self, deployment: Deployment):
        async with aiohttp.ClientSession(deployment.url) as session:
            yield session

    @pytest.fixture
    async def product(self, http: aiohttp.ClientSession) -> dict:
        """Product 1, which every generated export gives reviews and characteristics."""
        found = await described(http, 1)
        assert found is not None
        return found[0]

    @pytest.fixture
    async def owned(self, http: aiohttp.ClientSession) -> dict[str, dict]:
        """A product with reviews and characteristics per replica, keyed by the replica that nginx sends
        its reads to (NGINX_READ_ROUTING=product, the default: a hash of the product id)."""
        products: dict[str, dict] = {}
        for product_id in range(1, 301):
            found = await described(http, product_id)
            if found is not None and found[1] not in products:
                products[found[1]] = found[0]
                if len(products) == REPLICAS:
                    return products
        raise AssertionError(f"products 1-300 reach only {sorted(products)}")

    async def test_every_endpoint_works_through_the_balancer(self, http, product):
        async with http.get("/reviews", params={"product_id": product["id"], "count": 1000}) as r:
            assert r.status == 200
            listing = await r.json()
        assert listing["product"] == str(product["id"]) and len(listing["results"]) == product["reviews"]

        async with http.get("/reviews/meta/", params={"product_id": product["id"]}) as r:
            assert r.status == 200
            assert (await r.json())["product_id"] == str(product["id"])

        async with http.post("/reviews", json=new_review(product)) as r:
            assert r.status == 201 and await r.text() == "Created"
            location = r.headers["Location"]
        async with http.get(location) as r:
            assert r.status == 200 and (await r.json())["summary"] == "Through the balancer"

        async with http.put(f"{location}/helpful") as r:
            assert r.status == 204
        async with http.put(f"{location}/report") as r:
            assert r.status == 204
        async with http.put("/reviews/999999999/helpful") as r:
            assert r.status == 404 and "error" in await r.json()
        async with http.get("/reviews", params={"product_id": "hello"}) as r:
            assert r.status == 422
            assert (await r.json())["details"][0]["field"] == "product_id"
        async with http.delete("/reviews") as r:
            assert r.status == 405 and "error" in await r.json()
        async with http.get("/healthz") as r:
            assert r.status == 200

    async def test_every_helpful_vote_counts_whatever_ids_the_client_sends(self, http, product):
        """`helpful` adds one per client request: a client's X-Request-Id only names the request (and
        comes back), and nginx replaces an X-Balancer-Request-Id a client sends with its own id of the
        request, which is what the replicas count a vote once by (nginx's retries, test_exact_counters)."""
        async with http.post("/reviews", json=new_review(product, summary="Voted thrice")) as r:
            assert r.status == 201
            location = r.headers["Location"]
        headers = {"X-Request-Id": "e2e-same-vote", "X-Balancer-Request-Id": "e2e-forged"}
        for _ in range(3):
            async with http.put(f"{location}/helpful", headers=headers) as r:
                assert r.status == 204 and r.headers["X-Request-Id"] == "e2e-same-vote"
        async with http.get(location) as r:
            assert (await r.json())["helpfulness"] == 3

    async def test_a_compressible_answer_varies_by_accept_encoding(self, http):
        """nginx gzips answers of 1 KB or more for the clients that ask; `Cache-Control: public` lets a
        shared cache keep them, which must then not hand the gzipped bytes to a client that did not ask."""
        batch = {"product_ids": ",".join(str(i) for i in range(1, 101))}
        for accept, encoding in [("gzip", "gzip"), ("identity", None)]:
            headers = {"Accept-Encoding": accept}
            request = http.get("/reviews/meta/batch", params=batch, headers=headers, auto_decompress=False)
            async with request as r:
                assert r.status == 200 and r.headers.get("Content-Encoding") == encoding, r.headers
                assert "Accept-Encoding" in r.headers.get("Vary", ""), r.headers
                etag = r.headers["ETag"]
            # Revalidated, the 304 says the same (RFC 9110 15.4.5): a cache that refreshes its stored
            # answer from the 304's headers keeps telling the two forms apart.
            headers["If-None-Match"] = etag
            async with http.get("/reviews/meta/batch", params=batch, headers=headers) as r:
                assert r.status == 304, r.status
                assert r.headers.get("Vary") == "Accept-Encoding", r.headers

    async def test_every_response_carries_a_request_id_nginx_made_or_the_clients_own(self, http):
        generated = []
        for path in ("/healthz", "/reviews?product_id=hello", "/nowhere"):
            async with http.get(path) as r:
                generated.append(r.headers["X-Request-Id"])
        assert all(GENERATED_ID.fullmatch(request_id) for request_id in generated), generated
        assert len(set(generated)) == len(generated)

        for path, status in [("/healthz", 200), ("/reviews?product_id=hello", 422), ("/nowhere", 404)]:
            async with http.get(path, headers={"X-Request-Id": "e2e-client.id_1"}) as r:
                assert r.status == status
                assert r.headers["X-Request-Id"] == "e2e-client.id_1", path
        async with http.get("/healthz", headers={"X-Request-Id": "not a plain token"}) as r:
            assert GENERATED_ID.fullmatch(r.headers["X-Request-Id"])

    async def test_metrics_are_not_public_through_nginx_by_default(self, http):
        async with http.get("/metrics") as r:
            assert r.status == 403
            assert await r.json() == {"error": "forbidden", "details": []}
            # nginx answered alone (no replica saw the request), so nginx made this id.
            assert GENERATED_ID.fullmatch(r.headers["X-Request-Id"])
            assert "X-Replica" not in r.headers
        async with http.get("/metrics", headers={"X-Request-Id": "e2e-scrape"}) as r:
            assert r.status == 403 and r.headers["X-Request-Id"] == "e2e-scrape"
        for alias in ("/metrics/", "/metrics?x=1", "/%6detrics"):  # the replicas answer each as /metrics
            async with http.get(alias) as r:
                assert r.status == 403 and "X-Replica" not in r.headers, alias

    async def test_replicas_are_ready_behind_the_balancer(self, http):
        for _ in range(REPLICAS):
            async with http.get("/readyz") as r:
                assert r.status == 200 and await r.json() == {"status": "ready"}

    async def test_requests_reach_all_three_replicas(self, http, product):
        """nginx spreads requests that name no product (here a batch of summaries) over every replica.
        One that just failed a request is left out for fail_timeout (2 s; a busy CI machine can make a
        replica miss one), so this keeps asking, 30 requests at a time, for a bounded while longer."""
        served_by: list[str] = []
        deadline = asyncio.get_running_loop().time() + NGINX_FAIL_TIMEOUT * 3
        while len(set(served_by)) < REPLICAS and asyncio.get_running_loop().time() < deadline:
            for _ in range(30):
                async with http.get("/reviews/meta/batch", params={"product_ids": product["id"]}) as r:
                    assert r.status == 200
                    served_by.append(r.headers["X-Replica"])
            await asyncio.sleep(0.2)
        counts = {name: served_by.count(name) for name in set(served_by)}
        assert len(counts) == REPLICAS, counts

    async def test_a_products_reads_go_to_one_replica_and_products_to_all_three(self, http):
        """Every GET of a product's reviews or summary goes to the same replica, which alone then reads
        and caches it, and products spread over all three. A replica left out for fail_timeout after a
        missed request moves its products for that while, so a round that saw a product on two replicas
        is tried again after it (at most three rounds)."""
        paths = [
            ("/reviews/meta", {}),
            ("/reviews", {"sort": "newest"}),
            ("/reviews", {"sort": "helpful", "count": "20"}),
            ("/reviews/meta/", {}),
        ]
        for _ in range(3):
            served_by: dict[int, set[str]] = {}
            for product_id in range(1, 31):
                for path, params in paths:
                    async with http.get(path, params={"product_id": product_id} | params) as r:
                        assert r.status == 200
                        served_by.setdefault(product_id, set()).add(r.headers["X-Replica"])
            if all(len(replicas) == 1 for replicas in served_by.values()):
                break
            await asyncio.sleep(NGINX_FAIL_TIMEOUT)
        assert all(len(replicas) == 1 for replicas in served_by.values()), served_by
        assert len(set().union(*served_by.values())) == REPLICAS, served_by

    async def test_after_a_write_no_replica_serves_the_old_answer_beyond_the_bound(self, http, owned):
        """Every replica caches GET answers; a write's notification (LISTEN/NOTIFY) makes each one drop
        them. From the write's response on, an old answer may come back only within STALENESS_BOUND.
        One product per replica (nginx sends a product's reads to one replica), each read as its summary
        and its newest review, which its own replica caches, and the three in one batch of summaries,
        which any replica answers: every replica holds every product's summary, and one product's
        reviews. (The batch key is product 0: it is every product's.)"""
        product_ids = [product["id"] for product in owned.values()]
        reads: dict[tuple[str, int], tuple[str, dict]] = {}
        for pid in product_ids:
            reads["meta", pid] = ("/reviews/meta", {"product_id": pid})
            reads["newest", pid] = ("/reviews", {"product_id": pid, "sort": "newest", "count": 1})
        reads["batch", 0] = ("/reviews/meta/batch", {"product_ids": ",".join(map(str, product_ids))})

        def cached_everywhere(cached_on: dict[tuple[str, int], set[str]]) -> bool:
            return all(len(cached_on[key]) >= (REPLICAS if key[0] == "batch" else 1) for key in reads)

        old: dict[tuple[str, int], tuple[str, dict]] = {}  # the answers the replicas have cached
        cached_on: dict[tuple[str, int], set[str]] = {key: set() for key in reads}
        for _ in range(300):
            for key, (path, params) in reads.items():
                async with http.get(path, params=params) as r:
                    assert r.status == 200
                    old[key] = (r.headers["ETag"], await r.json())
                    if r.headers["X-Cache"] == "hit":
                        cached_on[key].add(r.headers["X-Replica"])
            if cached_everywhere(cached_on):
                break
        assert cached_everywhere(cached_on), cached_on

        loop = asyncio.get_running_loop()
        acknowledged: dict[int, float] = {}
        new_ids: dict[int, int] = {}
        for product in owned.values():
            async with http.post("/reviews", json=new_review(product, rating=1)) as r:
                assert r.status == 201
                new_ids[product["id"]] = int(r.headers["Location"].rsplit("/", 1)[1])
            acknowledged[product["id"]] = loop.time()
        acknowledged[0] = max(acknowledged.values())  # the batch's: the last of the three writes
        ones = {pid: str(int(old["meta", pid][1]["ratings"].get("1", "0")) + 1) for pid in new_ids}

        def fresh(kind: str, pid: int, body: dict) -> bool:
            if kind == "meta":
                return bool(body["ratings"].get("1") == ones[pid])
            if kind == "batch":
                return all(m["ratings"].get("1") == ones[int(m["product_id"])] for m in body["results"])
            return bool(body["results"][0]["review_id"] == new_ids[pid])

        # (seconds after the product's write was acknowledged, replica, fresh); the old ETag is sent, so
        # an old answer comes back as 304 and a new one as 200 with its body.
        seen: list[tuple[float, str, bool]] = []
        for _ in range(20_000):  # until the window ends (cached answers come fast); a count bound too
            for (kind, pid), (path, params) in reads.items():
                headers = {"If-None-Match": old[kind, pid][0]}
                async with http.get(path, params=params, headers=headers) as r:
                    assert r.status in (200, 304)
                    is_fresh = r.status == 200 and fresh(kind, pid, await r.json())
                    seen.append((loop.time() - acknowledged[pid], r.headers["X-Replica"], is_fresh))
            if loop.time() - max(acknowledged.values()) > STALENESS_BOUND + 0.5:
                break
        stale_after_bound = [entry for entry in seen if entry[0] > STALENESS_BOUND and not entry[2]]
        assert not stale_after_bound, stale_after_bound
        assert {replica for after, replica, _ in seen if after > STALENESS_BOUND} == set(owned)
        stale = [after for after, _, is_fresh in seen if not is_fresh]
        print(
            f"old answers after the write: {len(stale)}, the last {max(stale, default=0) * 1000:.1f} ms after"
        )

    async def test_taking_a_replica_away_while_requests_flow_fails_no_get(self, http, deployment, owned):
        """Whichever replica goes, one of these products is its own: nginx passes that product's reads
        to the next replica on its ring, and the others' reads stay where they were. The readers keep
        going until every product has been read many times after the replica was gone."""
        statuses: list[int] = []
        failures: list[tuple] = []
        after_stop: list[tuple[int, str]] = []  # (product, replica) of reads sent once it was gone
        product_ids = [product["id"] for product in owned.values()]
        stopped, done = asyncio.Event(), asyncio.Event()

        async def reader(first: int) -> None:
            i = first
            while not done.is_set():
                product_id = product_ids[i % len(product_ids)]
                sent_after_stop = stopped.is_set()
                async with http.get("/reviews", params={"product_id": product_id, "sort": "newest"}) as r:
                    body = await r.read()
                    statuses.append(r.status)
                    if r.status != 200:
                        served_by = r.headers.get("X-Replica"), r.headers.get("X-Upstream")
                        failures.append((r.status, *served_by, body[:100]))
                    elif sent_after_stop:
                        after_stop.append((product_id, r.headers["X-Replica"]))
                i += 1

        readers = [asyncio.create_task(reader(n)) for n in range(8)]
        try:
            async with asyncio.timeout(30):
                while len(statuses) < 100:
                    await asyncio.sleep(0.01)
            await asyncio.to_thread(deployment.stop_replica)
            stopped.set()
            async with asyncio.timeout(60):
                while len(after_stop) < 80 * len(product_ids) and not failures:
                    await asyncio.sleep(0.01)
            done.set()
            await asyncio.wait_for(asyncio.gather(*readers), timeout=30)
        finally:
            for task in readers:
                task.cancel()
            await asyncio.to_thread(deployment.restore_replica)
        assert not failures, failures
        assert {product for product, _ in after_stop} == set(product_ids)
        # The stopped replica's product went to another one: the two left served all three products.
        assert len({replica for _, replica in after_stop}) == REPLICAS - 1, Counter(after_stop)

    async def test_nginx_limits_answer_in_the_json_error_shape(self, http):
        async with http.get("/reviews", params={"product_id": "1", "rating": "4," * 6000}) as r:
            assert r.status == 414 and r.content_type == "application/json"
            assert (await r.json())["error"] == "request line too long" and r.headers["X-Request-Id"]
        async with http.post(
            "/reviews", data=b"{" + b" " * 200_000 + b"}", headers={"Content-Type": "application/json"}
        ) as r:
            assert r.status == 413 and (await r.json())["error"] == "request body too large"
