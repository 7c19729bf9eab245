"""The product summaries are exact (issue 7).

A real export (dirty rows and reported reviews included) is generated and loaded with the real commands;
`atelier-verify` then recomputes every summary with GROUP BY and must find 0 differences, after the load
and after many concurrent mixed writes through two apps (two replicas) on the same database. What
GET /reviews/meta serves is also compared with the contract's own computation, and verify is shown to
catch a difference and repair it.
"""

from __future__ import annotations

import asyncio
import json
import random
import subprocess
from collections.abc import Callable
from typing import Any

import asyncpg
import pytest
from aiohttp.test_utils import TestClient
from pytest_aiohttp import AiohttpClient

from atelier_api.app import create_app
from atelier_api.changes import CHANNEL
from atelier_api.config import Config
from atelier_etl import verify as verify_module
from tests.api.factories import review_body
from tests.conftest import BIN, generate_and_load

PRODUCTS = 400

# The contract's definition of the meta figures, straight from the stored reviews.
CONTRACT_RATINGS = """
    SELECT product_id, rating, count(*) AS reviews FROM reviews
    WHERE NOT reported AND product_id = any($1::int[]) GROUP BY product_id, rating
"""
CONTRACT_RECOMMENDED = """
    SELECT product_id, recommend, count(*) AS reviews FROM reviews
    WHERE NOT reported AND product_id = any($1::int[]) GROUP BY product_id, recommend
"""
CONTRACT_MEANS = """
    SELECT c.product_id, c.id, round(avg(cr.value), 16)::text AS mean
    FROM characteristics AS c
    LEFT JOIN (characteristic_reviews AS cr JOIN reviews AS r ON r.id = cr.review_id AND NOT r.reported)
           ON cr.characteristic_id = c.id
    WHERE c.product_id = any($1::int[])
    GROUP BY c.product_id, c.id
"""


@pytest.fixture(scope="module")
def loaded(make_database: Callable[[str], str], tmp_path_factory: pytest.TempPathFactory) -> str:
    url = make_database("summaries_exact")
    export = tmp_path_factory.mktemp("export")
    generate_and_load(export, url, "--products", str(PRODUCTS), "--dirty-rate", "0.02", "--seed", "7")
    return url


def verify(url: str, *args: str) -> tuple[int, dict[str, Any]]:
    done = subprocess.run(
        [BIN / "atelier-verify", "--json", *args],
        env={"DATABASE_URL": url, "PATH": ""},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.stdout, done.stderr
    return done.returncode, json.loads(done.stdout)


def assert_exact(url: str) -> None:
    """atelier-verify finds every stored summary equal to its recomputation. The database is the module's,
    shared: each test that counts differences calls this first, so that a difference an earlier test left
    fails at its start (the earlier test's fault), never as a wrong count in its own assertions."""
    code, result = verify(url)
    assert (code, result["differences"]) == (0, 0), result


async def _client(url: str, aiohttp_client: AiohttpClient) -> TestClient:
    return await aiohttp_client(create_app(Config(database_url=url, db_pool_min_size=1, db_pool_max_size=6)))


def test_a_load_leaves_no_difference(loaded: str) -> None:
    code, result = verify(loaded)
    assert (code, result["differences"]) == (0, 0), result
    assert result["products_checked"] > PRODUCTS * 0.8  # products with a review
    assert result["characteristics_checked"] > PRODUCTS * 3


async def test_meta_serves_the_contract_computation(loaded: str, aiohttp_client: AiohttpClient) -> None:
    client = await _client(loaded, aiohttp_client)
    conn = await asyncpg.connect(loaded)
    try:
        for first in range(1, PRODUCTS + 2, 100):  # the last batch holds an unknown product
            ids = list(range(first, first + 100))
            response = await client.get(
                "/reviews/meta/batch", params={"product_ids": ",".join(map(str, ids))}
            )
            assert response.status == 200
            served = {int(meta["product_id"]): meta for meta in (await response.json())["results"]}
            expected = await _contract_meta(conn, ids)
            for product_id in ids:
                assert served[product_id] == expected[product_id], product_id
    finally:
        await conn.close()


async def _contract_meta(conn: asyncpg.Connection, ids: list[int]) -> dict[int, dict[str, Any]]:
    meta: dict[int, dict[str, Any]] = {
        product_id: {"product_id": str(product_id), "ratings": {}, "recommended": {}, "characteristics": {}}
        for product_id in ids
    }
    for row in await conn.fetch(CONTRACT_RATINGS, ids):
        meta[row["product_id"]]["ratings"][str(row["rating"])] = str(row["reviews"])
    for row in await conn.fetch(CONTRACT_RECOMMENDED, ids):
        recommended = meta[row["product_id"]]["recommended"]
        recommended.setdefault("true", "0")
        recommended.setdefault("false", "0")
        recommended[str(row["recommend"]).lower()] = str(row["reviews"])
    names = {row["id"]: row["name"] for row in await conn.fetch("SELECT id, name FROM characteristics")}
    for row in sorted(await conn.fetch(CONTRACT_MEANS, ids), key=lambda row: row["id"]):
        characteristics = meta[row["product_id"]]["characteristics"]
        name = names[row["id"]]
        if name not in characteristics:  # two of one name: the lowest id is served
            characteristics[name] = {"id": row["id"], "value": row["mean"]}
    for summary in meta.values():  # the served order: stars ascending
        summary["ratings"] = dict(sorted(summary["ratings"].items()))
    return meta


async def test_concurrent_mixed_writes_leave_no_difference(
    loaded: str, aiohttp_client: AiohttpClient
) -> None:
    assert_exact(loaded)
    replicas = [await _client(loaded, aiohttp_client) for _ in range(2)]
    rng = random.Random(20240501)
    conn = await asyncpg.connect(loaded)
    try:
        # A few hot products, so that writes of one product really run at the same time: the six with the
        # most reviews to report (every product has characteristics).
        hot = [
            row["product_id"]
            for row in await conn.fetch(
                "SELECT product_id FROM reviews WHERE NOT reported GROUP BY product_id"
                " ORDER BY count(*) DESC, product_id LIMIT 6"
            )
        ]
        characteristic_ids = {
            product_id: [
                row["id"]
                for row in await conn.fetch(
                    "SELECT id FROM characteristics WHERE product_id = $1", product_id
                )
            ]
            for product_id in hot
        }
        reviews_of_hot = [
            row["id"]
            for row in await conn.fetch(
                "SELECT id FROM reviews WHERE product_id = any($1::int[]) AND NOT reported ORDER BY id", hot
            )
        ]
    finally:
        await conn.close()
    to_report = rng.sample(reviews_of_hot, min(20, len(reviews_of_hot)))
    assert len(to_report) >= 10

    requests: list[tuple[str, str, dict[str, Any] | None]] = []
    for _ in range(240):
        product_id = rng.choice(hot)
        body = review_body(
            product_id,
            rating=rng.randint(1, 5),
            recommend=rng.random() < 0.7,
            characteristics={
                str(c): rng.randint(1, 5) for c in characteristic_ids[product_id] if rng.random() < 0.8
            },
        )
        requests.append(("POST", "/reviews", body))
    for review_id in to_report:  # each reported twice, the two reports racing
        requests += [("PUT", f"/reviews/{review_id}/report", None)] * 2
    for review_id in rng.choices(reviews_of_hot, k=80):
        requests.append(("PUT", f"/reviews/{review_id}/helpful", None))
    rng.shuffle(requests)

    gate = asyncio.Semaphore(24)

    async def send(index: int, method: str, path: str, body: dict[str, Any] | None) -> int:
        async with gate:
            response = await replicas[index % 2].request(method, path, json=body)
            return response.status

    statuses = await asyncio.gather(*(send(i, *request) for i, request in enumerate(requests)))
    assert sorted(set(statuses)) == [201, 204]
    assert statuses.count(201) == 240

    assert_exact(loaded)


# Every kind of difference --repair corrects: a count off, a product's row missing, a row for a product
# without reviews, a characteristic's sum off, its row missing, its name wrong.
CORRUPTIONS = """
    UPDATE product_summaries SET recommended = recommended + 1
    WHERE product_id = (SELECT min(product_id) FROM product_summaries);
    DELETE FROM product_summaries WHERE product_id = (SELECT max(product_id) FROM product_summaries);
    INSERT INTO product_summaries VALUES (2000000000, '{1,0,0,0,2}', 3, 0);
    UPDATE characteristic_summaries SET rating_sum = rating_sum + 1
    WHERE characteristic_id = (SELECT max(characteristic_id) FROM characteristic_summaries);
    DELETE FROM characteristic_summaries
    WHERE characteristic_id = (SELECT min(characteristic_id) FROM characteristic_summaries);
    UPDATE characteristic_summaries SET name = 'Renamed'
    WHERE characteristic_id = (SELECT min(characteristic_id) + 7 FROM characteristic_summaries);
"""


async def _execute(url: str, sql: str) -> None:
    conn = await asyncpg.connect(url)
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


def test_verify_reports_differences_and_repairs_them(loaded: str) -> None:
    assert_exact(loaded)
    asyncio.run(_execute(loaded, CORRUPTIONS))
    code, result = verify(loaded)
    assert code == 1
    assert (result["product_differences"], result["characteristic_differences"]) == (3, 3), result
    assert 2000000000 in {row["product_id"] for row in result["examples"]["products"]}

    async def repair() -> tuple[tuple[int, dict[str, Any]], list[str]]:
        """verify --repair, and what a replica's listener hears meanwhile."""
        heard: list[str] = []
        listener = await asyncpg.connect(loaded)
        try:
            await listener.add_listener(CHANNEL, lambda _c, _p, _ch, payload: heard.append(payload))
            repaired = await asyncio.to_thread(verify, loaded, "--repair")
            await listener.fetchval("SELECT 1")  # a round trip: notifications sent before are delivered
        finally:
            await listener.close()
        return repaired, heard

    (code, result), heard = asyncio.run(repair())
    assert (code, result["repaired"], result["remaining"]) == (0, True, 0)
    assert heard == ["*"]  # every replica's cache drops what it served from the wrong summaries
    assert_exact(loaded)


async def test_a_repair_takes_no_table_lock(loaded: str) -> None:
    """A repair corrects rows in place: a write of another product, still open, does not hold it up (a
    rebuild's TRUNCATE waited for every open write, and every meta miss and write then queued behind
    it)."""
    assert_exact(loaded)
    products = await _products(loaded)
    await _execute(
        loaded,
        "UPDATE product_summaries SET not_recommended = not_recommended + 5 "
        f"WHERE product_id = {products[0]}",
    )
    writer = await asyncpg.connect(loaded)
    try:
        async with writer.transaction():
            await writer.execute(
                "UPDATE product_summaries SET recommended = recommended WHERE product_id = $1", products[1]
            )
            code, result = await asyncio.to_thread(verify, loaded, "--repair")
            assert (code, result["repaired"], result["product_differences"]) == (0, True, 1), result
    finally:
        await writer.close()
    assert verify(loaded)[1]["differences"] == 0


async def test_writes_between_the_check_and_the_repair_are_kept(
    loaded: str, aiohttp_client: AiohttpClient
) -> None:
    """The repair adds each row's error as the check found it: writes committed after the check's snapshot
    moved the row and the reviews alike, so they stay counted (a recomputation from that snapshot written
    back would lose them)."""
    assert_exact(loaded)
    client = await _client(loaded, aiohttp_client)
    product_id = (await _products(loaded))[2]
    await _execute(
        loaded,
        "UPDATE product_summaries SET ratings[5] = ratings[5] + 4, recommended = recommended + 2 "
        f"WHERE product_id = {product_id};"
        "UPDATE characteristic_summaries SET rating_sum = rating_sum + 3 "
        f"WHERE characteristic_id = (SELECT min(id) FROM characteristics WHERE product_id = {product_id})",
    )
    conn = await asyncpg.connect(loaded)
    try:
        found = await verify_module.verify(conn)
        assert found.differences == 2
        characteristics = await conn.fetch("SELECT id FROM characteristics WHERE product_id = $1", product_id)
        body = review_body(
            product_id,
            rating=5,
            recommend=True,
            characteristics={str(row["id"]): 2 for row in characteristics},
        )
        for _ in range(3):  # after the check, before the repair
            assert (await client.post("/reviews", json=body)).status == 201
        await verify_module.repair_rows(conn, found)
    finally:
        await conn.close()
    assert_exact(loaded)


async def test_rows_missing_at_the_check_count_the_writes_made_before_the_repair(
    loaded: str, aiohttp_client: AiohttpClient
) -> None:
    """A write never creates a characteristic's row (nor a report a product's): a missing row's error from
    the check's snapshot would leave out the ratings posted after it. The repair adds the missing rows
    (computed from the reviews) and checks again before it corrects them."""
    assert_exact(loaded)
    client = await _client(loaded, aiohttp_client)
    product_id = (await _products(loaded))[1]
    conn = await asyncpg.connect(loaded)
    try:
        characteristic_id = await conn.fetchval(
            "SELECT min(id) FROM characteristics WHERE product_id = $1", product_id
        )
        await conn.execute(
            "DELETE FROM characteristic_summaries WHERE characteristic_id = $1", characteristic_id
        )
        found = await verify_module.verify(conn)
        assert found.characteristic_differences == 1
        body = review_body(product_id, characteristics={str(characteristic_id): 5})
        assert (await client.post("/reviews", json=body)).status == 201  # after the check
        await verify_module.repair_rows(conn, found)
    finally:
        await conn.close()
    assert_exact(loaded)


async def test_a_report_while_a_repair_adds_a_missing_row_is_taken_and_counted(
    loaded: str, aiohttp_client: AiohttpClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A missing row the repair adds is readable by writes at once: it must hold the product's counts
    (added as zeros, a report of one of its reviews took a count below zero: the CHECK failed, 500)."""
    assert_exact(loaded)
    client = await _client(loaded, aiohttp_client)
    product_id = (await _products(loaded))[2]
    conn = await asyncpg.connect(loaded)
    try:
        review_id = await conn.fetchval(
            "SELECT min(id) FROM reviews WHERE product_id = $1 AND NOT reported", product_id
        )
        await conn.execute("DELETE FROM product_summaries WHERE product_id = $1", product_id)
        found = await verify_module.verify(conn)
        assert found.product_differences == 1
        statuses = []
        real_verify = verify_module.verify

        async def report_then_verify(conn: asyncpg.Connection) -> verify_module.Verification:
            """Between the added row's commit and the check after it: a report of the product's review."""
            statuses.append((await client.put(f"/reviews/{review_id}/report")).status)
            return await real_verify(conn)

        monkeypatch.setattr(verify_module, "verify", report_then_verify)
        await verify_module.repair_rows(conn, found)
    finally:
        await conn.close()
    assert statuses == [204]
    assert_exact(loaded)


async def _products(url: str) -> list[int]:
    """Products with reviews and characteristics."""
    conn = await asyncpg.connect(url)
    try:
        return [
            row["product_id"]
            for row in await conn.fetch(
                "SELECT product_id FROM product_summaries JOIN characteristics USING (product_id) "
                "GROUP BY product_id ORDER BY product_id LIMIT 3"
            )
        ]
    finally:
        await conn.close()


@pytest.mark.parametrize(
    ("env", "code", "message"),
    [
        ({}, 2, "DATABASE_URL is not set"),
        ({"DATABASE_URL": "postgresql://u:secret@127.0.0.1:9/atelier"}, 1, "cannot connect to the database"),
        (
            {"DATABASE_URL": "postgresql://u:postgres@127.0.0.1:9/atelier", "ATELIER_ENV": "production"},
            2,
            "example value",
        ),
    ],
)
def test_verify_says_what_is_wrong(env: dict[str, str], code: int, message: str) -> None:
    done = subprocess.run(
        [BIN / "atelier-verify"], env=env | {"PATH": ""}, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == code
    assert message in done.stderr
    assert "Traceback" not in done.stderr
    assert "secret" not in done.stderr  # the password is never echoed
