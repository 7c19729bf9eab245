"""The benchmarks' databases: each run drops the ones it made for itself (~5 GB each at full scale), and
keeps only the one the benchmarks share (bench/db.py's), or all of them when BENCH_KEEP_DATABASES is set."""

from __future__ import annotations

import asyncio
import os
import sys

import asyncpg
import pytest

from tests.conftest import ROOT

sys.path.insert(0, str(ROOT / "scripts"))
import stack  # noqa: E402  (scripts/stack.py: the database helpers every bench script uses)

SERVER_VARIABLE = "ATELIER_TEST_BENCH_SERVER"


def existing(server_url: str, names: list[str]) -> set[str]:
    async def query() -> set[str]:
        conn = await asyncpg.connect(stack.database_url(server_url, "postgres"))
        try:
            rows = await conn.fetch("SELECT datname FROM pg_database WHERE datname = any($1)", names)
            return {row["datname"] for row in rows}
        finally:
            await conn.close()

    return asyncio.run(query())


@pytest.fixture
def names(postgres_url, monkeypatch):
    monkeypatch.setenv(SERVER_VARIABLE, postgres_url)
    monkeypatch.delenv("BENCH_KEEP_DATABASES", raising=False)
    pid = os.getpid()
    made = {kind: f"bench_{kind}_{pid}" for kind in ("scratch", "shared", "copy")}
    yield made
    for name in made.values():
        asyncio.run(stack.on_server(postgres_url, stack.DROP_DATABASE.format(name)))


def test_a_run_drops_the_databases_it_made_and_keeps_the_shared_one(postgres_url, names):
    with stack.database((SERVER_VARIABLE,)) as server:
        asyncio.run(stack.fresh_database(server, names["scratch"]))
        asyncio.run(stack.fresh_database(server, names["shared"], keep=True))
        asyncio.run(stack.fresh_database(server, names["copy"], template=names["shared"]))
        assert existing(server, list(names.values())) == set(names.values())
    assert existing(postgres_url, list(names.values())) == {names["shared"]}


def test_a_failed_run_drops_them_too(postgres_url, names):
    with pytest.raises(RuntimeError), stack.database((SERVER_VARIABLE,)) as server:
        asyncio.run(stack.fresh_database(server, names["scratch"]))
        raise RuntimeError("the benchmark failed")
    assert existing(postgres_url, [names["scratch"]]) == set()


def test_bench_keep_databases_keeps_them(postgres_url, names, monkeypatch, capsys):
    monkeypatch.setenv("BENCH_KEEP_DATABASES", "1")
    with stack.database((SERVER_VARIABLE,)) as server:
        asyncio.run(stack.fresh_database(server, names["scratch"]))
    assert existing(postgres_url, [names["scratch"]]) == {names["scratch"]}
    assert f"kept (BENCH_KEEP_DATABASES): {names['scratch']}" in capsys.readouterr().out
