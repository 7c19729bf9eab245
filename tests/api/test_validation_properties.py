"""Properties of the request validators (validation.py, review_draft.py) over generated input.

Whatever the query string or JSON body, a validator either returns a value that satisfies every rule of
the contract or raises the domain's refusal (InvalidInput with at least one detail, MalformedBody for a
body that is not a JSON object, ReviewNotFound for a path id that cannot exist); never anything else.

Bounded and deterministic: derandomized, no example database, no deadline.
"""

from __future__ import annotations

import json
import string
from typing import Any

import orjson
from email_validator import EmailNotValidError, validate_email
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from multidict import MultiDict

from atelier_api import review_draft, validation
from atelier_api.errors import InvalidInput, MalformedBody, ReviewNotFound
from atelier_api.review_draft import MAX_PHOTO_URL_LENGTH, MAX_PHOTOS, TEXT_LENGTHS, NewReview
from atelier_api.validation import INT32_MAX, INT64_MAX, MAX_BATCH_PRODUCTS, Sort

PROPERTIES = settings(
    max_examples=200,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow],
)
MAX_COUNT = 1000

# Query values near every rule's edges, plus arbitrary text.
EDGY_VALUES = st.sampled_from(
    [
        "",
        "0",
        "1",
        "5",
        "6",
        "01",
        "-1",
        "+1",
        " 1",
        "1 ",
        "1.0",
        "5.55",
        "1e3",
        "1_0",
        "١",
        "null",
        "hello",
        "true",
        "false",
        "True",
        "1,2",
        "4,5",
        "5,5,1",
        ",",
        "1,",
        str(MAX_COUNT),
        str(MAX_COUNT + 1),
        str(INT32_MAX),
        str(INT32_MAX + 1),
        str(INT64_MAX + 1),
        "9" * 5000,
        "newest",
        "helpful",
        "relevant",
        "NEWEST",
        "\x00",
    ]
)
QUERY_VALUE = st.one_of(EDGY_VALUES, st.text(max_size=20), st.from_regex(r"[0-9,]{1,30}", fullmatch=True))
QUERY_NAMES = st.sampled_from(
    ["product_id", "page", "count", "sort", "rating", "with_photos", "product_ids", "other"]
)
VALID_QUERY_VALUES = {
    "product_id": st.integers(1, INT32_MAX).map(str),
    "page": st.integers(1, INT32_MAX).map(str),
    "count": st.integers(1, MAX_COUNT).map(str),
    "sort": st.sampled_from([sort.value for sort in Sort]),
    "rating": st.lists(st.sampled_from("12345"), min_size=1, max_size=6).map(",".join),
    "with_photos": st.sampled_from(["true", "false"]),
    "product_ids": st.lists(st.integers(1, INT32_MAX), min_size=1, max_size=MAX_BATCH_PRODUCTS).map(
        lambda ids: ",".join(map(str, ids))
    ),
}


@st.composite
def queries(draw: st.DrawFn) -> MultiDict[str]:
    """Each parameter absent, valid, edgy or repeated; sometimes unknown ones too."""
    pairs: list[tuple[str, str]] = []
    for name, valid in VALID_QUERY_VALUES.items():
        choice = draw(st.integers(0, 9))
        if choice < 2:
            continue
        pairs.append((name, draw(valid) if choice < 7 else draw(QUERY_VALUE)))
        if choice == 9:
            pairs.append((name, draw(valid)))
    pairs += draw(st.lists(st.tuples(QUERY_NAMES, QUERY_VALUE), max_size=2))
    return MultiDict(draw(st.permutations(pairs)))


QUERY = queries()


def assert_refusal(error: InvalidInput, fields: set[str]) -> None:
    assert error.status == 422
    assert error.details, "a refusal names at least one broken rule"
    for detail in error.details:
        assert detail.field in fields and detail.message


def single(query: MultiDict[str], name: str) -> str | None:
    values = query.getall(name, [])
    assert len(values) <= 1, f"{name} given twice yet accepted"
    return values[0] if values else None


@PROPERTIES
@given(query=QUERY)
def test_reviews_query_accepts_only_valid_values(query: MultiDict[str]) -> None:
    try:
        parsed = validation.reviews_query(query, MAX_COUNT)
    except InvalidInput as error:
        assert_refusal(error, {"product_id", "page", "count", "sort", "rating", "with_photos"})
        return
    assert 1 <= parsed.product_id <= INT64_MAX
    assert int(single(query, "product_id") or "") == parsed.product_id
    assert 1 <= parsed.page <= INT32_MAX and parsed.page == int(single(query, "page") or "1")
    assert 1 <= parsed.count <= MAX_COUNT and parsed.count == int(single(query, "count") or "5")
    assert parsed.sort == Sort(single(query, "sort") or "relevant")
    assert list(parsed.ratings) == sorted(set(parsed.ratings)) and set(parsed.ratings) <= {1, 2, 3, 4, 5}
    rating = single(query, "rating")
    assert parsed.ratings == (() if rating is None else tuple(sorted({int(s) for s in rating.split(",")})))
    assert parsed.with_photos is (single(query, "with_photos") == "true")


@PROPERTIES
@given(query=QUERY)
def test_meta_query_accepts_only_a_product_id(query: MultiDict[str]) -> None:
    try:
        product_id = validation.meta_query(query)
    except InvalidInput as error:
        assert_refusal(error, {"product_id"})
        return
    assert 1 <= product_id <= INT64_MAX and product_id == int(single(query, "product_id") or "")


@PROPERTIES
@given(query=QUERY | st.lists(st.integers(-5, 2**40), max_size=120).map(
    lambda ids: MultiDict(product_ids=",".join(map(str, ids)))
))  # fmt: skip
def test_meta_batch_query_accepts_only_a_bounded_list_of_ids(query: MultiDict[str]) -> None:
    try:
        product_ids = validation.meta_batch_query(query)
    except InvalidInput as error:
        assert_refusal(error, {"product_ids"})
        return
    assert 1 <= len(product_ids) <= MAX_BATCH_PRODUCTS
    assert all(1 <= product_id <= INT64_MAX for product_id in product_ids)
    assert product_ids == [int(text) for text in (single(query, "product_ids") or "").split(",")]


@PROPERTIES
@given(text=st.one_of(EDGY_VALUES, st.text(max_size=30), st.from_regex(r"[0-9]{1,25}", fullmatch=True)))
def test_a_path_review_id_is_a_bigint_or_not_found(text: str) -> None:
    try:
        review_id = validation.review_id(text)
    except ReviewNotFound as error:
        assert error.status == 404
        return
    assert 1 <= review_id <= INT64_MAX and review_id == int(text)


# JSON values of every type, nested a little.
JSON_SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**70), 2**70),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=30),
)
JSON_VALUES = st.recursive(
    JSON_SCALARS,
    lambda children: (
        st.lists(children, max_size=6) | st.dictionaries(st.text(max_size=8), children, max_size=6)
    ),
    max_leaves=20,
)


def json_text(value: Any) -> bytes:
    """JSON as a client may send it (the standard library writes integers of any size; orjson would not)."""
    return json.dumps(value).encode()


@PROPERTIES
@given(raw=st.one_of(st.binary(max_size=200), JSON_VALUES.map(json_text)))
def test_a_body_is_a_json_object_or_malformed(raw: bytes) -> None:
    try:
        payload = validation.json_object(raw)
    except MalformedBody as error:
        assert error.status == 400
        return
    assert isinstance(payload, dict)


def text_of_length(low: int, high: int) -> st.SearchStrategy[str]:
    return st.integers(max(0, low - 2), high + 2).flatmap(
        lambda n: st.text(st.characters(codec="utf-8"), min_size=n, max_size=n)
    )


# Values for each field of POST /reviews: valid ones, values at the edges, and any JSON value.
FIELD_VALUES: dict[str, st.SearchStrategy[Any]] = {
    "product_id": st.sampled_from([1, 2, 0, -1, INT32_MAX, INT32_MAX + 1, True, 1.0, "1"]),
    "rating": st.integers(-1, 7) | st.sampled_from([True, 4.0, "5", None]),
    "summary": text_of_length(*TEXT_LENGTHS["summary"]),
    "body": text_of_length(*TEXT_LENGTHS["body"]) | st.just("b" * 50 + "\x00"),
    "recommend": st.booleans() | st.sampled_from([0, 1, "true", None]),
    "name": text_of_length(*TEXT_LENGTHS["name"]),
    "email": st.sampled_from(
        ["a@example.com", "first.last@gmail.com", "no-at-sign", "a@b", "x" * 55 + "@e.com", "@example.com"]
    )
    | st.emails().filter(lambda address: len(address) <= 70),
    "photos": st.lists(
        st.sampled_from(
            [
                "https://images.example/1.jpg",
                "http://h/p",
                "ftp://h/p",
                "https://",
                "https://h/" + "p" * MAX_PHOTO_URL_LENGTH,
                "https://[::1",
                "https://h/a b",
                "javascript:alert(1)",
            ]
        )
        | st.text(max_size=20)
        | st.integers(),
        max_size=MAX_PHOTOS + 2,
    )
    | JSON_SCALARS,
    "characteristics": st.dictionaries(
        st.sampled_from(["5", "6", "05", "0", "-1", "x", str(INT64_MAX + 1), "1.5"]) | st.text(max_size=4),
        st.integers(-1, 7) | st.sampled_from([True, 3.0, "4", None]),
        max_size=4,
    )
    | JSON_SCALARS,
}


VALID_FIELD_VALUES: dict[str, st.SearchStrategy[Any]] = {
    "product_id": st.integers(1, INT32_MAX),
    "rating": st.integers(1, 5),
    "summary": st.text(max_size=60),
    "body": st.text(min_size=50, max_size=1000),
    "recommend": st.booleans(),
    "name": st.text(min_size=1, max_size=60),
    "email": st.sampled_from(["a@example.com", "first.last@gmail.com", "x_y+z@shop.example.org"]),
    "photos": st.lists(
        st.sampled_from(["https://images.example/1.jpg", "HTTP://h.example/p?q=1"]), max_size=5
    ),
    "characteristics": st.dictionaries(st.integers(1, 8).map(str), st.integers(1, 5), max_size=4),
}


@st.composite
def review_bodies(draw: st.DrawFn) -> dict[str, Any]:
    """A POST body: each known field present or not, with a near-valid or any value; sometimes extra keys."""
    body: dict[str, Any] = {}
    for field, values in FIELD_VALUES.items():
        choice = draw(st.integers(0, 19))
        if choice == 0:
            continue
        if choice == 1:
            body[field] = draw(JSON_VALUES)
        elif choice < 5:
            body[field] = draw(values)
        else:
            body[field] = draw(VALID_FIELD_VALUES[field])
    if draw(st.booleans()):
        body.update(draw(st.dictionaries(st.text(max_size=6), JSON_VALUES, max_size=2)))
    return body


def assert_satisfies_the_contract(review: NewReview, payload: dict[str, Any]) -> None:
    assert type(review.product_id) is int and 1 <= review.product_id <= INT32_MAX
    assert type(review.rating) is int and 1 <= review.rating <= 5
    assert isinstance(review.recommend, bool)
    for field in ("summary", "body", "name", "email"):
        value = getattr(review, field)
        low, high = TEXT_LENGTHS[field]
        assert isinstance(value, str) and low <= len(value) <= high and "\x00" not in value
        assert value == payload.get(field, "")
    try:
        validate_email(review.email, check_deliverability=False)
    except EmailNotValidError as error:  # pragma: no cover - the assertion's message
        raise AssertionError(f"accepted an invalid email {review.email!r}") from error
    assert len(review.photos) <= MAX_PHOTOS
    for url in review.photos:
        assert isinstance(url, str) and len(url) <= MAX_PHOTO_URL_LENGTH
        assert url.lower().startswith(("http://", "https://")) and not any(c.isspace() for c in url)
    ids = [characteristic_id for characteristic_id, _ in review.characteristics]
    assert len(ids) == len(set(ids))
    for characteristic_id, value in review.characteristics:
        assert 1 <= characteristic_id <= INT64_MAX and type(value) is int and 1 <= value <= 5


@PROPERTIES
@given(payload=review_bodies(), known=st.booleans(), characteristic_ids=st.sets(st.integers(1, 8)))
def test_a_review_body_is_accepted_only_when_every_rule_holds(
    payload: dict[str, Any], known: bool, characteristic_ids: set[int]
) -> None:
    raw = json_text(payload)  # through JSON text, as the handler sees it
    try:
        draft = review_draft.parse(validation.json_object(raw))
        review = draft.complete(known, characteristic_ids)
    except InvalidInput as error:
        assert_refusal(error, {detail.field for detail in error.details})
        tops = {detail.field.split(".")[0].split("[")[0] for detail in error.details}
        assert tops <= set(FIELD_VALUES), tops
        return
    assert known
    assert_satisfies_the_contract(review, orjson.loads(raw))
    assert {characteristic_id for characteristic_id, _ in review.characteristics} <= characteristic_ids


@PROPERTIES
@given(payload=st.dictionaries(st.text(max_size=10), JSON_VALUES, max_size=10))
def test_any_json_object_is_parsed_into_a_draft_or_refused(payload: dict[str, Any]) -> None:
    try:
        draft = review_draft.parse(payload)
        draft.complete(True, range(1, 10))
    except InvalidInput as error:
        assert error.details
        return
    raise AssertionError(f"a body of arbitrary keys was accepted: {payload!r}")


def test_the_strategies_reach_acceptance() -> None:
    """The generated bodies are not all refusals: a valid body passes the same path."""
    payload = {
        "product_id": 2,
        "rating": 5,
        "summary": "",
        "body": "b" * 50,
        "recommend": True,
        "name": "n",
        "email": "a@example.com",
        "photos": ["https://images.example/1.jpg"],
        "characteristics": {"5": 4},
    }
    review = review_draft.parse(payload).complete(True, {5})
    assert_satisfies_the_contract(review, payload)
    assert set(string.digits) >= set(str(review.product_id))
