"""Properties of the loader's reading and typing (csvsource.py, rows.py) over generated input.

Whatever the bytes (any text, quotes, BOM, CRLF or CR, NUL, invalid UTF-8, any number of columns):
- opening a file either works or raises InputFileError (the documented refusal of a bad header);
- the records come out in order, each with the physical line it starts on, and their raw texts are the
  file's text cut at record boundaries, with only blank lines between them;
- each record is either typed into a row of its staging table (values of the column's SQL type and
  range) or refused with RowRejected and one of the documented kinds, which the rejects report writes
  and reads back unchanged;
- a valid row written by any CSV writer (quoting, line ends, BOM) reads back as exactly its values;
- the load's reader (copystream.py, its fast path included) cuts a file into the records csvsource.py
  cuts it into, with the same rejects at the same lines.

Bounded and deterministic: derandomized, no example database, no deadline (file I/O timing varies).
"""

from __future__ import annotations

import csv
import io
import re
import string
import tempfile
from pathlib import Path
from typing import Literal

from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from atelier_etl import rejects
from atelier_etl.copystream import CopyStream
from atelier_etl.csvsource import CsvFile, InputFileError, Record
from atelier_etl.rejects import RejectsReport, printable, strip_line_end
from atelier_etl.rows import (
    EXPORT_FILES,
    MAX_BIGINT,
    MAX_DATE_MS,
    MAX_INTEGER,
    REVIEWS,
    ExportFile,
    RowRejected,
)

PROPERTIES = settings(
    max_examples=200,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

PARSE_KINDS = {
    rejects.WRONG_COLUMN_COUNT,
    rejects.NON_NUMERIC_ID,
    rejects.ID_OUT_OF_RANGE,
    rejects.RATING_OUT_OF_RANGE,
    rejects.VALUE_OUT_OF_RANGE,
    rejects.BAD_DATE,
    rejects.BAD_BOOLEAN,
    rejects.BAD_HELPFULNESS,
    rejects.INVALID_TEXT,
    rejects.MALFORMED_CSV,
}
Quoting = Literal[0, 1, 2, 3]  # csv.QUOTE_*
LINE_END = re.compile(r"\r\n|\r|\n")  # what the reader's text layer splits lines on (newline="")

# Field values near every rule's edges, plus arbitrary text.
EDGY_FIELDS = st.sampled_from(
    [
        "",
        "0",
        "1",
        "5",
        "6",
        "-1",
        "007",
        " 1",
        "1 ",
        "+1",
        "1_0",
        "1.0",
        "١",
        "²",
        "true",
        "TRUE",
        "False",
        "yes",
        "null",
        "NULL",
        str(MAX_INTEGER),
        str(MAX_INTEGER + 1),
        str(MAX_BIGINT),
        str(MAX_BIGINT + 1),
        str(MAX_DATE_MS),
        str(MAX_DATE_MS + 1),
        "9" * 30,
        "a\x00b",
        "caf\udce9",  # an undecodable byte, as the reader keeps it (surrogate escape)
        'quote " and, comma',
        "line\nbreak",
        "cr\rlf\r\n",
    ]
)
FIELD = st.one_of(EDGY_FIELDS, st.text(max_size=30), st.from_regex(r"[0-9]{1,21}", fullmatch=True))
CSV_TEXT = st.text(alphabet=st.sampled_from(list(string.printable) + ['"', ",", "\r", "\n", "\x00", "é"]))


def write_and_read(content: bytes, columns: tuple[str, ...]) -> list[Record]:
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "export.csv"
        path.write_bytes(content)
        with CsvFile(path, columns) as source:
            return list(source.records())


def csv_text(rows: list[list[str]], quoting: Quoting, line_end: str) -> str:
    """Rows as a CSV writer writes them, each ended by `line_end`. The writer's own terminator is CRLF
    because it quotes a field only for the characters of its terminator: with LF alone it would leave a
    lone CR unquoted, a record break to every reader (the export's writer quoted it)."""
    out = []
    for row in rows:
        buffer = io.StringIO(newline="")
        csv.writer(buffer, quoting=quoting, lineterminator="\r\n").writerow(row)
        out.append(buffer.getvalue().removesuffix("\r\n") + line_end)
    return "".join(out)


def check_typed(export_file: ExportFile, line: int, row: tuple) -> None:
    """A typed row holds values of its staging column's SQL type and range."""
    assert len(row) == len(export_file.raw_columns)
    assert row[0] == line
    for value, (name, sql_type) in zip(row, export_file.raw_columns, strict=True):
        if sql_type == "text":
            if value is None:
                assert name == "response"
            else:
                assert isinstance(value, str) and "\x00" not in value
                value.encode("utf-8")  # no surrogate escapes: valid UTF-8 only
        elif sql_type == "boolean":
            assert isinstance(value, bool)
        else:
            assert isinstance(value, int) and not isinstance(value, bool)
            high = {"bigint": MAX_BIGINT, "integer": MAX_INTEGER, "smallint": 5}[sql_type]
            low = 0 if name in ("helpfulness", "date_ms") else 1
            assert low <= value <= high, (name, value)
            if name == "date_ms":
                assert value <= MAX_DATE_MS


def type_or_reject(export_file: ExportFile, record: Record) -> str | None:
    """The kind a record is rejected with, or None when it is typed (and its row checked)."""
    line, fields, raw = record
    try:
        row = export_file.parse(line, fields, raw)
    except RowRejected as rejected:
        assert rejected.kind in PARSE_KINDS
        assert rejected.reason and "\n" not in rejected.reason
        return rejected.kind
    check_typed(export_file, line, row)
    return None


@PROPERTIES
@given(
    export_file=st.sampled_from(EXPORT_FILES),
    body=CSV_TEXT,
    bom=st.booleans(),
    line_end=st.sampled_from(["\n", "\r\n", "\r"]),
)
# A quote that never closes runs past the csv module's field limit: its line is one malformed record,
# then reading resumes at the next line.
@example(export_file=EXPORT_FILES[0], body='1,"' + "x\r\n" * 50_000 + "2,3,ok\r\n", bom=True, line_end="\r\n")
def test_any_text_reads_as_records_that_cover_it(
    export_file: ExportFile, body: str, bom: bool, line_end: str
) -> None:
    header = ",".join(export_file.columns) + line_end
    content = ("\ufeff" if bom else "") + header + body
    records = write_and_read(content.encode("utf-8", "surrogatepass"), export_file.columns)

    text = header + body
    # The header is line 1, up to the reader's first line end (a CR header end and a body starting
    # with LF make one CRLF).
    position, lines_before = len(re.match(r"[^\r\n]*(\r\n|\r|\n)?", text)[0]), 1  # type: ignore[index]
    previous_line = 1
    for line, _fields, raw in records:
        start = text.index(raw, position) if raw else position
        gap = text[position:start]
        assert LINE_END.sub("", gap) == "", f"non-blank text skipped: {gap!r}"
        lines_before += len(LINE_END.findall(gap))
        assert line == lines_before + 1 > previous_line
        previous_line = line
        lines_before += len(LINE_END.findall(raw))
        position = start + len(raw)
        type_or_reject(export_file, (line, _fields, raw))
    assert LINE_END.sub("", text[position:]) == ""


@PROPERTIES
@given(content=st.binary(max_size=300) | CSV_TEXT.map(str.encode), columns=st.sampled_from(EXPORT_FILES))
def test_any_bytes_open_or_are_refused_as_a_bad_file(content: bytes, columns: ExportFile) -> None:
    try:
        records = write_and_read(content, columns.columns)
    except InputFileError as refused:
        assert "header" in str(refused) or "empty" in str(refused)
        return
    for record in records:
        type_or_reject(columns, record)


@st.composite
def export_with_dirty_rows(draw: st.DrawFn) -> tuple[ExportFile, list[list[str]]]:
    """Rows mostly of the right width, each field valid or edgy: every rule gets its chance to fail."""
    export_file = draw(st.sampled_from(EXPORT_FILES))
    width = len(export_file.columns)
    rows = []
    for _ in range(draw(st.integers(0, 10))):
        row = draw(valid_values(export_file))
        for index in range(width):
            if draw(st.integers(0, 3)) == 0:
                row[index] = draw(FIELD)
        if draw(st.integers(0, 5)) == 0:
            row = draw(st.lists(FIELD, max_size=width + 2))  # any width, blank lines included
        rows.append(row)
    return export_file, rows


@PROPERTIES
@given(
    export=export_with_dirty_rows(),
    quoting=st.sampled_from([csv.QUOTE_MINIMAL, csv.QUOTE_ALL, csv.QUOTE_NONNUMERIC]),
    line_end=st.sampled_from(["\n", "\r\n"]),
    bom=st.booleans(),
)
def test_every_record_is_typed_or_rejected_with_a_kind_and_reported(
    export: tuple[ExportFile, list[list[str]]], quoting: Quoting, line_end: str, bom: bool
) -> None:
    export_file, rows = export
    content = ("\ufeff" if bom else "") + csv_text([list(export_file.columns), *rows], quoting, line_end)
    records = write_and_read(content.encode("utf-8", "surrogateescape"), export_file.columns)

    # Blank records (an empty row is written as an empty line) are skipped; every other row is a record,
    # except that a row of the wrong width written on several lines is refused as its first line and
    # its other lines are read again, as records of their own.
    width = len(export_file.columns)
    cut = any(len(row) != width and LINE_END.search(csv_text([row], quoting, "")) for row in rows)
    assert len(records) >= sum(1 for row in rows if row)
    if not cut:
        assert len(records) == sum(1 for row in rows if row)
    with tempfile.TemporaryDirectory() as folder:
        report_path = Path(folder) / "rejects.csv"
        report = RejectsReport(report_path)
        expected: list[tuple[str, str, str]] = []
        for record in records:
            kind = type_or_reject(export_file, record)
            if kind is not None:
                report.add(export_file.name, record[0], kind, "reason", record[2])
                expected.append((export_file.name, str(record[0]), kind))
        report.commit()
        with open(report_path, encoding="utf-8", newline="") as written:
            reported = list(csv.reader(written))
    assert reported[0] == list(rejects.HEADER)
    assert [tuple(row[:3]) for row in reported[1:]] == expected


def valid_values(export_file: ExportFile) -> st.SearchStrategy[list[str]]:
    """The text of a valid record of the file, field by field."""
    text = st.text(st.characters(codec="utf-8", exclude_characters="\x00"), max_size=40)
    big_id = st.integers(1, MAX_BIGINT).map(str)
    product = st.integers(1, MAX_INTEGER).map(str)
    star = st.integers(1, 5).map(str)
    boolean = st.sampled_from(["true", "false", "1", "0", "TRUE", "False"])
    columns = {
        "reviews": [
            big_id,
            product,
            star,
            st.integers(0, MAX_DATE_MS).map(str),
            text,
            text,
            boolean,
            boolean,
            text,
            text,
            text,
            st.integers(0, MAX_INTEGER).map(str),
        ],
        "reviews_photos": [big_id, big_id, text],
        "characteristics": [big_id, product, text],
        "characteristic_reviews": [big_id, big_id, big_id, star],
    }[export_file.table]
    return st.tuples(*columns).map(list)


@st.composite
def export_with_valid_rows(draw: st.DrawFn) -> tuple[ExportFile, list[list[str]]]:
    export_file = draw(st.sampled_from(EXPORT_FILES))
    return export_file, draw(st.lists(valid_values(export_file), min_size=1, max_size=8))


NULL_RESPONSE = ["1", "1", "5", "0", "s", "b", "true", "false", "n", "e", "null", "0"]


@PROPERTIES
@example(export=(REVIEWS, [NULL_RESPONSE]), quoting=csv.QUOTE_MINIMAL, line_end="\n", bom=False)
@example(export=(REVIEWS, [NULL_RESPONSE]), quoting=csv.QUOTE_ALL, line_end="\r\n", bom=False)
@given(
    export=export_with_valid_rows(),
    quoting=st.sampled_from([csv.QUOTE_MINIMAL, csv.QUOTE_ALL]),
    line_end=st.sampled_from(["\n", "\r\n"]),
    bom=st.booleans(),
)
def test_valid_rows_read_back_as_their_values(
    export: tuple[ExportFile, list[list[str]]], quoting: Quoting, line_end: str, bom: bool
) -> None:
    export_file, rows = export
    content = ("\ufeff" if bom else "") + csv_text([list(export_file.columns), *rows], quoting, line_end)

    records = write_and_read(content.encode("utf-8"), export_file.columns)

    assert [fields for _, fields, _ in records] == rows
    for (line, fields, raw), given_row in zip(records, rows, strict=True):
        row = export_file.parse(line, fields, raw)
        check_typed(export_file, line, row)
        for value, text, (name, sql_type) in zip(
            row[1:], given_row, export_file.raw_columns[1:], strict=True
        ):
            if sql_type == "boolean":
                assert value is (text.lower() in ("true", "1"))
            elif name == "response" and (text == "" or (text == "null" and quoting == csv.QUOTE_MINIMAL)):
                assert value is None  # the export's way of saying "no response": a bare null or ""
            elif sql_type == "text":
                assert value == text
            else:
                assert value == int(text)


@st.composite
def export_with_broken_quotes(draw: st.DrawFn) -> tuple[ExportFile, str]:
    """Valid records (the fast path's) among lines of stray quotes, commas and line breaks."""
    export_file = draw(st.sampled_from(EXPORT_FILES))
    line_end = draw(st.sampled_from(["\n", "\r\n"]))
    quoting = draw(st.sampled_from([csv.QUOTE_MINIMAL, csv.QUOTE_ALL]))
    parts = []
    for _ in range(draw(st.integers(0, 8))):
        if draw(st.booleans()):
            parts.append(csv_text([draw(valid_values(export_file))], quoting, line_end))
        else:
            parts.append(draw(st.sampled_from(['"', '1,"a', ',"', '""', 'x"', line_end])) + draw(CSV_TEXT))
    return export_file, ",".join(export_file.columns) + line_end + "".join(parts)


@PROPERTIES
@given(export=export_with_broken_quotes(), bom=st.booleans())
@example(export=(REVIEWS, ",".join(REVIEWS.columns) + '\n1,"a\n' + ",".join(NULL_RESPONSE) + "\n"), bom=False)
def test_the_load_and_the_rejects_pass_read_the_same_records(
    export: tuple[ExportFile, str], bom: bool
) -> None:
    """The load (copystream.py, fast path included) and the pass that finds set-level rejects' lines
    (csvsource.py) cut the file into the same records: the same count, the same rejects at the same lines."""
    export_file, text = export
    content = (b"\xef\xbb\xbf" if bom else b"") + text.encode("utf-8", "surrogateescape")
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / export_file.name
        path.write_bytes(content)
        with CsvFile(path, export_file.columns) as source:
            records = list(source.records())
        report = RejectsReport(Path(folder) / "rejects.csv", [export_file.name])
        stream = CopyStream(path, export_file, report)
        try:
            for _ in stream.chunks():
                pass
        finally:
            stream.close()
        report.commit()
        with open(Path(folder) / "rejects.csv", encoding="utf-8", newline="") as written:
            reported = [(int(row[1]), row[2], row[4]) for row in list(csv.reader(written))[1:]]

    expected = []
    for line, fields, raw in records:
        try:
            export_file.parse(line, fields, raw)
        except RowRejected as rejected:
            expected.append((line, rejected.kind, printable(strip_line_end(raw))))
    assert (stream.read, reported) == (len(records), expected)
