"""The route table. Every path answers with and without a trailing slash (real clients call /reviews/
and /reviews/meta/): both are registered, since a redirect would turn a POST into a GET in some
clients. The /docs page's asset files are the one exception."""

from __future__ import annotations

from aiohttp import web

from atelier_api import docs, handlers

# Digits only: anything else is no review (404). Not \d, which also matches other scripts' digits.
REVIEW = "/reviews/{review_id:[0-9]+}"


def _and_with_slash(*routes: web.RouteDef) -> list[web.RouteDef]:
    slashed = [web.route(route.method, f"{route.path}/", route.handler) for route in routes]
    return [*routes, *slashed]


routes = [
    *_and_with_slash(
        web.get("/healthz", handlers.healthz),
        web.get("/readyz", handlers.readyz),
        web.get("/metrics", handlers.metrics),
        web.get("/reviews", handlers.list_reviews),
        web.post("/reviews", handlers.create_review),
        web.get("/reviews/meta", handlers.product_meta),
        web.get("/reviews/meta/batch", handlers.product_meta_batch),
        web.get(REVIEW, handlers.get_review),
        web.put(f"{REVIEW}/helpful", handlers.mark_helpful),
        web.put(f"{REVIEW}/report", handlers.report_review),
        web.get("/openapi.json", docs.openapi_json),
        web.get("/docs", docs.docs_page),
    ),
    web.get("/docs/static/{asset}", docs.docs_asset),
]
