"""Fixtures shared by every suite: one real PostgreSQL server per test session.

The server is `TEST_DATABASE_URL` when set (any role that may CREATE DATABASE), otherwise an embedded
PostgreSQL (scripts/stack.py's embedded_server) in a temporary folder, stopped at the end. Each suite
takes its own database from `make_database`, so suites never see each other's rows.
"""

from __future__ import annotations

import asyncio
import fcntl
import json
import os
import re
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent  # the virtualenv's bin: atelier-generate, atelier-load, atelier-api
sys.path.insert(0, str(ROOT / "scripts"))
import stack  # noqa: E402  (scripts/stack.py: its database helpers, CREATE/DROP DATABASE on a server)

# pytest-xdist runs the suite on every core (`-n auto` in pyproject.toml; `-n 0` runs it in one process).
# Each test module is one unit of work (ModuleScheduling below), so a module's fixtures (a 100,000-product
# load, the compose stack, a schemathesis run) are built once, on one worker. Session fixtures are per
# worker: each worker has its own embedded PostgreSQL (or its own databases on TEST_DATABASE_URL) and,
# when it runs an e2e module, its own local stack.

# The modules that take longest, longest first: handed out first, so that no worker is left with one of
# them at the end while the others idle. Measured with `--durations`, 2 cores.
SLOW_MODULES = (
    "tests/containers/test_compose_stack.py",  # image builds (when not cached) and the compose stack
    "tests/e2e/test_fuzz_through_nginx.py",
    "tests/perf/test_query_plans.py",  # generates and loads 100,000 products
    "tests/e2e/test_limits.py",
    "tests/api/test_schemathesis.py",
)


def xdist_worker(config: pytest.Config) -> str:
    """This process's xdist worker id ("gw0", "gw1", ...), or "" when the run is not distributed."""
    return str(getattr(config, "workerinput", {}).get("workerid", ""))


def _module(nodeid: str) -> str:
    return nodeid.split("::", 1)[0]


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """The slow modules first when the run is distributed (the order within a module is kept)."""
    if xdist_worker(config):
        rank = {module: index for index, module in enumerate(SLOW_MODULES)}
        items.sort(key=lambda item: rank.get(_module(item.nodeid), len(rank)))  # stable


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_make_scheduler(config: pytest.Config, log: object) -> object:
    """xdist's loadscope, with whole modules as its units. Its own scopes split a module's functions from
    each of its classes (tests/containers: the compose stack would come up once per worker), and
    `--dist loadgroup` cannot regroup them on pytest 9.2 (it renames items through Node._nodeid, which
    pytest 9.2 no longer has)."""
    from xdist.scheduler import LoadScopeScheduling

    class ModuleScheduling(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            return _module(nodeid)

    return ModuleScheduling(config, log)


def generate_and_load(
    out: Path, database_url: str, *generate_args: str, env: dict[str, str] | None = None
) -> dict:
    """The real command lines, end to end: `atelier-generate --out OUT ARGS`, then `atelier-load` of it
    into `database_url`. Returns the generator's manifest."""
    environment = (env or dict(os.environ)) | {"DATABASE_URL": database_url}
    generate = [BIN / "atelier-generate", "--out", out, *generate_args, "--no-progress"]
    subprocess.run(generate, env=environment, check=True, capture_output=True, timeout=120)
    loaded = subprocess.run([BIN / "atelier-load", "--data", out, "--no-progress"], env=environment,
                            capture_output=True, text=True, timeout=300)  # fmt: skip
    assert loaded.returncode == 0, loaded.stderr
    return json.loads((out / "manifest.json").read_text())


@pytest.fixture(scope="session")
def postgres_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    url = os.environ.get("TEST_DATABASE_URL")
    if url:
        yield url
        return
    # Not under pytest's temporary folder: as root, the server runs as pgserver's own user, and every
    # pytest run that starts on the machine makes /tmp/pytest-of-<user> private again (0700), which cut
    # a running server off its data folder (PANIC: could not open file ".../global/pg_control").
    pgdata = Path(tempfile.mkdtemp(prefix="atelier-test-pg-"))
    # One embedded server per xdist worker, started one at a time: run as root, pgserver creates its
    # system user the first time, without a lock of its own (two `useradd`s at once: one fails).
    with open(tmp_path_factory.getbasetemp().parent / "pgserver.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        server = stack.embedded_server(pgdata, cleanup_mode="delete")  # stopped and its folder removed
    try:
        yield server.get_uri()
    finally:
        server.cleanup()


@pytest.fixture(scope="session")
def make_database(postgres_url: str) -> Iterator[Callable[[str], str]]:
    """Create (or re-create, empty) a database for this session and return its URL. They are dropped
    when the session ends: on a server of one's own (TEST_DATABASE_URL) each run would leave its own."""
    run_id = os.getpid()
    made: set[str] = set()

    def make(name: str) -> str:
        dbname = f"test_{re.sub(r'[^a-z0-9_]', '_', name.lower())}_{run_id}"
        # A thread of its own, so async fixtures (already inside an event loop) can call this too.
        with ThreadPoolExecutor(max_workers=1) as pool:
            drop, create = stack.DROP_DATABASE.format(dbname), f'CREATE DATABASE "{dbname}"'
            pool.submit(asyncio.run, stack.on_server(postgres_url, drop, create)).result()
        made.add(dbname)
        return stack.database_url(postgres_url, dbname)

    yield make
    asyncio.run(stack.on_server(postgres_url, *map(stack.DROP_DATABASE.format, sorted(made))))
