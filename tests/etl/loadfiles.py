"""Factories for the loader tests: small export files written line by line, exactly as given.

Rows are given as the raw text of their CSV records, so a test controls every byte the loader sees
(quotes, line breaks, BOM, line ends). The defaults are the sample rows of data.md, plus the review 5
that its sample photo points at.
"""

from __future__ import annotations

import csv
from pathlib import Path

REVIEWS_HEADER = (
    "id,product_id,rating,date,summary,body,recommend,reported,"
    "reviewer_name,reviewer_email,response,helpfulness"
)
PHOTOS_HEADER = "id,review_id,url"
CHARACTERISTICS_HEADER = "id,product_id,name"
CHARACTERISTIC_REVIEWS_HEADER = "id,characteristic_id,review_id,value"

SAMPLE_REVIEWS = [
    '1,1,5,1596080481467,"This product was great!","I really did or did not like this product based on '
    'whether it was sustainably sourced.  Then I found out that its made from nothing at all.",true,false,'
    '"funtime","first.last@gmail.com",null,8',
    '2,1,4,1610178433963,"This product was ok!","I really did not like this product solely because I am tiny '
    'and do not fit into it.",false,false,"mymainstreammother","first.last@gmail.com",null,2',
    '3,2,4,1609325851021,"I am liking these glasses","They are very dark.  But that\'s good because I\'m in '
    'very sunny spots",true,false,"bigbrotherbenjamin","first.last@gmail.com","Glad you\'re enjoying the '
    'product!",5',
    '5,5,3,1600000000000,"Fits","Runs a little small.",true,true,"shopper","shopper@example.com",null,0',
]
SAMPLE_PHOTOS = [
    '1,5,"https://images.unsplash.com/photo-1560570803-7474c0f9af99?ixlib=rb-1.2.1&ixid=eyJhcHBfaWQiOjEyMDd9'
    '&auto=format&fit=crop&w=975&q=80"',
]
SAMPLE_CHARACTERISTICS = ['1,1,"Fit"', '2,1,"Length"', '3,1,"Comfort"', '4,1,"Quality"', '5,2,"Quality"',
                          '14,5,"Size"']  # fmt: skip
SAMPLE_CHARACTERISTIC_REVIEWS = ["1,1,1,4", "2,2,1,3", "3,3,1,5"]


def review(
    id: object = 1,
    product_id: object = 1,
    rating: object = 5,
    date: object = 1596080481467,
    summary: str = '"Great"',
    body: str = '"Does what it says."',
    recommend: str = "true",
    reported: str = "false",
    reviewer_name: str = '"funtime"',
    reviewer_email: str = '"first.last@gmail.com"',
    response: str = "null",
    helpfulness: object = 0,
) -> str:
    """One reviews.csv record; text fields are given as written (quoted or not)."""
    fields = (id, product_id, rating, date, summary, body, recommend, reported, reviewer_name,
              reviewer_email, response, helpfulness)  # fmt: skip
    return ",".join(str(field) for field in fields)


def write_export(
    directory: Path,
    *,
    reviews: list[str] | None = None,
    photos: list[str] | None = None,
    characteristics: list[str] | None = None,
    characteristic_reviews: list[str] | None = None,
    eol: str = "\n",
    bom: bool = False,
) -> Path:
    """The four files in `directory` (created), each a header plus the given records (default: samples)."""
    directory.mkdir(parents=True, exist_ok=True)
    files = {
        "reviews.csv": (REVIEWS_HEADER, SAMPLE_REVIEWS if reviews is None else reviews),
        "reviews_photos.csv": (PHOTOS_HEADER, SAMPLE_PHOTOS if photos is None else photos),
        "characteristics.csv": (
            CHARACTERISTICS_HEADER,
            SAMPLE_CHARACTERISTICS if characteristics is None else characteristics,
        ),
        "characteristic_reviews.csv": (
            CHARACTERISTIC_REVIEWS_HEADER,
            SAMPLE_CHARACTERISTIC_REVIEWS if characteristic_reviews is None else characteristic_reviews,
        ),
    }
    for name, (header, records) in files.items():
        text = "".join(line + eol for line in [header, *records])
        (directory / name).write_bytes((b"\xef\xbb\xbf" if bom else b"") + text.encode("utf-8"))
    return directory


def read_rejects(path: Path) -> list[dict[str, str]]:
    """The rows of a rejects report (raw rows may be longer than the csv module's default limit)."""
    default_limit = csv.field_size_limit(10**7)
    try:
        with open(path, encoding="utf-8", newline="") as file:
            reader = csv.DictReader(file)
            assert reader.fieldnames == ["file", "line", "kind", "reason", "raw"]
            return list(reader)
    finally:
        csv.field_size_limit(default_limit)
