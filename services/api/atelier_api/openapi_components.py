"""The reusable parts of the OpenAPI document (openapi.py): body shapes, parameters, headers and the error
responses. Every limit is taken from the code that enforces it or from the app's Config."""

from __future__ import annotations

import inspect
from datetime import timedelta
from typing import Any

from aiohttp.web_protocol import RequestHandler
from email_validator import SPECIAL_USE_DOMAIN_NAMES

from atelier_api import idempotency
from atelier_api.review_draft import (
    MAX_CHARACTERISTICS,
    MAX_PHOTO_URL_LENGTH,
    MAX_PHOTOS,
    MAX_RATING,
    MIN_RATING,
    TEXT_LENGTHS,
)
from atelier_api.validation import (
    ASKED_PRODUCT_MAX,
    DEFAULT_COUNT,
    DEFAULT_PAGE,
    INT32_MAX,
    INT64_MAX,
    MAX_BATCH_PRODUCTS,
    Sort,
)

Json = dict[str, Any]

# Ids and counts in meta are JSON strings of digits, as the hosted API sent them.
ID_STRING = "^[1-9][0-9]*$"
COUNT_STRING = "^(0|[1-9][0-9]*)$"
MEAN_STRING = r"^[0-9]+\.[0-9]{16}$"  # round(avg(value), 16)::text
DATE_STRING = r"^[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}\.[0-9]{3}Z$"
NO_NUL = "^[^\\u0000]*$"  # PostgreSQL text cannot hold NUL
# Characters no photo URL may hold (review_draft._is_http_url), in the Basic Multilingual Plane: spaces and
# what str.isprintable() refuses: controls (DEL too), format characters (the soft hyphen U+00AD, U+200B and
# the like), separators, surrogates and private use. (The code also refuses unassigned code points, and
# those beyond the plane that are not printable; JSON Schema's regexes name neither well.)
_NOT_PRINTABLE = (
    r"\u0000-\u0020\u007F-\u00A0\u00AD\u0600-\u0605\u061C\u06DD\u070F\u0890\u0891\u08E2\u1680\u180E"
    r"\u2000-\u200F\u2028-\u202F\u205F-\u2064\u2066-\u206F\u3000\uD800-\uF8FF\uFEFF\uFFF9-\uFFFB"
)
# And in the part before the path, characters that NFKC turns into one of /?#@: (urlsplit refuses them).
_NOT_IN_NETLOC = _NOT_PRINTABLE + (
    r"\u2047-\u2049\u2100\u2101\u2105\u2106\u2A74\uFE13\uFE16\uFE55\uFE56\uFE5F\uFE6B"
    r"\uFF03\uFF0F\uFF1A\uFF1F\uFF20"
)
_H16 = "[0-9A-Fa-f]{1,4}"
_DEC_OCTET = "(?:25[0-5]|2[0-4][0-9]|1[0-9]{2}|[1-9]?[0-9])"
_LS32 = rf"(?:{_H16}:{_H16}|{_DEC_OCTET}(?:\.{_DEC_OCTET}){{3}})"
# RFC 3986's IPv6address: what Python's ipaddress, which urlsplit checks a bracketed host with, reads.
_IPV6 = "|".join(
    [
        rf"(?:{_H16}:){{6}}{_LS32}",
        rf"::(?:{_H16}:){{5}}{_LS32}",
        rf"(?:{_H16})?::(?:{_H16}:){{4}}{_LS32}",
        rf"(?:(?:{_H16}:){{0,1}}{_H16})?::(?:{_H16}:){{3}}{_LS32}",
        rf"(?:(?:{_H16}:){{0,2}}{_H16})?::(?:{_H16}:){{2}}{_LS32}",
        rf"(?:(?:{_H16}:){{0,3}}{_H16})?::{_H16}:{_LS32}",
        rf"(?:(?:{_H16}:){{0,4}}{_H16})?::{_LS32}",
        rf"(?:(?:{_H16}:){{0,5}}{_H16})?::{_H16}",
        rf"(?:(?:{_H16}:){{0,6}}{_H16})?::",
    ]
)
# What review_draft._is_http_url takes as a photo, as near as a regex gets: http or https in any case,
# `//`, perhaps a user and `@`, a host that is not empty (a name, or in brackets an IPv6 address, with a
# zone or not, or an IPvFuture one), perhaps `:` and a port, then anything from the first / ? or #; and
# nowhere a character of _NOT_PRINTABLE. (It leaves out a few oddities urlsplit lets through, such as
# brackets in the user part or text between `]` and the port, which newer Pythons refuse;
# tests/api/test_openapi.py compares the two.)
HTTP_URL = (
    rf"^[Hh][Tt][Tt][Pp][Ss]?://(?:[^/?#\[\]{_NOT_IN_NETLOC}]*@)?"
    rf"(?:\[(?:(?:{_IPV6})(?:%[^%/?#@\[\]{_NOT_IN_NETLOC}]+)?|v[0-9A-Fa-f]+\.[^/?#@\[\]{_NOT_IN_NETLOC}]+)\]"
    rf"|[^/?#@\[\]:{_NOT_IN_NETLOC}]+)"
    rf"(?::[^/?#@\[\]{_NOT_IN_NETLOC}]*)?(?:[/?#][^{_NOT_PRINTABLE}]*)?$"
)
CHARACTERISTIC_ID = "^0*[1-9][0-9]*$"
REQUEST_ID = "^[A-Za-z0-9._-]{1,64}$"  # observability.PLAIN_TOKEN
# What review_draft._email checks (email-validator, no DNS lookup), beyond JSON Schema's `email` format.
EMAIL_RULE = (
    "A valid address as email-validator checks it, without looking the domain up; stored, never returned. "
    "The part before the @ is dot-separated words (a quoted local part is refused, as is a display name); "
    "the domain is a name with a period and a real top-level domain (a bracketed IP address is refused), "
    "and no special-use name ("
    + ", ".join(f"`.{name}`" for name in SPECIAL_USE_DOMAIN_NAMES)
    + "). Internationalized addresses are accepted."
)
# The HTTP server's limit on the request line: aiohttp's default, which the app keeps.
HTTP_LINE_LIMIT: int = inspect.signature(RequestHandler).parameters["max_line_size"].default


def ref(kind: str, name: str) -> Json:
    return {"$ref": f"#/components/{kind}/{name}"}


def json_content(schema: Json) -> Json:
    return {"application/json": {"schema": schema}}


def response(description: str, content: Json | None = None, headers: Json | None = None) -> Json:
    """A response object of the application: each one carries X-Replica and X-Request-Id."""
    common = {name: ref("headers", name) for name in ("X-Replica", "X-Request-Id")}
    described: Json = {"description": description, "headers": common | (headers or {})}
    return described | ({"content": content} if content is not None else {})


def error(description: str, headers: Json | None = None) -> Json:
    return response(description, json_content(ref("schemas", "Error")), headers)


def _hours(duration: timedelta) -> int:
    return int(duration.total_seconds() // 3600)


def _integer(low: int, high: int, **extra: Any) -> Json:
    return {"type": "integer", "minimum": low, "maximum": high} | extra


def _stars(**extra: Any) -> Json:
    return _integer(MIN_RATING, MAX_RATING, **extra)


def _text(field: str, description: str, **extra: Any) -> Json:
    low, high = TEXT_LENGTHS[field]
    return {"type": "string", "minLength": low, "maxLength": high, "description": description} | extra


def _object(properties: Json, required: list[str] | None = None, **extra: Any) -> Json:
    """An object of exactly these properties, every one always present unless `required` says otherwise."""
    shape = {"type": "object", "required": list(properties) if required is None else required}
    return shape | {"additionalProperties": False, "properties": properties} | extra


def _query(name: str, schema: Json, description: str, required: bool = False, **style: Any) -> Json:
    return {
        "name": name,
        "in": "query",
        "required": required,
        "description": description,
        "schema": schema,
    } | style


def parameters(max_count: int) -> Json:
    review_id = _integer(1, INT64_MAX, examples=[1])
    return {
        "product_id": _query(
            "product_id",
            _integer(1, ASKED_PRODUCT_MAX, examples=[2]),
            f"The product; digits only. One past {INT32_MAX} names no product: answered as an unknown one.",
            required=True,
        ),
        "page": _query(
            "page",
            _integer(1, INT32_MAX, default=DEFAULT_PAGE),
            "The page, from 1; the response's `page` is zero-based (page=1 gives 0).",
        ),
        "count": _query(
            "count",
            _integer(1, max_count, default=DEFAULT_COUNT),
            f"Reviews per page, at most {max_count} (REVIEWS_MAX_COUNT): more gives 422, never a silent cap.",
        ),
        "sort": _query(
            "sort",
            {"type": "string", "enum": [sort.value for sort in Sort], "default": Sort.RELEVANT.value},
            "`newest`: date descending. `helpful`: helpfulness, then date, descending. `relevant`: "
            "log2(1 + helpfulness) + (date in seconds since 1970) / 31557600, descending. Ties: review id "
            "descending.",
        ),
        "rating": _query(
            "rating",
            {"type": "array", "items": _stars(), "minItems": 1, "examples": [[4, 5]]},
            "Extension: only reviews with these stars, comma-separated (`rating=4,5`).",
            style="form",
            explode=False,
        ),
        "with_photos": _query(
            "with_photos",
            {"type": "boolean", "default": False},
            "Extension: `true` for only the reviews with at least one photo.",
        ),
        "product_ids": _query(
            "product_ids",
            {
                "type": "array",
                "items": _integer(1, ASKED_PRODUCT_MAX),
                "minItems": 1,
                "maxItems": MAX_BATCH_PRODUCTS,
                "examples": [[2, 3]],
            },
            f"Up to {MAX_BATCH_PRODUCTS} products, comma-separated (`product_ids=1,2,3`); repeats are kept.",
            required=True,
            style="form",
            explode=False,
        ),
        "idempotency_key": {
            "name": idempotency.HEADER,
            "in": "header",
            "required": False,
            "description": "Extension: makes a retry safe. The same key with the same body within "
            f"{_hours(idempotency.KEY_RETENTION)} hours replays the first `201` (with "
            f"`{idempotency.REPLAYED_HEADER}: true`) and stores nothing; with another body, `422`; while "
            "the first request is still running, `409`. Only a `201` is remembered: after a `4xx` or "
            f"`5xx` the key is free. 1 to {idempotency.MAX_KEY_LENGTH} printable ASCII characters.",
            "schema": {
                "type": "string",
                "minLength": 1,
                "maxLength": idempotency.MAX_KEY_LENGTH,
                "pattern": idempotency.KEY_PATTERN,
                "examples": ["5b2c0d6e-6f4a-4d5b-9a47-0c1e2f3a4b5c"],
            },
        },
        "review_id": {
            "name": "review_id",
            "in": "path",
            "required": True,
            "description": "The review; digits only. One that does not exist, or is reported, gives 404.",
            "schema": review_id,
        },
        "any_review_id": {
            "name": "review_id",
            "in": "path",
            "required": True,
            "description": "The review, reported or not; digits only. One that does not exist gives 404; "
            "a reported one is still a review (204).",
            "schema": review_id,
        },
    }


def schemas(max_count: int) -> Json:
    return {
        "Error": _object(
            {
                "error": {"type": "string", "examples": ["invalid product_id provided"]},
                "details": {"type": "array", "items": ref("schemas", "FieldError")},
            }
        ),
        "FieldError": _object(
            {
                "field": {"type": "string", "examples": ["product_id", "photos[0]", "characteristics.14"]},
                "message": {"type": "string", "examples": ["must be a positive integer"]},
            }
        ),
        "Photo": _object(
            {
                "id": _integer(1, INT64_MAX),
                "url": {"type": "string", "examples": ["https://images.example/1.jpg"]},
            }
        ),
        "Review": _object(
            {
                "review_id": _integer(1, INT64_MAX, examples=[5]),
                "rating": _stars(examples=[3]),
                "summary": {"type": "string", "examples": ["I'm enjoying wearing these shades"]},
                "recommend": {"type": "boolean"},
                "response": {
                    "type": ["string", "null"],
                    "minLength": 1,
                    "description": "The seller's response; null when there is none.",
                    "examples": [None],
                },
                "body": {"type": "string", "examples": ["Comfortable and practical."]},
                "date": {
                    "type": "string",
                    "format": "date-time",
                    "pattern": DATE_STRING,
                    "description": "UTC, with milliseconds and Z.",
                    "examples": ["2019-04-14T00:00:00.000Z"],
                },
                "reviewer_name": {"type": "string", "examples": ["shortandsweeet"]},
                "helpfulness": _integer(0, INT32_MAX, examples=[5]),
                "photos": {"type": "array", "items": ref("schemas", "Photo")},
            },
            # reviewer_email above all is never in a review.
        ),
        "ReviewPage": _object(
            {
                "product": {"type": "string", "pattern": ID_STRING, "examples": ["2"]},
                "page": _integer(
                    0, INT32_MAX - 1, description="Zero-based: the page asked for, minus 1.", examples=[0]
                ),
                "count": _integer(1, max_count, description="The count asked for.", examples=[DEFAULT_COUNT]),
                "results": {"type": "array", "items": ref("schemas", "Review"), "maxItems": max_count},
            }
        ),
        "ProductMeta": _object(
            {
                "product_id": {"type": "string", "pattern": ID_STRING, "examples": ["2"]},
                "ratings": {
                    "type": "object",
                    "description": "Stars to their number of reviews; stars without reviews are left out.",
                    "propertyNames": {"enum": [str(stars) for stars in range(MIN_RATING, MAX_RATING + 1)]},
                    "additionalProperties": {"type": "string", "pattern": ID_STRING},
                    "examples": [{"2": "1", "3": "1", "4": "2"}],
                },
                "recommended": {
                    "type": "object",
                    "description": 'Both keys whenever the product has a review (a zero count is "0"); '
                    "{} when it has none.",
                    "properties": {
                        key: {"type": "string", "pattern": COUNT_STRING} for key in ("false", "true")
                    },
                    "additionalProperties": False,
                    "anyOf": [{"maxProperties": 0}, {"required": ["false", "true"]}],
                    "examples": [{"false": "1", "true": "3"}],
                },
                "characteristics": {
                    "type": "object",
                    "description": "Every characteristic of the product, by name.",
                    "additionalProperties": ref("schemas", "CharacteristicMean"),
                    "examples": [{"Quality": {"id": 5, "value": "4.2500000000000000"}}],
                },
            }
        ),
        "CharacteristicMean": _object(
            {
                "id": _integer(1, INT64_MAX),
                "value": {
                    "type": ["string", "null"],
                    "pattern": MEAN_STRING,
                    "description": "The mean rating with exactly 16 decimals, rounded half away from zero; "
                    "null when no review rated it.",
                },
            }
        ),
        "ProductMetaBatch": _object(
            {
                "results": {
                    "type": "array",
                    "description": "One summary per entry of product_ids, in the same order.",
                    "items": ref("schemas", "ProductMeta"),
                    "minItems": 1,
                    "maxItems": MAX_BATCH_PRODUCTS,
                }
            }
        ),
        "NewReview": _object(
            {
                "product_id": _integer(
                    1, INT32_MAX, description="A known product: one with characteristics or reviews."
                ),
                "rating": _stars(),
                "summary": _text("summary", "May be empty or missing.", pattern=NO_NUL, default=""),
                "body": _text("body", "The review.", pattern=NO_NUL),
                "recommend": {"type": "boolean"},
                "name": _text("name", "The reviewer's name, shown with the review.", pattern=NO_NUL),
                "email": _text("email", EMAIL_RULE, format="email"),
                "photos": {
                    "type": "array",
                    "maxItems": MAX_PHOTOS,
                    "items": {"type": "string", "maxLength": MAX_PHOTO_URL_LENGTH, "pattern": HTTP_URL},
                    "description": "http(s) URLs of photos, kept in this order.",
                    "default": [],
                },
                "characteristics": {
                    "type": "object",
                    "description": "Characteristic id to its rating; each a characteristic of the product.",
                    "propertyNames": {"pattern": CHARACTERISTIC_ID},
                    "maxProperties": MAX_CHARACTERISTICS,
                    "additionalProperties": _stars(),
                    "default": {},
                },
            },
            required=["product_id", "rating", "body", "recommend", "name", "email"],
            additionalProperties=True,  # other fields are ignored
            description=(
                "Integers are written as JSON integers: `5.0`, which JSON Schema counts as an integer, "
                'is refused with 422, as are `true` and `"5"`.'
            ),
            examples=[
                {
                    "product_id": 2,
                    "rating": 4,
                    "summary": "Fits well",
                    "body": "These fit exactly as described and have held up after many washes.",
                    "recommend": True,
                    "name": "jackson11",
                    "email": "jackson11@example.com",
                    "photos": ["https://images.example/1.jpg"],
                    "characteristics": {"5": 4},
                }
            ],
        ),
        "Status": _object({"status": {"type": "string", "enum": ["ok", "ready"]}}),
    }


HEADERS = {
    "X-Replica": {
        "description": "The replica that served the response (REPLICA_NAME).",
        "required": True,
        "schema": {"type": "string"},
    },
    "X-Request-Id": {
        "description": "The request's id in the logs: the caller's X-Request-Id when it is a plain token.",
        "required": True,
        "schema": {"type": "string", "pattern": REQUEST_ID},
    },
    idempotency.REPLAYED_HEADER: {
        "description": f"`true` when this is the replay of an earlier request with the same "
        f"{idempotency.HEADER}: nothing was stored now.",
        "required": False,
        "schema": {"type": "string", "const": "true"},
    },
    "Retry-After": {
        "description": "Seconds to wait before trying again.",
        "required": True,
        "schema": {"type": "integer", "minimum": 0},
    },
    "ETag": {
        "description": "A validator of this answer (a hash of its bytes; W/-prefixed when nginx compressed "
        "it). Send it back as If-None-Match: an unchanged answer is then a 304 with no body.",
        "required": True,
        "schema": {"type": "string", "pattern": '^(W/)?"[^"]+"$'},
    },
    "Cache-Control": {
        "description": "How long a client may reuse the answer: `public, max-age=N` (HTTP_CACHE_MAX_AGE) for "
        "reviews and summaries, `no-cache` (revalidate each time) for the rest. Error answers (4xx, 5xx) "
        "say `no-store`.",
        "required": True,
        "schema": {"type": "string"},
    },
    "X-Cache": {
        "description": "`hit` when the replica answered from its cache (which every write of the product "
        "empties on every replica), `miss` when it read the database.",
        "required": False,
        "schema": {"type": "string", "enum": ["hit", "miss"]},
    },
}
# What every 200 answer to a GET carries.
VALIDATOR_HEADERS = {name: ref("headers", name) for name in ("ETag", "Cache-Control", "X-Cache")}


def responses(max_body_bytes: int) -> Json:
    plain_text = {"text/plain": {"schema": {"type": "string"}}}
    retry_after = {"Retry-After": ref("headers", "Retry-After")}
    return {
        "RequestTooLong": {
            "description": f"The request line is longer than {HTTP_LINE_LIMIT} bytes: the HTTP server "
            "(aiohttp) refuses it before the application, in plain text, without X-Replica or X-Request-Id. "
            "Behind nginx, a request line over 8 KiB gets 414 from nginx instead.",
            "content": plain_text,
        },
        "MalformedBody": {
            "description": "The body is not JSON (JSON error); or the request line is too long "
            "(plain text, as RequestTooLong says).",
            "headers": {
                name: {"description": "With the JSON error.", "schema": {"type": "string"}}
                for name in ("X-Replica", "X-Request-Id")
            },
            "content": json_content(ref("schemas", "Error")) | plain_text,
        },
        "NotModified": response(
            "If-None-Match named the current answer's ETag: the client's copy is still right (no body).",
            headers={name: ref("headers", name) for name in ("ETag", "Cache-Control")},
        ),
        "NotFound": error("No such path."),
        "ReviewNotFound": error(
            "No such review, or a reported one: `details` names `review_id`. (Or no such path.)"
        ),
        "UnknownReview": error(
            "No review has this id: `details` names `review_id`; a reported review is still one (204). "
            "(Or no such path.)"
        ),
        "PayloadTooLarge": error(f"The body is larger than {max_body_bytes} bytes (MAX_BODY_BYTES)."),
        "UnsupportedEncoding": error(
            "The body was sent compressed: send it as is, without a Content-Encoding (or `identity`)."
        ),
        "InvalidInput": error("One or more parameters or fields broke their rules; `details` lists each."),
        "InternalError": error("An unexpected failure; the body says nothing of it."),
        "DatabaseUnavailable": error(
            "The database is unreachable, or rolled the request back (nothing was changed): try again "
            "after Retry-After seconds.",
            retry_after,
        ),
        "RequestInProgress": error(
            f"A request with the same {idempotency.HEADER} is still running: try again after "
            "Retry-After seconds (its outcome is then replayed, or the key is free).",
            retry_after,
        ),
        "NotReady": error(
            "Not ready: `details` says why (`database`: `unreachable` or `no data loaded`).", retry_after
        ),
        "MethodNotAllowed": error(
            "Any path, with a method the path does not take.",
            {
                "Allow": {
                    "description": "The methods the path takes.",
                    "required": True,
                    "schema": {"type": "string"},
                }
            },
        ),
    }


def components(max_count: int, max_body_bytes: int) -> Json:
    return {
        "schemas": schemas(max_count),
        "parameters": parameters(max_count),
        "headers": HEADERS,
        "responses": responses(max_body_bytes),
    }
