"""HTTP caching (issue 7): validators and 304s on every GET, and a replica cache that is never stale.

The cache is exercised through real apps on the suite's database: hits, a write's invalidation on the
writing app and, by LISTEN/NOTIFY, on another app (another replica); the listener's loss and return
(the cache stops, empties and refills); and the overlap of a read with a write. ResponseCache's own
rules (TTL, byte budget, the overlap token) are checked directly with a clock the test controls.
"""

from __future__ import annotations

import asyncio
import gc
import tracemalloc
from collections.abc import Awaitable, Callable
from datetime import timedelta

import asyncpg
import orjson
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient
from pytest_aiohttp import AiohttpClient
from yarl import URL

from atelier_api import changes, http_cache, reviews, validation
from atelier_api.app import create_app
from atelier_api.cache import ENTRY_OVERHEAD, SUMMARY, ResponseCache
from atelier_api.config import Config
from atelier_api.keys import CACHE_KEY, CONFIG_KEY
from atelier_api.validation import ReviewsQuery, Sort
from atelier_etl import staging
from tests.api import factories
from tests.api.conftest import NOW
from tests.api.outages import DatabaseProxy

Client = TestClient[web.Request, web.Application]
# How long a test waits for a notification to reach another app (it takes milliseconds).
NOTIFICATION_WAIT = 5.0

CACHED_GETS = [
    "/reviews?product_id=2",
    "/reviews/?product_id=2&sort=newest&count=3",
    "/reviews/meta?product_id=2",
    "/reviews/meta/batch?product_ids=2,3,2",
]


async def eventually(check: Callable[[], Awaitable[bool]], timeout: float = NOTIFICATION_WAIT) -> None:
    async with asyncio.timeout(timeout):
        while not await check():
            await asyncio.sleep(0.01)


async def listening(client: Client) -> Client:
    """The client, once its app's change listener is connected (the cache fills only then)."""
    cache = client.app[CACHE_KEY]

    async def live() -> bool:
        return cache.live

    await eventually(live)
    return client


@pytest.fixture
async def product(db: asyncpg.Connection) -> int:
    quality = await factories.characteristic(db, 2, "Quality")
    for rating in (5, 3):
        review_id = await factories.review(db, 2, rating=rating)
        await factories.characteristic_rating(db, quality, review_id, rating)
    await factories.characteristic(db, 3, "Fit")
    await factories.advance_sequences(db)
    return 2


@pytest.fixture
def make_client(config: Config, aiohttp_client: AiohttpClient) -> Callable[..., Awaitable[Client]]:
    async def make(**settings: object) -> Client:
        app = create_app(Config(**{**vars_of(config), **settings}), clock=lambda: NOW)
        return await listening(await aiohttp_client(app))

    return make


def vars_of(config: Config) -> dict[str, object]:
    return {name: getattr(config, name) for name in config.__slots__}


@pytest.mark.parametrize("path", [*CACHED_GETS, "/reviews/1", "/healthz", "/openapi.json"])
async def test_every_get_has_a_validator_and_a_matching_one_gets_304(product, make_client, path) -> None:
    client = await make_client()
    first = await client.get(path)
    assert first.status == 200
    etag = first.headers["ETag"]
    assert etag.startswith('"') and etag.endswith('"')
    assert first.headers["Cache-Control"]
    body = await first.read()

    for if_none_match in (etag, f"W/{etag}", f'"other", {etag}', "*"):
        again = await client.get(path, headers={"If-None-Match": if_none_match})
        assert again.status == 304, if_none_match
        assert await again.read() == b""
        assert again.headers["ETag"] == etag
    other = await client.get(path, headers={"If-None-Match": '"something-else"'})
    assert (other.status, await other.read()) == (200, body)


@pytest.mark.parametrize("path", CACHED_GETS)
async def test_cached_reads_say_so_and_clients_may_reuse_them_briefly(product, make_client, path) -> None:
    client = await make_client(http_cache_max_age=7)
    first = await client.get(path)
    second = await client.get(path)
    assert (first.headers["X-Cache"], second.headers["X-Cache"]) == ("miss", "hit")
    assert await first.read() == await second.read()
    assert first.headers["ETag"] == second.headers["ETag"]
    assert second.headers["Cache-Control"] == "public, max-age=7"


@pytest.fixture
async def long_product(db: asyncpg.Connection) -> int:
    """Product 7 with 130 reviews (more than http_cache.REVIEWS_WINDOW), varied in every sort key, a
    third with photos and a few reported; product 8 with 6; product 9 with 12 that tie in every sort
    key but the id (two dates, helpfulness 0 or 1, and a vote worth exactly a year of recency)."""
    year = timedelta(seconds=31557600)
    rows = [
        (7 if n <= 130 else 8, 1 + n % 5, NOW - timedelta(days=n % 17, minutes=n), n % 7, n % 23 == 0)
        for n in range(1, 137)
    ] + [(9, 1 + n % 5, NOW - year * (n % 2), n % 3 // 2, False) for n in range(12)]
    await db.executemany(
        "INSERT INTO reviews (product_id, rating, date, helpfulness, reported, summary, body, recommend,"
        " reviewer_name, reviewer_email) VALUES ($1, $2, $3, $4, $5, 'Summary', 'A body long enough',"
        " true, 'name', 'e@example.com')",
        rows,
    )
    review_ids = [row["id"] for row in await db.fetch("SELECT id FROM reviews ORDER BY id")]
    await db.executemany(
        "INSERT INTO reviews_photos (review_id, url) VALUES ($1, $2)",
        [(review_id, f"https://images.example/{review_id}.jpg") for review_id in review_ids[::3]],
    )
    return 7


PAGES = [(1, 5), (2, 5), (1, 20), (4, 20), (1, 100), (2, 50), (3, 33), (20, 5), (21, 5), (1, 101), (30, 5)]
FILTERS = ["", "&rating=4", "&rating=2,5", "&with_photos=true", "&rating=1&with_photos=true"]


async def test_pages_cut_from_the_cached_first_reviews_equal_pages_read_as_asked(
    long_product, make_client, db
) -> None:
    """Byte for byte, for every sort, filter and page size, inside the window and across its edge."""
    client = await make_client()
    for product_id in (long_product, 8, 9):
        for sort in ("relevant", "newest", "helpful"):
            for filters in FILTERS:
                for page, count in PAGES:
                    path = f"/reviews?product_id={product_id}&sort={sort}&page={page}&count={count}{filters}"
                    query = validation.reviews_query(URL(path).query, 1000)
                    expected = orjson.dumps(
                        {
                            "product": str(product_id),
                            "page": page - 1,
                            "count": count,
                            "results": await reviews.list_reviews(db, query),
                        }
                    )
                    response = await client.get(path)
                    assert (response.status, await response.read()) == (200, expected), path


async def test_every_page_size_within_the_window_shares_one_read(long_product, make_client) -> None:
    client = await make_client()
    seen = []
    for page, count in [(1, 5), (1, 20), (2, 5), (1, 100), (20, 5), (1, 101), (1, 101), (21, 5)]:
        response = await client.get(f"/reviews?product_id=7&sort=newest&page={page}&count={count}")
        seen.append(response.headers["X-Cache"])
    assert seen == ["miss", "hit", "hit", "hit", "hit", "miss", "hit", "miss"]
    other_order = await client.get("/reviews?product_id=7&sort=helpful&count=5")
    assert other_order.headers["X-Cache"] == "miss"


async def test_every_page_of_a_product_with_few_reviews_shares_one_read(long_product, make_client) -> None:
    """Product 8 has 6 reviews: its first GET reads them all; every other sort, filter and page is a
    hit, until a write drops them."""
    client = await make_client()
    paths = [
        f"/reviews?product_id=8&sort={sort}&page={page}&count={count}{filters}"
        for sort in ("relevant", "newest", "helpful")
        for filters in FILTERS
        for page, count in [(1, 5), (2, 5), (1, 100), (3, 2)]
    ]
    seen = [(await client.get(path)).headers["X-Cache"] for path in paths]
    assert seen == ["miss"] + ["hit"] * (len(paths) - 1)
    review_id = (await (await client.get(paths[0])).json())["results"][0]["review_id"]
    assert (await client.put(f"/reviews/{review_id}/helpful")).status == 204
    assert (await client.get(paths[-1])).headers["X-Cache"] == "miss"


async def test_a_page_cut_from_the_window_has_a_validator_of_its_own_bytes(long_product, make_client) -> None:
    """A page's ETag is derived from its entry's (a product's every review, or one order's first
    ones): one URL and ETag are one body, on any replica, hit or miss; pages of one entry differ; a
    write to the product changes each page's ETag."""
    a, b = await make_client(replica_name="a"), await make_client(replica_name="b")
    paths = [
        f"/reviews?product_id={product_id}&sort={sort}&page={page}&count={count}{filters}"
        for product_id in (long_product, 8)  # cached per order, and whole (6 reviews)
        for sort in ("newest", "helpful")
        for page, count in [(1, 5), (2, 5), (1, 20), (1, 100)]
        for filters in ("", "&rating=4", "&with_photos=true")
    ]
    bodies: dict[tuple[str, str], set[bytes]] = {}
    for client in (a, b, a):  # a's second pass is served from its cache
        for path in paths:
            response = await client.get(path)
            bodies.setdefault((path, response.headers["ETag"]), set()).add(await response.read())
    assert all(len(seen) == 1 for seen in bodies.values()), bodies.keys()
    assert len(bodies) == len(paths)  # the same ETag on both replicas, hit or miss
    assert len({etag for _, etag in bodies}) == len(paths)

    for product_id in (long_product, 8):
        posted = await a.post("/reviews", json=factories.review_body(product_id, rating=4))
        assert posted.status == 201
    for (path, etag), (before,) in bodies.items():
        after = await a.get(path, headers={"If-None-Match": etag})
        if after.status == 304:  # allowed only for a page whose bytes did not change
            assert await (await a.get(path)).read() == before, path
        # The new review is the newest with 4 stars and no photo: it moves every such page that had any.
        if "newest" in path and "photos" not in path and orjson.loads(before)["results"]:
            assert after.status == 200 and await after.read() != before, path


@pytest.mark.parametrize(
    ("path", "status"), [("/reviews?product_id=hello", 422), ("/reviews/999999", 404), ("/nowhere", 404)]
)
async def test_errors_have_no_validator_and_are_never_stored(product, make_client, path, status) -> None:
    client = await make_client()
    response = await client.get(path)
    assert response.status == status
    assert "ETag" not in response.headers
    assert response.headers["Cache-Control"] == "no-store"


async def test_a_write_changes_the_answer_at_once_on_its_own_replica(product, make_client) -> None:
    client = await make_client()
    before = await client.get("/reviews/meta?product_id=2")
    etag = before.headers["ETag"]
    assert (await client.get("/reviews/meta?product_id=2")).headers["X-Cache"] == "hit"

    posted = await client.post("/reviews", json=factories.review_body(2, rating=1))
    assert posted.status == 201
    after = await client.get("/reviews/meta?product_id=2", headers={"If-None-Match": etag})
    assert after.status == 200  # the old validator no longer matches
    assert after.headers["X-Cache"] == "miss"
    assert (await after.json())["ratings"] == {"1": "1", "3": "1", "5": "1"}


@pytest.mark.parametrize("write", ["post", "helpful", "report"])
async def test_a_write_on_one_replica_reaches_the_others_cache(product, make_client, db, write) -> None:
    writer, reader = await make_client(replica_name="a"), await make_client(replica_name="b")
    review_id = await db.fetchval("SELECT min(id) FROM reviews WHERE product_id = 2")
    paths = ["/reviews?product_id=2"]  # a vote moves helpfulness, shown here
    if write != "helpful":  # a new or a reported review moves the summary too
        paths += ["/reviews/meta?product_id=2", "/reviews/meta/batch?product_ids=3,2"]
    old = {}
    for path in paths:
        await reader.get(path)
        cached = await reader.get(path)
        assert cached.headers["X-Cache"] == "hit"
        old[path] = await cached.read()

    summary_before = await (await reader.get("/reviews/meta?product_id=2")).read()
    if write == "post":
        response = await writer.post("/reviews", json=factories.review_body(2, rating=2))
    else:
        response = await writer.put(f"/reviews/{review_id}/{write}")
    assert response.status in (201, 204)

    for path in paths:

        async def changed(path: str = path) -> bool:
            return await (await reader.get(path)).read() != old[path]

        await eventually(changed)
    assert reader.app[CACHE_KEY].stats.invalidations >= 1
    if write == "helpful":  # a vote moves no summary: the other replica kept serving its from the cache
        kept = await reader.get("/reviews/meta?product_id=2")
        assert (kept.headers["X-Cache"], await kept.read()) == ("hit", summary_before)


@pytest.mark.parametrize("write", ["post", "helpful", "report"])
async def test_a_retried_write_notifies_even_when_the_first_try_stored_it(
    product, make_client, db, monkeypatch, write
) -> None:
    """The replica that stored the write died between its commit and its notification (here: its notify
    fails); nginx, or the client, retries on another replica, which finds the write stored (a replayed
    vote, a review reported already, an Idempotency-Key's review). The retry notifies, so the other
    replicas' caches still drop their old answers (a retry once notified nothing: stale until CACHE_TTL)."""
    dying, retrying, reader = [await make_client(replica_name=name) for name in "abc"]
    review_id = await db.fetchval("SELECT min(id) FROM reviews WHERE product_id = 2")
    path = "/reviews?product_id=2" if write == "helpful" else "/reviews/meta?product_id=2"
    await reader.get(path)
    cached = await reader.get(path)
    assert cached.headers["X-Cache"] == "hit"
    old = await cached.read()

    async def request(client: Client) -> int:
        if write == "post":
            headers = {"Idempotency-Key": "retried-post"}
            response = await client.post("/reviews", json=factories.review_body(2, rating=2), headers=headers)
        else:
            headers = {"X-Request-Id": "retried-write"}
            response = await client.put(f"/reviews/{review_id}/{write}", headers=headers)
        await response.read()
        return response.status

    async def dies(*args: object, **kwargs: object) -> None:
        raise ConnectionResetError("the replica died before notifying")

    with monkeypatch.context() as patched:
        patched.setattr(changes, "notify", dies)
        assert await request(dying) == 503  # stored, never notified
    assert (await (await reader.get(path)).read(), reader.app[CACHE_KEY].stats.invalidations) == (old, 0)
    assert await request(retrying) in (201, 204)

    async def changed() -> bool:
        return await (await reader.get(path)).read() != old

    await eventually(changed)


async def test_only_committed_writes_notify_and_after_their_commit(product, make_client, db) -> None:
    """The notification is a transaction of its own, sent once the write committed (changes.notify):
    a write the database refuses notifies nothing, and when the notification comes, the write is there
    to be read."""
    client = await make_client()
    heard: asyncio.Queue[tuple[str, int]] = asyncio.Queue()
    listener = await asyncpg.connect(client.app[CONFIG_KEY].database_url)

    async def on_change(conn: asyncpg.Connection, pid: int, channel: str, payload: str) -> None:
        reviews = await db.fetchval("SELECT count(*) FROM reviews WHERE product_id = $1", int(payload))
        await heard.put((payload, reviews))

    def heard_change(conn: asyncpg.Connection, pid: int, channel: str, payload: str) -> None:
        asyncio.get_running_loop().create_task(on_change(conn, pid, channel, payload))

    await listener.add_listener(changes.CHANNEL, heard_change)
    try:
        refused = await client.post("/reviews", json=factories.review_body(2, characteristics={"999": 5}))
        assert refused.status == 422  # decided by the database's rules: nothing stored, nothing notified
        stored = await client.post("/reviews", json=factories.review_body(3, characteristics={}))
        assert stored.status == 201
        async with asyncio.timeout(NOTIFICATION_WAIT):
            assert await heard.get() == ("3", 1)  # the first notification is the stored write's
        assert heard.empty()
    finally:
        await listener.close()


async def test_a_write_whose_notification_fails_is_stored_and_answered(
    product, make_client, db, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """The write committed before the notification was sent: it is answered 201 whatever happens to the
    notification (other replicas then rely on their listener's reconnection, or the TTL)."""
    client = await make_client()
    assert (await client.get("/reviews/meta?product_id=2")).status == 200
    monkeypatch.setattr(changes, "NOTIFY_COMMITTED", "SELECT no_such_function('{payload}')")

    posted = await client.post("/reviews", json=factories.review_body(2, rating=1))

    assert posted.status == 201
    assert await db.fetchval("SELECT count(*) FROM reviews WHERE product_id = 2") == 3
    fresh = await client.get("/reviews/meta?product_id=2")  # its own replica dropped its entries itself
    assert (fresh.headers["X-Cache"], (await fresh.json())["ratings"]["1"]) == ("miss", "1")
    warnings = [record.getMessage() for record in caplog.records if record.levelname == "WARNING"]
    assert any("could not notify the change of products 2 (" in message for message in warnings)


async def test_the_cache_stops_and_empties_while_the_listener_is_away(
    product, db: asyncpg.Connection, proxy: DatabaseProxy, config: Config, aiohttp_client: AiohttpClient
) -> None:
    settings = vars_of(config) | {"database_url": proxy.url(), "db_command_timeout": 2}
    client = await listening(await aiohttp_client(create_app(Config(**settings), clock=lambda: NOW)))
    cache = client.app[CACHE_KEY]
    path = "/reviews/meta?product_id=2"
    await client.get(path)
    assert (await client.get(path)).headers["X-Cache"] == "hit"

    await proxy.stop()  # the listener's connection is cut: no notification can arrive now

    async def stopped() -> bool:
        return not cache.live and len(cache) == 0

    await eventually(stopped)
    # A change no replica hears of while the listener is away (straight into the database).
    await db.execute("UPDATE product_summaries SET recommended = recommended + 10 WHERE product_id = 2")

    await proxy.start()
    await listening(client)
    fresh = await client.get(path)
    assert fresh.headers["X-Cache"] == "miss"
    assert (await fresh.json())["recommended"]["true"] == "12"  # 2 loaded + the 10 nobody notified
    assert (await client.get(path)).headers["X-Cache"] == "hit"  # filling again


async def test_a_listen_that_never_answers_is_given_up_and_tried_again(
    product, config: Config, aiohttp_client: AiohttpClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A link that dies silently during the LISTEN (no reset reaches us) must not hold the listener, the
    cache off, until the kernel gives up on it: connecting and listening are bounded as a whole."""
    add_listener = asyncpg.Connection.add_listener
    hung: list[bool] = []

    async def first_one_hangs(self: asyncpg.Connection, *args: object) -> None:
        if not hung:
            hung.append(True)
            await asyncio.Event().wait()  # the answer that never comes
        await add_listener(self, *args)

    monkeypatch.setattr(asyncpg.Connection, "add_listener", first_one_hangs)
    client = await aiohttp_client(create_app(config, clock=lambda: NOW))
    cache = client.app[CACHE_KEY]

    async def live() -> bool:
        return cache.live

    # Given up after PING_INTERVAL + PING_TIMEOUT (3 s), then the first reconnection delay.
    await eventually(live, timeout=changes.PING_INTERVAL + changes.PING_TIMEOUT + NOTIFICATION_WAIT)
    assert hung


async def test_a_load_empties_every_cache(product, make_client, db: asyncpg.Connection) -> None:
    client = await make_client()
    cache = client.app[CACHE_KEY]
    await client.get("/reviews/meta?product_id=2")
    assert len(cache) == 1
    flushes = cache.stats.flushes
    await db.execute(staging.NOTIFY_EVERYTHING)  # what the loader's switch sends with new data

    async def emptied() -> bool:
        return len(cache) == 0 and cache.stats.flushes == flushes + 1

    await eventually(emptied)


async def test_a_cache_of_zero_bytes_is_off(product, config: Config, aiohttp_client: AiohttpClient) -> None:
    client = await aiohttp_client(create_app(Config(**vars_of(config) | {"cache_max_bytes": 0})))
    for _ in range(2):
        response = await client.get("/reviews/meta?product_id=2")
        assert (response.status, response.headers["X-Cache"]) == (200, "miss")
        assert "ETag" in response.headers
    assert not client.app[CACHE_KEY].live


async def _listening(url: str) -> tuple[asyncpg.Connection, asyncio.Queue[tuple[int, str]]]:
    """A listener, and what it hears: (the notifying session's backend pid, the payload)."""
    heard: asyncio.Queue[tuple[int, str]] = asyncio.Queue()
    listener = await asyncpg.connect(url)
    await listener.add_listener(
        changes.CHANNEL, lambda _c, pid, _ch, payload: heard.put_nowait((pid, payload))
    )
    return listener, heard


async def _ids_heard(heard: asyncio.Queue[tuple[int, str]], expected: set[str]) -> list[tuple[int, str]]:
    """The notifications heard until every expected id came."""
    notifications: list[tuple[int, str]] = []
    async with asyncio.timeout(NOTIFICATION_WAIT):
        while not expected <= {i for _, p in notifications for i in p.split(changes.SEPARATOR)}:
            notifications.append(await heard.get())
    return notifications


async def test_writes_that_commit_while_a_notification_is_sent_share_the_next_one(database_url) -> None:
    """A pool's writes that finish while one of them is notifying wait, and one notification carries all
    of their ids: fewer notifying transactions (each one wakes every replica) for the same writes."""
    listener, heard = await _listening(database_url)
    async with asyncpg.create_pool(database_url, min_size=4, max_size=4) as pool:
        connections = [await pool.acquire() for _ in range(4)]
        try:
            ids = range(9001, 9021)
            await asyncio.gather(
                *(changes.notify(pool, connections[n % 4], pid) for n, pid in enumerate(ids))
            )
            notifications = await _ids_heard(heard, {str(pid) for pid in ids})
            senders = [conn.get_server_pid() for conn in connections[:2]]
        finally:
            for conn in connections:
                await pool.release(conn)
    await listener.close()
    # The first write sent its own; the 19 that committed meanwhile shared the next, sent by the first
    # of them: the first write answered once its own was sent, not after sending for the others too.
    assert notifications == [
        (senders[0], "9001"),
        (senders[1], ",".join(str(pid) for pid in ids[1:])),
    ]
    assert changes._waiting == {}  # nothing kept once nobody is sending


async def test_a_notification_whose_write_lost_its_connection_is_sent_on_another(database_url) -> None:
    """The write committed, then its own connection broke (its link, not the database): the other
    replicas' listeners still hear of it, by a second try on another of the pool's connections."""
    listener, heard = await _listening(database_url)
    async with asyncpg.create_pool(database_url, min_size=2, max_size=2) as pool:
        broken = await pool.acquire()
        try:
            await _terminate_from_elsewhere(database_url, broken.get_server_pid())
            async with asyncio.timeout(NOTIFICATION_WAIT):
                await changes.notify(pool, broken, 9101)
            [(_, payload)] = await _ids_heard(heard, {"9101"})
        finally:
            await pool.release(broken)
    await listener.close()
    assert payload == "9101"


async def _terminate_from_elsewhere(url: str, backend_pid: int) -> None:
    conn = await asyncpg.connect(url)
    try:
        await conn.fetchval("SELECT pg_terminate_backend($1)", backend_pid)
    finally:
        await conn.close()


async def test_ids_waiting_on_a_cancelled_sender_are_sent_by_a_write_that_waited(
    database_url: str, proxy: DatabaseProxy
) -> None:
    """The write sending a notification can be cancelled (its client gone, a shutdown) before its
    notification reached the database: the writes waiting on it must not wait for ever, and one of them
    sends the cancelled sender's ids with theirs."""
    listener, heard = await _listening(database_url)
    waiting = await asyncpg.connect(database_url)
    pool = await asyncpg.create_pool(proxy.url(), min_size=1, max_size=1)
    sending = await pool.acquire()
    try:
        proxy.hold()  # the sender's notification stays in the proxy, never committed
        sender = asyncio.create_task(changes.notify(pool, sending, 9101))
        await asyncio.sleep(0.1)
        waiters = [asyncio.create_task(changes.notify(pool, waiting, pid)) for pid in (9102, 9103)]
        await asyncio.sleep(0.1)
        sender.cancel()
        async with asyncio.timeout(NOTIFICATION_WAIT):
            await asyncio.gather(*waiters)
        with pytest.raises(asyncio.CancelledError):
            await sender
        notifications = await _ids_heard(heard, {"9101", "9102", "9103"})
        assert notifications == [(waiting.get_server_pid(), "9101,9102,9103")]
    finally:
        # Not released: the proxy fixture cuts the held connection, so the held notification never
        # commits (a later test's listener must not hear it).
        pool.terminate()
        await waiting.close()
        await listener.close()
    assert changes._waiting == {}


def test_the_loader_notifies_the_api_channel() -> None:
    assert staging.CHANGES_CHANNEL == changes.CHANNEL
    assert f"'{changes.CHANNEL}'" in staging.NOTIFY_EVERYTHING
    assert f"'{changes.CHANNEL}'" in changes.NOTIFY_COMMITTED


# ResponseCache's own rules, with a clock the test moves.


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def live_cache(max_bytes: int = 64_000, ttl: float = 10.0) -> tuple[ResponseCache, Clock]:
    clock = Clock()
    cache = ResponseCache(max_bytes=max_bytes, ttl=ttl, clock=clock)
    cache.live = True
    return cache, clock


def test_the_garbage_collector_does_not_walk_the_cache() -> None:
    """CPython's full collections stop the event loop for as long as they walk what they track: what the
    cache keeps must be untracked after one collection, however many answers it holds."""
    cache = ResponseCache(max_bytes=64 * 1024 * 1024, ttl=60, clock=lambda: 0.0)
    cache.live = True
    gc.collect()
    before = len(gc.get_objects())
    for product_id in range(5_000):
        # The keys GET /reviews and /reviews/meta use (http_cache.py).
        first = ReviewsQuery(product_id, 1, 5, Sort.NEWEST)
        beyond = ReviewsQuery(product_id, 2, 100, Sort.HELPFUL, (4, 5), True)
        cache.put(product_id, SUMMARY, b'{"product_id":"1"}', cache.token())
        cache.put(product_id, http_cache.window_variant(first), b"[1],[2]", cache.token(), (0, 4, 8))
        cache.put(product_id, http_cache.page_variant(beyond), b"{}", cache.token())
        layout = http_cache.Layout(b"\x04\x05", b"\x00\x01", b"\x00\x01", b"\x01\x00", b"\x00\x01")
        cache.put(product_id, http_cache.ALL_REVIEWS, b"[1],[2]", cache.token(), (0, 4, 8), layout)
        assert cache.get(product_id, SUMMARY) is not None
    cache.invalidate(7)
    cache.invalidate(8, summary=False)
    # A tuple is untracked once a collection finds only untracked things in it; a tuple holding a tuple
    # made in the same generation may need the next collection (the newest entries' keys and layouts).
    gc.collect()
    gc.collect()
    assert len(cache) == 20_000 - 4 - 3
    assert len(gc.get_objects()) - before < 100


def test_an_entry_expires_after_the_ttl() -> None:
    cache, clock = live_cache(ttl=10)
    cache.put(1, "a", b"x", cache.token())
    clock.now += 9.9
    assert cache.get(1, "a") is not None
    clock.now += 0.2
    assert cache.get(1, "a") is None
    assert len(cache) == 0


def test_the_byte_budget_evicts_the_least_recently_used() -> None:
    body = b"x" * (1000 - ENTRY_OVERHEAD)  # 1,000 bytes an entry
    cache, _ = live_cache(max_bytes=64_000)
    for product_id in range(64):
        cache.put(product_id, "a", body, cache.token())
    assert cache.get(0, "a") is not None  # 0 is now the most recently used
    cache.put(64, "a", body, cache.token())
    assert cache.size_bytes == 64_000
    assert cache.get(1, "a") is None and cache.get(0, "a") is not None


@pytest.mark.parametrize("kind", ["summaries", "pages"])
def test_the_byte_budget_is_about_the_memory_the_entries_take(kind: str) -> None:
    """CACHE_MAX_BYTES sizes a container: what the entries count is what they take, their bookkeeping
    included, within 15% (200 bytes of bookkeeping let a cache of summaries take 1.65x its budget)."""
    cache, _ = live_cache(max_bytes=1 << 40)
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        for product_id in range(100_000, 110_000):  # bodies made here, as a request makes them
            if kind == "summaries":
                cache.put(product_id, SUMMARY, b'{"product":"%d",' % product_id + b"1" * 300, cache.token())
            else:
                body = b"[" + b"%d," % product_id * 500 + b"]"
                starts, layout = tuple(range(0, 3000, 300)), (b"\x01" * 10, b"\x02" * 10)
                cache.put(product_id, ("newest", ()), body, cache.token(), starts, layout)
        taken = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert 0.85 < taken / cache.size_bytes < 1.15, (taken, cache.size_bytes)


def test_a_reviews_place_fits_in_the_layouts_byte() -> None:
    """http_cache.Layout keeps each review's place in one byte: a product cached whole has fewer than
    256 reviews (raising REVIEWS_WINDOW past that would fail every such read with a 500)."""
    assert http_cache.REVIEWS_WINDOW < 256
    order = list(range(http_cache.REVIEWS_WINDOW))[::-1]
    assert list(bytes(order)) == order


def test_offsets_and_layouts_count_against_the_budget_and_leave_with_their_entry() -> None:
    cache, clock = live_cache(ttl=10)
    layout = http_cache.Layout(b"\x04\x05", b"\x00\x01", b"\x00\x01", b"\x01\x00", b"\x00\x01")
    one = 7 + 8 * 3 + 10 + ENTRY_OVERHEAD  # 7 bytes, 3 offsets, 5 x 2 bytes of layout
    for product_id in (1, 2, 3):
        cache.put(product_id, http_cache.ALL_REVIEWS, b"[1],[2]", cache.token(), (0, 4, 8), layout)
    assert cache.size_bytes == 3 * one
    cache.invalidate(1)  # a write
    assert cache.size_bytes == 2 * one
    cache.put(2, http_cache.ALL_REVIEWS, b"[1],[2]", cache.token(), (0, 4, 8), layout)  # replaced
    assert cache.size_bytes == 2 * one
    clock.now += 11
    assert cache.get(2, http_cache.ALL_REVIEWS) is None  # expired
    assert cache.size_bytes == one
    cache.invalidate(3, summary=False)  # a vote
    assert len(cache) == 0 and cache.size_bytes == 0


def test_an_answer_too_large_is_served_not_kept() -> None:
    cache, _ = live_cache(max_bytes=64_000)
    entry = cache.put(1, "a", b"x" * 1001, cache.token())  # over a 64th of the budget with overhead
    assert entry.body and entry.etag
    assert len(cache) == 0


def test_a_read_overlapping_an_invalidation_is_not_kept() -> None:
    cache, _ = live_cache()
    token = cache.token()  # a read starts
    cache.invalidate(1)  # a write of product 1 commits meanwhile
    cache.put(1, "a", b"old", token)  # the read ends with what it read before the write
    assert cache.get(1, "a") is None
    cache.put(2, "a", b"other product", token)  # another product's read is not affected
    assert cache.get(2, "a") is not None
    token = cache.token()
    cache.flush()
    cache.put(2, "b", b"read across a flush", token)
    assert cache.get(2, "b") is None


def test_invalidate_drops_every_variant_of_the_product_only() -> None:
    cache, _ = live_cache()
    for variant in ("page-1", "page-2", "summary"):
        cache.put(1, variant, b"1", cache.token())
    cache.put(2, "summary", b"2", cache.token())
    cache.invalidate(1)
    assert [cache.get(1, v) for v in ("page-1", "page-2", "summary")] == [None, None, None]
    assert cache.get(2, "summary") is not None
    assert cache.size_bytes == 1 + ENTRY_OVERHEAD


def test_invalidating_the_pages_only_keeps_the_summary() -> None:
    cache, _ = live_cache()
    for variant in ("page-1", "page-2", SUMMARY):
        cache.put(1, variant, b"1", cache.token())
    token = cache.token()
    cache.invalidate(1, summary=False)
    assert [cache.get(1, v) is None for v in ("page-1", "page-2", SUMMARY)] == [True, True, False]
    assert cache.size_bytes == 1 + ENTRY_OVERHEAD
    cache.put(1, "page-1", b"read across it", token)  # a read that overlapped it is not kept
    assert cache.get(1, "page-1") is None
    cache.invalidate(1)  # and the summary's bookkeeping is intact
    assert len(cache) == 0 and cache.size_bytes == 0


@pytest.mark.parametrize(
    ("payload", "kept"), [("2", []), ("2:reviews", [SUMMARY]), ("*", []), ("2:other", [])]
)
def test_a_notification_drops_what_its_payload_says(payload: str, kept: list[str]) -> None:
    cache, _ = live_cache()
    for product_id in (2, 3):
        for variant in ("page-1", SUMMARY):
            cache.put(product_id, variant, b"x", cache.token())
    changes.apply(cache, payload)
    assert [v for v in ("page-1", SUMMARY) if cache.get(2, v) is not None] == kept
    assert (cache.get(3, SUMMARY) is None) == (payload in ("*", "2:other"))  # unknown: flush, safe


def test_a_notification_of_several_products_drops_each() -> None:
    cache, _ = live_cache()
    for product_id in (2, 3, 4):
        for variant in ("page-1", SUMMARY):
            cache.put(product_id, variant, b"x", cache.token())
    changes.apply(cache, "2,3:reviews")
    assert [cache.get(2, v) for v in ("page-1", SUMMARY)] == [None, None]
    assert [cache.get(3, v) is None for v in ("page-1", SUMMARY)] == [True, False]
    assert [cache.get(4, v) is None for v in ("page-1", SUMMARY)] == [False, False]
    changes.apply(cache, "4,*")  # anything unexpected in a list: everything goes
    assert len(cache) == 0


def test_nothing_is_kept_while_not_listening() -> None:
    cache, _ = live_cache()
    cache.live = False
    cache.put(1, "a", b"x", cache.token())
    assert len(cache) == 0
