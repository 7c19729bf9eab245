"""Dirty rows for the generated export, so the loader's rejects path runs at scale.

Dirty rows are extra rows mixed in among the clean ones; no clean row is ever changed, so the clean data
is byte-for-byte the same at every dirty rate. Each dirty row is wrong in exactly one way (its kind) and
is otherwise valid, so a loader can classify it unambiguously:

- its own id is fresh (from DIRTY_ID_BASE up, far above any clean id), except for `duplicate_id`, which
  repeats a clean id with different content and is always written after the row it duplicates;
- what it points at exists and is clean, except for the kinds about references, which point at ids from
  DANGLING_ID_BASE up (no row, clean or dirty, has those) or at another product's characteristic;
- nothing clean ever points at a dirty row.

Kinds cycle round-robin per file, so a file with at least as many dirty rows as kinds has every kind.
"""

from __future__ import annotations

import random
from collections import Counter
from typing import NamedTuple

from atelier_etl.generate_text import TextPools, photo_url, quote

REVIEWS, PHOTOS, CHARACTERISTICS, CHARACTERISTIC_REVIEWS = (
    "reviews.csv",
    "reviews_photos.csv",
    "characteristics.csv",
    "characteristic_reviews.csv",
)
KINDS = {
    REVIEWS: (
        "wrong_column_count",
        "non_numeric_id",
        "rating_out_of_range",
        "duplicate_id",
        "bad_date",
        "bad_boolean",
    ),
    PHOTOS: ("wrong_column_count", "non_numeric_id", "duplicate_id", "missing_review"),
    CHARACTERISTICS: ("wrong_column_count", "non_numeric_id", "duplicate_id"),
    CHARACTERISTIC_REVIEWS: (
        "wrong_column_count",
        "non_numeric_id",
        "duplicate_id",
        "missing_review",
        "missing_characteristic",
        "value_out_of_range",
        "characteristic_of_other_product",
    ),
}
DIRTY_ID_BASE = 10**15
DANGLING_ID_BASE = 2 * 10**15
CHARACTERISTIC_NAMES = ("Fit", "Length", "Comfort", "Quality", "Size", "Width")
QUOTED_NAMES = tuple(quote(name) for name in CHARACTERISTIC_NAMES)
NON_NUMERIC_IDS = ("abc", "x{n}", "{n}a", "n/a", "id-{n}")
BAD_DATES = ("yesterday", "not-a-date", "soon")
BAD_BOOLEANS = ("maybe", "unsure")
OUT_OF_RANGE_RATINGS = ("0", "6", "7", "8", "9")
DATE_START_MS = 1_577_836_800_000  # 2020-01-01T00:00:00Z
DATE_END_MS = 1_640_995_200_000  # 2022-01-01T00:00:00Z, exclusive


class ProductRows(NamedTuple):
    """Where one product's clean rows are: its characteristics, reviews and characteristic ratings."""

    product_id: int
    names: tuple[str, ...]  # quoted, as written; at most 5 of the 6, so one is always left over
    first_characteristic_id: int
    characteristics: int
    first_review_id: int
    reviews: int
    first_rating_id: int  # ratings run review by review, each over all the product's characteristics
    first_photo_id: int
    photos: int


class DirtyRows:
    """Mixes dirty rows into each chunk of clean rows and counts them by file and kind."""

    def __init__(self, rate: float, pools: TextPools, eol: str) -> None:
        self.rate = rate
        self.pools = pools
        self.eol = eol
        self.clean: Counter[str] = Counter()
        self.dirty = {name: Counter[str]() for name in KINDS}
        self._totals: Counter[str] = Counter()
        self._fresh_ids = Counter(dict.fromkeys(KINDS, DIRTY_ID_BASE))
        self._dangling_id = DANGLING_ID_BASE
        # The products dirty rows point at: the latest chunk that had a review (chunk 0 always does).
        self._products: list[ProductRows] = []
        self._reviewed: list[ProductRows] = []
        self._with_photos: list[ProductRows] = []  # the latest chunk's with a photo (product 1 has one)

    def total(self, name: str) -> int:
        return self._totals[name]

    def mix(self, name: str, rows: list[str], first_id: int, rng: random.Random) -> list[str]:
        """`rows` (clean, ids from `first_id`) with this chunk's share of dirty rows spread among them."""
        self.clean[name] += len(rows)
        wanted = int(self.rate * self.clean[name]) - self.total(name)
        if wanted <= 0 or self.clean[name] == 0 or not self._reviewed:
            return rows
        placed = []
        for _ in range(wanted):
            row, after_id = self._row(name, rng)
            # Past the row of id after_id: ids grow at least as fast as positions (gaps only add to them).
            placed.append((rng.randint(min(len(rows), max(0, after_id - first_id + 1)), len(rows)), row))
        placed.sort(key=lambda item: item[0])
        mixed: list[str] = []
        start = 0
        for position, row in placed:
            mixed.extend(rows[start:position])
            mixed.append(row)
            start = position
        mixed.extend(rows[start:])
        return mixed

    def tail(self, name: str, rng: random.Random) -> list[str]:
        """Rows to append after everything else, so that any rate above 0 shows every kind at least once."""
        if self.rate == 0:
            return []
        missing = len(KINDS[name]) - self.total(name)
        return [self._row(name, rng)[0] for _ in range(missing)]

    def see_chunk(self, products: list[ProductRows]) -> None:
        reviewed = [product for product in products if product.reviews]
        if reviewed:
            self._products, self._reviewed = products, reviewed
        with_photos = [product for product in products if product.photos]
        if with_photos:
            self._with_photos = with_photos

    def _row(self, name: str, rng: random.Random) -> tuple[str, int]:
        """One dirty row of the file's next kind, and the clean id it must come after (0: none)."""
        kind = KINDS[name][self.total(name) % len(KINDS[name])]
        self.dirty[name][kind] += 1
        self._totals[name] += 1
        self._fresh_ids[name] += 1
        fields, after_id = _BUILDERS[name](self, kind, rng)
        if kind == "non_numeric_id":
            fields[0] = rng.choice(NON_NUMERIC_IDS).format(n=rng.randrange(1, 1000))
        elif kind == "wrong_column_count":
            # On one line: the loader rejects a record of several lines and the wrong width by its first
            # line alone and reads the next line again (a quote left open must not swallow good rows), so
            # a body's line break would turn this one reject into two of other kinds.
            fields = [" ".join(field.splitlines()) for field in fields]
            fields = fields[:-1] if rng.random() < 0.5 else [*fields, rng.choice(['"extra"', "0"])]
        return ",".join(fields) + self.eol, after_id

    def _fresh_id(self, name: str) -> str:
        return str(self._fresh_ids[name])

    def _dangling(self) -> str:
        self._dangling_id += 1
        return str(self._dangling_id)

    def _review(self, kind: str, rng: random.Random) -> tuple[list[str], int]:
        pools = self.pools
        product = rng.choice(self._products)
        fields = [
            self._fresh_id(REVIEWS),
            str(product.product_id),
            str(rng.randint(1, 5)),
            str(rng.randrange(DATE_START_MS, DATE_END_MS)),
            rng.choice(pools.summaries),
            rng.choice(pools.bodies),
            rng.choice(("true", "false")),
            "false",
            rng.choice(pools.names),
            rng.choice(pools.emails),
            "null",
            str(rng.randrange(30)),
        ]
        after_id = 0
        if kind == "duplicate_id":
            product = rng.choice(self._reviewed)
            after_id = product.first_review_id + rng.randrange(product.reviews)
            fields[:2] = [str(after_id), str(product.product_id)]
        elif kind == "rating_out_of_range":
            fields[2] = rng.choice(OUT_OF_RANGE_RATINGS)
        elif kind == "bad_date":
            fields[3] = rng.choice(BAD_DATES)
        elif kind == "bad_boolean":
            fields[6] = rng.choice(BAD_BOOLEANS)
        return fields, after_id

    def _photo(self, kind: str, rng: random.Random) -> tuple[list[str], int]:
        product = rng.choice(self._reviewed)
        review_id = product.first_review_id + rng.randrange(product.reviews)
        fields = [self._fresh_id(PHOTOS), str(review_id), rng.choice(self.pools.photo_urls)]
        after_id = 0
        if kind == "duplicate_id":
            # A url no clean photo has, so the duplicate's content always differs from the original's.
            photographed = rng.choice(self._with_photos)
            after_id = photographed.first_photo_id + rng.randrange(photographed.photos)
            fields[0], fields[2] = str(after_id), quote(photo_url(rng) + "&dup=1")
        elif kind == "missing_review":
            fields[1] = self._dangling()
        return fields, after_id

    def _characteristic(self, kind: str, rng: random.Random) -> tuple[list[str], int]:
        product = rng.choice(self._products)
        fields = [self._fresh_id(CHARACTERISTICS), str(product.product_id), rng.choice(QUOTED_NAMES)]
        after_id = 0
        if kind == "duplicate_id":
            # A name the product does not have: differs from the duplicated row whichever product it is of.
            after_id = product.first_characteristic_id + rng.randrange(product.characteristics)
            unused = [name for name in QUOTED_NAMES if name not in product.names]
            fields[0], fields[2] = str(after_id), rng.choice(unused)
        return fields, after_id

    def _rating(self, kind: str, rng: random.Random) -> tuple[list[str], int]:
        product = rng.choice(self._reviewed)
        nth_review, nth_characteristic = (
            rng.randrange(product.reviews),
            rng.randrange(product.characteristics),
        )
        review_id = product.first_review_id + nth_review
        characteristic_id = product.first_characteristic_id + nth_characteristic
        fields = [self._fresh_id(CHARACTERISTIC_REVIEWS), str(characteristic_id), str(review_id)]
        fields.append(str(rng.randint(1, 5)))
        after_id = 0
        if kind == "duplicate_id":
            # The id of this (characteristic, review) pair's clean rating, on another of the product's
            # characteristics: still a valid rating, but never the duplicated row's content.
            after_id = product.first_rating_id + nth_review * product.characteristics + nth_characteristic
            other = (nth_characteristic + rng.randrange(1, product.characteristics)) % product.characteristics
            fields[:2] = [str(after_id), str(product.first_characteristic_id + other)]
        elif kind == "missing_review":
            fields[2] = self._dangling()
        elif kind == "missing_characteristic":
            fields[1] = self._dangling()
        elif kind == "value_out_of_range":
            fields[3] = rng.choice(("0", "6"))
        elif kind == "characteristic_of_other_product":
            others = [other for other in self._products if other.product_id != product.product_id]
            # Product 1's first characteristic is id 1; a chunk of product 1 alone cannot happen, as
            # dirty rows need at least two products.
            other_id = rng.choice(others).first_characteristic_id if others else 1
            fields[1] = str(other_id)
        return fields, after_id


_BUILDERS = {
    REVIEWS: DirtyRows._review,
    PHOTOS: DirtyRows._photo,
    CHARACTERISTICS: DirtyRows._characteristic,
    CHARACTERISTIC_REVIEWS: DirtyRows._rating,
}
