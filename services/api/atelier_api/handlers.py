"""HTTP handlers: validate at the edge, call the data layer, shape the response. No SQL here."""

from __future__ import annotations

from typing import Any

import orjson
from aiohttp import web

from atelier_api import http_cache, idempotency, readiness, review_draft, reviews, validation, votes
from atelier_api.cache import etag_of
from atelier_api.keys import CACHE_KEY, CLOCK_KEY, CONFIG_KEY, METRICS_KEY, POOL_KEY


def json_response(body: Any, status: int = 200) -> web.Response:
    return web.Response(status=status, body=orjson.dumps(body), content_type="application/json")


async def list_reviews(request: web.Request) -> web.Response:
    query = validation.reviews_query(request.query, request.app[CONFIG_KEY].reviews_max_count)
    page, hit = await http_cache.reviews_page(request.app, query)
    return http_cache.cached_answer(request, page.body, page.etag, hit)


async def get_review(request: web.Request) -> web.Response:
    review_id = validation.review_id(request.match_info["review_id"])
    return json_response(await reviews.get_review(request.app[POOL_KEY], review_id))


async def product_meta(request: web.Request) -> web.Response:
    product_id = validation.meta_query(request.query)
    (summary,), hit = await http_cache.product_summaries(request.app, [product_id])
    return http_cache.cached_answer(request, summary.body, summary.etag, hit)


async def product_meta_batch(request: web.Request) -> web.Response:
    product_ids = validation.meta_batch_query(request.query)
    found, hit = await http_cache.product_summaries(request.app, product_ids)
    body = b'{"results":[' + b",".join(summary.body for summary in found) + b"]}"
    return http_cache.cached_answer(request, body, etag_of(body), hit)


async def create_review(request: web.Request) -> web.Response:
    key = idempotency.key_of(request.headers)
    validation.identity_encoding(request.headers)
    body = await request.read()
    payload = validation.json_object(body)
    draft = review_draft.parse(payload)
    claim = idempotency.claim(key, draft, payload, body)
    created = await reviews.create_review(request.app[POOL_KEY], draft, request.app[CLOCK_KEY](), claim)
    request.app[CACHE_KEY].invalidate(created.product_id)  # the other replicas: by notification
    headers = {"Location": f"/reviews/{created.review_id}"}
    if created.replayed:
        headers[idempotency.REPLAYED_HEADER] = "true"
    # Storefront clients look for the text "Created".
    return web.Response(status=201, text="Created", headers=headers)


async def mark_helpful(request: web.Request) -> web.Response:
    """Adds one; nginx's retry of the same client request on another replica (the same balancer
    request id) is acknowledged again without counting again (votes.py)."""
    review_id = validation.review_id(request.match_info["review_id"])
    balancer_id = votes.balancer_request_id(request.headers)
    product_id = await votes.mark_helpful(request.app[POOL_KEY], review_id, balancer_id)
    request.app[CACHE_KEY].invalidate(product_id, summary=False)
    return web.Response(status=204)


async def report_review(request: web.Request) -> web.Response:
    review_id = validation.review_id(request.match_info["review_id"])
    product_id = await reviews.report(request.app[POOL_KEY], review_id)
    request.app[CACHE_KEY].invalidate(product_id)
    return web.Response(status=204)


async def healthz(request: web.Request) -> web.Response:
    """The process is up and serving HTTP; says nothing of the database (that is readiness)."""
    return json_response({"status": "ok"})


async def readyz(request: web.Request) -> web.Response:
    """The database answers and holds data; else 503 with Retry-After (readiness.NotReady)."""
    await readiness.check(request.app[POOL_KEY])
    return json_response({"status": "ready"})


async def metrics(request: web.Request) -> web.Response:
    body, content_type = request.app[METRICS_KEY].exposition(request.headers.get("Accept", ""))
    return web.Response(body=body, headers={"Content-Type": content_type})
