"""The export's distributions, as lookup tables the generator's hot loop indexes with `getrandbits`.

A table of 2**bits entries holds each value in proportion to its weight, so one draw is one
`getrandbits` call and one index, instead of a `random.choices` call per field.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from itertools import combinations
from typing import TypeVar

from atelier_etl.generate_dirty import CHARACTERISTIC_NAMES
from atelier_etl.generate_text import TextPools, quote

# Reviews per product: floor of a log-normal, which gives the export's 5.77 on average, ~9% of products
# without a review, and a long tail reaching a few hundred at a million products.
REVIEWS_MU, REVIEWS_SIGMA, REVIEWS_CAP = 1.3369, 1.0, 1_000
CHARACTERISTICS_PER_PRODUCT = ((3, 0.70), (4, 0.25), (5, 0.05))  # mean 3.35
PHOTOS_PER_REVIEW = ((0, 0.78), (1, 0.10), (2, 0.05), (3, 0.03), (4, 0.02), (5, 0.02))  # mean 0.47
RATINGS = ((1, 0.10), (2, 0.09), (3, 0.17), (4, 0.26), (5, 0.38))
RECOMMEND_BY_RATING = {1: 0.30, 2: 0.45, 3: 0.70, 4: 0.88, 5: 0.90}  # ~76% overall
VALUE_BY_DISTANCE = (1.0, 0.45, 0.15, 0.05, 0.02)  # a characteristic's value clusters near the rating
REPORTED = 0.015
RESPONDED, EMPTY_RESPONSE = 0.10, 0.006  # the empty quoted string "" also means no response
HELPFULNESS = [(h, 0.97 * 0.2 * 0.8**h) for h in range(31)] + [(h, 0.03 / 120) for h in range(31, 151)]
TRUE_SPELLINGS, FALSE_SPELLINGS = ("true", "TRUE", "True", "1"), ("false", "FALSE", "False", "0")

T = TypeVar("T")


def lookup_table(weights: Sequence[tuple[T, float]], bits: int = 10) -> list[T]:
    """2**bits entries, each value repeated in proportion to its weight: `table[getrandbits(bits)]`."""
    size, total = 1 << bits, sum(weight for _, weight in weights)
    table: list[T] = []
    cumulative = 0.0
    for value, weight in weights:
        cumulative += weight
        table.extend([value] * (round(cumulative / total * size) - len(table)))
    return table


def boolean_table(p_true: float, mixed: bool, bits: int = 10) -> list[str]:
    size = 1 << bits
    trues = round(p_true * size)
    return [(TRUE_SPELLINGS if i < trues else FALSE_SPELLINGS)[i % 4 if mixed else 0] for i in range(size)]


@dataclass(frozen=True)
class Tables:
    ratings: list[tuple[str, list[str], list[str]]]  # rating, its recommend table, its value table
    reported: list[str]
    responses: list[str]
    helpfulness: list[str]
    photos: list[int]
    characteristics: list[tuple[str, ...]]  # quoted names, in the order the export lists them

    @classmethod
    def build(cls, pools: TextPools, mixed_booleans: bool) -> Tables:
        by_rating = {}
        for rating, _ in RATINGS:
            values = [(str(v), VALUE_BY_DISTANCE[abs(v - rating)]) for v in range(1, 6)]
            recommend = boolean_table(RECOMMEND_BY_RATING[rating], mixed_booleans)
            by_rating[rating] = (str(rating), recommend, lookup_table(values))
        responses = [("null", 1 - RESPONDED), ('""', EMPTY_RESPONSE)]
        responses += [(text, (RESPONDED - EMPTY_RESPONSE) / len(pools.responses)) for text in pools.responses]
        names = [quote(name) for name in CHARACTERISTIC_NAMES]
        sets = []
        for count, weight in CHARACTERISTICS_PER_PRODUCT:
            choices = list(combinations(names, count))
            sets += [(choice, weight / len(choices)) for choice in choices]
        return cls(
            ratings=lookup_table([(by_rating[rating], weight) for rating, weight in RATINGS]),
            reported=boolean_table(REPORTED, mixed_booleans, bits=11),
            responses=lookup_table(responses, bits=12),
            helpfulness=lookup_table([(str(h), weight) for h, weight in HELPFULNESS], bits=12),
            photos=lookup_table(PHOTOS_PER_REVIEW),
            characteristics=lookup_table(sets, bits=12),
        )
