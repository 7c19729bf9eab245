"""Schemathesis against a real server of the app, with the document it serves at /openapi.json.

Every operation of the document gets its examples, the coverage phase's boundary and invalid values, and
a bounded, seeded number of generated requests (valid and invalid). Each response must be no 5xx, have a
documented status, content type, headers and body, and invalid input must be refused; an undocumented
method must give 405 with Allow. The server runs in a thread of its own (schemathesis sends blocking
requests) over the API suite's database, seeded with the products the document's examples name.

It runs schemathesis's engine (what `schemathesis run` runs) rather than its pytest plugin, which fails on
pytest 9.2: the plugin renames test items through `Node._nodeid`, which pytest 9.2 no longer has.
"""

from __future__ import annotations

import asyncio
import threading
import urllib.request
from collections import Counter, defaultdict
from collections.abc import Coroutine, Iterator
from dataclasses import dataclass, field, replace
from datetime import timedelta
from typing import Any, TypeVar

import asyncpg
import orjson
import pytest
import schemathesis
from aiohttp import web
from schemathesis import engine
from schemathesis.engine import events

from atelier_api import openapi
from atelier_api.app import create_app
from atelier_api.config import Config
from tests.api import factories
from tests.api.conftest import TABLES

T = TypeVar("T")

SEED = 20240501
MAX_EXAMPLES = 40  # generated requests per operation, on top of its examples and coverage cases

# Products the document's examples name (product 2, its characteristic 5, review 1), and a few others:
# one whose reviews are all reported, one with characteristics and no reviews.
EXAMPLE_PRODUCT = 2
EXAMPLE_CHARACTERISTIC = 5

CONFIG = Config(database_url="", db_pool_min_size=1, db_pool_max_size=4, replica_name="fuzzed")
OPERATIONS = [
    f"{method.upper()} {path}"
    for path, item in openapi.document(CONFIG.reviews_max_count, CONFIG.max_body_bytes)["paths"].items()
    for method in item
]


async def seed(database_url: str) -> None:
    conn = await asyncpg.connect(database_url)
    try:
        await conn.execute(f"TRUNCATE {TABLES} RESTART IDENTITY CASCADE")
        quality = await factories.characteristic(conn, EXAMPLE_PRODUCT, "Quality", id=EXAMPLE_CHARACTERISTIC)
        fit = await factories.characteristic(conn, EXAMPLE_PRODUCT, "Fit", id=6)
        await factories.characteristic(conn, 3, "Size", id=7)
        for n, rating in enumerate([5, 4, 4, 3, 2, 1, 5], start=1):
            review_id = await factories.review(
                conn,
                EXAMPLE_PRODUCT,
                id=n,
                rating=rating,
                recommend=rating > 2,
                helpfulness=n * 3 % 7,
                date=factories.DEFAULT_DATE + timedelta(days=n),
                response="Thanks!" if n % 3 == 0 else None,
            )
            await factories.characteristic_rating(conn, quality, review_id, rating)
            if n % 2:
                await factories.characteristic_rating(conn, fit, review_id, 3)
                await factories.photo(conn, review_id, f"https://images.example/{n}.jpg")
        await factories.review(conn, 4, id=20, reported=True)
        await factories.advance_sequences(conn)
    finally:
        await conn.close()


class ServerThread:
    """create_app(config) served on a free port by an event loop in a thread of its own."""

    def __init__(self, app: web.Application) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="api-server", daemon=True)
        self.runner = web.AppRunner(app, access_log=None)
        self.url = ""

    def run(self, coroutine: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(timeout=30)

    def start(self) -> None:
        self.thread.start()
        self.run(self.runner.setup())
        self.run(web.TCPSite(self.runner, "127.0.0.1", 0).start())
        host, port = self.runner.addresses[0][:2]
        self.url = f"http://{host}:{port}"

    def stop(self) -> None:
        try:
            self.run(self.runner.cleanup())
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self.thread.join(timeout=30)
            self.loop.close()


@pytest.fixture(scope="module")
def api_url(database_url: str) -> Iterator[str]:
    server = ServerThread(create_app(replace(CONFIG, database_url=database_url)))
    server.start()
    try:
        server.run(seed(database_url))
        yield server.url
    finally:
        server.stop()


@dataclass
class OperationResult:
    cases: int = 0
    skipped: list[str] = field(default_factory=list)  # "phase: why"
    statuses: Counter[int] = field(default_factory=Counter)  # responses seen, by status
    failures: dict[str, str] = field(default_factory=dict)  # message -> the curl command reproducing it


@dataclass
class Run:
    operations: dict[str, OperationResult]
    errors: list[str]
    stop_reason: str
    seconds: float


def run_schemathesis(api_url: str) -> Run:
    config = schemathesis.Config.from_dict(
        {
            "seed": SEED,
            "base-url": api_url,
            "continue-on-failure": True,
            "generation": {"max-examples": MAX_EXAMPLES, "deterministic": True, "database": "none"},
            "phases": {"stateful": {"enabled": False}},
            "checks": {
                # Valid per the document yet refused by design: an unknown product, an id that is not one
                # of the product's characteristics, an address email-validator refuses.
                "positive_data_acceptance": {"enabled": False},
            },
        }
    )
    # The document as served; from_dict, since from_url leaves the document's own path untested.
    with urllib.request.urlopen(f"{api_url}/openapi.json") as response:
        document = orjson.loads(response.read())
    schema = schemathesis.openapi.from_dict(document, config=config)
    operations: dict[str, OperationResult] = defaultdict(OperationResult)
    errors: list[str] = []
    for event in engine.from_schema(schema).execute():
        if isinstance(event, events.ScenarioFinished):
            result = operations[event.recorder.label]
            result.cases += len(event.recorder.cases)
            result.statuses.update(
                interaction.response.status_code
                for interaction in event.recorder.interactions.values()
                if interaction.response is not None
            )
            if event.skip_reason:
                result.skipped.append(f"{event.phase.value}: {event.skip_reason}")
            for checks in event.recorder.checks.values():
                for check in checks:
                    if check.failure_info is not None:
                        failure = check.failure_info.failure
                        message = f"{check.name}: {failure.title}\n{failure.message}"
                        result.failures.setdefault(message, check.failure_info.code_sample)
        elif isinstance(event, events.NonFatalError | events.FatalError):
            errors.append(repr(event))
        elif isinstance(event, events.EngineFinished):
            return Run(dict(operations), errors, event.stop_reason.value, event.running_time)
    raise AssertionError("the engine stopped without EngineFinished")


@pytest.fixture(scope="module")
def run(api_url: str) -> Run:
    return run_schemathesis(api_url)


def test_the_run_completes(run: Run) -> None:
    assert run.stop_reason == "completed"
    assert run.errors == []


# Statuses the run must have met, so that it exercises writes, not only their refusals.
MET = {
    "GET /reviews": {200, 422},
    "GET /reviews/meta/batch": {200, 422},
    "POST /reviews": {201, 400, 405, 422},
    # Not 200: the run reports the reviews of its examples (PUT .../report runs first) before it asks for
    # them, so a 200 here came only by chance from a generated id. test_openapi.py checks a real 200 of
    # this operation against the document.
    "GET /reviews/{review_id}": {404},
    "PUT /reviews/{review_id}/helpful": {204, 404},
    "PUT /reviews/{review_id}/report/": {204, 404},
    "GET /docs/static/{asset}": {200, 404},
}


@pytest.mark.parametrize(("operation", "statuses"), MET.items())
def test_the_run_meets_successes_and_errors(run: Run, operation: str, statuses: set[int]) -> None:
    assert statuses <= set(run.operations[operation].statuses)


@pytest.mark.parametrize("operation", OPERATIONS)
def test_operation_conforms(run: Run, operation: str) -> None:
    result = run.operations[operation]
    assert result.cases > 0
    assert not result.failures, "\n\n".join(
        f"{message}\n    {curl}" for message, curl in result.failures.items()
    )
