"""POST /reviews with an Idempotency-Key: replays, a reused key, a key in flight (409), expiry, two replicas
receiving the same key at once, and the header's rule (services/api/atelier_api/idempotency.py).

A request is held "in flight" deterministically: the test's own transaction locks a characteristic row
(FOR UPDATE), so the API's transaction, which inserts a rating of that characteristic, waits on it after
claiming the key, until the test rolls back. The test waits for that lock wait to show in
pg_stat_activity before sending the second request.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import replace
from typing import Any

import asyncpg
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient
from pytest_aiohttp import AiohttpClient

from atelier_api import idempotency
from atelier_api.app import create_app
from atelier_api.config import Config
from atelier_api.idempotency import KEY_RETENTION
from tests.api import factories
from tests.api.conftest import NOW
from tests.api.factories import review_body

Client = TestClient[web.Request, web.Application]
PRODUCT = 70
WAITING_ON_A_LOCK = """
    SELECT count(*) FROM pg_stat_activity
    WHERE datname = current_database() AND application_name = 'atelier-api' AND wait_event_type = 'Lock'
"""


@pytest.fixture
async def characteristic_id(db: asyncpg.Connection) -> int:
    return await factories.characteristic(db, PRODUCT, "Fit")


def new_review(characteristic_id: int, **fields: Any) -> dict[str, Any]:
    extras = {"photos": ["https://img.example/1.jpg"], "characteristics": {str(characteristic_id): 3}}
    return review_body(PRODUCT, **(extras | fields))


async def post(client: Client, body: Any, key: str | None) -> tuple[int, dict[str, str], Any]:
    headers = {"Idempotency-Key": key} if key is not None else {}
    response = await client.post("/reviews", json=body, headers=headers)
    payload = await response.text() if response.status == 201 else await response.json()
    return response.status, dict(response.headers), payload


async def stored(db: asyncpg.Connection) -> tuple[int, int, int]:
    """How many reviews, photos and characteristic ratings there are."""
    row = await db.fetchrow(
        "SELECT (SELECT count(*) FROM reviews) AS r, (SELECT count(*) FROM reviews_photos) AS p, "
        "(SELECT count(*) FROM characteristic_reviews) AS c"
    )
    return row["r"], row["p"], row["c"]


async def test_a_retry_replays_the_first_answer_and_stores_nothing(
    client: Client, db: asyncpg.Connection, characteristic_id: int
) -> None:
    body = new_review(characteristic_id)
    status, headers, text = await post(client, body, "order-1")
    assert (status, text) == (201, "Created")
    assert "Idempotent-Replayed" not in headers
    location = headers["Location"]

    # The same body, its fields in another order, is the same request.
    for retry in (body, dict(reversed(body.items()))):
        status, headers, text = await post(client, retry, "order-1")
        assert (status, text, headers["Location"]) == (201, "Created", location)
        assert headers["Idempotent-Replayed"] == "true"

    assert await stored(db) == (1, 1, 1)
    assert await db.fetchval("SELECT review_id FROM idempotency_keys WHERE key = 'order-1'") == int(
        location.removeprefix("/reviews/")
    )


async def test_without_a_key_every_post_stores_a_review(
    client: Client, db: asyncpg.Connection, characteristic_id: int
) -> None:
    for _ in range(2):
        assert (await post(client, new_review(characteristic_id), None))[0] == 201
    assert await stored(db) == (2, 2, 2)
    assert await db.fetchval("SELECT count(*) FROM idempotency_keys") == 0


async def test_the_same_key_with_another_body_is_refused(
    client: Client, db: asyncpg.Connection, characteristic_id: int
) -> None:
    assert (await post(client, new_review(characteristic_id), "order-2"))[0] == 201

    status, _, error = await post(client, new_review(characteristic_id, rating=1), "order-2")

    assert status == 422
    assert error == {
        "error": "invalid Idempotency-Key provided",
        "details": [
            {"field": "Idempotency-Key", "message": "was already used with a different request body"}
        ],
    }
    assert await stored(db) == (1, 1, 1)


def nested(depth: int) -> list[Any]:
    """A JSON array nested `depth` deep: orjson reads up to 1,024 levels and writes up to 254."""
    value: list[Any] = []
    for _ in range(depth - 1):
        value = [value]
    return value


DEEP_JSON = nested(300)


async def test_a_body_nested_deeper_than_orjson_writes_is_stored_and_its_retry_replayed(
    client: Client, db: asyncpg.Connection, characteristic_id: int
) -> None:
    """A field the API ignores, nested 300 deep: orjson reads it but cannot write it back, and hashing the
    body for the key answered 500. Such a body is hashed as sent: stored, and its retry replayed."""
    body = new_review(characteristic_id, note=DEEP_JSON)
    status, headers, _ = await post(client, body, "order-deep")
    assert status == 201
    status, replayed, _ = await post(client, body, "order-deep")
    assert status == 201 and replayed["Idempotent-Replayed"] == "true"
    assert replayed["Location"] == headers["Location"]
    assert await stored(db) == (1, 1, 1)


async def test_nesting_in_a_field_the_api_reads_is_refused_naming_it(
    client: Client, db: asyncpg.Connection, characteristic_id: int
) -> None:
    body = new_review(characteristic_id, photos=[DEEP_JSON])
    status, _, error = await post(client, body, "order-deeper")
    assert status == 422
    assert error["details"] == [{"field": "photos[0]", "message": "must be a string"}]
    assert await stored(db) == (0, 0, 0)


async def test_keys_are_per_body_not_per_client(
    client: Client, db: asyncpg.Connection, characteristic_id: int
) -> None:
    """Two keys, the same body: two reviews (the key, not the body, makes a retry)."""
    assert (await post(client, new_review(characteristic_id), "key-a"))[0] == 201
    assert (await post(client, new_review(characteristic_id), "key-b"))[0] == 201
    assert await stored(db) == (2, 2, 2)


async def test_a_refused_request_leaves_its_key_free(
    client: Client, db: asyncpg.Connection, characteristic_id: int
) -> None:
    """Only 201s are remembered: a 422 (here decided by the database: an unknown product) is not."""
    status, _, error = await post(client, new_review(characteristic_id, product_id=999), "order-3")
    assert status == 422 and error["details"][0]["field"] == "product_id"

    status, headers, _ = await post(client, new_review(characteristic_id), "order-3")
    assert status == 201 and "Idempotent-Replayed" not in headers
    assert await stored(db) == (1, 1, 1)


async def test_a_failed_request_releases_its_key(
    client: Client, db: asyncpg.Connection, characteristic_id: int
) -> None:
    """A real failure inside the transaction (a trigger raising) gives 500 and rolls the key back."""
    await db.execute(
        """
        CREATE FUNCTION refuse_for_test() RETURNS trigger LANGUAGE plpgsql AS
        $$ BEGIN RAISE EXCEPTION 'photo store is down'; END $$;
        CREATE TRIGGER refuse_photos BEFORE INSERT ON reviews_photos
        FOR EACH ROW EXECUTE FUNCTION refuse_for_test();
        """
    )
    try:
        status, _, error = await post(client, new_review(characteristic_id), "order-4")
        assert status == 500 and error == {"error": "internal server error", "details": []}
    finally:
        await db.execute("DROP TRIGGER refuse_photos ON reviews_photos; DROP FUNCTION refuse_for_test()")
    assert await db.fetchval("SELECT count(*) FROM idempotency_keys") == 0

    status, headers, _ = await post(client, new_review(characteristic_id), "order-4")
    assert status == 201 and "Idempotent-Replayed" not in headers
    assert await stored(db) == (1, 1, 1)


async def test_keys_expire(client: Client, db: asyncpg.Connection, characteristic_id: int) -> None:
    status, headers, _ = await post(client, new_review(characteristic_id), "order-5")
    first = headers["Location"]
    expired = f"now() - interval '{int(KEY_RETENTION.total_seconds()) + 60} seconds'"
    await db.execute(f"UPDATE idempotency_keys SET created_at = {expired}")
    await db.execute(
        f"INSERT INTO idempotency_keys (key, request_hash, review_id, created_at) "
        f"SELECT 'old-' || n, '\\x00', 1, {expired} FROM generate_series(1, 3) AS n"
    )

    # Past the retention the key is free again: the same request stores a new review.
    status, headers, _ = await post(client, new_review(characteristic_id), "order-5")
    assert status == 201 and "Idempotent-Replayed" not in headers and headers["Location"] != first
    second = headers["Location"]
    status, headers, _ = await post(client, new_review(characteristic_id), "order-5")
    assert (status, headers["Location"], headers["Idempotent-Replayed"]) == (201, second, "true")
    assert await stored(db) == (2, 2, 2)
    # Each new key deletes up to two expired ones.
    assert await db.fetchval("SELECT count(*) FROM idempotency_keys") == 2


class HeldFirstRequest:
    """A POST whose transaction is held open, after it claimed its key, until `release`."""

    def __init__(self, db: asyncpg.Connection, database_url: str, characteristic_id: int) -> None:
        self.db = db
        self.database_url = database_url
        self.characteristic_id = characteristic_id
        self.locker: asyncpg.Connection | None = None
        self.transaction: Any = None

    async def hold(self) -> None:
        self.locker = await asyncpg.connect(self.database_url)
        self.transaction = self.locker.transaction()
        await self.transaction.start()
        await self.locker.execute(
            "SELECT FROM characteristics WHERE id = $1 FOR UPDATE", self.characteristic_id
        )

    async def wait_until_blocked(self) -> None:
        async with asyncio.timeout(10):
            while await self.db.fetchval(WAITING_ON_A_LOCK) < 1:
                await asyncio.sleep(0.01)

    async def release(self) -> None:
        if self.transaction is not None:
            await self.transaction.rollback()
            self.transaction = None
        if self.locker is not None:
            await self.locker.close()
            self.locker = None


@pytest.fixture
async def held(
    db: asyncpg.Connection, database_url: str, characteristic_id: int
) -> AsyncIterator[HeldFirstRequest]:
    request = HeldFirstRequest(db, database_url, characteristic_id)
    await request.hold()
    try:
        yield request
    finally:
        await request.release()


async def test_a_retry_while_the_first_is_running_gets_409(
    client: Client, db: asyncpg.Connection, characteristic_id: int, held: HeldFirstRequest
) -> None:
    await factories.characteristic(db, PRODUCT + 1, "Fit")  # another product, for another key below
    body = new_review(characteristic_id)
    first = asyncio.create_task(post(client, body, "order-6"))
    try:
        await held.wait_until_blocked()

        async with asyncio.timeout(2):  # at once, not after the first one
            status, headers, error = await post(client, body, "order-6")
        assert status == 409 and headers["Retry-After"] == "1"
        assert error == {
            "error": "request in progress",
            "details": [
                {"field": "Idempotency-Key", "message": "a request with this key is still in progress"}
            ],
        }
        # Another key is not held up by this one's claim. (Another product: two writes of one product
        # queue on its summary row, whatever their keys.)
        other = await post(client, review_body(PRODUCT + 1), "other")
        assert other[0] == 201
    finally:
        await held.release()
        async with asyncio.timeout(10):
            status, headers, _ = await first
    assert status == 201 and "Idempotent-Replayed" not in headers

    replay = await post(client, body, "order-6")
    assert (replay[0], replay[1]["Location"], replay[1]["Idempotent-Replayed"]) == (
        201,
        headers["Location"],
        "true",
    )
    assert await stored(db) == (2, 1, 1)


@pytest.fixture
async def two_replicas(
    db: asyncpg.Connection, config: Config, aiohttp_client: AiohttpClient
) -> tuple[Client, Client]:
    """Two apps, each with its own pool, on the same database: two replicas."""
    replicas = []
    for name in ("replica-a", "replica-b"):
        app = create_app(replace(config, replica_name=name), clock=lambda: NOW)
        replicas.append(await aiohttp_client(app))
    return replicas[0], replicas[1]


async def test_two_replicas_receiving_the_same_key_store_one_review(
    two_replicas: tuple[Client, Client],
    db: asyncpg.Connection,
    characteristic_id: int,
    held: HeldFirstRequest,
) -> None:
    a, b = two_replicas
    body = new_review(characteristic_id)
    first = asyncio.create_task(post(a, body, "order-7"))
    try:
        await held.wait_until_blocked()
        status, headers, _ = await post(b, body, "order-7")
        assert status == 409 and headers["X-Replica"] == "replica-b"
    finally:
        await held.release()
        async with asyncio.timeout(10):
            status, headers, _ = await first
    assert status == 201 and headers["X-Replica"] == "replica-a"

    replay = await post(b, body, "order-7")
    assert (replay[0], replay[1]["Location"], replay[1]["X-Replica"]) == (
        201,
        headers["Location"],
        "replica-b",
    )
    assert await stored(db) == (1, 1, 1)


async def test_many_requests_of_one_key_on_two_replicas_at_once_store_one_review(
    two_replicas: tuple[Client, Client], db: asyncpg.Connection, characteristic_id: int
) -> None:
    body = new_review(characteristic_id)
    async with asyncio.timeout(30):
        answers = await asyncio.gather(*(post(two_replicas[n % 2], body, "order-8") for n in range(40)))

    statuses = sorted(status for status, _, _ in answers)
    assert set(statuses) <= {201, 409}, statuses
    created = [headers for status, headers, _ in answers if status == 201]
    assert len([headers for headers in created if "Idempotent-Replayed" not in headers]) == 1
    assert len({headers["Location"] for headers in created}) == 1
    assert await stored(db) == (1, 1, 1)


async def test_a_first_request_committing_after_the_lookup_gives_409_then_replays(
    client: Client, db: asyncpg.Connection, database_url: str, characteristic_id: int
) -> None:
    """The statement's lookup reads a snapshot taken before its claim. A first request with the key that
    commits after that snapshot is not seen by the lookup; recording the key finds it, and the statement
    fails and rolls back: 409, and the retry replays. Played deterministically: the test's connection
    writes the key's record in an open transaction, so the API's record waits on it, then commits."""
    body = new_review(characteristic_id)
    first_id = await factories.review(db, PRODUCT)
    first = await asyncpg.connect(database_url)
    try:
        transaction = first.transaction()
        await transaction.start()
        await first.execute(
            "INSERT INTO idempotency_keys (key, request_hash, review_id) VALUES ($1, $2, $3)",
            "order-race",
            idempotency.request_hash(body, b""),
            first_id,
        )
        second = asyncio.create_task(post(client, body, "order-race"))
        async with asyncio.timeout(10):
            while await db.fetchval(WAITING_ON_A_LOCK) < 1 and not second.done():
                await asyncio.sleep(0.01)
        await transaction.commit()
        async with asyncio.timeout(10):
            status, headers, error = await second
    finally:
        await first.close()
    assert (status, headers["Retry-After"], error["error"]) == (409, "1", "request in progress")
    assert await stored(db) == (1, 0, 0)  # the first request's review only

    status, headers, _ = await post(client, body, "order-race")
    assert (status, headers["Location"], headers["Idempotent-Replayed"]) == (
        201,
        f"/reviews/{first_id}",
        "true",
    )


@pytest.mark.parametrize(
    ("key", "message"),
    [
        ("", "must be 1 to 255 printable ASCII characters"),
        ("k" * 256, "must be 1 to 255 printable ASCII characters"),
        ("clé", "must be 1 to 255 printable ASCII characters"),
        ("tab\there", "must be 1 to 255 printable ASCII characters"),
    ],
)
async def test_a_bad_key_is_refused_and_stores_nothing(
    client: Client, db: asyncpg.Connection, characteristic_id: int, key: str, message: str
) -> None:
    response = await client.post(
        "/reviews",
        json=new_review(characteristic_id),
        headers={"Idempotency-Key": key.encode().decode("latin-1")},
    )
    assert response.status == 422
    assert await response.json() == {
        "error": "invalid Idempotency-Key provided",
        "details": [{"field": "Idempotency-Key", "message": message}],
    }
    assert await stored(db) == (0, 0, 0)


async def test_a_key_given_twice_is_refused(
    client: Client, db: asyncpg.Connection, characteristic_id: int
) -> None:
    response = await client.post(
        "/reviews",
        json=new_review(characteristic_id),
        headers=[("Idempotency-Key", "one"), ("Idempotency-Key", "two")],
    )
    assert response.status == 422
    assert (await response.json())["details"] == [
        {"field": "Idempotency-Key", "message": "must be given once"}
    ]
    assert await stored(db) == (0, 0, 0)


@pytest.mark.parametrize(
    "key", ["k" * 255, "a key with spaces", "!~", "550e8400-e29b-41d4-a716-446655440000"]
)
async def test_good_keys(client: Client, db: asyncpg.Connection, characteristic_id: int, key: str) -> None:
    assert (await post(client, new_review(characteristic_id), key))[0] == 201
    assert (await post(client, new_review(characteristic_id), key))[1]["Idempotent-Replayed"] == "true"
    assert await stored(db) == (1, 1, 1)
