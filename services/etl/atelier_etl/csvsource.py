"""Streaming reader of one export file: each CSV record with its first physical line and raw text.

The file is read as text line by line (never whole), decoded as UTF-8 with any byte-order mark
stripped, and with `newline=""` so the csv module sees CRLF and quoted line breaks untouched. The lines
the csv reader consumes are captured as it consumes them, which is how each record keeps its raw text
(several lines for a record with a quoted line break) for the rejects report.

The csv module reads strictly: its lenient default takes `"a "b" c"` as `a b" c"` and lets a quote
left open run on through the lines after it. A record that is not valid CSV, or is several lines long
but not of the file's width, is most likely a quote gone wrong, and which of its lines are good cannot
be told: only its first line is refused (`cut_to_first_line`), and reading starts again at the next.
copystream.py cuts records the same way, so both count the same lines.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterator, Sequence
from pathlib import Path
from types import TracebackType

# (first physical line, fields or None when the record is not valid CSV, raw text incl. line end)
Record = tuple[int, list[str] | None, str]


class InputFileError(Exception):
    """An input file is missing, unreadable or not the expected export file (a usage error)."""


class CsvFile:
    """One export file opened for streaming; the header is read and checked on entering.

    Undecodable bytes are kept as surrogate escapes (the record is rejected, not the load), and a
    record the csv module refuses comes out with fields None (rows.py says why).
    """

    def __init__(self, path: Path, columns: Sequence[str]) -> None:
        self.path = path
        self.columns = tuple(columns)
        self._binary: io.BufferedReader | None = None
        self._text: io.TextIOWrapper | None = None

    def __enter__(self) -> CsvFile:
        try:
            self._binary = open(self.path, "rb")
            self._text = io.TextIOWrapper(
                self._binary, encoding="utf-8-sig", errors="surrogateescape", newline=""
            )
            self._records = self._read()
            self._check_header()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def close(self) -> None:
        if self._text is not None:
            self._text.close()
        elif self._binary is not None:
            self._binary.close()

    @property
    def size(self) -> int:
        return self.path.stat().st_size

    @property
    def position(self) -> int:
        """Bytes consumed so far (to the read-ahead buffer: good enough for progress)."""
        assert self._binary is not None
        return self._binary.tell()

    def _check_header(self) -> None:
        name = self.path.name
        try:
            _, header, _ = next(self._records)
        except StopIteration:
            raise InputFileError(f"{name} is empty (expected the header line)") from None
        expected = ",".join(self.columns)
        if header is None or [field.strip() for field in header] != list(self.columns):
            found = ",".join(header or [])[:200]
            raise InputFileError(f"{name} has an unexpected header {found!r} (expected {expected!r})")

    def records(self) -> Iterator[Record]:
        """The data records after the header, blank lines skipped."""
        return self._records

    def _read(self) -> Iterator[Record]:
        assert self._text is not None
        consumed: list[str] = []
        again: list[str] = []  # lines to read again, the next one last
        reader = csv.reader(_capture(self._text, consumed, again), strict=True)
        next_line = 1
        while True:
            try:
                fields: list[str] | None = next(reader)
            except StopIteration:
                return
            except csv.Error:
                fields = None
            if cut_to_first_line(fields, len(consumed), len(self.columns)):
                fields = None
                again.extend(reversed(consumed[1:]))
                del consumed[1:]
                # A new reader: the one before may have seen the end of the file.
                reader = csv.reader(_capture(self._text, consumed, again), strict=True)
            first_line, next_line = next_line, next_line + len(consumed)
            raw = "".join(consumed)
            consumed.clear()
            if fields == []:  # a blank line is not a record
                continue
            yield first_line, fields, raw


def cut_to_first_line(fields: list[str] | None, lines: int, width: int) -> bool:
    """Whether a record read over `lines` lines is refused as its first line alone: it is not valid CSV
    (fields None) or not `width` fields wide, and more than one line long."""
    return lines > 1 and (fields is None or len(fields) != width)


def _capture(lines: Iterator[str], consumed: list[str], again: list[str]) -> Iterator[str]:
    """The lines in `again` (popped from its end), then `lines`; each put in `consumed` as csv takes it."""
    append = consumed.append
    while again:
        line = again.pop()
        append(line)
        yield line
    for line in lines:
        append(line)
        yield line


def read_header(path: Path, columns: Sequence[str]) -> None:
    """Check that `path` exists, can be read and starts with `columns`; raise InputFileError if not."""
    if not path.exists():
        raise InputFileError(f"missing input file {path}")
    try:
        with CsvFile(path, columns):
            pass
    except OSError as exc:
        raise InputFileError(f"cannot read {path}: {exc.strerror or exc}") from None
