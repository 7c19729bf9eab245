"""One export file as a stream of PostgreSQL CSV for `COPY`, its dirty records to the rejects report.

Most records are passed through as they are: a regular expression per file (`FAST_RECORDS`) matches a
run of records that are plainly valid (canonical numbers in range, 1-5 scores, true/false, quoted or
bare text on one line, the file's own line end) in one call at C speed, and the run goes to COPY
untouched, PostgreSQL's CSV parser doing the typing (reviews' epoch milliseconds go to a `date_ms`
column that computes `date`, see staging.py). Whatever that expression does not accept (a record on several
lines, an odd spelling such as "007" or a quoted number, a dirty record, invalid UTF-8, the last line
without a line end) is read by the csv module and typed by rows.py exactly as before, then either
re-encoded for COPY or rejected with its reason. So the fast path only ever decides "valid", never
"rejected", and what it passes equals what the slow path would have loaded.

Line numbers are physical lines as csv counts them with newline="" (LF, CRLF or a lone CR ends one);
the fast path holds no lone CR, so its lines are its LFs. The slow path cuts a refused record of
several lines to its first line and reads on from the next, as csvsource.py does (`cut_to_first_line`):
the rejects report's second pass over the file must meet the same records at the same lines.
"""

from __future__ import annotations

import csv
import re
from collections.abc import Iterator
from datetime import date, timedelta
from pathlib import Path

from atelier_etl.csvsource import cut_to_first_line
from atelier_etl.rejects import RejectsReport
from atelier_etl.rows import (
    CHARACTERISTIC_REVIEWS,
    CHARACTERISTICS,
    MAX_FIELD_CHARS,
    REVIEWS,
    REVIEWS_PHOTOS,
    ExportFile,
    RowRejected,
)

CHUNK = 1 << 20  # bytes read at a time; also about the size of each COPY message
BOM = b"\xef\xbb\xbf"

# Fields the fast path accepts, each a subset of what rows.py loads with the same value in PostgreSQL.
_ID = rb"[1-9][0-9]{0,17}"  # up to 18 digits: always below 2**63
_INT_ID = rb"[1-9][0-9]{0,8}"  # up to 9 digits: always below 2**31
_SCORE = rb"[1-5]"
_DATE = rb"(?:[0-8][0-9]{12}|[0-9]{1,12})"  # below 9e12 ms (year 2255), so below rows.MAX_DATE_MS
_BOOLEAN = rb"(?:[Tt][Rr][Uu][Ee]|[Ff][Aa][Ll][Ss][Ee]|[01])"  # boolin reads these as rows.py does
_QUOTED = rb'"[^"\r\n\x00]*(?:""[^"\r\n\x00]*)*"'
_TEXT = rb"(?:" + _QUOTED + rb'|[^",\r\n\x00]*)'  # COPY's FORCE_NOT_NULL keeps a bare null as text
# The bare word null (COPY's NULL), or a quoted non-empty text, which COPY reads as text even when it is
# "null" (rows.py reads both so, and "" as no response)
_RESPONSE = rb'(?:null|"[^"\r\n\x00]+(?:""[^"\r\n\x00]*)*")'
_HELPFULNESS = rb"(?:0|[1-9][0-9]{0,8})"
# No possessive quantifiers (*+, ++): early Python 3.11 releases match them wrongly (seen with Debian 12's
# 3.11.2, the images' Python; 3.11.7 is right), which joined two records here. Each field above is
# unambiguous (a quoted field is the unrolled-loop form, a bare one cannot hold its own delimiter), so
# plain greedy quantifiers match the same text and backtrack at most within the one record that fails.

_FIELDS = {
    REVIEWS.table: (
        _ID,
        _INT_ID,
        _SCORE,
        _DATE,
        _TEXT,
        _TEXT,
        _BOOLEAN,
        _BOOLEAN,
        _TEXT,
        _TEXT,
        _RESPONSE,
        _HELPFULNESS,
    ),  # fmt: skip
    REVIEWS_PHOTOS.table: (_ID, _ID, _TEXT),
    CHARACTERISTICS.table: (_ID, _INT_ID, _TEXT),
    CHARACTERISTIC_REVIEWS.table: (_ID, _ID, _ID, _SCORE),
}
_TEXT_TYPES = frozenset({"text"})


def fast_records(export_file: ExportFile, eol: bytes) -> re.Pattern[bytes]:
    """A run of zero or more plainly valid records of this file, each ended by `eol`."""
    record = b",".join(_FIELDS[export_file.table]) + re.escape(eol)
    return re.compile(rb"(?:" + record + rb")*")


def copy_columns(export_file: ExportFile) -> list[str]:
    """The staged table's columns in the file's order (the typed row without its line number)."""
    return [name for name, _ in export_file.raw_columns[1:]]


def final_columns(export_file: ExportFile) -> list[str]:
    """The same once the load is staged (reviews.date_ms is gone: `date` takes a timestamp)."""
    return ["date" if name == "date_ms" else name for name in copy_columns(export_file)]


def text_columns(export_file: ExportFile) -> list[str]:
    """Columns whose bare `null` is text (COPY's FORCE_NOT_NULL); only reviews.response can be NULL."""
    return [
        name
        for name, sql_type in export_file.raw_columns[1:]
        if sql_type in _TEXT_TYPES and name != "response"
    ]


_DAYS: dict[int, bytes] = {}
_EPOCH = date(1970, 1, 1)


def timestamp(ms: int) -> bytes:
    """Epoch milliseconds as PostgreSQL timestamptz input, exact to the millisecond."""
    days, ms_of_day = divmod(ms, 86_400_000)
    day = _day(days)
    seconds, millis = divmod(ms_of_day, 1000)
    minutes, seconds = divmod(seconds, 60)
    hours, minutes = divmod(minutes, 60)
    return b"%s %02d:%02d:%02d.%03d+00" % (day, hours, minutes, seconds, millis)


def _day(days: int) -> bytes:
    day = _DAYS.get(days)
    if day is None:
        day = _DAYS[days] = (_EPOCH + timedelta(days=days)).isoformat().encode()
    return day


def _csv_field(value: object) -> bytes:
    if value is None:
        return b"null"
    if value is True:
        return b"true"
    if value is False:
        return b"false"
    if isinstance(value, int):
        return b"%d" % value
    assert isinstance(value, str)
    return b'"' + value.encode("utf-8").replace(b'"', b'""') + b'"'


def encode_row(export_file: ExportFile, row: tuple, eol: bytes, final: bool = False) -> bytes:
    """A typed row of rows.py (line number first) as one CSV record for COPY: in copy_columns' order,
    or in final_columns' order (`final`: reviews' date as a timestamp)."""
    fields = [_csv_field(value) for value in row[1:]]
    if final and export_file is REVIEWS:
        fields[3] = timestamp(row[4])  # epoch milliseconds
    return b",".join(fields) + eol


class CopyStream:
    """Reads one export file (header already checked) and yields COPY data; counts what it read."""

    def __init__(self, path: Path, export_file: ExportFile, report: RejectsReport) -> None:
        self.path = path
        self.export_file = export_file
        self.report = report
        self.read = 0  # records after the header, blank lines not counted
        self.rejected = 0
        self.position = 0  # bytes of the file consumed (progress)
        self.eol = b"\n"
        self._file = open(path, "rb")  # noqa: SIM115 (closed by close())
        self._buffer = b""
        self._pos = 0
        self._eof = False
        self._line = 0  # physical lines consumed
        self._record_start: int | None = None  # where in the buffer the record being read starts

    def close(self) -> None:
        self._file.close()

    def chunks(self) -> Iterator[bytes]:
        """CSV records for COPY, about CHUNK bytes at a time."""
        self._fill()
        if self._buffer.startswith(BOM):
            self._pos = len(BOM)
        header = self._record()  # checked by check_inputs before the load started
        while header is not None and header[0] == []:  # blank lines before it, as check_inputs skips them
            header = self._record()
        if header is not None and header[2].endswith("\r\n"):
            self.eol = b"\r\n"
        fast = fast_records(self.export_file, self.eol)
        pending: list[bytes] = []
        size = 0
        while True:
            if len(self._buffer) - self._pos < CHUNK // 2 and not self._eof:
                self._fill()
            if self._pos >= len(self._buffer) and self._eof:
                break
            end = _run_end(fast, self._buffer, self._pos, len(self._buffer))
            if end - self._pos > MAX_FIELD_CHARS:
                end = _before_long_line(self._buffer, self._pos, end)
            if end > self._pos:
                end = self._valid_utf8_end(fast, end)
            if end > self._pos:
                records = self._buffer[self._pos : end]
                count = records.count(b"\n")
                self.read += count
                self._line += count
                self._pos = end
                pending.append(records)
                size += len(records)
            elif not self._eof and _LINE_END.search(self._buffer, self._pos) is None:
                self._fill()  # only part of a line left: read on before deciding anything
            else:
                record = self._slow_record()
                if record:
                    pending.append(record)
                    size += len(record)
            if size >= CHUNK:
                self.position = self._file.tell()
                yield b"".join(pending)
                pending, size = [], 0
        self.position = self._file.tell()
        if pending:
            yield b"".join(pending)

    def _valid_utf8_end(self, fast: re.Pattern[bytes], end: int) -> int:
        """`end`, or the end of the last record before the first invalid UTF-8 byte (COPY would fail)."""
        records = self._buffer[self._pos : end]
        if records.isascii():
            return end
        try:
            records.decode("utf-8")
        except UnicodeDecodeError as exc:
            return _run_end(fast, self._buffer, self._pos, self._pos + exc.start)
        return end

    def _slow_record(self) -> bytes:
        """Read, type and encode (or reject) the next record the slow way; b'' when none is loaded."""
        first_line = self._line + 1
        record = self._record()
        if record is None:
            return b""
        fields, _, raw = record
        if fields == []:  # a blank line is not a record
            return b""
        self.read += 1
        try:
            row = self.export_file.parse(first_line, fields, raw)
        except RowRejected as exc:
            self.rejected += 1
            self.report.add(self.export_file.name, first_line, exc.kind, exc.reason, raw)
            return b""
        return encode_row(self.export_file, row, self.eol)

    def _record(self) -> tuple[list[str] | None, int, str] | None:
        """The next record by the csv module: (fields or None if not valid CSV, lines, raw text)."""
        consumed: list[str] = []
        reader = csv.reader(self._lines(consumed), strict=True)
        self._record_start = self._pos
        try:
            fields: list[str] | None = next(reader)
        except StopIteration:
            if not consumed:
                return None
            fields = None  # lines read but no record: never drop them silently
        except csv.Error:
            fields = None
        if cut_to_first_line(fields, len(consumed), len(self.export_file.columns)):
            fields = None
            del consumed[1:]
            self._pos = self._record_start + len(consumed[0].encode("utf-8", "surrogateescape"))
        self._record_start = None
        self._line += len(consumed)
        return fields, len(consumed), "".join(consumed)

    def _lines(self, consumed: list[str]) -> Iterator[str]:
        """Physical lines from the current position, as csv reads them; each is recorded in `consumed`."""
        while True:
            line = self._next_line()
            if line is None:
                return
            text = line.decode("utf-8", "surrogateescape")
            consumed.append(text)
            yield text

    def _next_line(self) -> bytes | None:
        while True:
            buffer, pos = self._buffer, self._pos
            cut = _LINE_END.search(buffer, pos)
            if cut is not None:
                end = cut.end()
                if buffer[cut.start()] == 0x0D and end == len(buffer) and not self._eof:
                    self._fill()  # a CR at the end of the buffer: is an LF next?
                    continue
                if buffer[cut.start()] == 0x0D and end < len(buffer) and buffer[end] == 0x0A:
                    end += 1
                self._pos = end
                return buffer[pos:end]
            if not self._eof:
                self._fill()
                continue
            if pos < len(buffer):
                self._pos = len(buffer)
                return buffer[pos:]
            return None

    def _fill(self) -> None:
        more = self._file.read(CHUNK)
        if not more:
            self._eof = True
        # The record being read is kept whole: it may be cut to its first line and read on from there.
        keep = self._pos if self._record_start is None else self._record_start
        self._buffer = self._buffer[keep:] + more
        self._pos -= keep
        if self._record_start is not None:
            self._record_start = 0


_LINE_END = re.compile(rb"[\r\n]")


def _before_long_line(buffer: bytes, start: int, end: int) -> int:
    """`end`, or the start of the first line of the run buffer[start:end] (whole lines, each ending in LF)
    longer than MAX_FIELD_CHARS bytes: the slow path reads that one, as the csv readers that read the file
    again (setrejects.py) would. A window of that many bytes holding no LF is such a line; a few rfind
    calls per run, at C speed."""
    line = start
    while end - line > MAX_FIELD_CHARS:
        last_lf = buffer.rfind(b"\n", line, line + MAX_FIELD_CHARS + 1)
        if last_lf == -1:
            return line
        line = last_lf + 1
    return end


def _run_end(fast: re.Pattern[bytes], buffer: bytes, start: int, end: int) -> int:
    """Where the run of fast records from `start` (before `end`) stops; it may be empty."""
    match = fast.match(buffer, start, end)
    assert match is not None  # a run of zero records always matches
    return match.end()
