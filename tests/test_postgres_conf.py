"""services/postgres/atelier.conf, the compose database's settings: each is a setting of the PostgreSQL the
image runs, and slow statements are logged without their parameters (a review's e-mail and text)."""

from __future__ import annotations

import re

import asyncpg

from tests.conftest import ROOT

SETTING = re.compile(r"^\s*([a-z_]+)\s*=\s*('[^']*'|\S+)", flags=re.MULTILINE)


def settings() -> dict[str, str]:
    text = (ROOT / "services/postgres/atelier.conf").read_text(encoding="utf-8")
    return {name: value.strip("'") for name, value in SETTING.findall(text)}


def test_slow_statements_are_logged_without_their_parameters() -> None:
    """With log_min_duration_statement set, PostgreSQL logs a slow statement's bind values in full by
    default (log_parameter_max_length -1): STORE_REVIEW's include the reviewer's e-mail."""
    conf = settings()
    assert conf["log_min_duration_statement"] != "-1"
    assert conf.get("log_parameter_max_length") == "0"


async def test_every_setting_is_one_postgresql_knows(make_database) -> None:
    conn = await asyncpg.connect(make_database("postgres_conf"))
    try:
        known = {row["name"].lower() for row in await conn.fetch("SELECT name FROM pg_settings")}
    finally:
        await conn.close()
    assert set(settings()) - known == set()
