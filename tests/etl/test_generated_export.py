"""The generator and the loader together, through their command lines: a generated export with every
kind of dirty row and every format quirk loads with exactly the clean rows, and every dirty row lands
in the rejects report under the kind the generator's manifest counted."""

from __future__ import annotations

import csv
from collections import Counter
from pathlib import Path

import asyncpg
import pytest

from atelier_etl.generate_dirty import KINDS
from tests.conftest import generate_and_load

TABLES = {
    "reviews.csv": "reviews",
    "reviews_photos.csv": "reviews_photos",
    "characteristics.csv": "characteristics",
    "characteristic_reviews.csv": "characteristic_reviews",
}


@pytest.fixture(scope="module")
def loaded_export(make_database, tmp_path_factory) -> tuple[Path, str, dict]:
    out = tmp_path_factory.mktemp("dirty-export")
    url = make_database("generated_export")
    flags = ("--products", "400", "--seed", "7", "--dirty-rate", "0.05")
    quirks = ("--bom", "--crlf", "--mixed-booleans")
    manifest = generate_and_load(out, url, *flags, *quirks, env={"PATH": ""})
    return out, url, manifest


def test_every_dirty_kind_was_generated(loaded_export):
    _, _, manifest = loaded_export
    for name, kinds in KINDS.items():
        assert set(manifest["files"][name]["dirty"]) == set(kinds), name


def test_rejects_report_matches_the_manifest_kind_by_kind(loaded_export):
    out, _, manifest = loaded_export
    with open(out / "rejects.csv", newline="", encoding="utf-8") as report:
        rejects = list(csv.DictReader(report))
    found = Counter((row["file"], row["kind"]) for row in rejects)
    expected = Counter(
        {
            (name, kind): count
            for name, entry in manifest["files"].items()
            for kind, count in entry["dirty"].items()
        }
    )
    assert found == expected
    assert all(
        row["line"].isdigit() and int(row["line"]) > 1 and row["reason"] and row["raw"] for row in rejects
    )


async def test_exactly_the_clean_rows_are_loaded(loaded_export):
    _, url, manifest = loaded_export
    conn = await asyncpg.connect(url)
    try:
        for name, table in TABLES.items():
            count = await conn.fetchval(f"SELECT count(*) FROM {table}")
            assert count == manifest["files"][name]["clean"], name
            assert manifest["files"][name]["rows"] == count + sum(manifest["files"][name]["dirty"].values())
    finally:
        await conn.close()
