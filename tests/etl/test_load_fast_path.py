"""The fast path (records passed to COPY as written) loads exactly what the slow path (csv + rows.py) loads.

The same export is loaded twice: as is, and with the fast path switched off so every record goes through
the csv module and rows.py. Every stored value must be the same, and so must the rejects.
"""

from __future__ import annotations

import re
import tempfile
import tracemalloc
from pathlib import Path

import asyncpg
import pytest

from atelier_etl import copystream
from atelier_etl.load import load
from atelier_etl.rejects import RejectsReport
from atelier_etl.rows import CHARACTERISTICS as CHARACTERISTICS_FILE
from tests.etl.loadfiles import read_rejects, review, write_export

TABLES = {
    "reviews": "id, product_id, rating, date, summary, body, recommend, reported, reviewer_name, "
    "reviewer_email, response, helpfulness",
    "reviews_photos": "id, review_id, url",
    "characteristics": "id, product_id, name",
    "characteristic_reviews": "id, characteristic_id, review_id, value",
}

REVIEWS = [
    review(id=1, product_id=1, summary="null", body="", response="null"),
    review(
        id=2, product_id=1, summary='"null"', body='""', response='"null"', recommend="TRUE", reported="False"
    ),
    review(id=3, product_id=2, response='""', recommend="1", reported="0", helpfulness=0),
    review(id=4, product_id=2, response='"Thanks, ""really"""', summary='"a, b"', body='"x ""y"" z"'),
    review(id=5, product_id=2, response="null", summary="bare text", helpfulness=2147483647),
    review(id=6, product_id=3, body='"two\nlines"', summary='"café ☕"', reviewer_name='"Zoë"'),
    review(id=7, product_id=3, date=0),
    review(id=8, product_id=3, date=999),
    review(id=9, product_id=3, date=1609459199999),
    review(id=10, product_id=3, date=8999999999999),
    review(id="011", product_id="03", rating="5", date="01609459200000"),
    review(id=12, product_id=3, rating='"4"', recommend='"true"', reported="fAlSe"),
    review(id=13, product_id=3, summary=' "spaced"', body="a\\.b", reviewer_email="\\."),
    review(id=999999999999999999, product_id=999999999),
    review(id=1000000000000000000, product_id=1000000000),
    review(id=14, product_id=3, response="NULL", reviewer_name="null"),
    review(id=15, product_id=3, rating=6),  # rejected
    review(id=1, product_id=1),  # a duplicate
]
PHOTOS = ['1,1,"https://x/1.jpg"', "2,2,https://x/2.jpg", '3,6,""', "4,6,", "5,6,null", "6,77,x"]
CHARACTERISTICS = ['1,1,"Fit"', "2,2,Length", '3,3,""', "4,3,null", "5,3,Fit,extra"]
RATINGS = ["1,1,1,5", "2,2,3,1", "3,3,6,3", "4,4,7,2", "5,1,4,4", "6,3,999999999999999999,3", "7,2,2,0"]


async def stored(url: str) -> dict[str, list[tuple]]:
    conn = await asyncpg.connect(url)
    try:
        return {
            table: [tuple(row) for row in await conn.fetch(f"SELECT {columns} FROM {table} ORDER BY id")]
            for table, columns in TABLES.items()
        }
    finally:
        await conn.close()


@pytest.mark.parametrize("eol", ["\n", "\r\n"], ids=["lf", "crlf"])
async def test_the_fast_path_loads_what_the_slow_path_loads(make_database, tmp_path, monkeypatch, eol):
    data = write_export(
        tmp_path / "export", reviews=REVIEWS, photos=PHOTOS, characteristics=CHARACTERISTICS,
        characteristic_reviews=RATINGS, eol=eol, bom=True,
    )  # fmt: skip
    fast_url, slow_url = make_database("fast_path"), make_database("slow_path")
    fast = await load(fast_url, data, tmp_path / "fast.csv")
    monkeypatch.setattr(copystream, "fast_records", lambda export_file, eol: re.compile(rb"(?!)|"))
    slow = await load(slow_url, data, tmp_path / "slow.csv")

    assert await stored(fast_url) == await stored(slow_url)
    assert fast.as_dict()["files"] == slow.as_dict()["files"]
    assert read_rejects(fast.rejects_path) == read_rejects(slow.rejects_path)
    assert fast["reviews.csv"].loaded == len(REVIEWS) - 2


def test_a_file_of_lone_cr_line_ends_streams_in_chunks(tmp_path, monkeypatch):
    """No LF anywhere: every record takes the slow path, which must still read the file a chunk at a time
    (it once read on until an LF, i.e. the whole file, copying the buffer at every read)."""
    monkeypatch.setattr(copystream, "CHUNK", 1 << 13)  # a file of many chunks, quickly read
    rows = [f"{i},{i},Fit" for i in range(1, 50_001)]
    path = tmp_path / "characteristics.csv"
    path.write_bytes("\r".join(["id,product_id,name", *rows, ""]).encode())
    with tempfile.TemporaryDirectory() as folder:
        report = RejectsReport(Path(folder) / "rejects.csv")
        stream = copystream.CopyStream(path, CHARACTERISTICS_FILE, report)
        tracemalloc.start()
        try:
            copied = sum(chunk.count(b"\n") for chunk in stream.chunks())
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
            stream.close()
            report.discard()
    assert (stream.read, stream.rejected, copied) == (len(rows), 0, len(rows))
    assert peak < path.stat().st_size / 2
