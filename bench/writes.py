"""Writes: POST /reviews through nginx to three replicas, against the same inserts straight into
PostgreSQL, measured in the same run. Part of `make bench`; loopback only, bounded in time and count.

    .venv/bin/python bench/writes.py                      # the full data (a copy of bench/db.py's database)
    .venv/bin/python bench/writes.py --products 100000    # a load of its own, 100,000 products
    .venv/bin/python bench/writes.py --draw uniform       # products drawn uniformly: no hot product
    .venv/bin/python bench/writes.py --keys none          # no Idempotency-Key: the contract's plain POST

The data: when bench/db.py's database (`atelier_bench_db`) holds the export of --products products (the
full export by default), a copy of it (CREATE DATABASE ... TEMPLATE, a file copy: no reload), else a
fresh load of that export with the real loader. Either way the run writes into its own database,
`atelier_bench_writes`. Three `atelier-api` replicas log in as a least-privileged role and nginx runs
from the project's template with its rate limit lifted (bench/chaos.py's stack start-up).

The bodies are realistic: a product drawn Zipf-skewed like the HTTP mix (popular products get most
reviews), every characteristic of that product rated, 0 to 5 photo URLs (half the reviews have none),
texts of varied length, and an Idempotency-Key on each request, as the storefront sends it (--keys none:
the contract's plain POST, without one). Writes of one product queue on its summary row (summaries.py),
so the skew matters: --draw uniform spreads them.

Closed loop at each --steps concurrency for --step-seconds, two paths in turn at the same concurrency:
- baseline: the same reviews written straight to PostgreSQL by the API's own data-layer function
  (reviews.create_review: idempotency claim, review, photos, characteristic ratings, summary updates,
  key record, in one transaction) on an asyncpg pool of the replicas' total size (3 x DB_POOL_MAX_SIZE,
  at most one connection per request in flight) logged in as the same role: the database's own limit;
- API: POST /reviews through nginx to the three replicas.
The ratio API / baseline says what HTTP, nginx and the replicas cost on top of the database.

Afterwards the database must hold exactly the reviews both paths were answered 201 for, and
`atelier-verify` must find 0 differences between the stored summaries and a GROUP BY recomputation.
Targets (issue 7): >= 1,000 POST/s through nginx, 0 errors, 0 differences. Results:
bench/results/writes.json. PostgreSQL is BENCH_DATABASE_URL or DATABASE_URL (a role that may CREATE
DATABASE), else an embedded server in $DATA_DIR/bench-pg. The load generator, nginx, the replicas and
PostgreSQL share the machine's cores.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import random
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import chaos  # (bench/chaos.py: the mix's Zipf-skewed ids, the stack start-up)
import db  # (bench/db.py: its loaded database, copied here when it holds the same export)
import orjson
from chaos import BIN, ROOT, ms, percentile, stack

from atelier_api import errors, idempotency, review_draft, reviews

DB_NAME = "atelier_bench_writes"
ROLE = "atelier_api_bench_writes"
TARGET_RPS = 1000.0
POOL_MAX_SIZE = 10  # each replica's DB_POOL_MAX_SIZE (atelier_api/config.py's default; the stack sets none)
MAX_PER_STEP = 200_000  # requests per step and path, whatever the duration
PHOTOS = (0, 0, 0, 0, 0, 1, 1, 2, 3, 5)  # photos per review: half have none
WORDS = "fits true to size soft fabric washed well colour as pictured would buy again comfortable".split()
CHARACTERISTICS = """
    SELECT product_id, array_agg(id ORDER BY id) AS ids
    FROM characteristics WHERE product_id = any($1::int[]) GROUP BY product_id
"""


def log(message: str) -> None:
    print(f"writes: {message}", flush=True)


class Bodies:
    """POST /reviews bodies: Zipf-skewed products that have characteristics, all of them rated."""

    def __init__(self, products: dict[int, list[int]], draws: list[int], run_id: str) -> None:
        self.draws = [p for p in draws if p in products]
        self.products = products
        self.run_id = run_id
        self.serial = 0

    def next(self) -> tuple[str, dict[str, Any]]:
        self.serial += 1
        product_id = random.choice(self.draws)
        photos = random.choice(PHOTOS)
        words = random.randint(10, 120)
        body = {
            "product_id": product_id,
            "rating": random.choice((1, 2, 3, 4, 4, 5, 5, 5)),
            "summary": " ".join(random.choices(WORDS, k=random.randint(2, 8)))[:60],
            "body": " ".join(random.choices(WORDS, k=words)).ljust(50, ".")[:1000],
            "recommend": random.random() < 0.75,
            "name": f"bench{self.serial % 1000}",
            "email": f"bench{self.serial % 1000}@example.com",
            "photos": [
                f"https://images.example.com/bench/{self.run_id}/{self.serial}-{i}.jpg" for i in range(photos)
            ],
            "characteristics": {str(c): random.randint(1, 5) for c in self.products[product_id]},
        }
        return f"bench-writes-{self.run_id}-{self.serial}", body


Send = Callable[[str, dict[str, Any]], Awaitable[bool]]


async def closed_loop(send: Send, bodies: Bodies, concurrency: int, seconds: float) -> dict[str, Any]:
    """`concurrency` workers, each sending the next review when the last one is answered."""
    latencies: list[float] = []
    outcomes: Counter[str] = Counter()
    end = time.monotonic() + seconds

    async def worker() -> None:
        while time.monotonic() < end and sum(outcomes.values()) < MAX_PER_STEP:
            key, body = bodies.next()
            began = time.monotonic()
            try:
                ok = await send(key, body)
            except (
                aiohttp.ClientError,
                TimeoutError,
                asyncpg.PostgresError,
                OSError,
                errors.DomainError,
            ) as e:
                outcomes[f"error:{type(e).__name__}"] += 1
                continue
            latencies.append(time.monotonic() - began)
            outcomes["created" if ok else "refused"] += 1

    cpu_before, began = chaos.cpu_reading(os.getpid()), time.monotonic()
    await asyncio.wait_for(asyncio.gather(*(worker() for _ in range(concurrency))), seconds + 30)
    elapsed = time.monotonic() - began
    return {
        "concurrency": concurrency,
        "seconds": round(elapsed, 2),
        "created": outcomes["created"],
        "errors": sum(n for k, n in outcomes.items() if k != "created"),
        "outcomes": dict(outcomes),
        "throughput_rps": round(outcomes["created"] / elapsed, 1),
        "p50_ms": ms(percentile(latencies, 0.5)),
        "p99_ms": ms(percentile(latencies, 0.99)),
        "cpu": chaos.cpu_use(cpu_before, elapsed, sum(outcomes.values())),
    }


async def sampled_products(
    url: str, top: int, seed: int, draw: str
) -> tuple[dict[int, list[int]], list[int]]:
    """Product ids drawn Zipf-skewed like the HTTP mix (or uniformly), and the characteristics of each."""
    random.seed(seed)
    zipf = chaos.Traffic(top, run_id="writes")
    pick = zipf.product if draw == "zipf" else lambda: random.randint(1, top)
    draws = [pick() for _ in range(50_000)]
    conn = await asyncpg.connect(url, timeout=10)
    try:
        rows = await conn.fetch(CHARACTERISTICS, sorted(set(draws)))
    finally:
        await conn.close()
    return {row["product_id"]: list(row["ids"]) for row in rows}, draws


async def counts(url: str) -> dict[str, int]:
    conn = await asyncpg.connect(url, timeout=10)
    try:
        row = await conn.fetchrow(
            "SELECT (SELECT count(*) FROM reviews) AS reviews,"
            " (SELECT count(*) FROM reviews_photos) AS photos,"
            " (SELECT greatest((SELECT max(product_id) FROM reviews),"
            " (SELECT max(product_id) FROM characteristics))) AS top"
        )
    finally:
        await conn.close()
    return dict(row)


async def measure(
    args: argparse.Namespace, api_base: str, replica_url: str, owner_url: str
) -> dict[str, Any]:
    before = await counts(owner_url)
    products, draws = await sampled_products(owner_url, before["top"], args.seed, args.draw)
    run_id = f"{random.getrandbits(32):08x}"
    bodies = Bodies(products, draws, run_id)
    log(f"{len(products):,} products drawn ({args.draw}); {len(bodies.draws):,} draws with characteristics")
    pool_size = chaos.REPLICAS * POOL_MAX_SIZE

    connector = aiohttp.TCPConnector(limit=max(args.steps) + 16, ttl_dns_cache=None)
    timeout = aiohttp.ClientTimeout(total=chaos.ATTEMPT_TIMEOUT)
    ramps: dict[str, list[dict[str, Any]]] = {"baseline": [], "api": []}
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:

        async def post(key: str, body: dict[str, Any]) -> bool:
            headers = {"Content-Type": "application/json"}
            if args.keys == "each":
                headers[idempotency.HEADER] = key
            async with session.post(
                api_base + "/reviews", data=orjson.dumps(body), headers=headers
            ) as response:
                await response.read()
                return response.status == 201 and response.headers.get(idempotency.REPLAYED_HEADER) is None

        for concurrency in args.steps:
            size = min(concurrency, pool_size)
            async with asyncpg.create_pool(
                replica_url,
                min_size=size,
                max_size=size,
                server_settings={"application_name": "bench-writes"},
            ) as pool:

                async def direct(key: str, body: dict[str, Any], pool: asyncpg.Pool = pool) -> bool:
                    draft = review_draft.parse(body)
                    given = key if args.keys == "each" else None
                    claim = idempotency.claim(given, draft, body, orjson.dumps(body))
                    created = await reviews.create_review(pool, draft, datetime.now(UTC), claim)
                    return not created.replayed

                # Warm both paths (connections, statement caches), then measure each in turn.
                warm = 0
                for _ in range(50):
                    warm += await direct(*bodies.next())
                    warm += await post(*bodies.next())
                step = await closed_loop(direct, bodies, concurrency, args.step_seconds)
                step["pool_size"] = size
                ramps["baseline"].append(step)
                log(
                    f"  {concurrency:3d} in flight  baseline (asyncpg, pool {size}) "
                    f"{step['throughput_rps']:7.1f}"
                    f" reviews/s  p50 {step['p50_ms']} ms  p99 {step['p99_ms']} ms  errors {step['errors']}"
                )
            step = await closed_loop(post, bodies, concurrency, args.step_seconds)
            ramps["api"].append(step)
            log(
                f"  {concurrency:3d} in flight  API through nginx         {step['throughput_rps']:7.1f}"
                f" POST/s     p50 {step['p50_ms']} ms  p99 {step['p99_ms']} ms  errors {step['errors']}"
            )
            ramps.setdefault("warm", []).append({"concurrency": concurrency, "created": warm})

    after = await counts(owner_url)
    created = sum(s["created"] for r in ("baseline", "api") for s in ramps[r]) + sum(
        w["created"] for w in ramps.pop("warm")
    )
    log("atelier-verify: every summary recomputed with GROUP BY and compared")
    began = time.monotonic()
    verify = subprocess.run(
        [str(BIN / "atelier-verify"), "--json", "--database-url", owner_url],
        capture_output=True,
        text=True,
        timeout=1200,
        check=False,
    )
    verified: dict[str, Any] = {"exit_code": verify.returncode, "seconds": round(time.monotonic() - began, 1)}
    try:
        verified |= json.loads(verify.stdout.strip().splitlines()[-1])
    except (json.JSONDecodeError, IndexError):
        verified["stderr"] = verify.stderr[-2000:]

    best = {name: max(steps, key=lambda s: s["throughput_rps"]) for name, steps in ramps.items()}
    ratios = [
        {
            "concurrency": b["concurrency"],
            "api_over_baseline": round(a["throughput_rps"] / b["throughput_rps"], 3)
            if b["throughput_rps"]
            else None,
        }
        for b, a in zip(ramps["baseline"], ramps["api"], strict=True)
    ]
    errors_seen = sum(s["errors"] for r in ramps.values() for s in r)
    peak_ratio = round(best["api"]["throughput_rps"] / best["baseline"]["throughput_rps"], 3)
    return {
        "reviews_before": before["reviews"],
        "reviews_after": after["reviews"],
        "reviews_created_acknowledged": created,
        "photos_added": after["photos"] - before["photos"],
        "pool_size_baseline_max": pool_size,
        "ramp": ramps,
        "ratio_per_step": ratios,
        "baseline_peak": best["baseline"],
        "api_peak": best["api"],
        "peak_ratio": peak_ratio,
        "verify": verified,
        "targets": {
            "api_at_least_1000_posts_per_s": best["api"]["throughput_rps"] >= TARGET_RPS,
            "zero_errors": errors_seen == 0,
            "stored_reviews_equal_acknowledged": after["reviews"] - before["reviews"] == created,
            "verify_zero_differences": verify.returncode == 0 and verified.get("differences") == 0,
        },
    }


def prepare(server_url: str, args: argparse.Namespace, env: dict[str, str]) -> tuple[str, str]:
    """The owner's URL of a database holding the export, and where the data came from."""
    stack.generate(args.export, args.products, env)
    marker = db.export_marker(args.export)
    if asyncio.run(db.loaded_marker(server_url, db.DB_NAME)) == marker:
        log(f"copying {db.DB_NAME} ({marker}) into {DB_NAME}")
        began = time.monotonic()
        url = asyncio.run(stack.fresh_database(server_url, DB_NAME, template=db.DB_NAME))
        log(f"  copied in {time.monotonic() - began:.0f} s")
        return url, f"a copy of {db.DB_NAME}: {marker}"
    url = asyncio.run(stack.fresh_database(server_url, DB_NAME))
    log(f"loading {args.products:,} products from {args.export} into {DB_NAME}")
    stack.run([BIN / "atelier-load", "--data", args.export, "--no-progress"], env | {"DATABASE_URL": url})
    return url, f"loaded by atelier-load: {args.products} products from {args.export}"


def cpu_summary(cpu: dict[str, Any] | None, path: str) -> str:
    """A step's CPU per review by process group, and how busy the cores were. On the baseline path the
    benchmark's own process runs the data layer (what the replicas run on the API path)."""
    if not cpu:
        return "not measured"
    generator = "this script (the data layer)" if path == "baseline" else "load generator"
    groups = ", ".join(
        f"{generator if group == chaos.GENERATOR else group} {us}"
        for group, us in sorted(cpu["us_per_request"].items(), key=lambda item: -(item[1] or 0))
    )
    return f"µs per review: {groups}; the cores {cpu['busy_pct']}% busy"


def print_report(result: dict[str, Any]) -> None:
    print()
    print(
        "  in flight   baseline reviews/s  p50 ms  p99 ms  err   API POST/s  p50 ms  p99 ms  err"
        "   API/baseline"
    )
    for b, a, r in zip(
        result["ramp"]["baseline"], result["ramp"]["api"], result["ratio_per_step"], strict=True
    ):
        print(
            f"  {b['concurrency']:9d}   {b['throughput_rps']:18.1f}  {b['p50_ms']!s:>6}  {b['p99_ms']!s:>6}"
            f"  {b['errors']:3d}   {a['throughput_rps']:10.1f}  {a['p50_ms']!s:>6}  {a['p99_ms']!s:>6}"
            f"  {a['errors']:3d}   {r['api_over_baseline']}x"
        )
    b, a, v = result["baseline_peak"], result["api_peak"], result["verify"]
    print()
    print(f"  data               {result['data']}; products drawn: {result['products_drawn']}")
    print(
        f"  baseline peak      {b['throughput_rps']} reviews/s (asyncpg, reviews.create_review, "
        f"{b['concurrency']} in flight)"
    )
    print(f"  API peak           {a['throughput_rps']} POST/s through nginx ({a['concurrency']} in flight; "
          f"p50 {a['p50_ms']} ms, p99 {a['p99_ms']} ms)  target >= {TARGET_RPS:,.0f}")  # fmt: skip
    print(f"  ratio              {result['peak_ratio']}x the database's own limit (peak over peak)")
    for label, peak in (("baseline", b), ("API", a)):
        print(f"  CPU, {label + ' peak':13s} {cpu_summary(peak.get('cpu'), label)}")
    print(
        f"  reviews            +{result['reviews_after'] - result['reviews_before']:,} stored for "
        f"{result['reviews_created_acknowledged']:,} acknowledged; photos +{result['photos_added']:,}"
    )
    print(
        f"  atelier-verify     exit {v['exit_code']}, {v.get('differences')} differences ({v['seconds']} s)"
    )
    print()
    chaos.print_verdicts(result["targets"])


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--products", type=int, default=1_000_011, help="products in the export")
    parser.add_argument(
        "--export", type=Path, default=None, help="export folder (default: $DATA_DIR/bench-export-N)"
    )
    parser.add_argument("--steps", type=int, nargs="+", default=[8, 32, 64], help="closed-loop concurrency")
    parser.add_argument("--step-seconds", type=float, default=10.0, help="seconds per step and path")
    parser.add_argument("--seed", type=int, default=11)
    parser.add_argument(
        "--draw",
        choices=["zipf", "uniform"],
        default="zipf",
        help="products reviewed: Zipf-skewed like the HTTP mix (default), or uniform (no hot product)",
    )
    parser.add_argument(
        "--keys",
        choices=["each", "none"],
        default="each",
        help="an Idempotency-Key on each POST (default, the storefront's retries), or none (the contract's "
        "plain POST: two round trips, no key claimed or recorded)",
    )
    parser.add_argument("--results", type=Path, default=ROOT / "bench" / "results")
    args = parser.parse_args()
    if not 1 <= args.step_seconds <= 60:
        parser.error("--step-seconds must be 1-60")
    if not 1 <= len(args.steps) <= 6 or not all(1 <= c <= 128 for c in args.steps):
        parser.error("--steps: 1 to 6 steps, each 1-128")
    args.export = (args.export or stack.DATA_DIR / f"bench-export-{args.products}").resolve()

    signal.signal(signal.SIGINT, stack.interrupt)
    signal.signal(signal.SIGTERM, stack.interrupt)
    budget = len(args.steps) * 2 * (args.step_seconds + 40) + 1500  # measurements + atelier-verify
    nginx = stack.nginx_binary()
    with (
        chaos.ends_cleanly(log, budget),
        stack.database(("BENCH_DATABASE_URL", "DATABASE_URL"), "bench-pg") as server_url,
        stack.supervised() as processes,
    ):
        env = os.environ | {"LOG_LEVEL": "WARNING"}
        owner_url, data = prepare(server_url, args, env)
        replica_url = stack.api_login(owner_url, ROLE)
        running = chaos.Stack(env | {"DATABASE_URL": replica_url}, processes)
        api_base = running.up(nginx, stack.RUN_DIR / "bench-writes-nginx")
        log(f"{chaos.REPLICAS} replicas behind nginx on {api_base} (rate limit lifted)")
        result = asyncio.run(asyncio.wait_for(measure(args, api_base, replica_url, owner_url), budget))

    result = {
        "when": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": f"{platform.node()} ({os.cpu_count()} cores)",
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "data": data,
        "replicas": chaos.REPLICAS,
        "step_seconds": args.step_seconds,
        "products_drawn": args.draw,
        "idempotency_keys": args.keys,
    } | result
    print_report(result)
    name = "writes.json" if args.keys == "each" else "writes-no-keys.json"
    print(f"\n  written to {chaos.save_results(args.results, name, result)}")
    raise SystemExit(chaos.exit_status(result["targets"]))


if __name__ == "__main__":
    main()
