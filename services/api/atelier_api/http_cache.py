"""HTTP caching: validators on every GET, and the replica's cache in front of the two hot reads.

- Every 200 answer to a GET (or HEAD) carries an ETag (a hash of its bytes) and a Cache-Control; a
  request whose If-None-Match names that ETag gets 304 with no body. Comparison is weak, as RFC 9110
  wants for If-None-Match: nginx's gzip turns a strong ETag into W/"…" and clients send that back.
- GET /reviews pages and product summaries are read through the replica's ResponseCache (cache.py):
  cache-aside, keyed by product, so a write's invalidation drops every answer about its product.
  The answer says whether it came from the cache (X-Cache: hit or miss).
"""

from __future__ import annotations

from collections.abc import Sequence

import orjson
from aiohttp import hdrs, web
from aiohttp.typedefs import Handler

from atelier_api import reviews, summaries
from atelier_api.cache import SUMMARY, Entry, etag_of
from atelier_api.keys import CACHE_KEY, CONFIG_KEY, POOL_KEY
from atelier_api.validation import ReviewsQuery

CACHE_STATUS_HEADER = "X-Cache"
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
    """The JSON body of GET /reviews for this query, and whether it came from the cache."""
    cache = app[CACHE_KEY]
    entry = cache.get(query.product_id, query)
    if entry is not None:
        return entry, True
    token = cache.token()
    results = await reviews.list_reviews(app[POOL_KEY], query)
    body = orjson.dumps(
        {"product": str(query.product_id), "page": query.page - 1, "count": query.count, "results": results}
    )
    return cache.put(query.product_id, query, body, token), False


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
