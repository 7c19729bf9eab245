"""GET /openapi.json: a valid OpenAPI 3.1 document that describes every route, and that every real
response of the API (successes and errors alike) conforms to: status, media type, headers and body."""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass, replace
from typing import Any

import asyncpg
import orjson
import pytest
import schemathesis
from aiohttp import web
from aiohttp.test_utils import TestClient
from email_validator import SPECIAL_USE_DOMAIN_NAMES
from jsonschema import Draft202012Validator, FormatChecker
from pytest_aiohttp import AiohttpClient
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012
from schemathesis.core.result import Ok
from schemathesis.specs.openapi.definitions import OPENAPI_31

from atelier_api import docs, openapi, review_draft
from atelier_api.app import create_app
from atelier_api.config import Config
from tests.api import factories
from tests.api.conftest import NOW
from tests.api.factories import review_body
from tests.api.outages import DatabaseProxy

Client = TestClient[web.Request, web.Application]
DOCUMENT_URI = "urn:atelier:openapi"
METHODS = ("get", "put", "post", "delete", "options", "head", "patch", "trace")


@dataclass
class Described:
    """One response as the document describes it: where its object is, and the object."""

    pointer: str
    response: dict[str, Any]


class Document:
    """An OpenAPI document, and checks of real responses against it."""

    def __init__(self, document: dict[str, Any]) -> None:
        self.document = document
        resource = Resource.from_contents(document, default_specification=DRAFT202012)
        self.registry = Registry().with_resource(DOCUMENT_URI, resource)

    def resolve(self, pointer: str) -> Described:
        """The object at `pointer`, following $refs (as OpenAPI response objects may be)."""
        node: Any = self.document
        for part in pointer.lstrip("/").split("/"):
            node = node[part.replace("~1", "/").replace("~0", "~")]
        if "$ref" in node:
            return self.resolve(node["$ref"].removeprefix("#"))
        return Described(pointer, node)

    def described(self, method: str, path: str, status: int) -> Described:
        if path not in self.document["paths"]:  # no such path: the shared 404
            return self.resolve("/components/responses/NotFound")
        item = self.document["paths"][path]
        if method.lower() not in item:
            return self.resolve("/components/responses/MethodNotAllowed")
        responses = item[method.lower()]["responses"]
        assert str(status) in responses, f"{method} {path}: {status} is not documented ({sorted(responses)})"
        escaped = path.replace("~", "~0").replace("/", "~1")
        return self.resolve(f"/paths/{escaped}/{method.lower()}/responses/{status}")

    def validator(self, pointer: str) -> Draft202012Validator:
        """A validator of the schema at `pointer`, with every $ref of the document resolvable."""
        return Draft202012Validator(
            {"$ref": f"{DOCUMENT_URI}#{pointer}"}, registry=self.registry, format_checker=FormatChecker()
        )

    async def check(self, response: Any, method: str, path: str) -> Any:
        """Assert the response conforms to the document; return its decoded body (JSON or text)."""
        body: bytes = await response.read()
        where = f"{method} {path} -> {response.status}"
        described = self.described(method, path, response.status)
        for name, header in described.response.get("headers", {}).items():
            header = self.resolve(header["$ref"].removeprefix("#")).response if "$ref" in header else header
            if header.get("required"):
                assert name in response.headers, f"{where}: no {name} header"
            if name in response.headers:
                value = response.headers[name]
                if header["schema"].get("type") == "integer":
                    assert value.isdigit(), f"{where}: {name}: {value!r}"
                    value = int(value)
                Draft202012Validator(header["schema"]).validate(value)
        content = described.response.get("content")
        if content is None:
            assert body == b"", f"{where}: a body where none is described"
            return None
        media_type = response.content_type
        assert media_type in content, f"{where}: {media_type} is not one of {sorted(content)}"
        if "schema" not in content[media_type]:  # binary, e.g. an image
            return body
        value = orjson.loads(body) if media_type == "application/json" else body.decode()
        pointer = f"{described.pointer}/content/{media_type.replace('/', '~1')}/schema"
        errors = [error.message for error in self.validator(pointer).iter_errors(value)]
        assert not errors, f"{where}: {errors}"
        return value


@pytest.fixture
def document(config: Config) -> Document:
    return Document(openapi.document(config.reviews_max_count, config.max_body_bytes))


# --- the document itself --------------------------------------------------------------------------------


def test_the_document_is_valid_openapi_3_1(document: Document) -> None:
    Draft202012Validator(OPENAPI_31).validate(document.document)
    for schema in document.document["components"]["schemas"].values():
        Draft202012Validator.check_schema(schema)
    loaded = schemathesis.openapi.from_dict(document.document).get_all_operations()
    assert all(isinstance(operation, Ok) for operation in loaded)


def test_every_ref_resolves(document: Document) -> None:
    def refs(node: Any) -> list[str]:
        if isinstance(node, dict):
            own = [node["$ref"]] if "$ref" in node else []
            return own + [ref for value in node.values() for ref in refs(value)]
        if isinstance(node, list):
            return [ref for value in node for ref in refs(value)]
        return []

    found = refs(document.document)
    assert len(found) > 50
    for ref in found:
        assert ref.startswith("#/")
        document.resolve(ref.removeprefix("#"))


def test_every_route_of_the_app_is_described(config: Config, document: Document) -> None:
    """The other way round too: the document describes no route the app lacks."""
    routes = {
        (route.method.lower(), route.resource.canonical)
        for route in create_app(config).router.routes()
        if route.method != "HEAD" and route.resource is not None  # aiohttp adds HEAD to every GET
    }
    described = {
        (method, path)
        for path, item in document.document["paths"].items()
        for method in item
        if method in METHODS
    }
    assert described == routes


def test_limits_come_from_the_code_and_config(config: Config) -> None:
    document = openapi.document(77, 2048)
    assert document["components"]["parameters"]["count"]["schema"]["maximum"] == 77
    assert document["components"]["schemas"]["ReviewPage"]["properties"]["count"]["maximum"] == 77
    assert "2048 bytes" in document["components"]["responses"]["PayloadTooLarge"]["description"]
    body = document["components"]["schemas"]["NewReview"]["properties"]["body"]
    assert (body["minLength"], body["maxLength"]) == (50, 1000)
    assert document["components"]["parameters"]["product_ids"]["schema"]["maxItems"] == 100


async def test_the_served_document_uses_the_configured_maximum_count(
    db: asyncpg.Connection, config: Config, aiohttp_client: AiohttpClient
) -> None:
    client = await aiohttp_client(create_app(replace(config, reviews_max_count=250)))
    response = await client.get("/openapi.json")
    assert response.status == 200
    assert response.content_type == "application/json"
    served = await response.json()
    assert served == openapi.document(250, config.max_body_bytes)
    assert served["components"]["parameters"]["count"]["schema"]["maximum"] == 250


# --- real responses -------------------------------------------------------------------------------------


@pytest.fixture
async def catalog(db: asyncpg.Connection) -> dict[str, int]:
    """Product 2 with characteristics, reviews (photos, a response, a reported one); product 3 with a
    characteristic and no review."""
    quality = await factories.characteristic(db, 2, "Quality")
    await factories.characteristic(db, 2, "Fit")  # rated by nobody: a null value
    await factories.characteristic(db, 3, "Size")
    first = await factories.review(db, 2, rating=4, helpfulness=3, response="Thank you!")
    await factories.photo(db, first, "https://images.example/1.jpg")
    second = await factories.review(db, 2, rating=2, recommend=False, date=NOW)
    reported = await factories.review(db, 2, rating=5, reported=True)
    await factories.characteristic_rating(db, quality, first, 4)
    await factories.characteristic_rating(db, quality, second, 1)
    return {"product": 2, "review": first, "characteristic": quality, "reported": reported}


def new_review(catalog: dict[str, int], **fields: Any) -> dict[str, Any]:
    extras = {
        "photos": ["https://images.example/2.jpg"],
        "characteristics": {str(catalog["characteristic"]): 5},
    }
    return review_body(catalog["product"], **(extras | fields))


@pytest.mark.parametrize("path", ["/reviews", "/reviews/"])
@pytest.mark.parametrize(
    ("query", "status"),
    [
        ("product_id=2", 200),
        ("product_id=2&page=1&count=1&sort=newest", 200),
        ("product_id=2&sort=helpful&rating=4,5&with_photos=true", 200),
        ("product_id=2&page=9", 200),
        ("product_id=999", 200),
        ("product_id=hello", 422),
        ("page=0&count=1000001&sort=best&rating=6&with_photos=maybe", 422),
    ],
)
async def test_list_reviews(
    client: Client, document: Document, catalog: dict[str, int], path: str, query: str, status: int
) -> None:
    response = await client.get(f"{path}?{query}")
    assert response.status == status
    body = await document.check(response, "GET", path)
    if query == "product_id=2":
        assert [review["response"] for review in body["results"]] == [None, "Thank you!"]
        assert [len(review["photos"]) for review in body["results"]] == [0, 1]


@pytest.mark.parametrize("path", ["/reviews/meta", "/reviews/meta/"])
@pytest.mark.parametrize(
    ("query", "status"),
    [("product_id=2", 200), ("product_id=3", 200), ("product_id=999", 200), ("product_id=5.55", 422)],
)
async def test_product_meta(
    client: Client, document: Document, catalog: dict[str, int], path: str, query: str, status: int
) -> None:
    response = await client.get(f"{path}?{query}")
    assert response.status == status
    body = await document.check(response, "GET", path)
    if query == "product_id=2":
        assert body["recommended"] == {"false": "1", "true": "1"}
        assert body["characteristics"]["Fit"]["value"] is None


@pytest.mark.parametrize(
    ("path", "query"),
    [
        ("/reviews", "product_id=2"),
        ("/reviews/meta", "product_id=2"),
        ("/reviews/meta/batch", "product_ids=2,3"),
        ("/reviews/{review_id}", ""),
        ("/healthz", ""),
    ],
)
async def test_not_modified(
    client: Client, document: Document, catalog: dict[str, int], path: str, query: str
) -> None:
    url = path.replace("{review_id}", str(catalog["review"])) + (f"?{query}" if query else "")
    first = await client.get(url)
    await document.check(first, "GET", path)
    again = await client.get(url, headers={"If-None-Match": first.headers["ETag"]})
    assert again.status == 304
    assert await document.check(again, "GET", path) is None


@pytest.mark.parametrize("path", ["/reviews/meta/batch", "/reviews/meta/batch/"])
@pytest.mark.parametrize(
    ("query", "status"),
    [
        ("product_ids=2,3,999,2", 200),
        ("product_ids=" + ",".join(["2"] * 100), 200),
        ("product_ids=" + ",".join(["2"] * 101), 422),
        ("product_ids=", 422),
        ("", 422),
    ],
)
async def test_product_meta_batch(
    client: Client, document: Document, catalog: dict[str, int], path: str, query: str, status: int
) -> None:
    response = await client.get(f"{path}?{query}")
    assert response.status == status
    await document.check(response, "GET", path)


@pytest.mark.parametrize("path", ["/reviews", "/reviews/"])
async def test_post_review(client: Client, document: Document, catalog: dict[str, int], path: str) -> None:
    created = await client.post(path, json=new_review(catalog))
    assert created.status == 201
    assert await document.check(created, "POST", path) == "Created"

    not_json = await client.post(path, data=b"{not json", headers={"Content-Type": "application/json"})
    assert not_json.status == 400
    await document.check(not_json, "POST", path)

    every_rule_broken = new_review(
        catalog,
        product_id=0,
        rating=6,
        summary="s" * 61,
        body="short",
        recommend="yes",
        name="",
        email="nobody",
        photos=["ftp://x"] * 6,
        characteristics={"x": 9},
    )
    invalid = await client.post(path, json=every_rule_broken)
    assert invalid.status == 422
    assert len((await document.check(invalid, "POST", path))["details"]) >= 9

    unknown = await client.post(path, json=new_review(catalog, product_id=999, characteristics={}))
    assert unknown.status == 422
    await document.check(unknown, "POST", path)


async def test_post_too_large(client: Client, document: Document, config: Config) -> None:
    response = await client.post("/reviews", data=b" " * (config.max_body_bytes + 1))
    assert response.status == 413
    await document.check(response, "POST", "/reviews")


@pytest.mark.parametrize("action", ["helpful", "report", "helpful/", "report/"])
async def test_put_review(client: Client, document: Document, catalog: dict[str, int], action: str) -> None:
    path = f"/reviews/{{review_id}}/{action}"
    done = await client.put(f"/reviews/{catalog['review']}/{action}")
    assert done.status == 204
    await document.check(done, "PUT", path)
    missing = await client.put(f"/reviews/987654/{action}")
    assert missing.status == 404
    assert (await document.check(missing, "PUT", path))["details"] == [
        {"field": "review_id", "message": "no such review"}
    ]


@pytest.mark.parametrize("action", ["helpful", "report"])
async def test_a_reported_review_is_404_to_get_only(
    client: Client, document: Document, catalog: dict[str, int], action: str
) -> None:
    """A reported review is hidden from GET, yet still a review to PUT (contract: an id that does not exist
    gives 404; reporting twice changes nothing): 204, and the document says so."""
    reported = catalog["reported"]
    for path in (f"/reviews/{reported}/{action}", f"/reviews/{reported}/{action}/"):
        response = await client.put(path)
        assert response.status == 204
        await document.check(response, "PUT", path.replace(str(reported), "{review_id}"))
    assert (await client.get(f"/reviews/{reported}")).status == 404

    def said(path: str, method: str) -> tuple[str, str]:
        """What the operation's review_id parameter and its 404 say."""
        operation = document.document["paths"][path][method]
        (parameter,) = operation["parameters"]
        escaped = path.replace("/", "~1")
        return (
            document.resolve(parameter["$ref"].removeprefix("#")).response["description"],
            document.resolve(f"/paths/{escaped}/{method}/responses/404").response["description"],
        )

    for said_by_get in said("/reviews/{review_id}", "get"):
        assert "reported" in said_by_get
    for path in (f"/reviews/{{review_id}}/{action}", f"/reviews/{{review_id}}/{action}/"):
        parameter, not_found = said(path, "put")
        assert "reported or not" in parameter and "a reported one is still a review (204)" in parameter
        assert "a reported review is still one (204)" in not_found


# What the document's photo URL pattern and the code (review_draft) both take, and both refuse.
PHOTO_URLS = {
    "https://img.example/1.jpg": True,
    "HTTP://IMG.EXAMPLE/1.JPG": True,
    "http://img.example": True,
    "http://img.example:": True,
    "http://img.example:8080/a?b=c#d": True,
    "http://user:@img.example/x": True,
    "http://a@b@img.example/x": True,
    "http://[::1]/x": True,
    "http://[::1]:8080/x": True,
    "http://[2001:db8::1.2.3.4]/x": True,
    "http://[fe80::1%25eth0]/x": True,
    "http://[v1.future]/x": True,
    "http://bücher.example/ü.jpg": True,
    "http://img.example/a\u00e9%20b": True,
    "http://:80/x": False,
    "http://@/x": False,
    "http://user@:80/x": False,
    "http://[::1/x": False,
    "http://::1]/x": False,
    "http://[]/x": False,
    "http://[1.2.3.4]/x": False,
    "http://[::12345]/x": False,
    "http://[1:2:3:4:5:6:7:8:9]/x": False,
    "http://[vz.x]/x": False,
    "http://img.example/a\u200bb.jpg": False,  # zero-width space
    "http://img\u200b.example/x": False,
    "http://img.example/a\u00adb.jpg": False,  # soft hyphen
    "http://img.example/a\x7fb.jpg": False,  # DEL
    "http://img.example/a\x85b.jpg": False,  # NEL, a C1 control
    "http://img.example/a\u00a0b.jpg": False,  # no-break space
    "http://img.example/a\u2028b.jpg": False,
    "http://img.example/a\ufeffb.jpg": False,
    "http://img.example/a\ue000b.jpg": False,  # private use
    "http://img\uff0f.example/x": False,  # NFKC makes it a "/" in the host
    "http://img.example/a b.jpg": False,
    "http://img.example/a.jpg\t": False,
    "https:///no-host": False,
    "http:/img.example/x": False,
    "ftp://img.example/x": False,
    "img.example/1.jpg": False,
    "javascript:alert(1)": False,
}


def photo_url_schema(document: Document) -> Draft202012Validator:
    return Draft202012Validator(
        document.document["components"]["schemas"]["NewReview"]["properties"]["photos"]["items"]
    )


def the_code_takes(url: str) -> bool:
    errors = review_draft.parse(review_body(2, photos=[url])).errors
    assert all(error.field == "photos[0]" for error in errors), errors
    return not errors


@pytest.mark.parametrize(("url", "taken"), PHOTO_URLS.items())
def test_the_photo_url_pattern_takes_what_the_code_takes(document: Document, url: str, taken: bool) -> None:
    assert the_code_takes(url) is taken
    assert photo_url_schema(document).is_valid(url) is taken


def test_the_photo_url_pattern_refuses_the_characters_the_code_refuses(document: Document) -> None:
    """Every assigned character of the Basic Multilingual Plane, in the path and in the host."""
    schema = photo_url_schema(document)
    differ = [
        url
        for code in range(0x10000)
        if unicodedata.category(chr(code)) != "Cn"
        for url in (f"http://img.example/a{chr(code)}b", f"http://img{chr(code)}x.example/")
        if schema.is_valid(url) != review_draft._is_http_url(url)
    ]
    assert differ == []


def test_the_email_rule_is_described(document: Document) -> None:
    """The document's `email` format takes addresses the code (email-validator) refuses: it says which."""
    email = document.document["components"]["schemas"]["NewReview"]["properties"]["email"]
    for name in SPECIAL_USE_DOMAIN_NAMES:
        assert f"`.{name}`" in email["description"]
    assert "quoted local part is refused" in email["description"]
    assert "bracketed IP address is refused" in email["description"]
    refused = [("email", "must be a valid email address")]
    for address in ("a@shop.test", "a@shop.local", "a@shop.invalid", '"a b"@example.com', "a@[192.0.2.1]"):
        errors = review_draft.parse(review_body(2, email=address)).errors
        assert [(error.field, error.message) for error in errors] == refused, address


async def test_get_review(client: Client, document: Document, catalog: dict[str, int]) -> None:
    found = await client.get(f"/reviews/{catalog['review']}")
    assert found.status == 200
    assert (await document.check(found, "GET", "/reviews/{review_id}"))["photos"]
    missing = await client.get("/reviews/987654")
    assert missing.status == 404
    await document.check(missing, "GET", "/reviews/{review_id}")


async def test_health_and_readiness(client: Client, document: Document, catalog: dict[str, int]) -> None:
    for path in ("/healthz", "/readyz"):
        response = await client.get(path)
        assert response.status == 200
        await document.check(response, "GET", path)


async def test_not_ready_without_data(client: Client, document: Document) -> None:
    response = await client.get("/readyz")  # the `db` fixture emptied every table
    assert response.status == 503
    assert response.headers["Retry-After"].isdigit()
    await document.check(response, "GET", "/readyz")


@pytest.mark.parametrize("accept", ["", "application/openmetrics-text; version=1.0.0"])
async def test_metrics(client: Client, document: Document, accept: str) -> None:
    response = await client.get("/metrics", headers={"Accept": accept} if accept else {})
    assert response.status == 200
    await document.check(response, "GET", "/metrics")


async def test_documentation(client: Client, document: Document) -> None:
    for path in ("/openapi.json", "/docs"):
        response = await client.get(path)
        assert response.status == 200
        await document.check(response, "GET", path)
    for asset in openapi.DOCS_ASSETS:
        response = await client.get(f"/docs/static/{asset}")
        assert response.status == 200
        await document.check(response, "GET", "/docs/static/{asset}")
    for missing in ("index.html", "swagger-initializer.js", "..%2F__init__.py"):
        response = await client.get(f"/docs/static/{missing}")
        assert response.status == 404
        await document.check(response, "GET", "/docs/static/{asset}")


def test_the_docs_page_loads_only_the_files_the_api_serves() -> None:
    assert "http" not in docs.PAGE  # no CDN, no other host: it works offline
    loaded = re.findall(r'(?:src|href)="([^"]+)"', docs.PAGE)
    assert sorted(loaded) == sorted(f"/docs/static/{asset}" for asset in openapi.DOCS_ASSETS)
    assert 'url: "/openapi.json"' in docs.PAGE


async def test_unknown_paths_and_methods(client: Client, document: Document) -> None:
    unknown = await client.get("/nowhere")
    assert unknown.status == 404
    await document.check(unknown, "GET", "/nowhere")
    for method, path in [("DELETE", "/reviews"), ("POST", "/reviews/meta"), ("GET", "/reviews/1/helpful")]:
        response = await client.request(method, path)
        assert response.status == 405
        await document.check(response, method, path.replace("/1/", "/{review_id}/"))


async def test_a_request_line_too_long_for_the_http_server(client: Client, document: Document) -> None:
    response = await client.get(f"/reviews?product_id=2&sort={'x' * openapi.HTTP_LINE_LIMIT}")
    assert response.status == 400
    await document.check(response, "GET", "/reviews")


async def test_database_unavailable(
    db: asyncpg.Connection, proxy: DatabaseProxy, document: Document, aiohttp_client: AiohttpClient
) -> None:
    config = Config(database_url=proxy.url(), db_pool_min_size=1, db_pool_max_size=2, db_command_timeout=2)
    client = await aiohttp_client(create_app(config))
    await proxy.stop()
    for method, path, template in [
        ("GET", "/reviews?product_id=1", "/reviews"),
        ("GET", "/reviews/meta/batch?product_ids=1", "/reviews/meta/batch"),
        ("PUT", "/reviews/1/report", "/reviews/{review_id}/report"),
        ("GET", "/readyz", "/readyz"),
    ]:
        response = await client.request(method, path)
        assert response.status == 503
        await document.check(response, method, template)
