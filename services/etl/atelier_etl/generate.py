"""`atelier-generate`: a seeded stand-in for the legacy Atelier export (the four CSV files of data.md).

Same arguments, same bytes. Products are generated in chunks of CHUNK_PRODUCTS, each from its own
`random.Random` seeded with (seed, chunk index), and every chunk's rows are built as one string per file
and written in one call, so memory stays flat at any scale. The hot loop only indexes precomputed
tables: text pools of ready-quoted fields (generate_text) and lookup tables of the export's
distributions (generate_tables). Dirty rows (generate_dirty) are extra rows mixed in after a chunk's
clean rows are drawn, so the clean data does not depend on the dirty rate.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import sys
import time
from collections.abc import Callable, Sequence
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from atelier_etl.generate_dirty import (
    CHARACTERISTIC_REVIEWS,
    CHARACTERISTICS,
    DATE_END_MS,
    DATE_START_MS,
    KINDS,
    PHOTOS,
    REVIEWS,
    DirtyRows,
    ProductRows,
)
from atelier_etl.generate_tables import REVIEWS_CAP, REVIEWS_MU, REVIEWS_SIGMA, Tables
from atelier_etl.generate_text import (
    BODY_POOL_BITS,
    EMAIL_POOL_BITS,
    NAME_POOL_BITS,
    PHOTO_POOL_BITS,
    SUMMARY_POOL_BITS,
    TextPools,
    build_pools,
)

HEADERS = {
    REVIEWS: "id,product_id,rating,date,summary,body,recommend,reported,reviewer_name,reviewer_email,"
    "response,helpfulness",
    PHOTOS: "id,review_id,url",
    CHARACTERISTICS: "id,product_id,name",
    CHARACTERISTIC_REVIEWS: "id,characteristic_id,review_id,value",
}
FILES = tuple(HEADERS)
DEFAULT_PRODUCTS = 1_000_011
MAX_PRODUCTS = 2_147_483_647  # product_id is a Postgres integer
CHUNK_PRODUCTS = 2_000  # part of the output: changing it changes every file
# One product in 2**GAP_BITS (never the first) starts each file's ids 1-4 past where the previous
# product's ended: the real export's ids are not dense, and a loader must not count on them being so.
# A product's own rows keep consecutive ids (the dirty rows find them from its first ids).
GAP_BITS = 4
MANIFEST = "manifest.json"
# In manifest.json: which generator wrote the files. Raised when the same arguments give other bytes
# (2: ids with gaps; 3: a dirty row of the wrong width on one line), so that a folder written before is
# generated again, not reused (stack.generate).
GENERATOR_VERSION = 3
PARTIAL_SUFFIX = ".partial"  # a file being written; renamed once every file is complete
BOM = b"\xef\xbb\xbf"


def clean_chunk(
    rng: random.Random,
    tables: Tables,
    pools: TextPools,
    product_ids: range,
    next_ids: dict[str, int],
    eol: str,
) -> tuple[dict[str, list[str]], list[ProductRows]]:
    """The clean rows of a chunk of products, and where each product's rows are. Advances `next_ids`."""
    bits, uniform, gauss, exp = rng.getrandbits, rng.random, rng.gauss, math.exp
    ratings, reported, responses = tables.ratings, tables.reported, tables.responses
    helpfulness, photo_counts, characteristic_sets = tables.helpfulness, tables.photos, tables.characteristics
    summaries, bodies, names, emails = pools.summaries, pools.bodies, pools.names, pools.emails
    urls = pools.photo_urls
    sb, bb, nb, eb, ub = SUMMARY_POOL_BITS, BODY_POOL_BITS, NAME_POOL_BITS, EMAIL_POOL_BITS, PHOTO_POOL_BITS
    date_start, date_span = DATE_START_MS, DATE_END_MS - DATE_START_MS
    mu, sigma, cap = REVIEWS_MU, REVIEWS_SIGMA, REVIEWS_CAP
    review_id, photo_id = next_ids[REVIEWS], next_ids[PHOTOS]
    characteristic_id, rating_id = next_ids[CHARACTERISTICS], next_ids[CHARACTERISTIC_REVIEWS]
    reviews: list[str] = []
    photos: list[str] = []
    characteristics: list[str] = []
    characteristic_reviews: list[str] = []
    add_review, add_photo = reviews.append, photos.append
    add_characteristic, add_rating = characteristics.append, characteristic_reviews.append
    products = []

    for product_id in product_ids:
        if product_id > 1 and not bits(GAP_BITS):  # ids are not dense (data.md): a gap in each file's ids
            review_id, photo_id = review_id + 1 + bits(2), photo_id + 1 + bits(2)
            characteristic_id, rating_id = characteristic_id + 1 + bits(2), rating_id + 1 + bits(2)
        characteristic_names = characteristic_sets[bits(12)]
        first_characteristic_id, first_review_id, first_rating_id = characteristic_id, review_id, rating_id
        first_photo_id = photo_id
        for name in characteristic_names:
            add_characteristic(f"{characteristic_id},{product_id},{name}{eol}")
            characteristic_id += 1
        characteristic_ids = range(first_characteristic_id, characteristic_id)
        review_count = min(int(exp(gauss(mu, sigma))), cap)
        if product_id == 1 and review_count == 0:
            review_count = 1  # so even a tiny export has a review (and review 1 a photo) to point at
        for _ in range(review_count):
            rating, recommend, values = ratings[bits(10)]
            add_review(
                f"{review_id},{product_id},{rating},{date_start + int(uniform() * date_span)},"
                f"{summaries[bits(sb)]},{bodies[bits(bb)]},{recommend[bits(10)]},{reported[bits(11)]},"
                f"{names[bits(nb)]},{emails[bits(eb)]},{responses[bits(12)]},{helpfulness[bits(12)]}{eol}"
            )
            for _ in range(photo_counts[bits(10)] or int(review_id == 1)):
                add_photo(f"{photo_id},{review_id},{urls[bits(ub)]}{eol}")
                photo_id += 1
            for cid in characteristic_ids:
                add_rating(f"{rating_id},{cid},{review_id},{values[bits(10)]}{eol}")
                rating_id += 1
            review_id += 1
        products.append(
            ProductRows(
                product_id,
                characteristic_names,
                first_characteristic_id,
                len(characteristic_names),
                first_review_id,
                review_count,
                first_rating_id,
                first_photo_id,
                photo_id - first_photo_id,
            )
        )

    next_ids.update(
        {
            REVIEWS: review_id,
            PHOTOS: photo_id,
            CHARACTERISTICS: characteristic_id,
            CHARACTERISTIC_REVIEWS: rating_id,
        }
    )
    rows = {
        REVIEWS: reviews,
        PHOTOS: photos,
        CHARACTERISTICS: characteristics,
        CHARACTERISTIC_REVIEWS: characteristic_reviews,
    }
    return rows, products


@dataclass(frozen=True)
class Options:
    out: Path
    products: int = DEFAULT_PRODUCTS
    seed: int = 42
    dirty_rate: float = 0.0
    bom: bool = False
    crlf: bool = False
    mixed_booleans: bool = False

    def __post_init__(self) -> None:
        if not 1 <= self.products <= MAX_PRODUCTS:
            raise ValueError(f"products must be between 1 and {MAX_PRODUCTS:,}, got {self.products}")
        if not 0 <= self.dirty_rate <= 1:
            raise ValueError(f"dirty_rate must be between 0 and 1, got {self.dirty_rate}")
        if self.dirty_rate > 0 and self.products < 2:
            raise ValueError("dirty rows need at least 2 products (a characteristic of another product)")


def generate(options: Options, advance: Callable[[int], object] = lambda products: None) -> dict[str, Any]:
    """Write the four files and manifest.json into `options.out`; return the manifest.

    The files are written under partial names and take their real names only once all four are complete,
    manifest.json last: a run that fails or is interrupted leaves the folder as it was (the previous
    export whole, or nothing), never truncated files beside an earlier run's manifest.
    """
    options.out.mkdir(parents=True, exist_ok=True)
    partial = {name: options.out / f"{name}{PARTIAL_SUFFIX}" for name in FILES}
    try:
        manifest = _write(options, partial, advance)
    except BaseException:
        for path in partial.values():
            path.unlink(missing_ok=True)
        raise
    (options.out / MANIFEST).unlink(missing_ok=True)
    for name, path in partial.items():
        path.replace(options.out / name)
    written = options.out / f"{MANIFEST}{PARTIAL_SUFFIX}"
    written.write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
    written.replace(options.out / MANIFEST)
    return manifest


def _write(options: Options, paths: dict[str, Path], advance: Callable[[int], object]) -> dict[str, Any]:
    eol = "\r\n" if options.crlf else "\n"
    pools = build_pools(options.seed)
    tables = Tables.build(pools, options.mixed_booleans)
    dirty = DirtyRows(options.dirty_rate, pools, eol)
    next_ids = dict.fromkeys(FILES, 1)
    with ExitStack() as stack:
        files = {name: stack.enter_context(open(paths[name], "wb")) for name in FILES}
        for name, file in files.items():
            file.write((BOM if options.bom else b"") + f"{HEADERS[name]}{eol}".encode())
        for chunk, start in enumerate(range(1, options.products + 1, CHUNK_PRODUCTS)):
            product_ids = range(start, min(start + CHUNK_PRODUCTS, options.products + 1))
            rng = random.Random(f"atelier:{options.seed}:{chunk}")
            first_ids = dict(next_ids)
            rows, products = clean_chunk(rng, tables, pools, product_ids, next_ids, eol)
            dirty.see_chunk(products)
            for name, file in files.items():
                file.write("".join(dirty.mix(name, rows[name], first_ids[name], rng)).encode())
            advance(len(product_ids))
        tail_rng = random.Random(f"atelier:{options.seed}:tail")
        for name, file in files.items():
            file.write("".join(dirty.tail(name, tail_rng)).encode())

    manifest = {
        "generator_version": GENERATOR_VERSION,
        "seed": options.seed,
        "products": options.products,
        "dirty_rate": options.dirty_rate,
        "format": {"bom": options.bom, "crlf": options.crlf, "mixed_booleans": options.mixed_booleans},
        "files": {
            name: {
                "rows": dirty.clean[name] + dirty.total(name),
                "clean": dirty.clean[name],
                "dirty": {kind: dirty.dirty[name][kind] for kind in KINDS[name] if dirty.dirty[name][kind]},
            }
            for name in FILES
        },
    }
    return manifest


def _products(text: str) -> int:
    value = int(text)
    if not 1 <= value <= MAX_PRODUCTS:
        raise argparse.ArgumentTypeError(f"must be between 1 and {MAX_PRODUCTS:,}, got {value}")
    return value


def _rate(text: str) -> float:
    value = float(text)
    if not 0 <= value <= 1:  # also refuses nan
        raise argparse.ArgumentTypeError(f"must be between 0 and 1, got {text}")
    return value


def parse_args(argv: Sequence[str] | None = None) -> tuple[Options, bool]:
    parser = argparse.ArgumentParser(
        prog="atelier-generate", description="Write a seeded stand-in for the legacy Atelier reviews export."
    )
    parser.add_argument("--out", type=Path, required=True, help="folder for the CSV files and manifest.json")
    parser.add_argument("--products", type=_products, default=DEFAULT_PRODUCTS, help="default: %(default)s")
    parser.add_argument("--seed", type=int, default=42, help="default: %(default)s")
    parser.add_argument(
        "--dirty-rate", type=_rate, default=0.0, help="extra dirty rows per clean row, 0 to 1 (default: 0)"
    )
    parser.add_argument("--bom", action="store_true", help="start each file with a UTF-8 byte-order mark")
    parser.add_argument("--crlf", action="store_true", help="end rows with CRLF instead of LF")
    parser.add_argument(
        "--mixed-booleans", action="store_true", help="spell booleans variously: true, TRUE, True, 1, ..."
    )
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.add_argument(
        "--force", action="store_true", help="replace export files in --out that have no manifest.json"
    )
    args = parser.parse_args(argv)
    if args.dirty_rate > 0 and args.products < 2:
        parser.error("--dirty-rate above 0 needs --products 2 or more (a characteristic of another product)")
    try:
        args.out.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        parser.error(f"--out {args.out}: cannot create the folder ({error.strerror})")
    if not os.access(args.out, os.W_OK | os.X_OK):
        parser.error(f"--out {args.out}: the folder is not writable")
    foreign = [name for name in FILES if (args.out / name).exists()]
    if foreign and not (args.out / MANIFEST).exists() and not args.force:
        parser.error(
            f"--out {args.out}: holds {', '.join(foreign)} but no {MANIFEST}, so not an export this "
            "generator wrote (a real one?); --force replaces it"
        )
    options = Options(
        out=args.out,
        products=args.products,
        seed=args.seed,
        dirty_rate=args.dirty_rate,
        bom=args.bom,
        crlf=args.crlf,
        mixed_booleans=args.mixed_booleans,
    )
    return options, not args.no_progress and sys.stdout.isatty()


def main(argv: Sequence[str] | None = None) -> int:
    options, show_progress = parse_args(argv)
    try:
        return _run(options, show_progress)
    except OSError as error:  # a full disk, a folder removed meanwhile: the folder is left as it was
        where = f" ({error.filename})" if error.filename else ""
        print(f"atelier-generate: error: {error.strerror or error}{where}; nothing replaced", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("atelier-generate: interrupted; nothing replaced", file=sys.stderr)
        return 130


def _run(options: Options, show_progress: bool) -> int:
    started = time.perf_counter()
    if show_progress:
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TimeElapsedColumn,
            TimeRemainingColumn,
        )

        columns = (BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), TimeRemainingColumn())
        with Progress("[progress.description]{task.description}", *columns) as progress:
            task = progress.add_task("products", total=options.products)
            manifest = generate(options, lambda products: progress.advance(task, products))
    else:
        manifest = generate(options)
    elapsed = time.perf_counter() - started
    print(f"Wrote {options.out} in {elapsed:.1f} s ({options.products:,} products, seed {options.seed}):")
    for name, counts in manifest["files"].items():
        dirty = sum(counts["dirty"].values())
        print(f"  {name:<28}{counts['rows']:>13,} rows ({counts['clean']:,} clean, {dirty:,} dirty)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
