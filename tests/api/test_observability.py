"""Operating the API: GET /metrics, GET /readyz, request ids, and logs as JSON lines.

Real PostgreSQL throughout; an outage is a TCP proxy that stops relaying (see test_outage.py), a hung
database a server that accepts connections and never answers.
"""

from __future__ import annotations

import asyncio
import io
import json
import logging
import os
import re
import signal
import socket
import sys
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import replace

import asyncpg
import pytest
from aiohttp import ClientResponse, ClientSession, web
from aiohttp.test_utils import TestClient
from prometheus_client.parser import text_string_to_metric_families
from pytest_aiohttp import AiohttpClient

from atelier_api.app import create_app
from atelier_api.config import Config
from atelier_api.keys import METRICS_KEY, POOL_KEY
from atelier_api.logs import JsonFormatter
from tests.api import factories
from tests.api.outages import DatabaseProxy, closed_port, run_api_command

Client = TestClient[web.Request, web.Application]
Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]
HEX_ID = re.compile(r"[0-9a-f]{32}")


async def scrape(client: Client) -> Samples:
    response = await client.get("/metrics")
    assert response.status == 200
    assert response.content_type == "text/plain"
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(await response.text())
        for sample in family.samples
    }


def sample(samples: Samples, name: str, **labels: str) -> float | None:
    return samples.get((name, frozenset(labels.items())))


def requests_total(samples: Samples, method: str, route: str, status: int) -> float | None:
    return sample(samples, "atelier_http_requests_total", method=method, route=route, status=str(status))


async def boom(request: web.Request) -> web.Response:
    raise RuntimeError("secret internals: password=hunter2")


def app_with_a_failing_route(config: Config) -> web.Application:
    """The real app plus one route whose handler fails unexpectedly (a bug, as far as the app knows)."""
    app = create_app(config)
    app.router.add_get("/boom", boom)
    return app


# --- /metrics ---------------------------------------------------------------------------------------


async def test_metrics_count_requests_by_method_route_template_and_status(
    db: asyncpg.Connection, client: Client
) -> None:
    review_id = await factories.review(db, 1)
    for method, path, status in [
        ("GET", "/reviews?product_id=1", 200),
        ("GET", "/reviews?product_id=1&sort=newest", 200),
        ("GET", "/reviews/?product_id=1", 200),
        ("GET", "/reviews?product_id=hello", 422),
        ("GET", "/nowhere", 404),
        ("GET", "/reviews/abc", 404),
        ("DELETE", "/reviews", 405),
        ("PUT", f"/reviews/{review_id}/helpful", 204),
        ("PUT", "/reviews/999999/helpful", 404),
        ("PURGE", "/reviews", 405),
    ]:
        response = await client.request(method, path)
        assert response.status == status, (method, path, await response.text())

    samples = await scrape(client)
    assert requests_total(samples, "GET", "/reviews", 200) == 2
    assert requests_total(samples, "GET", "/reviews/", 200) == 1
    assert requests_total(samples, "GET", "/reviews", 422) == 1
    assert requests_total(samples, "GET", "unmatched", 404) == 2  # no route: the path is not a label
    assert requests_total(samples, "DELETE", "unmatched", 405) == 1
    assert requests_total(samples, "other", "unmatched", 405) == 1  # unknown methods stay one label
    assert requests_total(samples, "PUT", "/reviews/{review_id}/helpful", 204) == 1
    assert requests_total(samples, "PUT", "/reviews/{review_id}/helpful", 404) == 1
    routes = {dict(labels)["route"] for name, labels in samples if name == "atelier_http_requests_total"}
    assert routes == {"/reviews", "/reviews/", "unmatched", "/reviews/{review_id}/helpful"}

    duration = "atelier_http_request_duration_seconds"
    assert sample(samples, f"{duration}_count", method="GET", route="/reviews") == 3
    assert sample(samples, f"{duration}_bucket", method="GET", route="/reviews", le="2.5") == 3
    buckets = {dict(labels)["le"] for name, labels in samples if name == f"{duration}_bucket"}
    assert {"0.0005", "0.001", "0.005", "2.5", "30.0", "+Inf"} <= buckets  # an incident's tail too


async def test_requests_in_flight_counts_the_scrape_itself_and_returns_to_zero(client: Client) -> None:
    assert (await client.get("/healthz")).status == 200
    samples = await scrape(client)
    assert sample(samples, "atelier_http_requests_in_flight") == 1  # this scrape
    registry = client.app[METRICS_KEY].registry
    assert registry.get_sample_value("atelier_http_requests_in_flight") == 0


async def test_pool_gauges_and_acquire_waits(db: asyncpg.Connection, client: Client) -> None:
    await factories.review(db, 1)
    assert (await client.get("/reviews?product_id=1")).status == 200
    assert (await client.get("/reviews/meta?product_id=1")).status == 200

    samples = await scrape(client)
    assert sample(samples, "atelier_db_pool_max_connections") == 4  # the config fixture's max
    size = sample(samples, "atelier_db_pool_connections")
    idle = sample(samples, "atelier_db_pool_idle_connections")
    assert size is not None and idle is not None and 1 <= size <= 4 and 0 <= idle <= size
    assert (sample(samples, "atelier_db_pool_acquire_wait_seconds_count") or 0) >= 2
    assert sample(samples, "atelier_db_pool_acquire_wait_seconds_bucket", le="0.0001") is not None
    assert sample(samples, "process_open_fds") is not None


HELD = 0.3  # seconds the only connection is held once a request waits for it


async def test_acquire_waits_measure_time_queued_for_a_connection(
    db: asyncpg.Connection, config: Config, aiohttp_client: AiohttpClient
) -> None:
    await factories.review(db, 1)
    client = await aiohttp_client(create_app(replace(config, db_pool_min_size=1, db_pool_max_size=1)))
    registry = client.app[METRICS_KEY].registry

    def waits(suffix: str, **labels: str) -> float:
        return registry.get_sample_value(f"atelier_db_pool_acquire_wait_seconds_{suffix}", labels) or 0

    metrics = client.app[METRICS_KEY]
    async with client.app[POOL_KEY].acquire():  # the only connection, taken
        before, waited_before = waits("count"), waits("sum")
        request = asyncio.ensure_future(client.get("/reviews?product_id=1"))
        # In flight: the handler has run up to its first wait, the pool's acquire (nothing before it
        # waits), however long the request took to get there. From here it waits HELD seconds at least.
        async with asyncio.timeout(10):
            while metrics.in_flight == 0:
                await asyncio.sleep(0.001)
        await asyncio.sleep(HELD)
        assert not request.done()
    assert (await request).status == 200
    assert waits("count") == before + 1
    # At least the HELD seconds (less a margin for the two clocks' ticks), in the buckets above them.
    assert waits("sum") - waited_before >= HELD - 0.05
    assert waits("bucket", le="0.25") == before  # every earlier wait was quick; this one was not


async def test_each_app_has_its_own_registry(
    db: asyncpg.Connection, config: Config, aiohttp_client: AiohttpClient
) -> None:
    first = await aiohttp_client(create_app(config))
    second = await aiohttp_client(create_app(config))
    assert (await first.get("/healthz")).status == 200
    assert requests_total(await scrape(first), "GET", "/healthz", 200) == 1
    assert requests_total(await scrape(second), "GET", "/healthz", 200) is None


# --- /readyz ----------------------------------------------------------------------------------------


async def assert_not_ready(response: ClientResponse, reason: str) -> None:
    assert response.status == 503
    assert response.headers["Retry-After"] == "1"
    assert HEX_ID.fullmatch(response.headers["X-Request-Id"])
    assert await response.json() == {
        "error": "not ready",
        "details": [{"field": "database", "message": reason}],
    }


async def test_readyz_is_200_when_the_database_holds_a_product(
    db: asyncpg.Connection, client: Client
) -> None:
    await factories.characteristic(db, 7)  # a product known by its characteristics alone
    response = await client.get("/readyz")
    assert response.status == 200
    assert await response.json() == {"status": "ready"}

    await db.execute("TRUNCATE characteristics CASCADE")
    await factories.review(db, 8)
    assert (await client.get("/readyz")).status == 200


async def test_readyz_is_503_when_the_tables_are_empty(client: Client) -> None:
    await assert_not_ready(await client.get("/readyz"), "no data loaded")
    assert (await client.get("/healthz")).status == 200  # alive, though not ready


async def test_readyz_is_503_on_a_database_without_the_schema(
    make_database: Callable[[str], str], aiohttp_client: AiohttpClient
) -> None:
    client = await aiohttp_client(create_app(Config(database_url=make_database("obs_no_schema"))))
    await assert_not_ready(await client.get("/readyz"), "no data loaded")


async def test_readyz_is_503_while_the_database_is_unreachable_and_200_when_it_returns(
    db: asyncpg.Connection, proxy: DatabaseProxy, aiohttp_client: AiohttpClient
) -> None:
    await factories.review(db, 1)
    config = Config(database_url=proxy.url(), db_pool_min_size=1, db_pool_max_size=2, db_command_timeout=2)
    client = await aiohttp_client(create_app(config))
    assert (await client.get("/readyz")).status == 200

    await proxy.stop()
    await assert_not_ready(await client.get("/readyz"), "unreachable")  # the pooled connection is cut
    await assert_not_ready(await client.get("/readyz"), "unreachable")  # a new one is refused

    await proxy.start()
    assert (await client.get("/readyz")).status == 200


@pytest.fixture
async def hung_database() -> AsyncIterator[int]:
    """A port that accepts connections and never says a word, as a hung server or a black hole does."""

    async def swallow(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read()
        writer.close()

    server = await asyncio.start_server(swallow, "127.0.0.1", 0)
    yield server.sockets[0].getsockname()[1]
    server.close()
    await server.wait_closed()


async def test_readyz_answers_within_its_timeout_when_the_database_hangs(
    hung_database: int, aiohttp_client: AiohttpClient
) -> None:
    # No connection at start-up (min size 0), so the app starts; each connect would wait 30 s.
    url = f"postgresql://atelier@127.0.0.1:{hung_database}/atelier"
    config = Config(database_url=url, db_pool_min_size=0, db_command_timeout=30)
    client = await aiohttp_client(create_app(config))
    started = time.monotonic()
    await assert_not_ready(await client.get("/readyz"), "unreachable")
    # readiness.TIMEOUT (1 s) gave up on it, not the connect's own 30 s: a bound well below that one,
    # which a slow machine's answer after 1 s stays under.
    assert time.monotonic() - started < config.db_command_timeout / 3


# --- request ids ------------------------------------------------------------------------------------


async def test_a_plain_request_id_comes_back_unchanged(client: Client) -> None:
    for given in ["abc123", "0f8fad5b-d9cb-469f-a165-70867728950e", "edge.req_1-2", "x" * 64]:
        response = await client.get("/healthz", headers={"X-Request-Id": given})
        assert response.headers["X-Request-Id"] == given


async def test_a_missing_or_unusable_request_id_is_replaced_by_a_new_one(client: Client) -> None:
    seen = set()
    for headers in [{}, {"X-Request-Id": ""}, {"X-Request-Id": "has spaces"}, {"X-Request-Id": "x" * 65}]:
        response = await client.get("/healthz", headers=headers)
        request_id = response.headers["X-Request-Id"]
        assert HEX_ID.fullmatch(request_id), request_id
        seen.add(request_id)
    for unusable in ["a/b", "<script>", "ü"]:
        response = await client.get("/healthz", headers={"X-Request-Id": unusable})
        assert HEX_ID.fullmatch(response.headers["X-Request-Id"])
        seen.add(response.headers["X-Request-Id"])
    assert len(seen) == 7  # a new id each time


async def test_every_error_response_carries_the_request_id(
    db: asyncpg.Connection, config: Config, aiohttp_client: AiohttpClient
) -> None:
    client = await aiohttp_client(app_with_a_failing_route(config))
    for n, (method, path, status) in enumerate(
        [
            ("GET", "/nowhere", 404),
            ("PUT", "/reviews/999999/report", 404),
            ("DELETE", "/reviews", 405),
            ("GET", "/reviews?product_id=hello", 422),
            ("POST", "/reviews", 400),
            ("GET", "/boom", 500),
            ("GET", "/readyz", 503),  # the tables are empty
        ]
    ):
        given = f"err-{n}"
        response = await client.request(method, path, headers={"X-Request-Id": given}, data=b"not json")
        assert response.status == status, (method, path, await response.text())
        assert response.headers["X-Request-Id"] == given, (method, path)
        assert "error" in await response.json()


async def test_a_database_outage_503_carries_the_request_id(
    proxy: DatabaseProxy, aiohttp_client: AiohttpClient
) -> None:
    config = Config(database_url=proxy.url(), db_pool_min_size=1, db_pool_max_size=1, db_command_timeout=2)
    client = await aiohttp_client(create_app(config))
    await proxy.stop()
    response = await client.get("/reviews?product_id=1", headers={"X-Request-Id": "outage-1"})
    assert response.status == 503
    assert response.headers["X-Request-Id"] == "outage-1"


# --- logs -------------------------------------------------------------------------------------------


@pytest.fixture
def json_log(caplog: pytest.LogCaptureFixture) -> Iterator[Callable[[], list[dict[str, object]]]]:
    """Every line the app's loggers write through the JSON formatter, parsed."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter({"replica": "from-the-formatter"}))
    logger = logging.getLogger("atelier_api")
    caplog.set_level(logging.INFO, logger="atelier_api")
    logger.addHandler(handler)
    try:
        yield lambda: [json.loads(line) for line in stream.getvalue().splitlines()]
    finally:
        logger.removeHandler(handler)


async def test_one_json_access_line_per_request(
    db: asyncpg.Connection, config: Config, aiohttp_client: AiohttpClient, json_log
) -> None:
    review_id = await factories.review(db, 1)
    client = await aiohttp_client(create_app(replace(config, replica_name="api-9")))
    requests = [
        ("GET", "/reviews?product_id=1", "/reviews", 200),
        ("PUT", f"/reviews/{review_id}/helpful", "/reviews/{review_id}/helpful", 204),
        ("GET", "/nowhere", "unmatched", 404),
        ("GET", "/reviews?product_id=0", "/reviews", 422),
    ]
    for n, (method, path, _, _) in enumerate(requests):
        await client.request(method, path, headers={"X-Request-Id": f"req-{n}"})

    lines = [line for line in json_log() if line["logger"] == "atelier_api.access"]
    assert len(lines) == len(requests)
    for n, (line, (method, path, route, status)) in enumerate(zip(lines, requests, strict=True)):
        duration = line.pop("duration_ms")
        assert isinstance(duration, float) and 0 < duration < 5000
        assert isinstance(line.pop("time"), str)
        assert line == {
            "level": "INFO",
            "logger": "atelier_api.access",
            "message": f"{method} {path.split('?')[0]} {status}",
            "replica": "api-9",
            "request_id": f"req-{n}",
            "method": method,
            "route": route,
            "path": path.split("?")[0],
            "status": status,
        }


async def test_an_unexpected_error_is_logged_once_with_the_request_id_and_never_sent(
    db: asyncpg.Connection, config: Config, aiohttp_client: AiohttpClient, json_log
) -> None:
    client = await aiohttp_client(app_with_a_failing_route(config))
    response = await client.get("/boom", headers={"X-Request-Id": "bug-42"})
    assert response.status == 500
    assert await response.json() == {"error": "internal server error", "details": []}

    errors = [line for line in json_log() if line["level"] == "ERROR"]
    assert len(errors) == 1, errors
    assert errors[0]["request_id"] == "bug-42"
    assert "RuntimeError: secret internals" in str(errors[0]["exception"])  # the traceback, in one line
    access = [line for line in json_log() if line["logger"] == "atelier_api.access"]
    assert [(line["request_id"], line["status"]) for line in access] == [("bug-42", 500)]


def test_a_record_with_a_traceback_is_one_json_line() -> None:
    try:
        raise ValueError('a "quoted"\nmulti-line message')
    except ValueError:
        record = logging.getLogger("x").makeRecord(
            "x", logging.ERROR, __file__, 1, "failed: %s", ("here",), sys.exc_info(), extra={"n": {1, 2}}
        )
    line = JsonFormatter({"replica": "api-1"}).format(record)
    assert "\n" not in line
    parsed = json.loads(line)
    assert parsed["message"] == "failed: here" and parsed["replica"] == "api-1"
    assert parsed["exception"].startswith("Traceback") and "ValueError" in parsed["exception"]
    assert parsed["n"] == "{1, 2}"  # what JSON cannot hold is written as its repr
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", parsed["time"])


async def test_the_command_writes_only_json_lines_and_one_access_line_per_request(database_url: str) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "atelier_api",
        env={
            **os.environ,
            "DATABASE_URL": database_url,
            "API_PORT": str(port),
            "REPLICA_NAME": "api-cli",
            "LOG_LEVEL": "INFO",
        },
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        async with asyncio.timeout(30), ClientSession(f"http://127.0.0.1:{port}") as http:
            while True:
                try:
                    async with http.get("/healthz", headers={"X-Request-Id": "cli-1"}) as response:
                        assert response.status == 200
                        break
                except OSError:
                    await asyncio.sleep(0.1)
    finally:
        process.send_signal(signal.SIGINT)
        _, stderr = await asyncio.wait_for(process.communicate(), timeout=30)

    lines = [json.loads(line) for line in stderr.decode().splitlines()]  # every line is JSON
    assert lines and all(line["replica"] == "api-cli" for line in lines)
    access = [line for line in lines if line["logger"] == "atelier_api.access" and line["status"] == 200]
    assert [(line["request_id"], line["route"]) for line in access] == [("cli-1", "/healthz")]
    assert not [line for line in lines if line["logger"].startswith("aiohttp.access")]


async def test_a_failed_start_still_ends_with_a_plain_message() -> None:
    # The JSON lines say why, and the last line is still the plain message for whoever started it.
    code, stderr = await run_api_command(DATABASE_URL=f"postgresql://atelier@127.0.0.1:{closed_port()}/db")
    assert code == 1
    assert stderr.decode().splitlines()[-1].startswith("atelier-api: cannot connect to the database at ")
