"""The loader's reading and typing, without a database: records, line numbers, raw text, typed rows."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from atelier_etl import rejects
from atelier_etl.copystream import CopyStream
from atelier_etl.csvsource import CsvFile, InputFileError, read_header
from atelier_etl.rejects import RejectsReport
from atelier_etl.rows import (
    CHARACTERISTIC_REVIEWS,
    CHARACTERISTICS,
    MAX_FIELD_CHARS,
    REVIEWS,
    ExportFile,
    RowRejected,
)
from tests.etl.loadfiles import read_rejects, review

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


def test_a_quote_inside_a_quoted_field_that_is_not_doubled_is_malformed(tmp_path):
    """The csv module's lenient default read `"He said "wow" twice"` as `He said wow" twice"`."""
    content = b'id,text\n1,"He said "wow" twice"\n2,"a ""b"" c"\n'
    assert records(tmp_path / "f.csv", content) == [
        (2, None, '1,"He said "wow" twice"\n'),
        (3, ["2", 'a "b" c'], '2,"a ""b"" c"\n'),
    ]


def test_a_quote_left_open_is_its_line_alone_and_reading_resumes_at_the_next(tmp_path):
    """A quote that does not close on its line used to take the next lines into its field (a record of
    the right width: loaded, the lines after it gone) or into one rejected record."""
    content = b'id,text\n1,"a\n2,b\n3,"c"\n4,"d\n5,e\n'
    assert records(tmp_path / "f.csv", content) == [
        (2, None, '1,"a\n'),
        (3, ["2", "b"], "2,b\n"),
        (4, ["3", "c"], '3,"c"\n'),
        (5, None, '4,"d\n'),  # open to the end of the file
        (6, ["5", "e"], "5,e\n"),
    ]


def test_a_record_of_several_lines_and_the_wrong_width_is_its_first_line_alone(tmp_path):
    content = b'id,text\n1,"a\nb",extra\n2,"c\nd"\n'
    assert records(tmp_path / "f.csv", content) == [
        (2, None, '1,"a\n'),
        (3, ['b"', "extra"], 'b",extra\n'),
        (4, ["2", "c\nd"], '2,"c\nd"\n'),  # several lines, the right width: one record
    ]


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (review(id=20, body='"He said "wow" twice"'), "text after a closing quote"),
        (review(id=20, response='"Thanks') + "\n", "a quote left open at the end of the line"),
        ("1," + "x" * (MAX_FIELD_CHARS + 1) + "\n", f"a field over {MAX_FIELD_CHARS:,} characters"),
    ],
    ids=["after-quote", "left-open", "too-long"],
)
def test_a_malformed_record_says_why(raw, reason):
    with pytest.raises(RowRejected) as rejected:
        REVIEWS.parse(2, None, raw)
    assert rejected.value.kind == rejects.MALFORMED_CSV
    assert rejected.value.reason.startswith(f"not valid CSV: {reason}")


def copy_stream(path: Path, export_file: ExportFile, folder: Path) -> tuple[CopyStream, list, int]:
    """The file through CopyStream: the stream (its counts), its rejects (line, kind, raw), rows copied."""
    report = RejectsReport(folder / "rejects.csv", [export_file.name])
    stream = CopyStream(path, export_file, report)
    try:
        copied = sum(chunk.count(b"\n") for chunk in stream.chunks())
    finally:
        stream.close()
    report.commit()
    found = [(int(row["line"]), row["kind"], row["raw"]) for row in read_rejects(folder / "rejects.csv")]
    return stream, found, copied


@pytest.mark.parametrize("eol", ["\n", "\r\n"], ids=["lf", "crlf"])
def test_blank_lines_before_the_header_are_skipped_as_check_inputs_skips_them(tmp_path, eol):
    rows = ['1,1,"Fit"', "2,1,Length", "x,1,Size"]
    path = tmp_path / "characteristics.csv"
    path.write_bytes(("\ufeff" + eol + eol + "id,product_id,name" + eol + eol.join(rows) + eol).encode())
    read_header(path, CHARACTERISTICS.columns)

    stream, found, copied = copy_stream(path, CHARACTERISTICS, tmp_path)
    assert found == [(6, "non_numeric_id", "x,1,Size")]  # the header is line 3
    assert (stream.read, stream.rejected, copied, stream.eol) == (3, 1, 2, eol.encode())


def test_response_null_is_the_bare_lowercase_word_only():
    """data.md: the bare word `null` (unquoted) is no response, otherwise a quoted string (an empty one
    also means none); it says nothing of letter case or spaces, so `NULL`, ` null` or a quoted "null"
    are a seller's text as written."""
    responses = {"null": None, '""': None, "": None, '"null"': "null", "NULL": "NULL", "Null": "Null",
                 " null": " null", '"null "': "null ", '"NULL"': "NULL"}  # fmt: skip
    for written, stored in responses.items():
        for helpfulness in ("3", '"3"'):
            record = review(response=written, helpfulness=helpfulness)
            assert REVIEWS.parse(2, fields(record), record)[11] == stored, (written, helpfulness)
