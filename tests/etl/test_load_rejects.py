"""Dirty rows: each goes to the rejects report (file, physical line, kind, reason, raw row), none vanishes."""

from __future__ import annotations

import tracemalloc

import asyncpg
import pytest

from atelier_etl import copystream, setrejects
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
    # The csv module's lenient default loaded this as `He said wow" twice"`.
    ("reviews", review(id=20, body='"He said "wow" twice"'), "malformed_csv",
     "not valid CSV: text after a closing quote (a quote inside a quoted field is written twice)"),
    # ... and this, the file's last line, as a photo of url `https://x/2.jpg\n`.
    ("photos", '2,5,"https://x/2.jpg', "malformed_csv",
     "not valid CSV: a quote left open at the end of the line"),
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


def rejects_of(summary) -> list[tuple[str, int, str, str]]:
    return [
        (row["file"], int(row["line"]), row["kind"], row["raw"]) for row in read_rejects(summary.rejects_path)
    ]


async def test_a_quote_left_open_rejects_its_line_alone(db_url, tmp_path):
    """An unclosed quote took the lines after it into its field: photo 2 and characteristics 16 to 3,015
    vanished (read 1 for thousands of lines, 0 rejected), or were all rejected as one record. Now its
    line alone is rejected, and the next line is read again as a record of its own."""
    photos = [*SAMPLE_PHOTOS, '2,5,"https://x/2.jpg', '3,5,"https://x/3.jpg"', '4,5,"https://x/4.jpg',
              "5,5,https://x/5.jpg", '6,5,"https://x/6.jpg"']  # fmt: skip
    characteristics = [*SAMPLE_CHARACTERISTICS, '15,1,"Fit', *(f"{id},1,Length" for id in range(16, 3016))]
    reviews = [*SAMPLE_REVIEWS, review(id=20, product_id=1, response='"Thanks'), review(id=21, product_id=1)]
    data = write_export(tmp_path, reviews=reviews, photos=photos, characteristics=characteristics)
    summary = await load(db_url, data)

    assert rejects_of(summary) == [
        ("characteristics.csv", 8, "malformed_csv", '15,1,"Fit'),
        ("reviews.csv", 6, "malformed_csv", reviews[4]),
        ("reviews_photos.csv", 3, "malformed_csv", photos[1]),
        ("reviews_photos.csv", 5, "malformed_csv", photos[3]),
    ]
    counts = {file.file: (file.read, file.loaded) for file in summary.files}
    assert counts == {
        "reviews.csv": (6, 5),
        "reviews_photos.csv": (6, 4),
        "characteristics.csv": (len(characteristics), len(characteristics) - 1),
        "characteristic_reviews.csv": (3, 3),
    }
    assert_every_row_accounted_for(summary)


async def test_a_record_of_several_lines_and_the_wrong_width_is_rejected_line_by_line(db_url, tmp_path):
    """Valid CSV over two lines but 13 columns: its first line is rejected, the second is read again (a
    record of its own, rejected too), so every data line is counted and in the report."""
    two_lines = review(id=20, body='"two\nlines"') + ",extra"
    reviews = [*SAMPLE_REVIEWS, two_lines, review(id=21, body='"also\ntwo"')]
    data = write_export(tmp_path, reviews=reviews)
    summary = await load(db_url, data)

    first, second = two_lines.split("\n")
    assert rejects_of(summary) == [
        ("reviews.csv", 6, "malformed_csv", first),
        ("reviews.csv", 7, "wrong_column_count", second),
    ]
    assert (summary["reviews.csv"].read, summary["reviews.csv"].loaded) == (len(SAMPLE_REVIEWS) + 3, 5)
    assert_every_row_accounted_for(summary)


async def test_set_level_rejects_after_a_line_read_again_are_at_their_lines(db_url, tmp_path):
    """The rejects report reads the file again (csvsource.py) to find the line and text of duplicates and
    missing references: it must cut records where the load cut them (copystream.py)."""
    photos = [*SAMPLE_PHOTOS, '2,5,"https://x/2.jpg', "3,5,https://x/3.jpg", "3,5,https://x/3b.jpg",
              "4,999,https://x/4.jpg", '5,5,"https://x/5.jpg\n"', "5,5,x"]  # fmt: skip
    data = write_export(tmp_path, photos=photos, eol="\r\n")
    summary = await load(db_url, data)

    assert [(row["line"], row["kind"], row["reason"]) for row in read_rejects(summary.rejects_path)] == [
        ("3", "malformed_csv", "not valid CSV: a quote left open at the end of the line"),
        ("5", "duplicate_id", "duplicate id 3 (first at line 4)"),
        ("9", "duplicate_id", "duplicate id 5 (first at line 7)"),  # the record before is on lines 7-8
        ("6", "missing_review", "review_id 999 does not exist"),  # duplicates are found first
    ]
    assert_every_row_accounted_for(summary)


async def test_blank_lines_before_the_header_are_not_a_record(db_url, tmp_path):
    """check_inputs skipped them but the load took the first blank line for the header, and the header
    for a record: `non_numeric_id` at line 2, and every later line number one off in the report."""
    data = write_export(tmp_path, reviews=[*SAMPLE_REVIEWS, review(id=3)], eol="\r\n", bom=True)
    path = data / "reviews.csv"
    path.write_bytes(path.read_bytes().replace(b"\xef\xbb\xbf", b"\xef\xbb\xbf\r\n\r\n", 1))
    summary = await load(db_url, data)

    assert [(row["line"], row["reason"]) for row in read_rejects(summary.rejects_path)] == [
        ("8", "duplicate id 3 (first at line 6)")
    ]
    assert (summary["reviews.csv"].read, summary["reviews.csv"].loaded) == (len(SAMPLE_REVIEWS) + 1, 4)


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
    assert reject["reason"] == (f"not valid CSV: a field over {MAX_FIELD_CHARS:,} characters")
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
    assert (reviews.read, reviews.loaded) == (4 + 26, 4)
    assert summary.rejected_by_kind == {
        "bad_boolean": 2,
        "bad_date": 4,
        "bad_helpfulness": 2,
        "characteristic_of_other_product": 1,
        "duplicate_id": 3,
        "id_out_of_range": 3,
        "invalid_text": 1,
        "malformed_csv": 1,
        "missing_characteristic": 1,
        "missing_review": 2,
        "non_numeric_id": 7,
        "rating_out_of_range": 3,
        "value_out_of_range": 1,
        "wrong_column_count": 2,
    }
    rejects = read_rejects(summary.rejects_path)
    assert len(rejects) == summary.rejected == 33
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


@pytest.mark.parametrize("rule", ["missing_review", "duplicate_id"])
async def test_memory_does_not_grow_with_the_rows_rejected_by_a_set_level_rule(
    make_database, tmp_path, monkeypatch, rule
):
    """A reviews.csv cut short (a user loading a subset) leaves millions of photos and ratings without
    their review; an export appended to itself duplicates every id. Those rejects are kept in the
    database and looked up a batch of records at a time: the loader's peak is the same with ten times
    as many of them in a file of the same size (they were all held at once: several GB for the real
    export's ratings)."""
    # Chunks and batches far smaller than the file: the streaming's own peak does not hide the rejects'.
    monkeypatch.setattr(copystream, "CHUNK", 1 << 16)
    monkeypatch.setattr(setrejects, "CHUNK", 1 << 16)
    monkeypatch.setattr(setrejects, "BATCH", 1000, raising=False)
    rows = 60_000

    async def peak(rejected: int) -> int:
        if rule == "missing_review":
            photos = [f"{id},{999 if id <= rejected else 5},https://x/{id}.jpg" for id in range(1, rows + 1)]
        else:
            photos = [f"{id},5,https://x/{id}.jpg" for id in range(1, rows - rejected + 1)]
            photos += [f"{id},5,https://x/{id}b.jpg" for id in range(1, rejected + 1)]
        data = write_export(tmp_path / str(rejected), photos=photos)
        tracemalloc.start()
        try:
            summary = await load(make_database(f"set_level_{rule}_{rejected}"), data)
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        assert summary["reviews_photos.csv"].rejected_by_kind == {rule: rejected}
        assert_every_row_accounted_for(summary)
        return peak

    few, many = await peak(3_000), await peak(30_000)
    assert many < few * 1.2, (few, many)
