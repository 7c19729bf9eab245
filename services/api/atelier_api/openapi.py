"""The OpenAPI 3.1 description of the API, served at GET /openapi.json and rendered at GET /docs.

The operations are here, their shared parts in openapi_components.py. Every limit comes from the code
that enforces it or from the app's Config, so the document follows the rules; tests/api/test_openapi.py
checks real responses against it and tests/api/test_schemathesis.py fuzzes the API with it.
"""

from __future__ import annotations

from functools import cache
from typing import Any

import orjson

from atelier_api.idempotency import REPLAYED_HEADER
from atelier_api.openapi_components import (
    HTTP_LINE_LIMIT,
    VALIDATOR_HEADERS,
    Json,
    components,
    json_content,
    ref,
    response,
)
from atelier_api.votes import BALANCER_REQUEST_ID, VOTE_RETENTION

# The Swagger UI files GET /docs/static/{asset} serves (openapi_ui_bundles), with their media types.
DOCS_ASSETS = {
    "swagger-ui-bundle.js": "text/javascript; charset=utf-8",
    "swagger-ui.css": "text/css; charset=utf-8",
    "favicon-32x32.png": "image/png",
    "favicon-16x16.png": "image/png",
}

# Real clients call /reviews/ and /reviews/meta/: every path but the docs page's assets also answers
# with a trailing slash (routes.py).
NO_TRAILING_SLASH = ("/docs/static/{asset}",)
TRAILING_SLASH_TAG = "trailing-slash aliases"
TAGS = {
    "reviews": "Reviews: list, read, post, vote, report.",
    "summaries": "Rating summaries of products.",
    "operations": "Health, readiness and metrics.",
    "documentation": "This document and its page.",
    TRAILING_SLASH_TAG: "The same operations at paths with a trailing slash; they behave exactly alike.",
}
DESCRIPTION = """\
The Atelier ratings & reviews API: a drop-in replacement for the hosted Atelier Ratings & Reviews API.

* Errors are JSON, `{{"error": "...", "details": [{{"field": "...", "message": "..."}}]}}`, on every 4xx and
  5xx status, including `404` for an unknown path and `405` (with `Allow`) for a method a path does not
  take. A `POST` lists every broken rule at once.
* Bad input never gives a 5xx: `422` for an invalid parameter or body field, `400` for a body that is not
  JSON (JSON that is not an object holds no field: `422` naming each required one), `413` for a body
  larger than {max_body_bytes} bytes, `415` for a body sent compressed (a `Content-Encoding` other than
  `identity`).
* `503` with `Retry-After` while the database is unreachable, or when it rolled a request back (a
  deadlock with a load's switch, say: nothing was changed, send it again); `500` for an unexpected
  failure. Neither body says more than that.
* The one error that is not JSON: a request line longer than {line_limit} bytes is refused by the HTTP
  server before the application, with `400` and a plain-text body (behind nginx: `414`).
* Paths work with and without a trailing slash (real clients call `/reviews/` and `/reviews/meta/`);
  the variants are listed under "{trailing_slash_tag}".
* Every response names the replica that served it (`X-Replica`) and its request id (`X-Request-Id`: the
  caller's own when it sent a plain token of at most 64 characters `[A-Za-z0-9._-]`, else a new one).
"""

ERROR_RESPONSES = {
    "400": "MalformedBody",
    "404": "NotFound",
    "413": "PayloadTooLarge",
    "415": "UnsupportedEncoding",
    "422": "InvalidInput",
    "500": "InternalError",
    "503": "DatabaseUnavailable",
}
VOTE_RETENTION_HOURS = int(VOTE_RETENTION.total_seconds() // 3600)
# What any request that reads or writes the database may meet.
DATABASE_ERRORS = ("500", "503")


def _errors(*statuses: str, not_found: str = ERROR_RESPONSES["404"]) -> Json:
    """The shared error responses of these statuses (`not_found` names the 404's). Every operation may
    also meet a 400: a request line too long for the HTTP server (RequestTooLong); MalformedBody says so
    too."""
    names = ERROR_RESPONSES | {"404": not_found}
    errors = {"400": ref("responses", "RequestTooLong")}
    errors |= {status: ref("responses", names[status]) for status in statuses}
    return dict(sorted(errors.items()))


def _operation(operation_id: str, tag: str, summary: str, responses: Json, **extra: Any) -> Json:
    return {"operationId": operation_id, "tags": [tag], "summary": summary, "responses": responses} | extra


def _parameters(*names: str) -> list[Json]:
    return [ref("parameters", name) for name in names]


def _review_paths() -> Json:
    # GET shows no reported review; the PUTs take any review, reported ones included.
    with_review_id, with_any_review_id = _parameters("review_id"), _parameters("any_review_id")
    return {
        "/reviews": {
            "get": _operation(
                "listReviews",
                "reviews",
                "A product's reviews, paged",
                {
                    "200": response(
                        'One page of the product\'s reviews (`"results": []` when it has none); reported '
                        "reviews never appear.",
                        json_content(ref("schemas", "ReviewPage")),
                    ),
                    **_errors("422", *DATABASE_ERRORS),
                },
                parameters=_parameters("product_id", "page", "count", "sort", "rating", "with_photos"),
            ),
            "post": _operation(
                "createReview",
                "reviews",
                "Post a review",
                {
                    "201": response(
                        "Stored with its photos and characteristic ratings, in one transaction; or, with "
                        "an Idempotency-Key already used with this body, the replay of that first answer.",
                        {"text/plain": {"schema": {"type": "string", "const": "Created"}}},
                        {
                            "Location": {
                                "description": "Where the new review is.",
                                "required": True,
                                "schema": {"type": "string", "pattern": "^/reviews/[1-9][0-9]*$"},
                            },
                            REPLAYED_HEADER: ref("headers", REPLAYED_HEADER),
                        },
                    ),
                    **_errors("400", "413", "415", "422", *DATABASE_ERRORS),
                    "409": ref("responses", "RequestInProgress"),
                },
                parameters=_parameters("idempotency_key"),
                requestBody={"required": True, "content": json_content(ref("schemas", "NewReview"))},
            ),
        },
        "/reviews/meta": {
            "get": _operation(
                "productMeta",
                "summaries",
                "A product's rating summary",
                {
                    "200": response(
                        "The summary of the stored, non-reported reviews; for an unknown product, all empty.",
                        json_content(ref("schemas", "ProductMeta")),
                    ),
                    **_errors("422", *DATABASE_ERRORS),
                },
                parameters=_parameters("product_id"),
            )
        },
        "/reviews/meta/batch": {
            "get": _operation(
                "productMetaBatch",
                "summaries",
                "Extension: the summaries of several products at once",
                {
                    "200": response(
                        "One summary per id, in the order given.",
                        json_content(ref("schemas", "ProductMetaBatch")),
                    ),
                    **_errors("422", *DATABASE_ERRORS),
                },
                parameters=_parameters("product_ids"),
            )
        },
        "/reviews/{review_id}": {
            "get": _operation(
                "getReview",
                "reviews",
                "Extension: one review (where POST's Location points)",
                {
                    "200": response("The review.", json_content(ref("schemas", "Review"))),
                    **_errors("404", *DATABASE_ERRORS, not_found="ReviewNotFound"),
                },
                parameters=with_review_id,
            )
        },
        "/reviews/{review_id}/helpful": {
            "put": _operation(
                "markHelpful",
                "reviews",
                "One more helpful vote",
                {
                    "204": response(
                        "Counted: each request adds one, whatever its X-Request-Id. Behind nginx, its "
                        "retry of the request on another replica is acknowledged, not counted again: "
                        f"nginx sends its own {BALANCER_REQUEST_ID} (replacing any a client sent), and a "
                        f"replica counts that id once per review within {VOTE_RETENTION_HOURS} hours."
                    ),
                    **_errors("404", *DATABASE_ERRORS, not_found="UnknownReview"),
                },
                parameters=with_any_review_id,
            )
        },
        "/reviews/{review_id}/report": {
            "put": _operation(
                "reportReview",
                "reviews",
                "Report a review: hidden from lists and summaries from now on",
                {
                    "204": response("Reported; reporting again changes nothing (and answers 204)."),
                    **_errors("404", *DATABASE_ERRORS, not_found="UnknownReview"),
                },
                parameters=with_any_review_id,
            )
        },
    }


def _operations_paths() -> Json:
    return {
        "/healthz": {
            "get": _operation(
                "healthz",
                "operations",
                "Extension: the process is alive",
                {
                    "200": response(
                        "Serving HTTP; says nothing of the database.", json_content(ref("schemas", "Status"))
                    ),
                    **_errors("500"),
                },
            )
        },
        "/readyz": {
            "get": _operation(
                "readyz",
                "operations",
                "Extension: the database is reachable and holds data",
                {
                    "200": response("Ready for traffic.", json_content(ref("schemas", "Status"))),
                    **_errors("500"),
                    "503": ref("responses", "NotReady"),
                },
            )
        },
        "/metrics": {
            "get": _operation(
                "metrics",
                "operations",
                "Extension: Prometheus metrics",
                {
                    "200": response(
                        "This process's metrics; OpenMetrics when the Accept header asks for it.",
                        {
                            "text/plain": {"schema": {"type": "string"}},
                            "application/openmetrics-text": {"schema": {"type": "string"}},
                        },
                    ),
                    **_errors("500"),
                },
            )
        },
    }


def _documentation_paths() -> Json:
    # Text as a string; images are binary, which OpenAPI 3.1 describes with no schema.
    assets = {
        media_type.split(";")[0]: {"schema": {"type": "string"}} if "charset" in media_type else {}
        for media_type in DOCS_ASSETS.values()
    }
    asset = {
        "name": "asset",
        "in": "path",
        "required": True,
        "schema": {"type": "string", "enum": list(DOCS_ASSETS)},
    }
    return {
        "/openapi.json": {
            "get": _operation(
                "openapi",
                "documentation",
                "This document",
                {
                    "200": response(
                        "The OpenAPI 3.1 description of the API.",
                        json_content({"type": "object", "required": ["openapi", "info", "paths"]}),
                    ),
                    **_errors("500"),
                },
            )
        },
        "/docs": {
            "get": _operation(
                "docs",
                "documentation",
                "This documentation page (Swagger UI, served by the API itself: no CDN)",
                {
                    "200": response("The page.", {"text/html": {"schema": {"type": "string"}}}),
                    **_errors("500"),
                },
            )
        },
        "/docs/static/{asset}": {
            "get": _operation(
                "docsAsset",
                "documentation",
                "A file of the documentation page",
                {
                    "200": response("The file.", assets),
                    "304": response(
                        "Not modified since the copy that If-None-Match or If-Modified-Since names."
                    ),
                    **_errors("404", "500"),
                },
                parameters=[asset],
            )
        },
    }


def _paths() -> Json:
    paths = _review_paths() | _operations_paths() | _documentation_paths()
    for path in [path for path in paths if path not in NO_TRAILING_SLASH]:
        paths[f"{path}/"] = {
            method: operation
            | {
                "operationId": f"{operation['operationId']}TrailingSlash",
                "tags": [TRAILING_SLASH_TAG],
                "summary": f"Same as {method.upper()} {path}",
            }
            for method, operation in paths[path].items()
        }
    return paths


def document(max_count: int, max_body_bytes: int) -> Json:
    """The OpenAPI document of an app that takes `count` up to max_count and bodies up to max_body_bytes
    (Config.reviews_max_count and Config.max_body_bytes)."""
    description = DESCRIPTION.format(
        max_body_bytes=max_body_bytes, line_limit=HTTP_LINE_LIMIT, trailing_slash_tag=TRAILING_SLASH_TAG
    )
    return {
        "openapi": "3.1.0",
        "info": {"title": "Atelier ratings & reviews", "version": "1.0.0", "description": description},
        "tags": [{"name": name, "description": about} for name, about in TAGS.items()],
        "paths": _with_validators(_paths()),
        "components": components(max_count, max_body_bytes),
    }


def _with_validators(paths: Json) -> Json:
    """Every GET answers 200 with an ETag and a Cache-Control, and 304 to a matching If-None-Match
    (atelier_api/http_cache.py; aiohttp does the same for the /docs assets it serves from files)."""
    for item in paths.values():
        get = item.get("get")
        if get is None or "200" not in get["responses"]:
            continue
        ok = get["responses"]["200"]
        ok["headers"] = ok.get("headers", {}) | VALIDATOR_HEADERS
        get["responses"] = dict(sorted((get["responses"] | {"304": ref("responses", "NotModified")}).items()))
    return paths


@cache
def document_json(max_count: int, max_body_bytes: int) -> bytes:
    """document(), serialized once per pair of limits."""
    return orjson.dumps(document(max_count, max_body_bytes))
