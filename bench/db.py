"""Database: how long every statement the API runs takes inside PostgreSQL, on the full data.
Part of `make bench`; loopback only, bounded in time.

    .venv/bin/python bench/db.py                  # generate + load the full export (~1,000,011 products)
    .venv/bin/python bench/db.py --reuse          # measure again on the database a previous run loaded
    .venv/bin/python bench/db.py --samples 500    # fewer executions per statement

Each statement is run with `EXPLAIN (ANALYZE, TIMING OFF, BUFFERS, FORMAT JSON)`: its "Execution Time"
is the time spent inside PostgreSQL (no network, no client), and its "Planning Time" is reported on its
own. TIMING OFF leaves out the per-node clock reads that would inflate sub-millisecond times; the total
is still timed. Each execution plans afresh with its own parameter values (a custom plan). With
track_io_timing (when the role may set it) each execution also says how long it waited for blocks that
were not in shared_buffers, so a p99 set by reads is told apart from one set by the plan.

Product ids are drawn twice per statement, --samples each: uniformly over all product ids, and Zipf-
skewed like the HTTP mix (bench/chaos.py's Traffic). The product with the most reviews is the first
draw of each. The statements are imported from the API's modules, never copied:

- reads: reviews.LIST_REVIEWS for each sort, with and without each filter, on page 1 (count drawn from
  the mix: 5, 5, 5, 20, 100) and on the product's last page of 5 (the deepest OFFSET a client reaches),
  each with its reviews' photos; ALL_REVIEWS (a product's every review, ranked in each order, read
  once into a replica's cache); GET_REVIEW; summaries.PRODUCT_SUMMARIES for 1 id and a
  batch of 100; KNOWN_PRODUCT; the /readyz statements;
- writes, each in a transaction that is rolled back: POST /reviews (STORE_REVIEW: the product's rules,
  the review, photos, characteristic ratings and summary updates in one; with an Idempotency-Key,
  STORE_REVIEW_WITH_KEY, which also claims, looks up and records the key), PUT helpful
  (MARK_HELPFUL, COUNT_HELPFUL) and PUT report (lock, flag, the review's ratings, the summary
  updates). A rolled-back write never pays for its commit (the WAL flush), nor for the change
  notification that follows it in a transaction of its own (changes.notify): bench/writes.py measures
  those.

Before measuring, every table and index is read into the OS page cache (pg_prewarm, `read` mode; --cold
skips it): the 24 GB machine holds the ~5 GB database in memory once it has served for a while, while
shared_buffers (the server's own setting) hold only part of it. The session takes the session-level
settings of services/postgres/atelier.conf (jit = off, work_mem, ...), as the service's server has them.

Target (issue 7): p99 <= 1 ms per statement (Execution Time, the worse of the two draws).

Baselines, measured in the same run on the same connection, interleaved round by round with the
statements (every round runs each statement once per draw) so the machine's other load falls on all:
- phase 1, with every API statement: a primary-key lookup of one stored review of the drawn product
  (`SELECT * FROM reviews WHERE id = $1`), the cheapest indexed read;
- phase 2: the previous /reviews/meta, a GROUP BY over reviews and characteristic_reviews on every
  request, read from git history (PRODUCT_SUMMARIES at commit 5ccf0bb) with the index it read through
  (created for the phase, dropped after it), against today's PRODUCT_SUMMARIES for 1 id, for the largest
  product alone and for a batch of 100, with the PK lookup again.

Results: bench/results/db.json. PostgreSQL is BENCH_DATABASE_URL or DATABASE_URL (a role that may CREATE
DATABASE: the run uses its own database `atelier_bench_db`, labelled with the export it holds so that
--reuse and bench/writes.py can find it), else an embedded server in $DATA_DIR/bench-pg.
"""

from __future__ import annotations

import argparse
import ast
import asyncio
import contextlib
import json
import os
import platform
import random
import signal
import subprocess
import sys
import time
from collections import defaultdict
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from types import ModuleType
from typing import Any

import asyncpg
import chaos  # (bench/chaos.py: the mix's Zipf-skewed product ids)
from chaos import BIN, ROOT, percentile, stack

from atelier_api import changes, http_cache, idempotency, readiness, reviews, summaries, votes

DB_NAME = "atelier_bench_db"
MODULES: tuple[ModuleType, ...] = (reviews, summaries, votes, idempotency, readiness, changes)
SQL_STARTS = ("SELECT", "INSERT", "UPDATE", "DELETE", "WITH")
TARGET_MS = 1.0
LOADS: list[float] = []  # the machine's 1-minute load average, sampled during the measurements
EXPLAIN = "EXPLAIN (ANALYZE, TIMING OFF, BUFFERS, FORMAT JSON) "
MIX_COUNTS = (5, 5, 5, 20, 100)  # GET /reviews counts of the HTTP mix
STAR_FILTERS = ([5], [4, 5], [1, 2], [3])
# The baselines.
PK_LOOKUP = "SELECT * FROM reviews WHERE id = $1"
OLD_COMMIT = "5ccf0bb"
OLD_INDEX_NAME = "characteristic_reviews_characteristic_idx"

PRODUCT_INFO = """
    SELECT
        asked.product_id,
        ARRAY(
            SELECT id FROM reviews WHERE product_id = asked.product_id AND NOT reported
            ORDER BY date DESC, id DESC LIMIT 100
        ) AS page,
        (SELECT count(*) FROM reviews WHERE product_id = asked.product_id AND NOT reported) AS reviews,
        ARRAY(
            SELECT id FROM characteristics WHERE product_id = asked.product_id ORDER BY id
        ) AS characteristics
    FROM unnest($1::int[]) AS asked (product_id)
"""
LARGEST = "SELECT product_id FROM reviews GROUP BY product_id ORDER BY count(*) DESC, product_id LIMIT 1"


def log(message: str) -> None:
    print(f"db: {message}", flush=True)


# --- What runs ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Product:
    id: int
    page: list[int]  # its newest non-reported reviews, up to 100
    reviews: int  # its non-reported reviews
    characteristics: list[int]


# statement, execution ms, planning ms, blocks read from outside shared buffers, ms waiting on those reads
Timing = tuple[str, float, float, int, float]
Job = Callable[[asyncpg.Connection, Any, random.Random], Awaitable[list[Timing]]]


@dataclass
class Scenario:
    name: str  # what the report calls it
    job: Job
    accepts: Callable[[Product], bool] = lambda product: True
    batch: int = 0  # > 0: each sample is that many products, not one
    largest_only: bool = False  # every sample is the product with the most reviews
    samples: dict[str, list[Any]] = field(default_factory=dict)  # distribution -> one entry per round


async def explain(conn: asyncpg.Connection, statement: str, sql: str, *args: Any) -> Timing:
    raw = await conn.fetchval(EXPLAIN + sql, *args)
    doc = json.loads(raw)[0]
    plan = doc["Plan"]
    io = plan.get("I/O Read Time", plan.get("Shared I/O Read Time", 0.0))  # with track_io_timing
    return statement, doc["Execution Time"], doc["Planning Time"], plan.get("Shared Read Blocks", 0), io


def read(statement: str, sql: str, args: Callable[[Any, random.Random], tuple[Any, ...]]) -> Job:
    async def job(conn: asyncpg.Connection, sample: Any, rng: random.Random) -> list[Timing]:
        return [await explain(conn, statement, sql, *args(sample, rng))]

    return job


def list_reviews_scenarios() -> list[Scenario]:
    found = []
    for (sort, by_rating, with_photos), sql in reviews.LIST_REVIEWS.items():
        label = (
            f"LIST_REVIEWS {sort.value}{' +rating' if by_rating else ''}{' +photos' if with_photos else ''}"
        )
        name = f"reviews.LIST_REVIEWS[{sort.value},{by_rating},{with_photos}]"

        def first(p: Product, rng: random.Random, by_rating: bool = by_rating) -> tuple[Any, ...]:
            stars = (rng.choice(STAR_FILTERS),) if by_rating else ()
            return (p.id, rng.choice(MIX_COUNTS), 0, *stars)

        def last(p: Product, rng: random.Random, by_rating: bool = by_rating) -> tuple[Any, ...]:
            stars = (rng.choice(STAR_FILTERS),) if by_rating else ()
            return (p.id, 5, max(0, (p.reviews - 1) // 5 * 5), *stars)

        found.append(Scenario(f"{label}, page 1", read(f"{name} page 1", sql, first)))
        found.append(Scenario(f"{label}, last page", read(f"{name} last page", sql, last)))
    return found


def has_reviews(p: Product) -> bool:
    return bool(p.page)


def known(p: Product) -> bool:
    return bool(p.page) or bool(p.characteristics) or p.reviews > 0


async def post_review(conn: asyncpg.Connection, p: Product, rng: random.Random) -> list[Timing]:
    """POST /reviews, the statement of reviews.create_review: without a key (STORE_REVIEW), then with an
    Idempotency-Key (STORE_REVIEW_WITH_KEY), each in a transaction rolled back."""
    key = f"bench-db-{rng.getrandbits(64):016x}"
    photos = [
        f"https://example.com/bench/{rng.getrandbits(32):08x}.jpg" for _ in range(rng.choice((0, 0, 1, 3)))
    ]
    values = [rng.randint(1, 5) for _ in p.characteristics]
    rating, recommend = rng.randint(1, 5), rng.random() < 0.75
    review = (
        p.id,
        rating,
        datetime.now(UTC),
        "Benchmark review",
        "Written by bench/db.py, rolled back. " * 3,
        recommend,
        "bench",
        "bench@example.com",
        photos,
        p.characteristics,
        values,
    )
    timings: list[Timing] = []
    async with rolled_back(conn):
        timings.append(await explain(conn, "reviews.STORE_REVIEW", reviews.STORE_REVIEW, *review))
    async with rolled_back(conn):
        timings.append(
            await explain(
                conn,
                "reviews.STORE_REVIEW_WITH_KEY",
                reviews.STORE_REVIEW_WITH_KEY,
                *review,
                key,
                rng.randbytes(32),
                idempotency.KEY_RETENTION,
            )
        )
    return timings


async def report_review(conn: asyncpg.Connection, p: Product, rng: random.Random) -> list[Timing]:
    """PUT /reviews/{id}/report: the statements of reviews.report, in its order."""
    review_id = rng.choice(p.page)
    timings: list[Timing] = []
    async with rolled_back(conn):
        timings.append(await explain(conn, "reviews.LOCK_REVIEW", reviews.LOCK_REVIEW, review_id))
        review = await conn.fetchrow(reviews.LOCK_REVIEW, review_id)
        timings.append(await explain(conn, "reviews.REPORT", reviews.REPORT, review_id))
        timings.append(
            await explain(
                conn,
                "summaries.REMOVE_FROM_PRODUCT_COUNTS",
                summaries.REMOVE_FROM_PRODUCT_COUNTS,
                review["product_id"],
                review["rating"],
                review["recommend"],
            )
        )
        timings.append(
            await explain(
                conn,
                "summaries.REMOVE_FROM_CHARACTERISTIC_SUMS",
                summaries.REMOVE_FROM_CHARACTERISTIC_SUMS,
                review_id,
            )
        )
    return timings


async def vote(conn: asyncpg.Connection, p: Product, rng: random.Random) -> list[Timing]:
    """PUT /reviews/{id}/helpful, the vote's one statement: votes.MARK_HELPFUL (through nginx, with its
    request id) and votes.COUNT_HELPFUL (a replica reached without nginx)."""
    request_id = f"bench-db-{rng.getrandbits(64):016x}"
    review_id = rng.choice(p.page)
    async with rolled_back(conn):
        recorded = await explain(
            conn, "votes.MARK_HELPFUL", votes.MARK_HELPFUL, review_id, request_id, votes.VOTE_RETENTION
        )
    async with rolled_back(conn):
        counted = await explain(conn, "votes.COUNT_HELPFUL", votes.COUNT_HELPFUL, review_id)
    return [recorded, counted]


@contextlib.asynccontextmanager
async def rolled_back(conn: asyncpg.Connection) -> AsyncIterator[None]:
    """A transaction that is always rolled back: the writes are measured, never kept."""
    transaction = conn.transaction()
    await transaction.start()
    try:
        yield
    finally:
        await transaction.rollback()


def summaries_of_100() -> Scenario:
    """PRODUCT_SUMMARIES for a batch of 100 products (GET /reviews/meta/batch at its limit)."""
    return Scenario(
        "PRODUCT_SUMMARIES, 100 ids",
        read(
            "summaries.PRODUCT_SUMMARIES 100 ids",
            summaries.PRODUCT_SUMMARIES,
            lambda ps, rng: (list(dict.fromkeys(p.id for p in ps)),),
        ),
        batch=100,
    )


def api_scenarios() -> list[Scenario]:
    scenarios = list_reviews_scenarios()
    scenarios += [
        Scenario(
            "ALL_REVIEWS",
            read(
                "reviews.ALL_REVIEWS",
                reviews.ALL_REVIEWS,
                lambda p, rng: (p.id, http_cache.REVIEWS_WINDOW + 1),  # as http_cache.reviews_page asks
            ),
        ),
        Scenario(
            "GET_REVIEW",
            read("reviews.GET_REVIEW", reviews.GET_REVIEW, lambda p, rng: (rng.choice(p.page),)),
            has_reviews,
        ),
        Scenario(
            "KNOWN_PRODUCT", read("reviews.KNOWN_PRODUCT", reviews.KNOWN_PRODUCT, lambda p, rng: (p.id,))
        ),
        Scenario(
            "PRODUCT_SUMMARIES, 1 id",
            read("summaries.PRODUCT_SUMMARIES 1 id", summaries.PRODUCT_SUMMARIES, lambda p, rng: ([p.id],)),
        ),
        summaries_of_100(),
        Scenario(
            "readiness MISSING_TABLES",
            read("readiness.MISSING_TABLES", readiness.MISSING_TABLES, lambda p, rng: (readiness.TABLES,)),
        ),
        Scenario(
            "readiness HAS_A_PRODUCT",
            read("readiness.HAS_A_PRODUCT", readiness.HAS_A_PRODUCT, lambda p, rng: ()),
        ),
        Scenario("POST /reviews (rolled back)", post_review, known),
        Scenario("PUT report (rolled back)", report_review, has_reviews),
        Scenario("PUT helpful (rolled back)", vote, has_reviews),
    ]
    return scenarios


def pk_scenario() -> Scenario:
    """A stored review of the drawn product (ids have gaps: a number from 1..max(id) may find nothing,
    which costs less than finding a row)."""
    return Scenario(
        "baseline: PK lookup of one review",
        read("baseline PK lookup", PK_LOOKUP, lambda p, rng: (rng.choice(p.page),)),
        has_reviews,
    )


def old_meta_scenarios(old_sql: str) -> list[Scenario]:
    return [
        Scenario(
            "PRODUCT_SUMMARIES, 1 id",
            read("summaries.PRODUCT_SUMMARIES 1 id", summaries.PRODUCT_SUMMARIES, lambda p, rng: ([p.id],)),
        ),
        Scenario(
            f"baseline: GROUP BY meta ({OLD_COMMIT}), 1 id",
            read("baseline GROUP BY 1 id", old_sql, lambda p, rng: ([p.id],)),
        ),
        Scenario(
            "PRODUCT_SUMMARIES, the largest product",
            read(
                "summaries.PRODUCT_SUMMARIES largest product",
                summaries.PRODUCT_SUMMARIES,
                lambda p, rng: ([p.id],),
            ),
            largest_only=True,
        ),
        Scenario(
            f"baseline: GROUP BY meta ({OLD_COMMIT}), the largest product",
            read("baseline GROUP BY largest product", old_sql, lambda p, rng: ([p.id],)),
            largest_only=True,
        ),
        summaries_of_100(),
        Scenario(
            f"baseline: GROUP BY meta ({OLD_COMMIT}), 100 ids",
            read(
                "baseline GROUP BY 100 ids", old_sql, lambda ps, rng: (list(dict.fromkeys(p.id for p in ps)),)
            ),
            batch=100,
        ),
    ]


# --- Coverage: every statement of the data-layer modules is measured ------------------------------------


def module_statements() -> set[str]:
    """module.CONSTANT for each SQL constant of the data-layer modules (a dict counts as one)."""
    found = set()
    for module in MODULES:
        for constant, value in vars(module).items():
            values = value.values() if isinstance(value, dict) else [value]
            if constant.isupper() and any(
                isinstance(v, str) and v.lstrip().upper().startswith(SQL_STARTS) for v in values
            ):
                found.add(f"{module.__name__.rsplit('.', 1)[-1]}.{constant}")
    return found


def constant_of(statement: str) -> str:
    return statement.split("[")[0].split(" ")[0]


# --- The old meta, from git history -------------------------------------------------------------------


def git_show(path: str) -> str:
    result = subprocess.run(
        ["git", "-C", str(ROOT), "show", f"{OLD_COMMIT}:{path}"], capture_output=True, text=True, timeout=30
    )
    if result.returncode != 0:
        raise SystemExit(f"db: the baseline needs git history ({OLD_COMMIT}:{path}): {result.stderr.strip()}")
    return result.stdout


def old_meta() -> tuple[str, str]:
    """(PRODUCT_SUMMARIES as of OLD_COMMIT, the CREATE INDEX it read characteristic_reviews through)."""
    source = git_show("services/api/atelier_api/summaries.py")
    sql = next(
        ast.literal_eval(node.value)
        for node in ast.parse(source).body
        if isinstance(node, ast.Assign)
        and any(isinstance(t, ast.Name) and t.id == "PRODUCT_SUMMARIES" for t in node.targets)
    )
    index = next(
        line for line in git_show("services/postgres/03-indexes.sql").splitlines() if OLD_INDEX_NAME in line
    )
    return sql, index.replace("CREATE INDEX", "CREATE INDEX IF NOT EXISTS", 1)


# --- Sampling -----------------------------------------------------------------------------------------


async def products(conn: asyncpg.Connection, ids: list[int]) -> dict[int, Product]:
    found = {}
    for start in range(0, len(ids), 5000):
        for row in await conn.fetch(PRODUCT_INFO, ids[start : start + 5000]):
            found[row["product_id"]] = Product(
                row["product_id"], list(row["page"]), row["reviews"], list(row["characteristics"])
            )
    return found


async def draw(
    conn: asyncpg.Connection, scenarios: list[Scenario], rounds: int, top: int, largest: int, seed: int
) -> None:
    """Fill each scenario's samples: per distribution, `rounds` entries, the largest product first."""
    random.seed(seed)  # chaos.Traffic draws from the module's generator
    rng = random.Random(seed)
    zipf = chaos.Traffic(top, run_id="db")
    draws = {"uniform": lambda: rng.randint(1, top), "zipf": zipf.product}
    pools = {name: [largest] + [pick() for _ in range(rounds * 12)] for name, pick in draws.items()}
    info = await products(conn, sorted({i for pool in pools.values() for i in pool}))
    missing = Product(0, [], 0, [])
    for scenario in scenarios:
        for name, pool in pools.items():
            eligible = [info.get(i, missing) for i in pool[1:]]
            eligible = [p if p.id else Product(i, [], 0, []) for p, i in zip(eligible, pool[1:], strict=True)]
            eligible = [p for p in eligible if scenario.accepts(p)]
            head = info[largest]
            if scenario.largest_only:
                scenario.samples[name] = [head] * rounds
            elif scenario.batch:
                batches = [
                    [head, *rng.choices(eligible, k=scenario.batch - 1)],
                    *([*rng.choices(eligible, k=scenario.batch)] for _ in range(rounds - 1)),
                ]
                scenario.samples[name] = batches
            else:
                scenario.samples[name] = [head, *rng.choices(eligible, k=rounds - 1)]


# --- Measuring ----------------------------------------------------------------------------------------


Measured = dict[str, dict[str, list[tuple[float, float, int, float]]]]  # statement -> distribution -> timings


async def measure(
    conn: asyncpg.Connection, scenarios: list[Scenario], rounds: int, seed: int, deadline: float, phase: str
) -> Measured:
    """Round by round, every scenario once per distribution, so all share the machine's ups and downs."""
    rng = random.Random(seed)
    measured: Measured = defaultdict(lambda: defaultdict(list))
    began = time.monotonic()
    for round_ in range(rounds):
        for distribution in ("uniform", "zipf"):
            for scenario in scenarios:
                for statement, execution, planning, blocks_read, read_ms in await scenario.job(
                    conn, scenario.samples[distribution][round_], rng
                ):
                    measured[statement][distribution].append((execution, planning, blocks_read, read_ms))
        if time.monotonic() > deadline:
            raise SystemExit(f"db: {phase} overran the time budget after {round_ + 1} rounds; stopped")
        if (round_ + 1) % max(1, rounds // 10) == 0:
            LOADS.append(os.getloadavg()[0])
            log(
                f"  {phase}: {round_ + 1}/{rounds} rounds ({time.monotonic() - began:.0f} s, "
                f"load average {LOADS[-1]:.1f})"
            )
    return measured


def summarize(measured: Measured) -> dict[str, dict[str, Any]]:
    summary: dict[str, dict[str, Any]] = {}
    for statement, by_distribution in measured.items():
        entry: dict[str, Any] = {}
        for distribution, timings in by_distribution.items():
            executions = [t[0] for t in timings]
            plannings = [t[1] for t in timings]
            entry[distribution] = {
                "n": len(timings),
                "p50_ms": round(percentile(executions, 0.5) or 0, 4),
                "p90_ms": round(percentile(executions, 0.9) or 0, 4),
                "p99_ms": round(percentile(executions, 0.99) or 0, 4),
                "max_ms": round(max(executions), 4),
                "first_draw_ms": round(executions[0], 4),  # the largest product, for product statements
                "planning_p50_ms": round(percentile(plannings, 0.5) or 0, 4),
                "planning_p99_ms": round(percentile(plannings, 0.99) or 0, 4),
                # Blocks not in shared_buffers come from the OS page cache or the disk; with
                # track_io_timing the time spent waiting for them is known.
                "share_reading_blocks": round(sum(1 for t in timings if t[2]) / len(timings), 3),
                "share_waiting_over_0.1ms_on_reads": round(
                    sum(1 for t in timings if t[3] > 0.1) / len(timings), 3
                ),
                "io_wait_p99_ms": round(percentile([t[3] for t in timings], 0.99) or 0, 4),
                "p99_without_io_wait_ms": round(percentile([t[0] - t[3] for t in timings], 0.99) or 0, 4),
            }
        entry["p50_ms"] = max(d["p50_ms"] for d in entry.values())
        entry["p99_ms"] = max(d["p99_ms"] for k, d in entry.items() if k != "p50_ms")
        entry["planning_p99_ms"] = max(d["planning_p99_ms"] for k, d in entry.items() if isinstance(d, dict))
        summary[statement] = entry
    return summary


# --- Setting up ---------------------------------------------------------------------------------------


def export_marker(export: Path) -> str:
    """What a database loaded from this generated export is labelled with (COMMENT ON DATABASE)."""
    manifest = json.loads((export / "manifest.json").read_text())
    return (
        f"bench/db.py: generated export, {manifest['products']} products, seed {manifest['seed']}, "
        f"dirty rate {manifest['dirty_rate']}"
    )


async def loaded_marker(server_url: str, dbname: str) -> str | None:
    conn = await asyncpg.connect(stack.database_url(server_url, "postgres"), timeout=10)
    try:
        return await conn.fetchval(
            "SELECT shobj_description(oid, 'pg_database') FROM pg_database WHERE datname = $1", dbname
        )
    finally:
        await conn.close()


async def set_marker(url: str, dbname: str, marker: str) -> None:
    conn = await asyncpg.connect(url, timeout=10)
    try:
        await conn.execute(
            f"COMMENT ON DATABASE {dbname} IS {await conn.fetchval('SELECT quote_literal($1)', marker)}"
        )
    finally:
        await conn.close()


def prepare(server_url: str, args: argparse.Namespace) -> str:
    """The database with the export loaded: the previous run's with --reuse when it holds the same export."""
    env = os.environ.copy()
    stack.generate(args.export, args.products, env)
    marker = export_marker(args.export)
    if args.reuse and asyncio.run(loaded_marker(server_url, args.dbname)) == marker:
        log(f"reusing {args.dbname}: {marker}")
        return stack.database_url(server_url, args.dbname)
    url = asyncio.run(stack.fresh_database(server_url, args.dbname, keep=True))
    log(f"loading {args.export} into {args.dbname} with atelier-load (about 4-5 minutes at full scale)")
    began = time.monotonic()
    stack.run([BIN / "atelier-load", "--data", args.export, "--no-progress"], env | {"DATABASE_URL": url})
    log(f"loaded in {time.monotonic() - began:.0f} s")
    asyncio.run(set_marker(url, args.dbname, marker))
    return url


async def session_settings(conn: asyncpg.Connection) -> dict[str, str]:
    """Apply atelier.conf's settings that a session may set (jit, work_mem, ...); return what the server
    runs with for the ones that matter here."""
    applied = {}
    for line in (ROOT / "services" / "postgres" / "atelier.conf").read_text().splitlines():
        name, _, value = line.split("#", 1)[0].partition("=")
        name, value = name.strip(), value.strip().strip("'")
        if name and await conn.fetchval("SELECT context FROM pg_settings WHERE name = $1", name) == "user":
            await conn.execute("SELECT set_config($1, $2, false)", name, value)
            applied[name] = value
    shown = {}
    for name in (
        "server_version",
        "shared_buffers",
        "effective_cache_size",
        "work_mem",
        "jit",
        "max_connections",
    ):
        shown[name] = await conn.fetchval(f"SHOW {name}")
    try:  # superuser only: how long each execution waited for blocks from the OS (cache or disk)
        await conn.execute("SET track_io_timing = on")
    except asyncpg.InsufficientPrivilegeError:
        pass
    shown["track_io_timing"] = await conn.fetchval("SHOW track_io_timing")
    return {"applied_from_atelier_conf": json.dumps(applied), **shown}


async def prewarm(conn: asyncpg.Connection) -> str:
    """Read every table and index of the service into the OS page cache (pg_prewarm's `read` mode), as a
    server that has been serving for a while has them: 24 GB of RAM hold the whole database, while
    shared_buffers hold a part. Returns what was done."""
    try:
        await conn.execute("CREATE EXTENSION IF NOT EXISTS pg_prewarm")
    except asyncpg.PostgresError as error:
        return f"not prewarmed (pg_prewarm unavailable: {error})"
    began = time.monotonic()
    blocks = await conn.fetchval(
        """
        SELECT sum(pg_prewarm(c.oid, 'read'))
        FROM pg_class AS c
        WHERE c.relkind IN ('r', 'i') AND c.relnamespace = 'public'::regnamespace
        """,
        timeout=900,
    )
    return f"{blocks * 8 / 1024:,.0f} MB read into the OS page cache in {time.monotonic() - began:.0f} s"


async def sizes(conn: asyncpg.Connection) -> dict[str, int]:
    rows = await conn.fetch(
        "SELECT relname, reltuples::bigint AS rows FROM pg_class WHERE relname = any($1::text[])",
        ["reviews", "reviews_photos", "characteristics", "characteristic_reviews", "product_summaries"],
    )
    return {row["relname"]: row["rows"] for row in rows}


# --- The run ------------------------------------------------------------------------------------------


async def run(url: str, args: argparse.Namespace, deadline: float) -> dict[str, Any]:
    conn = await asyncpg.connect(url, timeout=10, command_timeout=60)
    try:
        settings = await session_settings(conn)
        log(
            f"server: PostgreSQL {settings['server_version']}, shared_buffers {settings['shared_buffers']}, "
            f"session: jit {settings['jit']}, work_mem {settings['work_mem']}"
        )
        top = await conn.fetchval(
            "SELECT greatest((SELECT max(product_id) FROM reviews),"
            " (SELECT max(product_id) FROM characteristics))"
        )
        largest = await conn.fetchval(LARGEST)
        rows = await sizes(conn)
        warmed = await prewarm(conn) if args.warm else "not prewarmed (--cold)"
        log(f"prewarm: {warmed}")
        log(f"{top:,} product ids, {rows.get('reviews', 0):,} reviews; the largest product is {largest}")

        # Phase 1: every API statement and the PK lookup, without the old index (today's schema).
        scenarios = [*api_scenarios(), pk_scenario()]
        await draw(conn, scenarios, args.samples, top, largest, args.seed)
        largest_info = (await products(conn, [largest]))[largest]
        log(f"phase 1: {len(scenarios)} scenarios x {args.samples} rounds x 2 draws (uniform, Zipf)")
        phase1 = summarize(await measure(conn, scenarios, args.samples, args.seed, deadline, "phase 1"))

        # Phase 2: the previous meta with the index it had, today's meta and the PK lookup, interleaved.
        old_sql, old_index = old_meta()
        log(f"phase 2: building the {OLD_COMMIT} index for the GROUP BY baseline: {old_index}")
        began = time.monotonic()
        await conn.execute(old_index, timeout=900)
        await conn.execute("ANALYZE characteristic_reviews", timeout=300)
        log(f"  built in {time.monotonic() - began:.0f} s")
        try:
            meta = [*old_meta_scenarios(old_sql), pk_scenario()]
            rounds2 = args.baseline_samples
            await draw(conn, meta, rounds2, top, largest, args.seed + 1)
            phase2 = summarize(await measure(conn, meta, rounds2, args.seed + 1, deadline, "phase 2"))
        finally:
            await conn.execute(f"DROP INDEX IF EXISTS {OLD_INDEX_NAME}")
            log(f"  dropped {OLD_INDEX_NAME} again")
    finally:
        await conn.close()

    measured_constants = {constant_of(s) for s in phase1 if not s.startswith("baseline")}
    uncovered = sorted(module_statements() - measured_constants)
    pk1 = phase1["baseline PK lookup"]["p99_ms"]
    statements = {
        name: entry
        | {"x_pk_lookup": round(entry["p99_ms"] / pk1, 2), "meets_target": entry["p99_ms"] <= TARGET_MS}
        for name, entry in phase1.items()
    }
    pk2 = phase2["baseline PK lookup"]["p99_ms"]
    comparison = {}
    for ids in ("1 id", "largest product", "100 ids"):
        new, old = phase2[f"summaries.PRODUCT_SUMMARIES {ids}"], phase2[f"baseline GROUP BY {ids}"]
        comparison[ids] = {
            "meta_p50_ms": new["p50_ms"],
            "meta_p99_ms": new["p99_ms"],
            "group_by_p50_ms": old["p50_ms"],
            "group_by_p99_ms": old["p99_ms"],
            "pk_lookup_p99_ms": pk2,
            "meta_x_pk_lookup": round(new["p99_ms"] / pk2, 2),
            "group_by_over_meta_p50": round(old["p50_ms"] / new["p50_ms"], 1),
            "group_by_over_meta": round(old["p99_ms"] / new["p99_ms"], 1),
            "meta": new,
            "group_by": old,
        }
    api = {k: v for k, v in statements.items() if not k.startswith("baseline")}
    worst = max(api, key=lambda k: api[k]["p99_ms"])
    return {
        "when": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": f"{platform.node()} ({os.cpu_count()} cores)",
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "server": settings,
        "prewarm": warmed,
        "load_average_during_run": {"min": min(LOADS), "max": max(LOADS), "samples": LOADS},
        "rows": rows,
        "product_ids": top,
        "largest_product": {"id": largest, "reviews": largest_info.reviews},
        "samples_per_draw": args.samples,
        "baseline_samples_per_draw": args.baseline_samples,
        "method": "EXPLAIN (ANALYZE, TIMING OFF, BUFFERS, FORMAT JSON): Execution Time; Planning Time apart; "
        "custom plans; writes rolled back (no commit cost)",
        "target_p99_ms": TARGET_MS,
        "statements": statements,
        "pk_lookup_p99_ms": pk1,
        "meta_against_group_by": comparison,
        "phase2_pk_lookup_p99_ms": pk2,
        "uncovered_statements": uncovered,
        "worst": {"statement": worst, "p99_ms": api[worst]["p99_ms"]},
        "targets": {
            "every_statement_p99_at_most_1ms": all(v["meets_target"] for v in api.values()),
            "every_statement_measured": not uncovered,
        },
    }


def print_report(result: dict[str, Any]) -> None:
    pk = result["pk_lookup_p99_ms"]
    print()
    print(
        f"  {'statement (ms)':58s} {'uniform p50/p99':>16s} {'Zipf p50/p99':>14s} {'largest':>8s} "
        f"{'plan p99':>8s} {'x PK':>6s} {'no-I/O p99':>10s}"
    )
    for name, s in sorted(result["statements"].items(), key=lambda kv: kv[0].startswith("baseline")):
        u, z = s["uniform"], s["zipf"]
        largest = max(u["first_draw_ms"], z["first_draw_ms"])
        flag = "" if s["meets_target"] or name.startswith("baseline") else "  > 1 ms"
        print(
            f"  {name:58s} {u['p50_ms']:7.3f}/{u['p99_ms']:<7.3f} {z['p50_ms']:6.3f}/{z['p99_ms']:<7.3f} "
            f"{largest:8.3f} {s['planning_p99_ms']:8.3f} {s['x_pk_lookup']:6.1f} "
            f"{max(u['p99_without_io_wait_ms'], z['p99_without_io_wait_ms']):10.3f}{flag}"
        )
    print()
    print(f"  PK lookup p99 {pk:.3f} ms (the baseline: the cheapest indexed read)")
    for ids, c in result["meta_against_group_by"].items():
        print(
            f"  meta, {ids}: p99 {c['meta_p99_ms']:.3f} ms = {c['meta_x_pk_lookup']}x a PK lookup "
            f"({c['pk_lookup_p99_ms']:.3f} ms), {c['group_by_over_meta']}x faster than GROUP BY "
            f"({c['group_by_p99_ms']:.3f} ms); at p50 {c['meta_p50_ms']:.3f} against "
            f"{c['group_by_p50_ms']:.3f} ms: {c['group_by_over_meta_p50']}x"
        )
    loads = result["load_average_during_run"]
    print(f"  {result['prewarm']}; load average {loads['min']:.1f}-{loads['max']:.1f} during the run")
    print(
        f"  slowest statement: {result['worst']['statement']} p99 {result['worst']['p99_ms']:.3f} ms "
        f"(target <= {TARGET_MS} ms)"
    )
    if result["uncovered_statements"]:
        print(f"  NOT MEASURED: {', '.join(result['uncovered_statements'])}")
    print()
    chaos.print_verdicts(result["targets"])


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--products", type=int, default=1_000_011, help="products in the generated export")
    parser.add_argument("--export", type=Path, help="export folder (default: $DATA_DIR/bench-export-N)")
    parser.add_argument("--reuse", action="store_true", help="keep the database a previous run loaded")
    parser.add_argument("--samples", type=int, default=2000, help="executions per statement and draw")
    parser.add_argument("--baseline-samples", type=int, default=2000, help="the same, for the GROUP BY phase")
    parser.add_argument(
        "--cold", dest="warm", action="store_false", help="skip reading the database into the OS page cache"
    )
    parser.add_argument("--dbname", default=DB_NAME, help="the database this run loads and measures")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--minutes", type=float, default=30, help="time budget of the measurements")
    parser.add_argument("--results", type=Path, default=ROOT / "bench" / "results")
    args = parser.parse_args()
    if not 10 <= args.samples <= 20_000 or not 10 <= args.baseline_samples <= 20_000:
        parser.error("--samples and --baseline-samples must be 10-20,000")
    if not 1 <= args.minutes <= 120:
        parser.error("--minutes must be 1-120")
    args.export = (args.export or stack.DATA_DIR / f"bench-export-{args.products}").resolve()

    signal.signal(signal.SIGINT, stack.interrupt)
    signal.signal(signal.SIGTERM, stack.interrupt)
    try:
        with stack.database(("BENCH_DATABASE_URL", "DATABASE_URL"), "bench-pg") as server_url:
            url = prepare(server_url, args)
            deadline = time.monotonic() + args.minutes * 60
            result = asyncio.run(run(url, args, deadline))
    except KeyboardInterrupt:
        log("interrupted")
        raise SystemExit(130) from None

    print_report(result)
    print(f"\n  written to {chaos.save_results(args.results, 'db.json', result)}")
    raise SystemExit(chaos.exit_status(result["targets"]))


if __name__ == "__main__":
    main()
