"""ETL benchmark: `atelier-load` against the plainest possible load of the same files, in the same run.

    .venv/bin/python bench/etl.py                       # the full export (~1,000,011 products), ~6 min
    .venv/bin/python bench/etl.py --products 100000     # a smaller one

Baseline: a raw `COPY` of the same four files into unindexed tables (no parsing, no checks, no rejects),
then the same keys and indexes (services/postgres/02-constraints.sql and 03-indexes.sql), one file and
one statement after another on one connection, as issue 7 defines it. It is not the least any loader
could do: the loader itself copies on two connections at once, with COPY FREEZE (no hint-bit rewrite on
the first scan), and builds summaries, checks and indexes on three, which a baseline could do too; so
the ratio says what the loader's work costs against the plain way, not against a parallel one.
Measured: the loader's wall time and peak RSS, and the ratio loader / baseline (targets: at most 1.3x, at
most 300 MB).

PostgreSQL is BENCH_DATABASE_URL or DATABASE_URL (a role that may CREATE DATABASE), else an embedded
server in $DATA_DIR/bench-pg. Both loads go to fresh databases on the same server; the files are read
once beforehand so both find them in the page cache.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import subprocess
import sys
import threading
import time
from datetime import UTC, datetime
from pathlib import Path

import asyncpg
import chaos  # (bench/chaos.py: the verdicts every benchmark ends with)

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
sys.path.insert(0, str(ROOT / "services" / "etl"))
sys.path.insert(0, str(ROOT / "scripts"))
import stack  # noqa: E402  (scripts/stack.py: the local stack behind `make up`)

from atelier_etl.schema import CONSTRAINTS_FILE, INDEXES_FILE, schema_sql  # noqa: E402
from atelier_etl.staging import SESSION_SETTINGS  # noqa: E402

FILES = ("characteristics", "reviews", "reviews_photos", "characteristic_reviews")
# The service's tables with the export's columns as they are in the files (the date stays epoch ms).
BASELINE_TABLES = """
CREATE TABLE reviews (id bigint, product_id integer, rating smallint, date bigint, summary text, body text,
    recommend boolean, reported boolean, reviewer_name text, reviewer_email text, response text,
    helpfulness integer);
CREATE TABLE reviews_photos (id bigint, review_id bigint, url text);
CREATE TABLE characteristics (id bigint, product_id integer, name text);
CREATE TABLE characteristic_reviews (id bigint, characteristic_id bigint, review_id bigint, value smallint);
-- Empty here (the loader computes them): 02/03 name them too.
CREATE TABLE product_summaries (product_id integer, ratings integer[], recommended integer,
    not_recommended integer);
CREATE TABLE characteristic_summaries (characteristic_id bigint, product_id integer, name text,
    rating_sum bigint, rating_count bigint);
"""


async def baseline(url: str, export: Path) -> dict[str, float]:
    """Raw COPY into unindexed tables, then the same keys and indexes; seconds per phase."""
    conn = await asyncpg.connect(url)
    try:
        # The loader's session settings (staging.SESSION_SETTINGS), so the same key and index builds run
        # with the same memory: work_mem sizes the hash joins that validate the foreign keys.
        await conn.execute(SESSION_SETTINGS)
        await conn.execute(BASELINE_TABLES)
        started = time.monotonic()
        for name in FILES:
            await conn.copy_to_table(
                name, source=export / f"{name}.csv", format="csv", header=True, null="null"
            )
        copied = time.monotonic()
        await conn.execute(schema_sql(CONSTRAINTS_FILE))
        keyed = time.monotonic()
        await conn.execute(schema_sql(INDEXES_FILE))
        indexed = time.monotonic()
    finally:
        await conn.close()
    return {
        "copy": copied - started,
        "keys": keyed - copied,
        "indexes": indexed - keyed,
        "total": indexed - started,
    }


# A full-scale generate or load takes minutes; one that runs this long is stuck, and is stopped.
CHILD_DEADLINE = 3600.0  # seconds


def timed_child(command: list[str], env: dict[str, str]) -> tuple[float, int]:
    """Wall seconds and peak RSS (bytes) of one child process, stopped after CHILD_DEADLINE."""
    started = time.monotonic()
    child = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL)
    stopped = threading.Event()

    def stop() -> None:
        stopped.set()
        child.kill()

    deadline = threading.Timer(CHILD_DEADLINE, stop)  # the wait below returns at once when the child ends
    deadline.start()
    try:
        _, status, usage = os.wait4(child.pid, 0)
    finally:
        deadline.cancel()
    if stopped.is_set():
        raise SystemExit(f"bench: {' '.join(command)} still ran after {CHILD_DEADLINE:g} s; stopped")
    child.returncode = os.waitstatus_to_exitcode(status)
    if child.returncode != 0:
        raise SystemExit(f"bench: {' '.join(command)} failed with exit code {child.returncode}")
    return time.monotonic() - started, usage.ru_maxrss * 1024


def warm_page_cache(export: Path) -> None:
    for name in FILES:
        with open(export / f"{name}.csv", "rb") as file:
            while file.read(1 << 24):
                pass


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--products", type=int, default=1_000_011)
    parser.add_argument("--export", type=Path, help="an existing export folder (default: generated)")
    parser.add_argument("--results", type=Path, default=ROOT / "bench" / "results")
    parser.add_argument(
        "--steps", action="store_true", help="let the loader log its steps with their times on stderr"
    )
    args = parser.parse_args()

    export = args.export or stack.DATA_DIR / f"bench-export-{args.products}"  # DATA_DIR as make up reads it
    if not args.export and not stack.generated(export, args.products):
        print(f"bench: generating {args.products:,} products into {export}", flush=True)
        generate = [
            str(BIN / "atelier-generate"),
            "--out",
            str(export),
            "--products",
            str(args.products),
            "--no-progress",
        ]
        generate_seconds, generate_rss = timed_child(generate, dict(os.environ))
        print(f"bench: generated in {generate_seconds:.1f} s, peak RSS {generate_rss / 2**20:.0f} MB")
    size = sum((export / f"{name}.csv").stat().st_size for name in FILES)
    warm_page_cache(export)

    with stack.database(("BENCH_DATABASE_URL", "DATABASE_URL"), "bench-pg") as server_url:
        print("bench: baseline (raw COPY + the same keys and indexes)", flush=True)
        base = asyncio.run(baseline(asyncio.run(stack.fresh_database(server_url, "bench_baseline")), export))
        print("bench: atelier-load", flush=True)
        target = asyncio.run(stack.fresh_database(server_url, "bench_load"))
        load_seconds, load_rss = timed_child(
            [
                str(BIN / "atelier-load"),
                "--data",
                str(export),
                *([] if args.steps else ["--no-progress"]),
                "--rejects",
                str(export / "bench-rejects.csv"),
            ],
            dict(os.environ) | {"DATABASE_URL": target},
        )

    ratio = load_seconds / base["total"]
    peak_rss_mb = load_rss / 2**20
    result = {
        "when": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": f"{platform.node()} ({os.cpu_count()} cores)",
        "export": str(export),
        "export_bytes": size,
        "products": args.products,
        "baseline_seconds": {k: round(v, 2) for k, v in base.items()},
        "load_seconds": round(load_seconds, 2),
        "load_peak_rss_mb": round(peak_rss_mb, 1),
        "ratio": round(ratio, 2),
        "targets": {
            "load_at_most_1.3x_the_baseline": ratio <= 1.3,
            "peak_rss_at_most_300_mb": peak_rss_mb <= 300,
        },
    }
    args.results.mkdir(parents=True, exist_ok=True)
    out = args.results / f"etl-{args.products}.json"
    out.write_text(json.dumps(result, indent=2) + "\n")

    print(f"\n  export             {size / 2**30:.2f} GB ({args.products:,} products)")
    print(
        f"  baseline           {base['total']:7.1f} s  (COPY {base['copy']:.1f} s, "
        f"keys {base['keys']:.1f} s, indexes {base['indexes']:.1f} s)"
    )
    print(f"  atelier-load       {load_seconds:7.1f} s  peak RSS {peak_rss_mb:.0f} MB")
    print(f"  ratio              {ratio:7.2f}x  (target <= 1.3x; peak RSS target <= 300 MB)")
    print(f"  written to {out}")
    print()
    chaos.print_verdicts(result["targets"])
    raise SystemExit(chaos.exit_status(result["targets"]))


if __name__ == "__main__":
    main()
