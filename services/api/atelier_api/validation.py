"""Validation at the edge: query strings, path ids and JSON bodies into small typed values.

Every rule is checked and every broken one reported at once (`InvalidInput.details`); past this module
(and review_draft.py, for the body of POST /reviews) the values are trusted.
"""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass

import orjson
from multidict import MultiMapping

from atelier_api.errors import FieldError, InvalidInput, MalformedBody, ReviewNotFound

INT32_MAX = 2**31 - 1  # product ids and page numbers are Postgres integers
INT64_MAX = 2**63 - 1  # review and characteristic ids are bigints

# ASCII digits only: int() would also take " 5", "+5", "5_0" and other scripts' digits.
_POSITIVE_INTEGER = re.compile(r"0*([1-9][0-9]*)")


class Sort(enum.StrEnum):
    NEWEST = "newest"
    HELPFUL = "helpful"
    RELEVANT = "relevant"


_SORTS = tuple(sort.value for sort in Sort)


@dataclass(frozen=True, slots=True)
class ReviewsQuery:
    product_id: int
    page: int  # one-based
    count: int
    sort: Sort


def reviews_query(query: MultiMapping[str], max_count: int) -> ReviewsQuery:
    errors: list[FieldError] = []
    product_id = _query_integer(query, "product_id", None, INT32_MAX, errors)
    page = _query_integer(query, "page", 1, INT32_MAX, errors)
    count = _query_integer(query, "count", 5, max_count, errors)
    sort = _query_value(query, "sort", Sort.RELEVANT.value, errors)
    if sort is not None and sort not in _SORTS:
        errors.append(FieldError("sort", f"must be one of {', '.join(_SORTS)}"))
    if errors:
        raise InvalidInput(errors)
    assert product_id is not None and page is not None and count is not None and sort is not None
    return ReviewsQuery(product_id, page, count, Sort(sort))


def meta_query(query: MultiMapping[str]) -> int:
    """The product_id of GET /reviews/meta."""
    errors: list[FieldError] = []
    product_id = _query_integer(query, "product_id", None, INT32_MAX, errors)
    if product_id is None:
        raise InvalidInput(errors)
    return product_id


def review_id(text: str) -> int:
    """A review id from the path (the route admits digits only); one beyond a bigint cannot exist."""
    value = positive_integer(text)
    if value is None or value > INT64_MAX:
        raise ReviewNotFound(text)
    return value


def json_object(raw: bytes) -> dict[str, object]:
    try:
        payload = orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise MalformedBody() from None
    if not isinstance(payload, dict):
        raise MalformedBody()
    return payload


def _query_value(
    query: MultiMapping[str], name: str, default: str | None, errors: list[FieldError]
) -> str | None:
    values = query.getall(name, [])
    if len(values) > 1:
        errors.append(FieldError(name, "must be given once"))
        return None
    if not values:
        if default is None:
            errors.append(FieldError(name, "is required"))
        return default
    return values[0]


def _query_integer(
    query: MultiMapping[str], name: str, default: int | None, high: int, errors: list[FieldError]
) -> int | None:
    raw = _query_value(query, name, None if default is None else str(default), errors)
    if raw is None:
        return None
    value = positive_integer(raw)
    if value is None:
        errors.append(FieldError(name, "must be a positive integer"))
        return None
    if value > high:
        errors.append(FieldError(name, f"must be at most {high}"))
        return None
    return value


def positive_integer(text: str) -> int | None:
    """The value of a string of ASCII digits above zero; past 20 digits only its size matters."""
    match = _POSITIVE_INTEGER.fullmatch(text)
    if match is None:
        return None
    digits = match[1]
    # int() of thousands of digits is slow, and refused past 4300: anything this long is out of range.
    return int(digits) if len(digits) <= 20 else 10**20
