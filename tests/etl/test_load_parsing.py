"""The loader's reading and typing, without a database: records, line numbers, raw text, typed rows."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from atelier_etl import rejects
from atelier_etl.csvsource import CsvFile, InputFileError, read_header
from atelier_etl.rows import CHARACTERISTIC_REVIEWS, REVIEWS, RowRejected
from tests.etl.loadfiles import review

COLUMNS = ("id", "text")


def records(path: Path, content: bytes) -> list[tuple]:
    path.write_bytes(content)
    with CsvFile(path, COLUMNS) as source:
        return list(source.records())


def test_records_keep_their_first_line_and_raw_text(tmp_path):
    content = b'\xef\xbb\xbfid,text\r\n1,"a\r\nb"\r\n\r\n2,"c,""d"""\r\n3,"e\nf\ng"\n4,h'
    assert records(tmp_path / "f.csv", content) == [
        (2, ["1", "a\r\nb"], '1,"a\r\nb"\r\n'),
        (5, ["2", 'c,"d"'], '2,"c,""d"""\r\n'),  # line 4 is blank: no record
        (6, ["3", "e\nf\ng"], '3,"e\nf\ng"\n'),
        (9, ["4", "h"], "4,h"),  # no line end at the end of the file
    ]


def test_a_runaway_quote_is_one_malformed_record_then_reading_resumes(tmp_path):
    content = b'id,text\n1,"' + b"x" * 140_000 + b"\n2,ok\n"
    [(line, fields, raw), after] = records(tmp_path / "f.csv", content)
    assert (line, fields, len(raw)) == (2, None, 140_004)
    assert after == (3, ["2", "ok"], "2,ok\n")


def test_position_follows_the_bytes_read(tmp_path):
    path = tmp_path / "f.csv"
    path.write_bytes(b"id,text\n" + b"1,abc\n" * 100_000)
    with CsvFile(path, COLUMNS) as source:
        assert source.size == path.stat().st_size
        assert sum(1 for _ in source.records()) == 100_000
        assert source.position == source.size


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"", "f.csv is empty"),
        (b"\n\n", "f.csv is empty"),
        (b"id,name\n", "f.csv has an unexpected header 'id,name' (expected 'id,text')"),
        (b"text,id\n", "unexpected header"),
    ],
)
def test_a_file_without_its_header_is_an_input_error(tmp_path, content, message):
    path = tmp_path / "f.csv"
    path.write_bytes(content)
    with pytest.raises(InputFileError, match=re.escape(message)):
        read_header(path, COLUMNS)


def test_a_header_with_bom_crlf_and_spaces_is_accepted(tmp_path):
    path = tmp_path / "f.csv"
    path.write_bytes(b"\xef\xbb\xbfid, text \r\n")
    read_header(path, COLUMNS)


def fields(record: str) -> list[str]:
    import csv

    return next(csv.reader([record]))


def test_a_review_is_typed():
    record = review(id=7, product_id=3, rating=4, date=1596080481467, recommend="TRUE", reported="0",
                    response='""', helpfulness=12)  # fmt: skip
    assert REVIEWS.parse(2, fields(record), record) == (
        2, 7, 3, 4, 1596080481467, "Great", "Does what it says.", True, False, "funtime",
        "first.last@gmail.com", None, 12,
    )  # fmt: skip


@pytest.mark.parametrize("spelling", ["true", "TRUE", "True", "tRUE", "1"])
def test_true_spellings(spelling):
    record = review(recommend=spelling)
    assert REVIEWS.parse(2, fields(record), record)[7] is True


@pytest.mark.parametrize("value", ["yes", "", "t", "2", " true", "true "])
def test_other_booleans_are_rejected(value):
    record = review(reported=f'"{value}"')
    with pytest.raises(RowRejected) as rejected:
        REVIEWS.parse(2, fields(record), record)
    assert rejected.value.kind == rejects.BAD_BOOLEAN


@pytest.mark.parametrize("value", ["1", "5", "05"])
def test_values_1_to_5(value):
    assert CHARACTERISTIC_REVIEWS.parse(2, ["1", "1", "1", value], "")[4] == int(value)


@pytest.mark.parametrize("value", ["0", "6", "-1", "", "3.0", "x"])
def test_values_outside_1_to_5_are_rejected(value):
    with pytest.raises(RowRejected) as rejected:
        CHARACTERISTIC_REVIEWS.parse(2, ["1", "1", "1", value], "")
    assert rejected.value.kind == rejects.VALUE_OUT_OF_RANGE


def test_reasons_cut_long_values_short():
    with pytest.raises(RowRejected) as rejected:
        CHARACTERISTIC_REVIEWS.parse(2, ["x" * 1000, "1", "1", "1"], "")
    assert rejected.value.reason == f"id is not a positive integer: '{'x' * 40}...'"
