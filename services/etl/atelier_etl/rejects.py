"""The rejects report: every row the loader refused, as a CSV file a person can open.

One row per rejected record: `file,line,kind,reason,raw`. `line` is the record's first physical line
(the header is line 1), `kind` a stable machine name (the generator's manifest counts injected dirty
rows under the same names), `reason` a short human explanation, `raw` the record's text as it stood in
the file, line breaks of multi-line records included.

The report is written beside its final path and moved there only when the load has switched, so the
report on disk always describes the data being served. Files stream at the same time and their
set-level rejects are found last, so each file's rows go to a part of their own (`<path>.partial.<n>`),
joined in the order of `files` when the report is committed: a file's rejects stay together.
"""

from __future__ import annotations

import csv
import os
import secrets
import shutil
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType
from typing import Any, TextIO

# Parse-level kinds: decided in Python, record by record.
WRONG_COLUMN_COUNT = "wrong_column_count"
NON_NUMERIC_ID = "non_numeric_id"
ID_OUT_OF_RANGE = "id_out_of_range"
RATING_OUT_OF_RANGE = "rating_out_of_range"
VALUE_OUT_OF_RANGE = "value_out_of_range"
BAD_DATE = "bad_date"
BAD_BOOLEAN = "bad_boolean"
BAD_HELPFULNESS = "bad_helpfulness"
INVALID_TEXT = "invalid_text"
MALFORMED_CSV = "malformed_csv"
# Set-level kinds: decided in SQL once the whole file (and its parents) are staged.
DUPLICATE_ID = "duplicate_id"
MISSING_REVIEW = "missing_review"
MISSING_CHARACTERISTIC = "missing_characteristic"
CHARACTERISTIC_OF_OTHER_PRODUCT = "characteristic_of_other_product"

HEADER = ("file", "line", "kind", "reason", "raw")


def strip_line_end(raw: str) -> str:
    """The record's text without the one line terminator that ends it (inner line breaks stay)."""
    if raw.endswith("\r\n"):
        return raw[:-2]
    if raw.endswith(("\n", "\r")):
        return raw[:-1]
    return raw


def printable(raw: str) -> str:
    """Raw text whose undecodable bytes (read as surrogate escapes) are shown as \\x.. escapes."""
    if raw.isascii():
        return raw
    return raw.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


class RejectsReport:
    """Streams rejected records to one part per file; `commit()` joins them into `path`."""

    def __init__(self, path: Path, files: Sequence[str] = ()) -> None:
        self.path = path
        # Named for this report alone: a second atelier-load given the same path (which then finds the
        # database locked and gives up) must not truncate, nor remove, the running load's partial files.
        self.partial_path = path.with_name(f"{path.name}.partial-{secrets.token_hex(4)}")
        self._files = list(files)
        self._counts: Counter[tuple[str, str]] = Counter()
        self._file = open(self.partial_path, "w", encoding="utf-8", newline="")
        self._writer = csv.writer(self._file)
        self._writer.writerow(HEADER)
        self._parts: dict[str, tuple[TextIO, Any]] = {}

    def _part_path(self, file: str) -> Path:
        return self.partial_path.with_name(f"{self.partial_path.name}.{self._files.index(file)}")

    def _writer_of(self, file: str) -> Any:
        if file not in self._files:
            return self._writer
        part = self._parts.get(file)
        if part is None:
            stream = open(self._part_path(file), "w", encoding="utf-8", newline="")  # noqa: SIM115
            part = self._parts[file] = (stream, csv.writer(stream))
        return part[1]

    def __enter__(self) -> RejectsReport:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.discard()

    def add(self, file: str, line: int, kind: str, reason: str, raw: str) -> None:
        self._writer_of(file).writerow((file, line, kind, reason, printable(strip_line_end(raw))))
        self._counts[file, kind] += 1

    def rejected(self, file: str) -> int:
        return sum(count for (name, _), count in self._counts.items() if name == file)

    def kinds(self, file: str) -> dict[str, int]:
        return {kind: count for (name, kind), count in sorted(self._counts.items()) if name == file}

    @property
    def total(self) -> int:
        return sum(self._counts.values())

    def join(self) -> None:
        """Write the parts into the partial report, in file order (the work that can fail: a full disk)."""
        for file in self._files:
            part = self._parts.get(file)
            if part is not None:
                part[0].close()
                with open(self._part_path(file), encoding="utf-8", newline="") as stream:
                    shutil.copyfileobj(stream, self._file)
                del self._parts[file]  # only once copied: discard() removes the parts left
                self._part_path(file).unlink()
        self._file.close()

    def commit(self) -> None:
        """The report takes its place (joined first if `join` was not called): a rename, all but certain
        to succeed, which the loader does only once the new data is served."""
        if not self._file.closed:
            self.join()
        os.replace(self.partial_path, self.path)

    def discard(self) -> None:
        """Close and remove the partial report and its parts (a no-op after `commit`)."""
        for file, (stream, _) in self._parts.items():
            stream.close()
            self._part_path(file).unlink(missing_ok=True)
        self._parts.clear()
        if not self._file.closed:
            self._file.close()
        self.partial_path.unlink(missing_ok=True)
