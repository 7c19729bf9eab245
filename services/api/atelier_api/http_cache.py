"""HTTP caching: validators on every GET, and the replica's cache in front of the two hot reads.

- Every 200 answer to a GET (or HEAD) carries an ETag (a hash of its bytes) and a Cache-Control; a
  request whose If-None-Match names that ETag gets 304 with no body. Comparison is weak, as RFC 9110
  wants for If-None-Match: nginx's gzip turns a strong ETag into W/"…" and clients send that back.
- GET /reviews pages and product summaries are read through the replica's ResponseCache (cache.py):
  cache-aside, keyed by product, so a write's invalidation drops every answer about its product. Every
  page of a product's reviews is cut from one entry holding all of them (per order for the few products
  with more than REVIEWS_WINDOW).
  The answer says whether it came from the cache (X-Cache: hit or miss).
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import replace
from typing import NamedTuple

import orjson
from aiohttp import hdrs, web
from aiohttp.typedefs import Handler

from atelier_api import reviews, summaries
from atelier_api.cache import SUMMARY, Entry, etag_of
from atelier_api.keys import CACHE_KEY, CONFIG_KEY, POOL_KEY
from atelier_api.validation import INT32_MAX, ReviewsQuery, Sort

CACHE_STATUS_HEADER = "X-Cache"
# A product with at most this many reviews is cached whole (one entry answers every GET /reviews of it);
# one with more, per order: its first this many (see reviews_page). The mix's page sizes (5, 20, 100)
# all fall inside it. Below 256: Layout keeps a review's place in one byte.
REVIEWS_WINDOW = 100
# The variant of a product's every review (cache.SUMMARY is its summary's).
ALL_REVIEWS = "reviews"
# What a GET that sets no Cache-Control of its own gets: clients revalidate (cheap, with the ETag).
REVALIDATE = "no-cache"


@web.middleware
async def conditional_get(request: web.Request, handler: Handler) -> web.StreamResponse:
    response = await handler(request)
    if (
        request.method not in (hdrs.METH_GET, hdrs.METH_HEAD)
        or response.status != 200
        or not isinstance(response, web.Response)
        or not isinstance(response.body, bytes)
    ):
        return response  # errors, and files (aiohttp's FileResponse does its own validators)
    etag = response.headers.get(hdrs.ETAG)
    if etag is None:
        etag = response.headers[hdrs.ETAG] = etag_of(response.body)
    response.headers.setdefault(hdrs.CACHE_CONTROL, REVALIDATE)
    if not matches(request.headers.get(hdrs.IF_NONE_MATCH), etag):
        return response
    kept = (hdrs.ETAG, hdrs.CACHE_CONTROL, CACHE_STATUS_HEADER)
    return web.Response(
        status=304, headers={name: response.headers[name] for name in kept if name in response.headers}
    )


def matches(if_none_match: str | None, etag: str) -> bool:
    """Whether an If-None-Match header names this entity tag (weak comparison) or is `*`."""
    if not if_none_match:
        return False
    if if_none_match.strip() == "*":
        return True
    opaque = etag.removeprefix("W/")
    return any(candidate.strip().removeprefix("W/") == opaque for candidate in if_none_match.split(","))


def cache_control(max_age: int) -> str:
    return f"public, max-age={max_age}" if max_age > 0 else REVALIDATE


def cached_answer(request: web.Request, body: bytes, etag: str, hit: bool) -> web.Response:
    """A JSON answer of the cached reads, with its validator and the client's max-age."""
    headers = {
        hdrs.ETAG: etag,
        hdrs.CACHE_CONTROL: cache_control(request.app[CONFIG_KEY].http_cache_max_age),
        CACHE_STATUS_HEADER: "hit" if hit else "miss",
    }
    return web.Response(body=body, content_type="application/json", headers=headers)


async def reviews_page(app: web.Application, query: ReviewsQuery) -> tuple[Entry, bool]:
    """The JSON body of GET /reviews for this query, and whether it came from the cache.

    A product with at most REVIEWS_WINDOW reviews (nearly all of them) is read whole, once: every page
    of it, in any sort, with any filter and of any size, is cut from that one entry (`_cut`), so a
    storefront's first page of each sort costs one database read, not one per sort, and a write drops
    one entry. A product with more is cached per order: its first REVIEWS_WINDOW reviews in the asked
    sort and filters (`_window_page`). While the cache cannot keep anything (off, or its listener away)
    every page is read as asked: reading more than the page pays only when it is kept."""
    if query.product_id > INT32_MAX:  # names no product (the column is an integer): none of its reviews
        body = _page_body(query, b"")
        return Entry(body, etag_of(body)), False
    cache = app[CACHE_KEY]
    if not cache.keeping:
        return await _reviews_page_as_asked(app, query)
    whole = cache.get(query.product_id, ALL_REVIEWS)
    hit = whole is not None
    if whole is None:
        whole = await _read_whole(app, query.product_id)
    if not whole.layout:
        return await _window_page(app, query)
    # The page's bytes follow from its URL and the entry's bytes and layout (both in the entry's ETag),
    # so the entry's validator with the URL's query is the page's: no hash of the page per request.
    variant = f"{query.sort.value}-{''.join(map(str, query.ratings))}-{int(query.with_photos)}"
    etag = f'{whole.etag[:-1]}-{variant}-{query.page}-{query.count}"'
    return Entry(_page_body(query, _cut(whole, query)), etag), hit


async def _read_whole(app: web.Application, product_id: int) -> Entry:
    """Read a product's every review into its ALL_REVIEWS entry (kept when the cache may keep it); an
    entry with no layout when it has more than REVIEWS_WINDOW, so that its pages go per order."""
    cache = app[CACHE_KEY]
    token = cache.token()
    read = await reviews.all_reviews(app[POOL_KEY], product_id, REVIEWS_WINDOW)
    if read is None:
        return cache.put(product_id, ALL_REVIEWS, b"", token)
    body, starts = _joined(read.newest)
    layout = Layout(
        ratings=bytes(review["rating"] for review in read.newest),
        photos=bytes(bool(review["photos"]) for review in read.newest),
        newest=bytes(read.orders[Sort.NEWEST]),
        helpful=bytes(read.orders[Sort.HELPFUL]),
        relevant=bytes(read.orders[Sort.RELEVANT]),
    )
    return cache.put(product_id, ALL_REVIEWS, body, token, starts, layout)


def _joined(results: list[reviews.Json]) -> tuple[bytes, tuple[int, ...]]:
    """Reviews as JSON values joined by commas, and where each starts (cache.Entry.starts)."""
    parts = [orjson.dumps(review) for review in results]
    return b",".join(parts), (0, *itertools.accumulate(len(part) + 1 for part in parts))


class Layout(NamedTuple):
    """How a product's reviews lie in its ALL_REVIEWS entry: one byte per review (in newest order) in
    each of these, which REVIEWS_WINDOW < 256 allows."""

    ratings: bytes  # its stars
    photos: bytes  # 1 when it has a photo
    newest: bytes  # the reviews' places, in each order
    helpful: bytes
    relevant: bytes


def _cut(whole: Entry, query: ReviewsQuery) -> bytes:
    """The page's reviews (JSON, comma-joined) out of a product's every review."""
    layout = Layout(*whole.layout)
    order: Sequence[int] = getattr(layout, query.sort.value)
    if query.ratings or query.with_photos:
        stars = query.ratings or range(1, 6)
        order = [
            i for i in order if layout.ratings[i] in stars and (layout.photos[i] or not query.with_photos)
        ]
    start = (query.page - 1) * query.count
    body, starts = whole.body, whole.starts
    return b",".join(body[starts[i] : starts[i + 1] - 1] for i in order[start : start + query.count])


async def _window_page(app: web.Application, query: ReviewsQuery) -> tuple[Entry, bool]:
    """A page of a product with more than REVIEWS_WINDOW reviews. Within the first REVIEWS_WINDOW
    reviews of its order (the sort and filters) it is cut from one cached entry per order, which every
    page size shares; beyond, it is read and cached as asked."""
    cache = app[CACHE_KEY]
    start = (query.page - 1) * query.count
    if start + query.count > REVIEWS_WINDOW:
        return await _reviews_page_as_asked(app, query)
    order = window_variant(query)
    window = cache.get(query.product_id, order)
    hit = window is not None
    if window is None:
        token = cache.token()
        first = replace(query, page=1, count=REVIEWS_WINDOW)
        body, starts = _joined(await reviews.list_reviews(app[POOL_KEY], first))
        window = cache.put(query.product_id, order, body, token, starts)
    stop = min(start + query.count, len(window.starts) - 1)
    results = window.body[window.starts[start] : window.starts[stop] - 1] if start < stop else b""
    # As for a page cut from a product's every review: the window's validator with the page's place.
    return Entry(_page_body(query, results), f'{window.etag[:-1]}-{query.page}-{query.count}"'), hit


async def _reviews_page_as_asked(app: web.Application, query: ReviewsQuery) -> tuple[Entry, bool]:
    cache = app[CACHE_KEY]
    variant = page_variant(query)
    entry = cache.get(query.product_id, variant)
    if entry is not None:
        return entry, True
    token = cache.token()
    results = await reviews.list_reviews(app[POOL_KEY], query)
    body = _page_body(query, b",".join(orjson.dumps(review) for review in results))
    return cache.put(query.product_id, variant, body, token), False


# The cache keys of GET /reviews: plain values only, which the garbage collector stops tracking (cache.py).
def window_variant(query: ReviewsQuery) -> tuple[str, tuple[int, ...], bool]:
    """The key of an order's first REVIEWS_WINDOW reviews (the product is the cache's own key)."""
    return (query.sort.value, query.ratings, query.with_photos)


def page_variant(query: ReviewsQuery) -> tuple[str, tuple[int, ...], bool, int, int]:
    """The key of a page beyond the window, cached as asked."""
    return (query.sort.value, query.ratings, query.with_photos, query.page, query.count)


def _page_body(query: ReviewsQuery, results: bytes) -> bytes:
    """GET /reviews's JSON, as orjson would write it, around the page's reviews (JSON, comma-joined)."""
    head = b'{"product":"%d","page":%d,"count":%d,"results":[' % (
        query.product_id,
        query.page - 1,
        query.count,
    )
    return head + results + b"]}"


async def product_summaries(app: web.Application, product_ids: Sequence[int]) -> tuple[list[Entry], bool]:
    """The meta object (JSON) of each product, in the order given, and whether all came from the cache.
    The ones not cached are read in one statement."""
    cache = app[CACHE_KEY]
    token = cache.token()
    found: dict[int, Entry] = {}
    missing: list[int] = []
    for product_id in dict.fromkeys(product_ids):
        entry = cache.get(product_id, SUMMARY)
        if entry is None:
            missing.append(product_id)
        else:
            found[product_id] = entry
    if missing:
        read = await summaries.product_summaries(app[POOL_KEY], missing)
        for product_id, summary in zip(missing, read, strict=True):
            found[product_id] = cache.put(product_id, SUMMARY, orjson.dumps(summary), token)
    return [found[product_id] for product_id in product_ids], not missing
