"""Change notifications: how every replica learns that a write changed a product's answers.

A write that changes what GET /reviews or /reviews/meta answer for a product calls `notify` once its
transaction has committed, before it answers. The notification is a transaction of its own, committed
asynchronously (`synchronous_commit = off`): PostgreSQL serialises every committing transaction that
notifies (a database-wide lock held until its commit is flushed, so that queue entries appear in commit
order), and a write that notified in its own transaction held that lock across its WAL flush, so writes
could not share a flush (group commit). Measured on this machine: one-row inserts with the NOTIFY inside
went at ~1,800/s, with it after commit at ~3,400-4,000/s (docs/tuning.md). A NOTIFY-only transaction
writes nothing that a crash could lose but the notification itself, and a crash ends every listener's
connection, which empties every cache anyway.

Writes of one pool share notifications: while one write's notification is being sent (on its own
connection), the writes that commit meanwhile wait, and the next notification carries all of their ids,
joined by `,`, sent by one of them. Each notifying transaction costs PostgreSQL the lock above and a
wake-up of every listening session (one per replica), and each replica's listener a wake-up: about a
fifth of a review's cost in the database, so sharing them lets more reviews through (docs/tuning.md,
"Writes share their notifications"). A write still answers only after a notification carrying its id has
committed.

PostgreSQL delivers a NOTIFY to every listening session when its transaction commits, and the write is
visible by then, so a replica that drops its entries on the notification and then reads again reads the
new data. The payload is a list of product ids joined by `,`; `*` (the loader's switch to new data,
which notifies inside its own transaction) means everything, and `<product id>:reviews` (a helpful vote)
means the product's pages of reviews but not its summary. Should the notification fail after the write
committed, it is sent once more on another of the pool's connections (the write's own link may be what
broke); should that fail too (the database gone in between), the write still answers 201: the replicas'
listeners have lost that database too and empty their caches when they reconnect; otherwise the cache's
TTL bounds the staleness.

Each replica keeps one connection of its own LISTENing (`listen_for_changes`, in the app's cleanup
context). Losing it makes the cache stop filling and empties it, and it reconnects with a backoff; a
reconnection empties the cache again, since notifications sent meanwhile were missed. A ping every
PING_INTERVAL seconds catches a connection that died silently (no reset reached us), which bounds the
staleness in that case to PING_INTERVAL + PING_TIMEOUT, well inside the cache's TTL.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import asyncpg
from aiohttp import web

from atelier_api.cache import ResponseCache
from atelier_api.errors import DATABASE_UNAVAILABLE
from atelier_api.keys import CACHE_KEY, CONFIG_KEY

log = logging.getLogger(__name__)

# The same name is in atelier_etl/staging.py (the loader's flush); a test keeps them equal.
CHANNEL = "atelier_changes"
EVERYTHING = "*"
PING_INTERVAL = 2.0  # seconds
PING_TIMEOUT = 1.0
RECONNECT_DELAYS = (0.1, 0.25, 0.5, 1.0, 2.0)  # seconds, then the last one again

# One round trip (the simple query protocol runs the four statements as they are); the payload is
# integers formatted here, never text from a client.
NOTIFY_COMMITTED = (
    "BEGIN; SET LOCAL synchronous_commit = off; SELECT pg_notify('atelier_changes', '{payload}'); COMMIT"
)
REVIEWS_ONLY = ":reviews"  # an id's suffix when the product's summary did not change
SEPARATOR = ","
# Ids per notification: at most 256 x 19 bytes ("2147483647:reviews,"), under PostgreSQL's 8,000-byte
# payload limit.
MAX_IDS_PER_NOTIFICATION = 256
# Seconds for the second try of a notification whose write's connection failed (an acquire and a NOTIFY).
NOTIFY_RETRY_TIMEOUT = 2.0
# What sending a notification may raise for the database: a connection lost or ended by the server can
# also leave asyncpg's protocol mid-operation (InternalClientError "cannot switch to state ...").
NOTIFY_FAILURES = (
    *DATABASE_UNAVAILABLE,
    asyncpg.PostgresError,
    asyncpg.InterfaceError,
    asyncpg.InternalClientError,
)


@dataclass
class _Waiting:
    """One pool's writes waiting for a notification to carry their ids."""

    ids: list[tuple[str, asyncio.Future[None]]] = field(default_factory=list)
    sender: asyncio.Future[None] | None = None  # done when the write sending for them stops


# By pool (its id()): an entry lives only while a notification of that pool is being sent.
_waiting: dict[int, _Waiting] = {}


async def notify(pool: asyncpg.Pool, conn: asyncpg.Connection, product_id: int, summary: bool = True) -> None:
    """Tell every replica that this product's answers changed (summary=False: its pages of reviews
    only): call it after the write committed, with no transaction open on `conn` (one of `pool`'s).
    Returns once a committed notification carries the id: this write's, sent on `conn`, or one that
    another write of the pool sends with it. Never raises for the database: the write is stored
    whatever happens here."""
    item = f"{int(product_id)}" if summary else f"{int(product_id)}{REVIEWS_ONLY}"
    key = id(pool)
    waiting = _waiting.get(key)
    if waiting is None:  # no notification of this pool is being sent
        waiting = _waiting[key] = _Waiting()
    sent = asyncio.get_running_loop().create_future()
    waiting.ids.append((item, sent))
    while not sent.done():
        if waiting.sender is None:  # nobody is sending: send what waits, this id among it
            await _send_next(pool, waiting, conn)
        else:  # sent with the next notification, or by this write once the sender is done
            await asyncio.wait((sent, waiting.sender), return_when=asyncio.FIRST_COMPLETED)


async def _send_next(pool: asyncpg.Pool, waiting: _Waiting, conn: asyncpg.Connection) -> None:
    """Send one notification for the ids that wait longest, then hand over: a write that waits for the
    next one sends it, so no write keeps sending for others while they keep coming."""
    key = id(pool)
    waiting.sender = asyncio.get_running_loop().create_future()
    taken = waiting.ids[:MAX_IDS_PER_NOTIFICATION]
    del waiting.ids[:MAX_IDS_PER_NOTIFICATION]
    try:
        await _send(pool, conn, SEPARATOR.join(dict.fromkeys(item for item, _ in taken)))
    except BaseException:  # cancelled while sending them: a waiting write sends them again
        waiting.ids[:0] = taken
        raise
    finally:
        sender, waiting.sender = waiting.sender, None
        sender.set_result(None)
        if not waiting.ids and _waiting.get(key) is waiting:
            del _waiting[key]
    for _, sent in taken:
        if not sent.done():
            sent.set_result(None)


async def _send(pool: asyncpg.Pool, conn: asyncpg.Connection, payload: str) -> None:
    statement = NOTIFY_COMMITTED.format(payload=payload)
    try:
        await conn.execute(statement)
        return
    except NOTIFY_FAILURES as error:
        first = error
    # The write's own connection may be what failed (its link broke after the commit), while the database
    # and the other replicas' listeners are fine, and would hear nothing: once more on another of the pool's
    # connections, bounded, so that a write answers soon whatever happens here.
    try:
        async with asyncio.timeout(NOTIFY_RETRY_TIMEOUT), pool.acquire() as other:
            await other.execute(statement)
        log.info("notified the change of products %s on a second connection (the first: %r)", payload, first)
    except NOTIFY_FAILURES as error:
        log.warning(
            "could not notify the change of products %s (%r, then %r); the other replicas' caches catch "
            "up when their listeners reconnect, or after CACHE_TTL",
            payload,
            first,
            error,
        )


def apply(cache: ResponseCache, payload: str) -> None:
    """Act on one notification's payload: product ids joined by SEPARATOR (an id with REVIEWS_ONLY: its
    pages of reviews only), or `*` for everything."""
    for item in payload.split(SEPARATOR):
        product_id = item.removesuffix(REVIEWS_ONLY)
        if not product_id.isdigit():  # `*`, or anything unexpected: forgetting everything is always safe
            cache.flush()
            return
        cache.invalidate(int(product_id), summary=product_id == item)


async def listen_for_changes(app: web.Application) -> AsyncIterator[None]:
    """Cleanup context: the listener runs for the app's whole life."""
    cache = app[CACHE_KEY]
    task = None
    if cache.enabled:
        task = asyncio.create_task(_listen(app[CONFIG_KEY].database_url, cache), name="atelier-listener")
    try:
        yield
    finally:
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        cache.live = False


async def _listen(database_url: str, cache: ResponseCache) -> None:
    failures = 0
    while True:
        conn = None
        try:
            # Bounded as a whole: a link that dies silently during the LISTEN would otherwise hold it
            # until the kernel gives up on the connection (minutes), the cache off all along.
            async with asyncio.timeout(PING_INTERVAL + PING_TIMEOUT):
                conn = await asyncpg.connect(
                    database_url, server_settings={"application_name": "atelier-api-listener"}
                )
                conn.add_termination_listener(lambda _: _lost(cache))
                await conn.add_listener(CHANNEL, lambda _conn, _pid, _channel, payload: apply(cache, payload))
            cache.flush()  # what was notified while nobody listened is unknown
            cache.live = True
            if failures:
                log.info("listening for changes again; the response cache was emptied")
            failures = 0
            while True:
                await asyncio.sleep(PING_INTERVAL)
                await conn.fetchval("SELECT 1", timeout=PING_TIMEOUT)
        except (*DATABASE_UNAVAILABLE, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError) as error:
            _lost(cache)
            if failures == 0:
                log.warning(
                    "not listening for changes (%r); the response cache is off until it reconnects", error
                )
            failures += 1
        except Exception:  # a bug must not leave a cache that nobody invalidates
            _lost(cache)
            log.exception("the change listener failed; the response cache is off until it reconnects")
            failures += 1
        finally:
            if conn is not None:
                conn.terminate()
        await asyncio.sleep(RECONNECT_DELAYS[min(failures, len(RECONNECT_DELAYS)) - 1])


def _lost(cache: ResponseCache) -> None:
    cache.live = False
    cache.flush()
