"""`atelier-verify`: recompute every product summary with GROUP BY and report where the stored ones differ.

The stored summaries (product_summaries, characteristic_summaries) are what GET /reviews/meta serves.
This recomputes them from the reviews in one snapshot (a REPEATABLE READ, read-only transaction), the
contract's own way: counts per star and per recommendation, and each characteristic's mean as
round(avg(value), 16)::text, compared with the string the API prints from the stored sum and count.
The queries are written independently of the loader's build (summaries.py), so a mistake in either
shows up here. `--repair` corrects the rows that differ, in place, while the API serves and writes
(summaries.CORRECT_PRODUCT_ROWS says why adding each row's error is exact under concurrent writes).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field, fields
from typing import Any

import asyncpg

from atelier_etl import environment, staging, summaries
from atelier_etl.load import LoadError, connect

EXAMPLES = 20  # differences listed per table; all of them are counted
REPAIR_BATCH = 5_000  # rows of each table corrected per transaction
REPAIR_ATTEMPTS = 5  # tries of a batch rolled back to end a deadlock

# The counts of each product's reviews that are not reported, per star then per product, against the
# stored row (every product with a review has one, even when all its reviews are reported).
PRODUCT_DIFFERENCES = """
    WITH per_star AS (
        SELECT product_id, rating,
               count(*) FILTER (WHERE NOT reported) AS reviews,
               count(*) FILTER (WHERE recommend AND NOT reported) AS recommending
        FROM reviews
        GROUP BY product_id, rating
    ), expected AS (
        SELECT
            product_id,
            ARRAY[
                coalesce(sum(reviews) FILTER (WHERE rating = 1), 0),
                coalesce(sum(reviews) FILTER (WHERE rating = 2), 0),
                coalesce(sum(reviews) FILTER (WHERE rating = 3), 0),
                coalesce(sum(reviews) FILTER (WHERE rating = 4), 0),
                coalesce(sum(reviews) FILTER (WHERE rating = 5), 0)
            ]::integer[] AS ratings,
            sum(recommending)::integer AS recommended,
            sum(reviews - recommending)::integer AS not_recommended
        FROM per_star
        GROUP BY product_id
    )
    SELECT
        coalesce(e.product_id, s.product_id) AS product_id,
        e.ratings AS expected_ratings, s.ratings AS stored_ratings,
        e.recommended AS expected_recommended, s.recommended AS stored_recommended,
        e.not_recommended AS expected_not_recommended, s.not_recommended AS stored_not_recommended
    FROM expected AS e
    FULL JOIN product_summaries AS s ON s.product_id = e.product_id
    WHERE (e.ratings, e.recommended, e.not_recommended)
          IS DISTINCT FROM (s.ratings, s.recommended, s.not_recommended)
    ORDER BY 1
"""

# Each characteristic's ratings by reviews that are not reported: sum, count and the contract's mean,
# against the stored sum and count and the mean the API prints from them (atelier_api/summaries.py).
CHARACTERISTIC_DIFFERENCES = """
    WITH expected AS (
        SELECT c.id AS characteristic_id, c.product_id, c.name,
               coalesce(sum(cr.value), 0)::bigint AS rating_sum, count(cr.value) AS rating_count,
               round(avg(cr.value), 16)::text AS mean
        FROM characteristics AS c
        LEFT JOIN (characteristic_reviews AS cr JOIN reviews AS r ON r.id = cr.review_id AND NOT r.reported)
               ON cr.characteristic_id = c.id
        GROUP BY c.id, c.product_id, c.name
    ), stored AS (
        SELECT characteristic_id, product_id, name, rating_sum, rating_count,
               round(rating_sum::numeric / nullif(rating_count, 0), 16)::text AS mean
        FROM characteristic_summaries
    )
    SELECT
        coalesce(e.characteristic_id, s.characteristic_id) AS characteristic_id,
        coalesce(e.product_id, s.product_id) AS product_id,
        e.product_id AS expected_product_id, e.name AS expected_name, s.name AS stored_name,
        e.rating_sum AS expected_sum, s.rating_sum AS stored_sum,
        e.rating_count AS expected_count, s.rating_count AS stored_count,
        e.mean AS expected_mean, s.mean AS served_mean
    FROM expected AS e
    FULL JOIN stored AS s ON s.characteristic_id = e.characteristic_id
    WHERE (e.product_id, e.name, e.rating_sum, e.rating_count, e.mean)
          IS DISTINCT FROM (s.product_id, s.name, s.rating_sum, s.rating_count, s.mean)
    ORDER BY 1
"""

COUNT_ROWS = (
    "SELECT (SELECT count(*) FROM product_summaries), (SELECT count(*) FROM characteristic_summaries)"
)


@dataclass
class Verification:
    products_checked: int = 0
    characteristics_checked: int = 0
    product_differences: int = 0
    characteristic_differences: int = 0
    examples: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    # After a repair: the differences a check run after it found (0 when it worked); None: no repair.
    remaining: int | None = None
    # Every differing row (the examples are the first few), what --repair corrects; not printed.
    rows: dict[str, list[asyncpg.Record]] = field(default_factory=dict, repr=False)

    @property
    def differences(self) -> int:
        return self.product_differences + self.characteristic_differences

    @property
    def repaired(self) -> bool:
        return self.remaining is not None

    def as_dict(self) -> dict[str, Any]:
        shown = {each.name: getattr(self, each.name) for each in fields(self) if each.name != "rows"}
        derived = {"repaired": self.repaired, "differences": self.differences, "ok": self.differences == 0}
        return shown | derived


async def verify(conn: asyncpg.Connection) -> Verification:
    """Compare the stored summaries with a recomputation, in one snapshot."""
    result = Verification()
    async with conn.transaction(isolation="repeatable_read", readonly=True):
        await conn.execute("SET LOCAL work_mem = '64MB'")
        result.products_checked, result.characteristics_checked = await conn.fetchrow(COUNT_ROWS)
        products = await conn.fetch(PRODUCT_DIFFERENCES)
        characteristics = await conn.fetch(CHARACTERISTIC_DIFFERENCES)
    result.product_differences = len(products)
    result.characteristic_differences = len(characteristics)
    result.rows = {"products": products, "characteristics": characteristics}
    result.examples = {name: [dict(row) for row in found[:EXAMPLES]] for name, found in result.rows.items()}
    return result


async def run(database_url: str, repair: bool) -> Verification:
    conn = await connect(database_url)
    try:
        await conn.execute("SET statement_timeout = 0")
        # A load switching tables between the check and the repair would make its errors meaningless: the
        # repair holds the loader's lock (one loader at a time) from before the check to its end.
        if repair and not await staging.try_lock(conn):
            raise LoadError("an atelier-load is running against this database; repair after it")
        result = await verify(conn)
        if repair and result.differences:
            await repair_rows(conn, result)
            result.remaining = (await verify(conn)).differences
    finally:
        await conn.close()
    return result


async def repair_rows(conn: asyncpg.Connection, found: Verification) -> None:
    """Correct every differing row in place (summaries.py says why it is exact while the API writes):
    missing rows are added (computed from the reviews) and checked again first; then REPAIR_BATCH rows
    of each table per transaction, each telling the API's replicas to drop every cached answer. A batch
    PostgreSQL rolls back to end a deadlock (a session locking rows in another order than the API) is
    tried again."""
    missing_products = [row["product_id"] for row in found.rows["products"] if row["stored_ratings"] is None]
    missing_characteristics = [
        row["characteristic_id"] for row in found.rows["characteristics"] if row["stored_name"] is None
    ]
    if missing_products or missing_characteristics:
        await summaries.add_missing_rows(conn, missing_products, missing_characteristics)
        found = await verify(conn)  # every row's error, now that every row is stored
    # A row still missing was removed meanwhile (by a load, which the lock rules out, or by hand): left.
    product_rows = [row for row in found.rows["products"] if row["stored_ratings"] is not None]
    characteristic_rows = [row for row in found.rows["characteristics"] if row["stored_name"] is not None]
    products = [_product_errors(row) for row in product_rows]
    characteristics = [_characteristic_errors(row) for row in characteristic_rows]
    for start in range(0, max(len(products), len(characteristics)), REPAIR_BATCH):
        batch = slice(start, start + REPAIR_BATCH)
        # The products of the batch's characteristics too: the API locks a product's row before its
        # characteristics' rows.
        lock_products = {row["product_id"] for row in product_rows[batch] + characteristic_rows[batch]}
        for attempt in range(1, REPAIR_ATTEMPTS + 1):
            try:
                async with conn.transaction():
                    await summaries.correct(
                        conn, list(lock_products), products[batch], characteristics[batch]
                    )
                    await staging.notify_everything(conn)
                break
            except asyncpg.DeadlockDetectedError:
                if attempt == REPAIR_ATTEMPTS:
                    raise


def _product_errors(row: asyncpg.Record) -> list[Any]:
    """[product_id, each column's error]: recomputed minus stored, no recomputed row counting as zeros
    (a product without reviews)."""
    expected = [*(row["expected_ratings"] or [0] * 5), row["expected_recommended"] or 0]
    expected.append(row["expected_not_recommended"] or 0)
    stored = [*row["stored_ratings"], row["stored_recommended"], row["stored_not_recommended"]]
    return [row["product_id"], *(e - s for e, s in zip(expected, stored, strict=True))]


def _characteristic_errors(row: asyncpg.Record) -> list[Any]:
    """[characteristic_id, the sum's and the count's errors, the product_id and name to set]."""
    errors = [
        (row["expected_sum"] or 0) - row["stored_sum"],
        (row["expected_count"] or 0) - row["stored_count"],
    ]
    return [row["characteristic_id"], *errors, row["expected_product_id"], row["expected_name"]]


EPILOG = """\
exit codes:
  0    the stored summaries equal the recomputation (or --repair corrected them, and a check after
       it found none)
  1    differences found (listed), or the check failed (database unreachable, SQL error, ...)
  2    usage error

environment:
  DATABASE_URL  postgresql://user:password@host:port/dbname (--database-url overrides it)
"""


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="atelier-verify",
        description="Recompute every product's rating summary from the reviews (GROUP BY) and report where "
        "the stored summaries, which GET /reviews/meta serves, differ.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--database-url", metavar="URL", help="overrides DATABASE_URL")
    parser.add_argument(
        "--repair",
        action="store_true",
        help="correct the rows that differ, in place (the API keeps serving and writing)",
    )
    parser.add_argument("--json", action="store_true", help="print the result as one JSON object")
    args = parser.parse_args(argv)
    database_url, refused = environment.database_url(parser, args.database_url)
    if refused:
        print(f"atelier-verify: error: {refused}", file=sys.stderr)
        return 2
    try:
        result = asyncio.run(run(database_url, args.repair))
    except (LoadError, asyncpg.PostgresError, asyncpg.InterfaceError, OSError) as exc:
        print(f"atelier-verify: error: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(result.as_dict(), default=str))
    else:
        _print(result)
    return 0 if result.differences == 0 or result.remaining == 0 else 1


def _print(result: Verification) -> None:
    print(
        f"checked {result.products_checked} product summaries and "
        f"{result.characteristics_checked} characteristic summaries"
    )
    for table, count in (
        ("products", result.product_differences),
        ("characteristics", result.characteristic_differences),
    ):
        print(f"{table}: {count} differences")
        for example in result.examples.get(table, []):
            print("  " + json.dumps(example, default=str))
    if result.repaired:
        print(
            "repaired: every row that differed was corrected in place; "
            f"a check after the repair found {result.remaining} differences"
        )


if __name__ == "__main__":
    sys.exit(main())
