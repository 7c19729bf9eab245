"""The four export files: their columns, and the typing of each record into a staging row.

A record either becomes a tuple of typed values (line number first, in the order of the file's raw
staging table) or raises RowRejected with a stable kind and a short reason. Rules are strict where
Python is lenient: an id is ASCII digits only (`int()` alone would take ' 1', '1_0' or '١').
Set-level rules (duplicate ids, references between files) are decided later, in SQL.
"""

from __future__ import annotations

import csv
import re
from collections.abc import Callable
from dataclasses import dataclass

from atelier_etl import rejects
from atelier_etl.rejects import strip_line_end

MAX_BIGINT = 2**63 - 1
MAX_INTEGER = 2**31 - 1
# The largest date `timestamptz 'epoch' + ms * interval '1 millisecond'` computes exactly: the product
# goes through a double, exact up to 2**53 microseconds (June 2255).
MAX_DATE_MS = 2**53 // 1000

# The longest field either csv reader here takes (the csv module's own default, set explicitly): a quote
# that never closes stops there, so one bad record costs at most this much memory. copystream's fast path
# never passes a line longer than this, so a field the csv readers refuse is never loaded either.
MAX_FIELD_CHARS = 131_072
csv.field_size_limit(MAX_FIELD_CHARS)

_SCORES = {"1": 1, "2": 2, "3": 3, "4": 4, "5": 5}
_BOOLEANS = {"true": True, "false": False, "1": True, "0": False}
_PLAIN_NUMBER = re.compile(r"-?[0-9]{1,20}")


class RowRejected(Exception):
    def __init__(self, kind: str, reason: str) -> None:
        super().__init__(reason)
        self.kind = kind
        self.reason = reason


def _shown(value: str) -> str:
    """A field as quoted in a reason: a plain number as is, anything else repr'd and cut short."""
    if _PLAIN_NUMBER.fullmatch(value):
        return value
    return repr(value if len(value) <= 40 else value[:40] + "...")


def digits(value: str) -> int | None:
    """ASCII digits as their number, else None. More than 20 significant digits give 10**20, beyond
    every column's range: Python refuses to convert more than 4,300 digits (ValueError), and one such
    field would otherwise stop the whole load instead of rejecting its row."""
    if not (value.isdigit() and value.isascii()):
        return None
    significant = value.lstrip("0")
    return int(significant or "0") if len(significant) <= 20 else 10**20


def _id(value: str, column: str, maximum: int = MAX_BIGINT) -> int:
    number = digits(value)
    if number is not None and 0 < number <= maximum:
        return number
    if number is not None and number > maximum:
        raise RowRejected(rejects.ID_OUT_OF_RANGE, f"{column} is too large: {_shown(value)}")
    raise RowRejected(rejects.NON_NUMERIC_ID, f"{column} is not a positive integer: {_shown(value)}")


def _score(value: str, column: str, kind: str) -> int:
    score = _SCORES.get(value)
    if score is None:
        number = digits(value)
        if number is None or not 1 <= number <= 5:
            raise RowRejected(kind, f"{column} must be 1-5, got {_shown(value)}")
        score = number
    return score


def _date_ms(value: str) -> int:
    ms = digits(value)
    if ms is None:
        raise RowRejected(rejects.BAD_DATE, f"date is not epoch milliseconds: {_shown(value)}")
    if ms > MAX_DATE_MS:
        raise RowRejected(rejects.BAD_DATE, f"date is out of range: {_shown(value)}")
    return ms


def _boolean(value: str, column: str) -> bool:
    flag = _BOOLEANS.get(value)
    if flag is None:
        flag = _BOOLEANS.get(value.lower())
        if flag is None:
            raise RowRejected(rejects.BAD_BOOLEAN, f"{column} must be true/false/1/0, got {_shown(value)}")
    return flag


def _helpfulness(value: str) -> int:
    number = digits(value)
    if number is None or number > MAX_INTEGER:
        raise RowRejected(
            rejects.BAD_HELPFULNESS, f"helpfulness must be a non-negative integer, got {_shown(value)}"
        )
    return number


def _response(value: str, raw: str) -> str | None:
    """data.md: the bare word `null` (exactly so) or an empty quoted string is no response; any other
    quoted string, "null" too, is one. The csv module drops the quotes, so the record's text tells:
    `"null"` stands before the last field (helpfulness, which holds no comma when it is valid)."""
    if value == "" or (value == "null" and not strip_line_end(raw).rsplit(",", 1)[0].endswith('"null"')):
        return None
    return value


def review(line: int, f: list[str], raw: str) -> tuple:
    return (
        line,
        _id(f[0], "id"),
        _id(f[1], "product_id", MAX_INTEGER),
        _score(f[2], "rating", rejects.RATING_OUT_OF_RANGE),
        _date_ms(f[3]),
        f[4],
        f[5],
        _boolean(f[6], "recommend"),
        _boolean(f[7], "reported"),
        f[8],
        f[9],
        _response(f[10], raw),
        _helpfulness(f[11]),
    )


def review_photo(line: int, f: list[str], raw: str) -> tuple:
    return (line, _id(f[0], "id"), _id(f[1], "review_id"), f[2])


def characteristic(line: int, f: list[str], raw: str) -> tuple:
    return (line, _id(f[0], "id"), _id(f[1], "product_id", MAX_INTEGER), f[2])


def characteristic_rating(line: int, f: list[str], raw: str) -> tuple:
    return (
        line,
        _id(f[0], "id"),
        _id(f[1], "characteristic_id"),
        _id(f[2], "review_id"),
        _score(f[3], "value", rejects.VALUE_OUT_OF_RANGE),
    )


@dataclass(frozen=True)
class ExportFile:
    """One file of the export and the staging table its typed rows go to."""

    name: str
    table: str  # the service's table, also the stem of the raw staging table `raw_<table>`
    columns: tuple[str, ...]  # the header, in order
    raw_columns: tuple[tuple[str, str], ...]  # (name, SQL type) of the raw staging table
    parse_fields: Callable[[int, list[str], str], tuple]

    @property
    def raw_table(self) -> str:
        return f"raw_{self.table}"

    @property
    def raw_column_names(self) -> list[str]:
        return [name for name, _ in self.raw_columns]

    def parse(self, line: int, fields: list[str] | None, raw: str) -> tuple:
        """The record as a raw staging row, or RowRejected."""
        if fields is None:
            raise RowRejected(rejects.MALFORMED_CSV, f"not valid CSV: {_not_csv(raw)}")
        if len(fields) != len(self.columns):
            raise RowRejected(
                rejects.WRONG_COLUMN_COUNT, f"expected {len(self.columns)} columns, got {len(fields)}"
            )
        if "\x00" in raw:
            raise RowRejected(rejects.INVALID_TEXT, "contains a NUL character")
        if not raw.isascii():
            try:
                raw.encode("utf-8")
            except UnicodeEncodeError:  # undecodable bytes, kept as surrogate escapes
                raise RowRejected(rejects.INVALID_TEXT, "not valid UTF-8") from None
        return self.parse_fields(line, fields, raw)


# What the csv module says of a record it refuses, as the rejects report says it.
_CSV_ERRORS = {
    "field larger than field limit": f"a field over {MAX_FIELD_CHARS:,} characters",
    "expected after": "text after a closing quote (a quote inside a quoted field is written twice)",
    "unexpected end of data": "a quote left open at the end of the line",
}


def _not_csv(raw: str) -> str:
    """Why the text of a refused record is not CSV, read again by itself as the readers read it (it is
    one line: a refused record of several is cut to its first)."""
    try:
        for _ in csv.reader([raw], strict=True):
            pass
    except csv.Error as exc:
        message = str(exc)
        return next((text for start, text in _CSV_ERRORS.items() if start in message), message)
    return "lines that make no record"  # read to their end without one (never seen)


_ID = ("id", "bigint")

# In load order: parents before the files that refer to them.
CHARACTERISTICS = ExportFile(
    "characteristics.csv",
    "characteristics",
    ("id", "product_id", "name"),
    (("line_no", "bigint"), _ID, ("product_id", "integer"), ("name", "text")),
    characteristic,
)
REVIEWS = ExportFile(
    "reviews.csv",
    "reviews",
    (
        "id",
        "product_id",
        "rating",
        "date",
        "summary",
        "body",
        "recommend",
        "reported",
        "reviewer_name",
        "reviewer_email",
        "response",
        "helpfulness",
    ),  # fmt: skip
    (
        ("line_no", "bigint"),
        _ID,
        ("product_id", "integer"),
        ("rating", "smallint"),
        ("date_ms", "bigint"),
        ("summary", "text"),
        ("body", "text"),
        ("recommend", "boolean"),
        ("reported", "boolean"),
        ("reviewer_name", "text"),
        ("reviewer_email", "text"),
        ("response", "text"),
        ("helpfulness", "integer"),
    ),  # fmt: skip
    review,
)
REVIEWS_PHOTOS = ExportFile(
    "reviews_photos.csv",
    "reviews_photos",
    ("id", "review_id", "url"),
    (("line_no", "bigint"), _ID, ("review_id", "bigint"), ("url", "text")),
    review_photo,
)
CHARACTERISTIC_REVIEWS = ExportFile(
    "characteristic_reviews.csv",
    "characteristic_reviews",
    ("id", "characteristic_id", "review_id", "value"),
    (
        ("line_no", "bigint"),
        _ID,
        ("characteristic_id", "bigint"),
        ("review_id", "bigint"),
        ("value", "smallint"),
    ),  # fmt: skip
    characteristic_rating,
)
EXPORT_FILES = (CHARACTERISTICS, REVIEWS, REVIEWS_PHOTOS, CHARACTERISTIC_REVIEWS)
