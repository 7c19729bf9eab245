"""The body of POST /reviews: every field checked into a ReviewDraft, completed into a NewReview once the
database has answered the two rules only it can (a known product, its characteristics)."""

from __future__ import annotations

import re
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from urllib.parse import urlsplit

from email_validator import EmailNotValidError, validate_email

from atelier_api.errors import FieldError, InvalidInput
from atelier_api.validation import INT32_MAX, INT64_MAX, positive_integer

MAX_PHOTOS = 5
# More than any product has (the export's products have 3 to 6). A body over either bound is refused
# as a whole, not item by item: one error, whatever a hostile body holds (32,000 photos gave 32,000
# errors, 1.7 MB and ~100 ms of a replica's loop).
MAX_CHARACTERISTICS = 64
MAX_PHOTO_URL_LENGTH = 2048
# Stars, of the review and of each characteristic rating.
MIN_RATING, MAX_RATING = 1, 5
# (fewest, most) characters of each text field; openapi.py describes the same numbers.
TEXT_LENGTHS = {"summary": (0, 60), "body": (50, 1000), "name": (1, 60), "email": (1, 60)}
_RATING_RULE = f"must be an integer from {MIN_RATING} to {MAX_RATING}"
# The order fields are reported in: the order of the contract's table.
_FIELD_ORDER = ("product_id", "rating", "summary", "body", "recommend", "name", "email", "photos")


@dataclass(frozen=True, slots=True)
class NewReview:
    product_id: int
    rating: int
    summary: str
    body: str
    recommend: bool
    name: str
    email: str
    photos: tuple[str, ...]
    characteristics: tuple[tuple[int, int], ...]  # (characteristic id, rating 1-5)


@dataclass(frozen=True, slots=True)
class ReviewDraft:
    """A POST body checked field by field.

    Two rules need the database: the product is known and every characteristic is one of its own.
    `complete` adds them, so a single response lists every broken rule.
    """

    product_id: int | None
    characteristic_ids: tuple[int, ...]
    errors: tuple[FieldError, ...]
    review: NewReview | None  # set when no field broke a rule

    def complete(self, product_known: bool, product_characteristic_ids: Collection[int]) -> NewReview:
        errors = list(self.errors)
        if self.product_id is not None:
            if not product_known:
                errors.append(FieldError("product_id", "must be a known product"))
            errors.extend(
                FieldError(f"characteristics.{characteristic_id}", "is not a characteristic of this product")
                for characteristic_id in self.characteristic_ids
                if characteristic_id not in product_characteristic_ids
            )
        if errors or self.review is None:
            raise InvalidInput(sorted(errors, key=_field_rank))
        return self.review


def parse(payload: Mapping[str, object]) -> ReviewDraft:
    errors: list[FieldError] = []
    beyond = f"must be at most {INT32_MAX}"
    product_id = _integer(payload, "product_id", 1, INT32_MAX, "must be a positive integer", errors, beyond)
    rating = _integer(payload, "rating", MIN_RATING, MAX_RATING, _RATING_RULE, errors)
    # A missing summary is stored as "" (the column's default): the contract lets it be empty.
    summary = _text(payload, "summary", *TEXT_LENGTHS["summary"], errors, default="")
    body = _text(payload, "body", *TEXT_LENGTHS["body"], errors)
    recommend = payload.get("recommend")
    if not isinstance(recommend, bool):
        errors.append(_missing_or("recommend", "must be a boolean", payload))
    name = _text(payload, "name", *TEXT_LENGTHS["name"], errors)
    email = _email(payload, errors)
    photos = _photos(payload, errors)
    characteristics = _characteristics(payload, errors)
    review = None
    if not errors:
        assert product_id is not None and rating is not None and isinstance(recommend, bool)
        assert summary is not None and body is not None and name is not None and email is not None
        review = NewReview(
            product_id, rating, summary, body, recommend, name, email, photos, tuple(characteristics.items())
        )
    return ReviewDraft(product_id, tuple(characteristics), tuple(errors), review)


def _field_rank(error: FieldError) -> int:
    top = re.split(r"[.\[]", error.field, maxsplit=1)[0]
    return _FIELD_ORDER.index(top) if top in _FIELD_ORDER else len(_FIELD_ORDER)


def _missing_or(field: str, message: str, payload: Mapping[str, object]) -> FieldError:
    return FieldError(field, message if field in payload else "is required")


def _integer(
    payload: Mapping[str, object],
    field: str,
    low: int,
    high: int,
    message: str,
    errors: list[FieldError],
    too_large: str | None = None,
) -> int | None:
    value = payload.get(field)
    # bool is an int in Python but not in JSON: true is no rating.
    if not isinstance(value, int) or isinstance(value, bool) or value < low:
        errors.append(_missing_or(field, message, payload))
        return None
    if value > high:
        errors.append(FieldError(field, too_large or message))
        return None
    return value


def _text(
    payload: Mapping[str, object],
    field: str,
    low: int,
    high: int,
    errors: list[FieldError],
    default: str | None = None,
) -> str | None:
    if field not in payload and default is not None:
        return default
    value = payload.get(field)
    if not isinstance(value, str):
        errors.append(_missing_or(field, "must be a string", payload))
        return None
    if not low <= len(value) <= high:
        span = f"at most {high}" if low == 0 else f"{low} to {high}"
        errors.append(FieldError(field, f"must be {span} characters"))
        return None
    if "\x00" in value:  # Postgres text cannot hold it
        errors.append(FieldError(field, "must not contain NUL characters"))
        return None
    return value


def _email(payload: Mapping[str, object], errors: list[FieldError]) -> str | None:
    email = _text(payload, "email", *TEXT_LENGTHS["email"], errors)
    if email is None:
        return None
    try:
        validate_email(email, check_deliverability=False)
    except EmailNotValidError:
        errors.append(FieldError("email", "must be a valid email address"))
        return None
    return email  # stored as given


def _photos(payload: Mapping[str, object], errors: list[FieldError]) -> tuple[str, ...]:
    photos = payload.get("photos", [])
    if not isinstance(photos, list):
        errors.append(FieldError("photos", "must be an array of URLs"))
        return ()
    if len(photos) > MAX_PHOTOS:
        errors.append(FieldError("photos", f"must hold at most {MAX_PHOTOS} URLs"))
        return ()
    for index, url in enumerate(photos):
        field = f"photos[{index}]"
        if not isinstance(url, str):
            errors.append(FieldError(field, "must be a string"))
        elif len(url) > MAX_PHOTO_URL_LENGTH:
            errors.append(FieldError(field, f"must be at most {MAX_PHOTO_URL_LENGTH} characters"))
        elif not _is_http_url(url):
            errors.append(FieldError(field, "must be an http or https URL"))
    return tuple(url for url in photos if isinstance(url, str))


def _is_http_url(url: str) -> bool:
    if any(char.isspace() or not char.isprintable() for char in url):
        return False
    try:
        parts = urlsplit(url)
        return parts.scheme.lower() in ("http", "https") and bool(parts.hostname)
    except ValueError:  # e.g. an unclosed IPv6 bracket
        return False


def _characteristics(payload: Mapping[str, object], errors: list[FieldError]) -> dict[int, int]:
    """{characteristic id: rating}; keys that are not ids, or name one id twice, are errors."""
    given = payload.get("characteristics", {})
    if not isinstance(given, dict):
        errors.append(FieldError("characteristics", "must be an object of characteristic ids to ratings"))
        return {}
    if len(given) > MAX_CHARACTERISTICS:
        errors.append(FieldError("characteristics", f"must hold at most {MAX_CHARACTERISTICS} ratings"))
        return {}
    ratings: dict[int, int] = {}
    for key, value in given.items():
        field = f"characteristics.{key}"
        characteristic_id = positive_integer(key)
        if characteristic_id is None or characteristic_id > INT64_MAX:
            errors.append(FieldError(field, "must be a characteristic id"))
            continue
        if characteristic_id in ratings:
            errors.append(FieldError(field, f"repeats characteristic {characteristic_id}"))
        elif not isinstance(value, int) or isinstance(value, bool) or not MIN_RATING <= value <= MAX_RATING:
            errors.append(FieldError(field, _RATING_RULE))
        ratings[characteristic_id] = value if isinstance(value, int) else 0
    return ratings
