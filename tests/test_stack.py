"""scripts/stack.py's checks before it starts anything (`make up`, `make serve`, `make load`)."""

from __future__ import annotations

import stat
from pathlib import Path

import asyncpg
import pytest

from atelier_etl.schema import apply_schema
from tests.conftest import stack


def fake_nginx(folder: Path, version: str) -> str:
    """An executable that answers `-v` as that nginx does (on stderr)."""
    binary = folder / f"nginx-{version}"
    binary.write_text(f"#!/bin/sh\necho 'nginx version: nginx/{version}' >&2\n")
    binary.chmod(binary.stat().st_mode | stat.S_IXUSR)
    return str(binary)


@pytest.mark.parametrize(
    ("version", "logs_from_the_start"), [("1.18.0", False), ("1.19.5", True), ("1.22.1", True)]
)
def test_nginx_logs_into_its_prefix_from_the_start_where_it_can(tmp_path, version, logs_from_the_start):
    """`-e` came with nginx 1.19.5; Ubuntu 22.04's 1.18 refuses it ("invalid option"), so it is left out."""
    command = stack.nginx_command(tmp_path / "prefix", fake_nginx(tmp_path, version))

    assert ("-e" in command) is logs_from_the_start
    assert command[-4:] == ["-c", "nginx.conf", "-g", "daemon off;"]


def test_make_load_checks_the_disk_of_a_data_dir_not_made_yet(tmp_path, monkeypatch):
    """With DATABASE_URL set nothing has made DATA_DIR yet when make load checks its free space."""
    monkeypatch.setattr(stack, "DATA_DIR", tmp_path / "not" / "yet")
    stack.check_disk(stack.DATA_DIR / "full", 1_000, embedded=False)
    assert stack.DATA_DIR.is_dir()

    monkeypatch.setattr(stack, "FULL_DATABASE_BYTES", 1e18)  # more than any disk
    with pytest.raises(SystemExit, match=r"needs about .* GB free in .*; .* GB are free"):
        stack.check_disk(stack.DATA_DIR / "full", stack.FULL_SCALE_PRODUCTS, embedded=True)


async def test_a_database_serves_data_once_it_has_a_product(make_database):
    """Tables alone (compose's image makes them at its first start) hold nothing to serve."""
    url = make_database("stack_serves")
    assert stack.data_loaded(url) is False  # no tables
    conn = await asyncpg.connect(url)
    try:
        await apply_schema(conn)
        assert stack.data_loaded(url) is False  # tables, no product
        await conn.execute("INSERT INTO characteristics (product_id, name) VALUES (7, 'Fit')")
        assert stack.data_loaded(url) is True
    finally:
        await conn.close()
