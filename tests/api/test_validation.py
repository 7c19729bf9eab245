"""Bad input: every rule with its status and message, all broken rules at once, JSON errors, never a 5xx."""

from __future__ import annotations

import gzip
from typing import Any

import asyncpg
import orjson
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient

from tests.api import factories

Client = TestClient[web.Request, web.Application]
MISSING = object()


def detail(field: str, message: str) -> dict[str, str]:
    return {"field": field, "message": message}


async def assert_error(response: Any, status: int, error: str, details: list[dict[str, str]]) -> None:
    assert response.status == status, await response.text()
    assert response.content_type == "application/json"
    assert await response.json() == {"error": error, "details": details}


# --- GET /reviews and GET /reviews/meta ------------------------------------------------------------

NOT_POSITIVE = [
    "hello",
    "null",
    "5.55",
    "",
    "-1",
    "0",
    "1,2",
    " 5",
    "+5",
    "5_0",
    "0x10",
    "1e3",
    "\u0663",
    "\uff11",
]


@pytest.mark.parametrize("path", ["/reviews", "/reviews/", "/reviews/meta", "/reviews/meta/"])
@pytest.mark.parametrize("product_id", NOT_POSITIVE)
async def test_product_id_must_be_a_positive_integer(client: Client, path: str, product_id: str) -> None:
    response = await client.get(path, params={"product_id": product_id})

    await assert_error(
        response,
        422,
        "invalid product_id provided",
        [detail("product_id", "must be a positive integer")],
    )


@pytest.mark.parametrize("path", ["/reviews", "/reviews/meta"])
@pytest.mark.parametrize(
    ("query", "message"),
    [
        ("", "is required"),
        ("page=1", "is required"),
        ("product_id=1&product_id=2", "must be given once"),
        ("product_id=9223372036854775808", "must be at most 9223372036854775807"),
        ("product_id=" + "9" * 5000, "must be at most 9223372036854775807"),
    ],
)
async def test_product_id_other_rules(client: Client, path: str, query: str, message: str) -> None:
    response = await client.get(f"{path}?{query}")

    await assert_error(response, 422, "invalid product_id provided", [detail("product_id", message)])


@pytest.mark.parametrize("product_id", ["2147483648", "3000000000", "9223372036854775807", "0003000000000"])
async def test_a_positive_product_id_past_the_column_is_an_unknown_product(
    client: Client, product_id
) -> None:
    """The contract's rule is "positive integer", and an unknown product's answer is empty; no product
    can have an id past the column's range (an integer), so none is asked for, and none is a 422."""
    shown = product_id.lstrip("0")
    async with client.get(f"/reviews?product_id={product_id}&page=2&count=3") as response:
        assert response.status == 200
        assert await response.json() == {"product": shown, "page": 1, "count": 3, "results": []}
    empty = {"product_id": shown, "ratings": {}, "recommended": {}, "characteristics": {}}
    async with client.get(f"/reviews/meta?product_id={product_id}") as response:
        assert response.status == 200 and await response.json() == empty
    async with client.get(f"/reviews/meta/batch?product_ids=1,{product_id}") as response:
        assert response.status == 200
        assert (await response.json())["results"][1] == empty


async def test_product_id_at_the_limit_is_fine(client: Client) -> None:
    assert (await client.get("/reviews?product_id=2147483647")).status == 200
    assert (await client.get("/reviews/meta?product_id=2147483647")).status == 200
    assert (await client.get("/reviews?product_id=007")).status == 200


@pytest.mark.parametrize(
    ("query", "field", "message"),
    [
        ("page=0", "page", "must be a positive integer"),
        ("page=-1", "page", "must be a positive integer"),
        ("page=two", "page", "must be a positive integer"),
        ("page=", "page", "must be a positive integer"),
        ("page=2147483648", "page", "must be at most 2147483647"),
        ("page=1&page=2", "page", "must be given once"),
        ("count=0", "count", "must be a positive integer"),
        ("count=5.0", "count", "must be a positive integer"),
        ("count=all", "count", "must be a positive integer"),
        ("count=1000001", "count", "must be at most 1000000"),
        ("count=99999999999999999999999", "count", "must be at most 1000000"),
        ("sort=oldest", "sort", "must be one of newest, helpful, relevant"),
        ("sort=NEWEST", "sort", "must be one of newest, helpful, relevant"),
        ("sort=", "sort", "must be one of newest, helpful, relevant"),
    ],
)
async def test_page_count_sort_rules(client: Client, query: str, field: str, message: str) -> None:
    response = await client.get(f"/reviews?product_id=1&{query}")

    await assert_error(response, 422, f"invalid {field} provided", [detail(field, message)])


async def test_every_broken_query_rule_at_once(client: Client) -> None:
    response = await client.get("/reviews?product_id=x&page=0&count=0&sort=best")

    await assert_error(
        response,
        422,
        "invalid product_id, page, count, sort provided",
        [
            detail("product_id", "must be a positive integer"),
            detail("page", "must be a positive integer"),
            detail("count", "must be a positive integer"),
            detail("sort", "must be one of newest, helpful, relevant"),
        ],
    )


async def test_unknown_query_parameters_are_ignored(client: Client) -> None:
    assert (await client.get("/reviews?product_id=1&_=12345&rating=4")).status == 200


# --- POST /reviews -------------------------------------------------------------------------------


@pytest.fixture
async def products(db: asyncpg.Connection) -> None:
    """Product 1 with characteristics 14 and 15; product 2 with 16."""
    await factories.characteristic(db, 1, "Fit", id=14)
    await factories.characteristic(db, 1, "Length", id=15)
    await factories.characteristic(db, 2, "Quality", id=16)


def valid_review(**changes: Any) -> dict[str, Any]:
    review: dict[str, Any] = {
        "product_id": 1,
        "rating": 5,
        "summary": "Great",
        "body": "b" * 50,
        "recommend": False,
        "name": "n" * 60,
        "email": "someone@example.com",
        "photos": ["https://img.example/1.jpg"],
        "characteristics": {"14": 1, "15": 5},
    }
    for field, value in changes.items():
        if value is MISSING:
            del review[field]
        else:
            review[field] = value
    return review


URL_2048 = "https://img.example/" + "a" * (2048 - len("https://img.example/"))
EMAIL_61 = "a" * 49 + "@example.com"


@pytest.mark.parametrize(
    ("changes", "details"),
    [
        ({"product_id": MISSING}, [detail("product_id", "is required")]),
        ({"product_id": "1"}, [detail("product_id", "must be a positive integer")]),
        ({"product_id": True}, [detail("product_id", "must be a positive integer")]),
        ({"product_id": 1.0}, [detail("product_id", "must be a positive integer")]),
        ({"product_id": 0}, [detail("product_id", "must be a positive integer")]),
        ({"product_id": None}, [detail("product_id", "must be a positive integer")]),
        ({"product_id": 2147483648}, [detail("product_id", "must be at most 2147483647")]),
        ({"product_id": 10**30}, [detail("product_id", "must be a positive integer")]),  # parses as a float
        ({"rating": MISSING}, [detail("rating", "is required")]),
        ({"rating": 0}, [detail("rating", "must be an integer from 1 to 5")]),
        ({"rating": 6}, [detail("rating", "must be an integer from 1 to 5")]),
        ({"rating": 4.5}, [detail("rating", "must be an integer from 1 to 5")]),
        ({"rating": "5"}, [detail("rating", "must be an integer from 1 to 5")]),
        ({"rating": True}, [detail("rating", "must be an integer from 1 to 5")]),
        ({"summary": "s" * 61}, [detail("summary", "must be at most 60 characters")]),
        ({"summary": None}, [detail("summary", "must be a string")]),
        ({"summary": 3}, [detail("summary", "must be a string")]),
        ({"summary": "a\x00b"}, [detail("summary", "must not contain NUL characters")]),
        ({"body": MISSING}, [detail("body", "is required")]),
        ({"body": "b" * 49}, [detail("body", "must be 50 to 1000 characters")]),
        ({"body": "b" * 1001}, [detail("body", "must be 50 to 1000 characters")]),
        ({"body": ["b" * 50]}, [detail("body", "must be a string")]),
        ({"recommend": MISSING}, [detail("recommend", "is required")]),
        ({"recommend": "true"}, [detail("recommend", "must be a boolean")]),
        ({"recommend": 1}, [detail("recommend", "must be a boolean")]),
        ({"recommend": None}, [detail("recommend", "must be a boolean")]),
        ({"name": MISSING}, [detail("name", "is required")]),
        ({"name": ""}, [detail("name", "must be 1 to 60 characters")]),
        ({"name": "n" * 61}, [detail("name", "must be 1 to 60 characters")]),
        ({"name": 7}, [detail("name", "must be a string")]),
        ({"email": MISSING}, [detail("email", "is required")]),
        ({"email": ""}, [detail("email", "must be 1 to 60 characters")]),
        ({"email": EMAIL_61}, [detail("email", "must be 1 to 60 characters")]),
        ({"email": "not-an-address"}, [detail("email", "must be a valid email address")]),
        ({"email": "a@b"}, [detail("email", "must be a valid email address")]),
        ({"email": "a b@example.com"}, [detail("email", "must be a valid email address")]),
        ({"photos": "https://img.example/1.jpg"}, [detail("photos", "must be an array of URLs")]),
        ({"photos": None}, [detail("photos", "must be an array of URLs")]),
        ({"photos": ["https://img.example/p.jpg"] * 6}, [detail("photos", "must hold at most 5 URLs")]),
        # Over the bound, the items are not looked at one by one: one error, however many they are.
        ({"photos": [0] * 20_000}, [detail("photos", "must hold at most 5 URLs")]),
        (
            {"characteristics": {str(n): "x" for n in range(1, 2_001)}},
            [detail("characteristics", "must hold at most 64 ratings")],
        ),
        ({"photos": ["https://img.example/1.jpg", 5]}, [detail("photos[1]", "must be a string")]),
        ({"photos": [URL_2048 + "a"]}, [detail("photos[0]", "must be at most 2048 characters")]),
        ({"photos": ["ftp://img.example/1.jpg"]}, [detail("photos[0]", "must be an http or https URL")]),
        ({"photos": ["javascript:alert(1)"]}, [detail("photos[0]", "must be an http or https URL")]),
        ({"photos": ["https:///no-host"]}, [detail("photos[0]", "must be an http or https URL")]),
        ({"photos": ["https://img.example/a b.jpg"]}, [detail("photos[0]", "must be an http or https URL")]),
        ({"photos": ["https://[::1/x.jpg"]}, [detail("photos[0]", "must be an http or https URL")]),
        ({"photos": ["img.example/1.jpg"]}, [detail("photos[0]", "must be an http or https URL")]),
        (
            {"characteristics": [14, 1]},
            [detail("characteristics", "must be an object of characteristic ids to ratings")],
        ),
        (
            {"characteristics": None},
            [detail("characteristics", "must be an object of characteristic ids to ratings")],
        ),
        ({"characteristics": {"Fit": 3}}, [detail("characteristics.Fit", "must be a characteristic id")]),
        ({"characteristics": {"14": 0}}, [detail("characteristics.14", "must be an integer from 1 to 5")]),
        ({"characteristics": {"14": 6}}, [detail("characteristics.14", "must be an integer from 1 to 5")]),
        ({"characteristics": {"14": "3"}}, [detail("characteristics.14", "must be an integer from 1 to 5")]),
        ({"characteristics": {"14": True}}, [detail("characteristics.14", "must be an integer from 1 to 5")]),
        (
            {"characteristics": {"14": 3, "014": 4}},
            [detail("characteristics.014", "repeats characteristic 14")],
        ),
        (
            {"characteristics": {"16": 3}},
            [detail("characteristics.16", "is not a characteristic of this product")],
        ),
        (
            {"characteristics": {"999": 3}},
            [detail("characteristics.999", "is not a characteristic of this product")],
        ),
        ({"product_id": 3, "characteristics": {}}, [detail("product_id", "must be a known product")]),
    ],
)
async def test_each_body_rule(
    client: Client, db: asyncpg.Connection, products: None, changes: dict[str, Any], details: list
) -> None:
    response = await client.post("/reviews", json=valid_review(**changes))

    fields = ", ".join(dict.fromkeys(d["field"].split(".")[0].split("[")[0] for d in details))
    await assert_error(response, 422, f"invalid {fields} provided", details)
    assert await db.fetchval("SELECT count(*) FROM reviews") == 0


@pytest.mark.parametrize(
    "changes",
    [
        {"summary": ""},
        {"summary": MISSING},
        {"summary": "s" * 60},
        {"body": "b" * 1000},
        {"name": "n"},
        {"email": "a" * 48 + "@example.com"},
        {"photos": MISSING},
        {"photos": []},
        {"photos": [URL_2048] * 5},
        {"photos": ["HTTP://IMG.EXAMPLE/1.JPG"]},
        {"characteristics": MISSING},
        {"characteristics": {}},
        {"characteristics": {"014": 2}},
    ],
)
async def test_edges_that_are_valid(
    client: Client, db: asyncpg.Connection, products: None, changes: dict[str, Any]
) -> None:
    response = await client.post("/reviews", json=valid_review(**changes))

    assert response.status == 201, await response.text()


async def test_every_broken_body_rule_at_once(client: Client, db: asyncpg.Connection, products: None) -> None:
    response = await client.post(
        "/reviews",
        json={
            "product_id": "one",
            "rating": 9,
            "summary": 5,
            "body": "short",
            "recommend": "yes",
            "name": "",
            "email": "nope",
            "photos": ["ftp://a.example/1.jpg", "https://a.example/2.jpg", 3],
            "characteristics": {"14": 9, "x": 1},
        },
    )

    await assert_error(
        response,
        422,
        "invalid product_id, rating, summary, body, recommend, name, email, photos, characteristics provided",
        [
            detail("product_id", "must be a positive integer"),
            detail("rating", "must be an integer from 1 to 5"),
            detail("summary", "must be a string"),
            detail("body", "must be 50 to 1000 characters"),
            detail("recommend", "must be a boolean"),
            detail("name", "must be 1 to 60 characters"),
            detail("email", "must be a valid email address"),
            detail("photos[0]", "must be an http or https URL"),
            detail("photos[2]", "must be a string"),
            detail("characteristics.14", "must be an integer from 1 to 5"),
            detail("characteristics.x", "must be a characteristic id"),
        ],
    )


async def test_database_rules_are_reported_with_the_others(
    client: Client, db: asyncpg.Connection, products: None
) -> None:
    """The body's rules and the database's (known product, its characteristics) in one response."""
    response = await client.post(
        "/reviews", json=valid_review(rating=0, characteristics={"14": 2, "16": 3, "15": 7})
    )
    await assert_error(
        response,
        422,
        "invalid rating, characteristics provided",
        [
            detail("rating", "must be an integer from 1 to 5"),
            detail("characteristics.15", "must be an integer from 1 to 5"),
            detail("characteristics.16", "is not a characteristic of this product"),
        ],
    )

    response = await client.post(
        "/reviews", json=valid_review(product_id=3, name="", characteristics={"14": 2})
    )
    await assert_error(
        response,
        422,
        "invalid product_id, name, characteristics provided",
        [
            detail("product_id", "must be a known product"),
            detail("name", "must be 1 to 60 characters"),
            detail("characteristics.14", "is not a characteristic of this product"),
        ],
    )
    assert await db.fetchval("SELECT count(*) FROM reviews") == 0


@pytest.mark.parametrize(
    "raw",
    [
        b"",
        b"not json",
        b"\xff\xfe{}",
        b'{"body": "\\ud800"}',
        b'{"rating": 1e400}',
        b'{"rating": NaN}',
        b'{"product_id": 1,}',
        b"[" * 2000 + b"]" * 2000,
        b"product_id=1&rating=5",
    ],
)
async def test_body_that_is_not_a_json_object_is_400(client: Client, raw: bytes) -> None:
    response = await client.post("/reviews", data=raw, headers={"Content-Type": "application/json"})

    await assert_error(response, 400, "body must be a JSON object", [])


@pytest.mark.parametrize("raw", [b"[1, 2]", b"[]", b'"a string"', b"null", b"42", b"true"])
async def test_json_that_is_not_an_object_names_every_field_it_lacks(client: Client, raw: bytes) -> None:
    """The contract: 400 for a body that is not JSON, 422 for fields breaking their rules. JSON that is
    not an object holds no field: each required one is named, as for `{}`."""
    response = await client.post("/reviews", data=raw, headers={"Content-Type": "application/json"})
    empty = await client.post("/reviews", data=b"{}", headers={"Content-Type": "application/json"})

    assert response.status == empty.status == 422
    body = await response.json()
    assert body == await empty.json()
    assert {d["field"] for d in body["details"]} >= {
        "product_id",
        "rating",
        "body",
        "recommend",
        "name",
        "email",
    }


@pytest.mark.parametrize(
    ("encoding", "compress"),
    [
        ("gzip", gzip.compress),  # a valid review, compressed: still refused, not half-supported
        ("gzip", lambda raw: raw),  # not gzip at all: aiohttp's own decompression answered 500
        ("deflate", lambda raw: raw),  # aiohttp's parser answered in plain text
        ("br", lambda raw: raw),  # aiohttp dropped the connection
        ("zstd", lambda raw: raw),
        ("x-unknown", lambda raw: raw),  # aiohttp passed the body on as if it were plain
        ("GZIP, identity", gzip.compress),
    ],
)
async def test_a_compressed_body_is_415_naming_content_encoding(
    client: Client, db: asyncpg.Connection, products: None, encoding: str, compress: Any
) -> None:
    raw = orjson.dumps(valid_review())
    response = await client.post(
        "/reviews",
        data=compress(raw),
        headers={"Content-Type": "application/json", "Content-Encoding": encoding},
    )

    message = f"must be identity (the body uncompressed), not {encoding!r}"
    await assert_error(response, 415, "unsupported content encoding", [detail("Content-Encoding", message)])
    assert await db.fetchval("SELECT count(*) FROM reviews") == 0


@pytest.mark.parametrize("encoding", ["identity", "Identity", ""])
async def test_an_identity_content_encoding_is_read_as_usual(
    client: Client, products: None, encoding: str
) -> None:
    response = await client.post(
        "/reviews",
        data=orjson.dumps(valid_review()),
        headers={"Content-Type": "application/json", "Content-Encoding": encoding},
    )

    assert response.status == 201, await response.text()


async def test_oversized_body_is_413(client: Client, products: None) -> None:
    body = b'{"body": "' + b"x" * 70000 + b'"}'

    response = await client.post("/reviews", data=body, headers={"Content-Type": "application/json"})

    await assert_error(response, 413, "request body too large", [])


# --- paths and methods ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "path", ["/", "/products", "/reviews/meta/extra", "/reviews/1/unknown", "/reviews/abc", "/reviews//meta"]
)
async def test_unknown_path_is_404_json(client: Client, path: str) -> None:
    await assert_error(await client.get(path), 404, "not found", [])


@pytest.mark.parametrize(
    ("method", "path", "allowed"),
    [
        ("DELETE", "/reviews", {"GET", "HEAD", "POST"}),
        ("PUT", "/reviews/", {"GET", "HEAD", "POST"}),
        ("POST", "/reviews/meta", {"GET", "HEAD"}),
        ("PATCH", "/reviews/1", {"GET", "HEAD"}),
        ("GET", "/reviews/1/helpful", {"PUT"}),
        ("POST", "/reviews/1/report", {"PUT"}),
    ],
)
async def test_wrong_method_is_405_json(client: Client, method: str, path: str, allowed: set[str]) -> None:
    response = await client.request(method, path)

    await assert_error(response, 405, "method not allowed", [])
    assert set(response.headers["Allow"].split(",")) == allowed


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("GET", "/reviews?product_id=%00", None),
        ("GET", "/reviews?product_id=1&count=" + "9" * 6000, None),
        ("GET", "/reviews?product_id=1&sort=%FF", None),
        ("GET", "/reviews/meta?product_id=1%00", None),
        ("GET", "/reviews/" + "9" * 5000, None),
        ("PUT", "/reviews/" + "9" * 5000 + "/helpful", None),
        ("POST", "/reviews", {"characteristics": {"9" * 5000: 1}}),
        ("POST", "/reviews", {"product_id": 1, "photos": [{"url": "https://a.example"}]}),
        ("POST", "/reviews", {"product_id": -(2**63), "rating": 2**64 - 1}),
        ("POST", "/reviews", {"name": "\x00", "email": "a\x00@example.com"}),
        ("POST", "/reviews", {"product_id": 1, "body": "\U0001f600" * 50, "summary": "\u200b"}),
    ],
)
async def test_odd_input_never_gives_a_5xx(
    client: Client, products: None, method: str, path: str, body: Any
) -> None:
    response = await client.request(method, path, json=body)

    assert 400 <= response.status < 500, await response.text()
    payload = await response.json()
    assert set(payload) == {"error", "details"}
