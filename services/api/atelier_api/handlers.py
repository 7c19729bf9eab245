"""HTTP handlers: validate at the edge, call the data layer, shape the response. No SQL here."""

from __future__ import annotations

from typing import Any

import orjson
from aiohttp import web

from atelier_api import readiness, review_draft, reviews, summaries, validation
from atelier_api.keys import CLOCK_KEY, CONFIG_KEY, METRICS_KEY, POOL_KEY


def json_response(body: Any, status: int = 200) -> web.Response:
    return web.Response(status=status, body=orjson.dumps(body), content_type="application/json")


async def list_reviews(request: web.Request) -> web.Response:
    query = validation.reviews_query(request.query, request.app[CONFIG_KEY].reviews_max_count)
    results = await reviews.list_reviews(request.app[POOL_KEY], query)
    return json_response(
        {"product": str(query.product_id), "page": query.page - 1, "count": query.count, "results": results}
    )


async def get_review(request: web.Request) -> web.Response:
    review_id = validation.review_id(request.match_info["review_id"])
    return json_response(await reviews.get_review(request.app[POOL_KEY], review_id))


async def product_meta(request: web.Request) -> web.Response:
    product_id = validation.meta_query(request.query)
    return json_response(await summaries.product_summary(request.app[POOL_KEY], product_id))


async def product_meta_batch(request: web.Request) -> web.Response:
    product_ids = validation.meta_batch_query(request.query)
    return json_response({"results": await summaries.product_summaries(request.app[POOL_KEY], product_ids)})


async def create_review(request: web.Request) -> web.Response:
    draft = review_draft.parse(validation.json_object(await request.read()))
    review_id = await reviews.create_review(request.app[POOL_KEY], draft, request.app[CLOCK_KEY]())
    # Storefront clients look for the text "Created".
    return web.Response(status=201, text="Created", headers={"Location": f"/reviews/{review_id}"})


async def mark_helpful(request: web.Request) -> web.Response:
    review_id = validation.review_id(request.match_info["review_id"])
    await reviews.mark_helpful(request.app[POOL_KEY], review_id)
    return web.Response(status=204)


async def report_review(request: web.Request) -> web.Response:
    review_id = validation.review_id(request.match_info["review_id"])
    await reviews.report(request.app[POOL_KEY], review_id)
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
