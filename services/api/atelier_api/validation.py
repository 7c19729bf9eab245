"""Validation at the edge: query strings, path ids and JSON bodies into small typed values.

Every rule is checked and every broken one reported at once (`InvalidInput.details`); past this module
(and review_draft.py, for the body of POST /reviews) the values are trusted.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Mapping
from dataclasses import dataclass

import orjson
from multidict import MultiMapping

from atelier_api.errors import FieldError, InvalidInput, MalformedBody, ReviewNotFound, UnsupportedEncoding

INT32_MAX = 2**31 - 1  # product ids and page numbers are Postgres integers
INT64_MAX = 2**63 - 1  # review and characteristic ids are bigints
# A product id a GET may ask for: a positive integer (the contract's rule) up to a bigint's largest (what
# JSON tools, orjson included, take as an integer). One past INT32_MAX names no product (the column is an
# integer), so it is answered as an unknown product.
ASKED_PRODUCT_MAX = INT64_MAX

# ASCII digits only: int() would also take " 5", "+5", "5_0" and other scripts' digits.
_POSITIVE_INTEGER = re.compile(r"0*([1-9][0-9]*)")

_STARS = frozenset("12345")
MAX_BATCH_PRODUCTS = 100  # GET /reviews/meta/batch: one listing page's worth of products


class Sort(enum.StrEnum):
    NEWEST = "newest"
    HELPFUL = "helpful"
    RELEVANT = "relevant"


_SORTS = tuple(sort.value for sort in Sort)
DEFAULT_PAGE = 1
DEFAULT_COUNT = 5


@dataclass(frozen=True, slots=True)
class ReviewsQuery:
    product_id: int
    page: int  # one-based
    count: int
    sort: Sort
    ratings: tuple[int, ...] = ()  # only reviews with these stars; () for every review
    with_photos: bool = False  # only reviews with at least one photo


def reviews_query(query: MultiMapping[str], max_count: int) -> ReviewsQuery:
    errors: list[FieldError] = []
    product_id = _query_integer(query, "product_id", None, ASKED_PRODUCT_MAX, errors)
    page = _query_integer(query, "page", DEFAULT_PAGE, INT32_MAX, errors)
    count = _query_integer(query, "count", DEFAULT_COUNT, max_count, errors)
    sort = _query_value(query, "sort", Sort.RELEVANT.value, errors)
    if sort is not None and sort not in _SORTS:
        errors.append(FieldError("sort", f"must be one of {', '.join(_SORTS)}"))
    ratings = _query_stars(query, "rating", errors)
    with_photos = _query_value(query, "with_photos", "false", errors)
    if with_photos is not None and with_photos not in ("true", "false"):
        errors.append(FieldError("with_photos", "must be true or false"))
    if errors:
        raise InvalidInput(errors)
    assert product_id is not None and page is not None and count is not None and sort is not None
    return ReviewsQuery(
        product_id,
        page,
        count,
        Sort(sort),
        ratings=ratings,
        with_photos=with_photos == "true",
    )


def meta_query(query: MultiMapping[str]) -> int:
    """The product_id of GET /reviews/meta."""
    errors: list[FieldError] = []
    product_id = _query_integer(query, "product_id", None, ASKED_PRODUCT_MAX, errors)
    if product_id is None:
        raise InvalidInput(errors)
    return product_id


def meta_batch_query(query: MultiMapping[str]) -> list[int]:
    """The product_ids of GET /reviews/meta/batch, in the order given, repeats kept."""
    errors: list[FieldError] = []
    product_ids: list[int] = []
    raw = _query_value(query, "product_ids", None, errors)
    if raw is not None:
        values = [positive_integer(text) for text in raw.split(",")]
        product_ids = [value for value in values if value is not None]
        if len(product_ids) < len(values):
            errors.append(FieldError("product_ids", "must be a comma-separated list of positive integers"))
        elif max(product_ids) > ASKED_PRODUCT_MAX:
            errors.append(FieldError("product_ids", f"must each be at most {ASKED_PRODUCT_MAX}"))
        elif len(product_ids) > MAX_BATCH_PRODUCTS:
            errors.append(FieldError("product_ids", f"must list at most {MAX_BATCH_PRODUCTS} ids"))
    if errors:
        raise InvalidInput(errors)
    return product_ids


def review_id(text: str) -> int:
    """A review id from the path (the route admits digits only); one beyond a bigint cannot exist."""
    value = positive_integer(text)
    if value is None or value > INT64_MAX:
        raise ReviewNotFound(text)
    return value


def identity_encoding(headers: Mapping[str, str]) -> None:
    """Refuse a compressed body. aiohttp would decompress some encodings and fail on others in its
    parser, with a text answer or a dropped connection (serve.py turns that off); a review's few KB
    gain nothing from compression."""
    encoding = headers.get("Content-Encoding", "").strip()
    if encoding and encoding.lower() != "identity":
        raise UnsupportedEncoding(encoding)


def json_object(raw: bytes) -> dict[str, object]:
    """The body's JSON object. A body that is not JSON is a 400 (MalformedBody); JSON that is not an
    object (`[]`, `null`, `42`) is JSON, which the contract answers 422 for a body whose fields break
    their rules: it holds none of them, so it reads as an empty object and each required one is named."""
    try:
        payload = orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise MalformedBody() from None
    return payload if isinstance(payload, dict) else {}


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


def _query_stars(query: MultiMapping[str], name: str, errors: list[FieldError]) -> tuple[int, ...]:
    """A comma-separated list of stars, sorted and without repeats; () when the parameter is absent."""
    if name not in query:
        return ()
    raw = _query_value(query, name, None, errors)
    if raw is None:
        return ()
    stars = raw.split(",")
    if not all(star in _STARS for star in stars):
        errors.append(FieldError(name, "must be a comma-separated list of stars from 1 to 5"))
        return ()
    return tuple(sorted({int(star) for star in stars}))


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
