"""Dirty rows: each goes to the rejects report (file, physical line, kind, reason, raw row), none vanishes."""

from __future__ import annotations

import tracemalloc

import asyncpg
import pytest

from atelier_etl.load import load
from atelier_etl.rejects import RejectsReport
from atelier_etl.rows import MAX_FIELD_CHARS
from tests.etl.loadfiles import (
    SAMPLE_CHARACTERISTIC_REVIEWS,
    SAMPLE_CHARACTERISTICS,
    SAMPLE_PHOTOS,
    SAMPLE_REVIEWS,
    read_rejects,
    review,
    write_export,
)


@pytest.fixture
def db_url(make_database):
    return make_database("load_rejects")


def assert_every_row_accounted_for(summary):
    for file in summary.files:
        assert file.loaded + file.rejected == file.read
        assert sum(file.rejected_by_kind.values()) == file.rejected


HUGE = "9" * 5000
HUGE_SHOWN = repr("9" * 40 + "...")
# (file argument of write_export, dirty record appended after the samples, kind, reason)
DIRTY_ROWS = [
    ("reviews", review(id=20)[: -len(",0")], "wrong_column_count", "expected 12 columns, got 11"),
    ("reviews", review(id=20) + ",extra", "wrong_column_count", "expected 12 columns, got 13"),
    ("reviews", review(id="abc"), "non_numeric_id", "id is not a positive integer: 'abc'"),
    ("reviews", review(id=" 20"), "non_numeric_id", "id is not a positive integer: ' 20'"),
    ("reviews", review(id="2_0"), "non_numeric_id", "id is not a positive integer: '2_0'"),
    ("reviews", review(id="٢٠"), "non_numeric_id", "id is not a positive integer: '٢٠'"),
    ("reviews", review(id=0), "non_numeric_id", "id is not a positive integer: 0"),
    ("reviews", review(id=-4), "non_numeric_id", "id is not a positive integer: -4"),
    ("reviews", review(id=2**63), "id_out_of_range", f"id is too large: {2**63}"),
    # Beyond the 4,300 digits Python's int() converts (its ValueError once stopped the whole load).
    ("reviews", review(id=HUGE), "id_out_of_range", f"id is too large: {HUGE_SHOWN}"),
    ("reviews", review(id=20, date=HUGE), "bad_date", f"date is out of range: {HUGE_SHOWN}"),
    ("reviews", review(id=20, helpfulness=HUGE), "bad_helpfulness",
     f"helpfulness must be a non-negative integer, got {HUGE_SHOWN}"),
    ("photos", f"{HUGE},1,https://x/1.jpg", "id_out_of_range", f"id is too large: {HUGE_SHOWN}"),
    ("reviews", review(id=20, product_id="x1"), "non_numeric_id",
     "product_id is not a positive integer: 'x1'"),
    ("reviews", review(id=20, product_id=2**31), "id_out_of_range", f"product_id is too large: {2**31}"),
    ("reviews", review(id=20, rating=7), "rating_out_of_range", "rating must be 1-5, got 7"),
    ("reviews", review(id=20, rating=0), "rating_out_of_range", "rating must be 1-5, got 0"),
    ("reviews", review(id=20, rating='"five"'), "rating_out_of_range", "rating must be 1-5, got 'five'"),
    ("reviews", review(id=20, date="yesterday"), "bad_date", "date is not epoch milliseconds: 'yesterday'"),
    ("reviews", review(id=20, date="1.6e12"), "bad_date", "date is not epoch milliseconds: '1.6e12'"),
    ("reviews", review(id=20, date=10**16), "bad_date", f"date is out of range: {10**16}"),
    ("reviews", review(id=20, recommend="yes"), "bad_boolean", "recommend must be true/false/1/0, got 'yes'"),
    ("reviews", review(id=20, reported='" true"'), "bad_boolean",
     "reported must be true/false/1/0, got ' true'"),
    ("reviews", review(id=20, helpfulness=-1), "bad_helpfulness",
     "helpfulness must be a non-negative integer, got -1"),
    ("reviews", review(id=20, body='"a\x00b"'), "invalid_text", "contains a NUL character"),
    ("reviews", review(id=3), "duplicate_id", "duplicate id 3 (first at line 4)"),
    ("photos", "2,999,https://x/1.jpg", "missing_review", "review_id 999 does not exist"),
    ("photos", "1,5,https://x/1.jpg", "duplicate_id", "duplicate id 1 (first at line 2)"),
    ("photos", "2,abc,https://x/1.jpg", "non_numeric_id", "review_id is not a positive integer: 'abc'"),
    ("characteristics", '5,3,"Fit"', "duplicate_id", "duplicate id 5 (first at line 6)"),
    ("characteristics", "15,2", "wrong_column_count", "expected 3 columns, got 2"),
    ("characteristic_reviews", "4,1,999,3", "missing_review", "review_id 999 does not exist"),
    ("characteristic_reviews", "4,99,1,3", "missing_characteristic", "characteristic_id 99 does not exist"),
    ("characteristic_reviews", "4,5,1,3", "characteristic_of_other_product",
     "characteristic 5 belongs to product 2, review 1 to product 1"),
    ("characteristic_reviews", "4,1,1,9", "value_out_of_range", "value must be 1-5, got 9"),
    ("characteristic_reviews", "3,1,1,2", "duplicate_id", "duplicate id 3 (first at line 4)"),
    ("characteristic_reviews", "4,x,1,2", "non_numeric_id",
     "characteristic_id is not a positive integer: 'x'"),
]  # fmt: skip
SAMPLES = {
    "reviews": SAMPLE_REVIEWS,
    "photos": SAMPLE_PHOTOS,
    "characteristics": SAMPLE_CHARACTERISTICS,
    "characteristic_reviews": SAMPLE_CHARACTERISTIC_REVIEWS,
}
FILE_NAMES = {
    "reviews": "reviews.csv",
    "photos": "reviews_photos.csv",
    "characteristics": "characteristics.csv",
    "characteristic_reviews": "characteristic_reviews.csv",
}


@pytest.mark.parametrize(("file", "dirty", "kind", "reason"), DIRTY_ROWS, ids=lambda v: str(v)[:40])
async def test_a_dirty_row_goes_to_the_report(db_url, tmp_path, file, dirty, kind, reason):
    samples = SAMPLES[file]
    data = write_export(tmp_path, **{file: [*samples, dirty]})
    summary = await load(db_url, data)

    assert read_rejects(summary.rejects_path) == [
        {
            "file": FILE_NAMES[file],
            "line": str(len(samples) + 2),
            "kind": kind,
            "reason": reason,
            "raw": dirty,
        }
    ]
    assert summary[FILE_NAMES[file]].rejected_by_kind == {kind: 1}
    assert summary[FILE_NAMES[file]].read == len(samples) + 1
    assert_every_row_accounted_for(summary)


async def test_line_numbers_are_physical_lines_after_multi_line_records(db_url, tmp_path):
    reviews = [
        review(id=1, body='"two\nlines"'),
        review(id=2, body='"three\r\nlines\n"'),  # a CRLF and a LF inside, the record ends at line 6
        review(id=3, rating=9),
        review(id=4, summary='"also\n\nbroken"', rating=0),
    ]
    data = write_export(tmp_path, reviews=reviews, photos=[], characteristic_reviews=[], eol="\r\n")
    summary = await load(db_url, data)

    rejects = read_rejects(summary.rejects_path)
    assert [(row["line"], row["raw"]) for row in rejects] == [("7", reviews[2]), ("8", reviews[3])]
    assert summary["reviews.csv"].loaded == 2


async def test_the_first_of_duplicated_ids_is_kept(db_url, tmp_path):
    reviews = [review(id=8, summary='"first"'), review(id=9), review(id=8, summary='"second"'), review(id=8)]
    data = write_export(tmp_path, reviews=reviews, photos=[], characteristic_reviews=[])
    summary = await load(db_url, data)

    conn = await asyncpg.connect(db_url)
    try:
        assert await conn.fetchval("SELECT summary FROM reviews WHERE id = 8") == "first"
    finally:
        await conn.close()
    assert [(row["line"], row["reason"]) for row in read_rejects(summary.rejects_path)] == [
        ("4", "duplicate id 8 (first at line 2)"),
        ("5", "duplicate id 8 (first at line 2)"),
    ]


async def test_duplicated_ids_beside_an_id_of_thousands_of_digits(db_url, tmp_path):
    """Finding the first copies reads every record's id again: the long one must not stop it."""
    reviews = [review(id=8), review(id=HUGE), review(id=8)]
    data = write_export(tmp_path, reviews=reviews, photos=[], characteristic_reviews=[])
    summary = await load(db_url, data)

    assert [(row["line"], row["kind"]) for row in read_rejects(summary.rejects_path)] == [
        ("3", "id_out_of_range"),
        ("4", "duplicate_id"),
    ]
    assert summary["reviews.csv"].loaded == 1


async def test_children_of_a_rejected_review_are_rejected_as_missing_review(db_url, tmp_path):
    data = write_export(
        tmp_path,
        reviews=[review(id=1), review(id=2, rating=6)],
        photos=["1,2,https://x/1.jpg", "2,1,https://x/2.jpg"],
        characteristics=['1,1,"Fit"'],
        characteristic_reviews=["1,1,2,3", "2,1,1,3"],
    )
    summary = await load(db_url, data)

    rejects = [(row["file"], row["line"], row["kind"]) for row in read_rejects(summary.rejects_path)]
    assert rejects == [
        ("reviews.csv", "3", "rating_out_of_range"),
        ("reviews_photos.csv", "2", "missing_review"),
        ("characteristic_reviews.csv", "2", "missing_review"),
    ]
    assert_every_row_accounted_for(summary)


async def test_a_rating_of_a_rejected_characteristic_is_rejected(db_url, tmp_path):
    data = write_export(
        tmp_path, characteristics=['1,1,"Fit"', "2,1"], characteristic_reviews=["1,1,1,3", "2,2,1,3"]
    )
    summary = await load(db_url, data)
    assert summary["characteristic_reviews.csv"].rejected_by_kind == {"missing_characteristic": 1}


async def test_undecodable_bytes_reject_the_row_not_the_load(db_url, tmp_path):
    data = write_export(tmp_path)
    with open(data / "reviews.csv", "ab") as file:
        file.write(review(id=30).encode().replace(b"funtime", b"fun\xfftime") + b"\n")
        file.write(review(id=31).encode() + b"\n")
    summary = await load(db_url, data)

    [reject] = read_rejects(summary.rejects_path)
    assert (reject["line"], reject["kind"], reject["reason"]) == ("6", "invalid_text", "not valid UTF-8")
    assert '"fun\\xfftime"' in reject["raw"]
    assert summary["reviews.csv"].loaded == 5


async def test_a_runaway_quote_is_rejected_and_reading_resumes(db_url, tmp_path):
    runaway = review(id=30, body='"' + "x" * 140_000)
    data = write_export(tmp_path, reviews=[*SAMPLE_REVIEWS, runaway, review(id=31)])
    summary = await load(db_url, data)

    [reject] = read_rejects(summary.rejects_path)
    assert (reject["line"], reject["kind"]) == ("6", "malformed_csv")
    assert summary["reviews.csv"].loaded == 5
    assert_every_row_accounted_for(summary)


LONG = "x" * (MAX_FIELD_CHARS + 1)


@pytest.mark.parametrize("eol", ["\n", "\r\n"], ids=["lf", "crlf"])
@pytest.mark.parametrize("url", [LONG, f'"{LONG}"'], ids=["bare", "quoted"])
async def test_a_field_over_the_limit_is_rejected_even_on_one_plain_line(db_url, tmp_path, url, eol):
    """A one-line record the fast path would pass, but that the csv readers (which read the file again for
    set-level rejects) refuse: rejected as malformed, never loaded, so finding its reference broken (review
    77 does not exist) cannot stop the load."""
    photos = [*SAMPLE_PHOTOS, f"40,77,{url}", "41,1,https://x/41.jpg"]
    data = write_export(tmp_path, photos=photos, eol=eol)
    summary = await load(db_url, data)

    [reject] = read_rejects(summary.rejects_path)
    assert (reject["line"], reject["kind"]) == (str(len(SAMPLE_PHOTOS) + 2), "malformed_csv")
    assert reject["reason"] == (
        f"not valid CSV: a quote that never closes, or a field over {MAX_FIELD_CHARS:,} characters"
    )
    assert summary["reviews_photos.csv"].loaded == len(SAMPLE_PHOTOS) + 1
    assert_every_row_accounted_for(summary)


async def test_a_line_longer_than_the_limit_with_fields_within_it_is_loaded(db_url, tmp_path):
    """Two fields of 100,000 characters: the line is over the limit, no field is. Loaded, and a later copy
    of its id is reported as a duplicate of it (the csv readers find it again)."""
    long_text = "y" * 100_000
    reviews = [*SAMPLE_REVIEWS, review(id=40, summary=long_text, body=f'"{long_text}"'), review(id=40)]
    data = write_export(tmp_path, reviews=reviews)
    summary = await load(db_url, data)

    conn = await asyncpg.connect(db_url)
    try:
        assert (
            await conn.fetchval("SELECT length(summary) + length(body) FROM reviews WHERE id = 40") == 200_000
        )
    finally:
        await conn.close()
    [reject] = read_rejects(summary.rejects_path)
    assert (reject["kind"], reject["reason"]) == (
        "duplicate_id",
        f"duplicate id 40 (first at line {len(SAMPLE_REVIEWS) + 2})",
    )
    assert_every_row_accounted_for(summary)


async def test_every_kind_at_once_is_counted(db_url, tmp_path):
    data = write_export(
        tmp_path,
        reviews=[*SAMPLE_REVIEWS, *(row for file, row, _, _ in DIRTY_ROWS if file == "reviews")],
        photos=[*SAMPLE_PHOTOS, "2,999,https://x/1.jpg", "1,5,https://x/1.jpg"],
        characteristics=[*SAMPLE_CHARACTERISTICS, '5,3,"Fit"'],
        characteristic_reviews=[
            *SAMPLE_CHARACTERISTIC_REVIEWS,
            "4,1,999,3",
            "5,99,1,3",
            "6,5,1,3",
            "7,1,1,9",
        ],
    )
    summary = await load(db_url, data)

    reviews = summary["reviews.csv"]
    assert (reviews.read, reviews.loaded) == (4 + 25, 4)
    assert summary.rejected_by_kind == {
        "bad_boolean": 2,
        "bad_date": 4,
        "bad_helpfulness": 2,
        "characteristic_of_other_product": 1,
        "duplicate_id": 3,
        "id_out_of_range": 3,
        "invalid_text": 1,
        "missing_characteristic": 1,
        "missing_review": 2,
        "non_numeric_id": 7,
        "rating_out_of_range": 3,
        "value_out_of_range": 1,
        "wrong_column_count": 2,
    }
    rejects = read_rejects(summary.rejects_path)
    assert len(rejects) == summary.rejected == 32
    assert_every_row_accounted_for(summary)


def test_a_second_report_on_the_same_path_leaves_the_first_ones_files(tmp_path):
    """A second atelier-load given the same rejects path opens its report before it finds the database
    locked, then gives up: it must neither truncate nor remove the running load's partial files (its
    commit, after the switch, then failed on a file that was gone)."""
    path = tmp_path / "rejects.csv"
    files = ["reviews.csv", "reviews_photos.csv"]
    running = RejectsReport(path, files)
    running.add("reviews.csv", 2, "bad_date", "a reason", "1,2,3")
    running.add("reviews_photos.csv", 3, "missing_review", "another", "4,5,6")
    second = RejectsReport(path, files)
    second.add("reviews.csv", 9, "bad_date", "not this one", "7,8,9")
    second.discard()

    running.commit()
    assert [(row["line"], row["reason"]) for row in read_rejects(path)] == [
        ("2", "a reason"),
        ("3", "another"),
    ]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["rejects.csv"]


async def test_a_file_whose_records_all_come_twice_is_deduplicated_in_bounded_memory(db_url, tmp_path):
    """Every record twice (an export appended to itself): the first copies stream back to COPY a chunk
    at a time; they were all held at once, and joined, so the loader's memory grew by twice the file."""
    body = '"' + "b" * 2000 + '"'
    reviews = [review(id=i, product_id=i % 500 + 1, body=body) for i in range(1, 10_001)]
    data = write_export(tmp_path, reviews=reviews + reviews, photos=[], characteristic_reviews=[])
    tracemalloc.start()
    try:
        summary = await load(db_url, data)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()

    assert (summary["reviews.csv"].loaded, summary["reviews.csv"].rejected_by_kind) == (
        10_000,
        {"duplicate_id": 10_000},
    )
    assert peak < (data / "reviews.csv").stat().st_size / 3
