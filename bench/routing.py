"""How nginx routes a product's reads (NGINX_READ_ROUTING): `least_conn` against `product`, on the same
replicas and the same data, in alternating rounds of one run. Loopback only, bounded in time; part of
`make bench`.

    .venv/bin/python bench/routing.py                        # 100,000 products, about 5 minutes
    .venv/bin/python bench/routing.py --products 1000011     # full scale (the load takes longer)

Why: bench/http_bench.py's ratio moves with the machine's state by more than routing changes it (its
static peak moved by 44% between runs of one evening), so two runs of it, one per setting, cannot tell
the settings apart. Here both settings serve the same traffic on one stack, a round of each in turn, so
that the machine's drift falls on both.

How: a fresh database (`atelier_bench_routing`) loaded with a generated export, three `atelier-api`
replicas (a least-privileged role, as `make up`'s), and two nginx load balancers in front of the same
replicas, rendered from the project's template with NGINX_READ_ROUTING=least_conn and =product (rate
limit lifted). Each round empties every replica's cache (NOTIFY '*', as a load does), then drives one
balancer with bench/chaos.py's closed-loop mix (about 70% GET /reviews, 25% /reviews/meta, 5% writes,
Zipf-skewed products) at --concurrency for --seconds, from the same random seed as the other setting's
round. Per round: throughput, p99, errors, the replicas' cache hit rate, and the CPU time per request of
the replicas, PostgreSQL and nginx (the server side, from /proc) and of this script. Then, on the caches
that closed loop filled, an open loop (bench/http_bench.py's) for --open-seconds at --open-load (70%) of
the lower of two closed-loop throughputs, this round's and the round's before it (the other setting's,
as the settings alternate), from this process at niceness --open-loop-nice (as in http_bench.py): the
tail at a rate both settings reached just before, where least_conn can steer around a busy replica and
routing by product cannot. (One rate for the whole run, taken from its first round, overloaded every later
round once the machine slowed: 2026-12-07, docs/benchmarks.md.) The two settings are compared by the
medians of their rounds, and by the pairs: the median of their throughput ratios, and how many pairs each
setting leads.

PostgreSQL is BENCH_DATABASE_URL or DATABASE_URL (a role that may CREATE DATABASE), else an embedded
server in $DATA_DIR/bench-pg. Results: bench/results/routing.json.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import random
import signal
import statistics
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import chaos  # (bench/chaos.py: traffic mix, closed-loop ramp, stack start-up)
import http_bench  # (bench/http_bench.py: its open loop, starting an nginx)
from chaos import ROOT, stack

DB_NAME = "atelier_bench_routing"
SETTINGS = ("least_conn", "product")


def log(message: str) -> None:
    print(f"routing: {message}", flush=True)


def start_balancer(running: chaos.Stack, routing: str, ports: list[int]) -> str:
    """A second nginx in front of the same replicas, rendered from the project's template with
    NGINX_READ_ROUTING=routing."""
    prefix, http_port = stack.RUN_DIR / f"bench-routing-{routing}", chaos.free_port()
    stack.render_nginx(prefix, ports, http_port, chaos.UNLIMITED | {"NGINX_READ_ROUTING": routing})
    http_bench.start_nginx(
        stack.nginx_binary(), prefix, f"nginx-{routing}", http_port, running.processes, running.env
    )
    return f"http://127.0.0.1:{http_port}"


async def one_round(
    session: aiohttp.ClientSession,
    base: str,
    ports: list[int],
    db_url: str,
    args: argparse.Namespace,
    seed: int,
    previous_rps: float | None,
) -> dict[str, Any]:
    """A closed loop from an empty cache, then an open loop at --open-load of the lower of its throughput
    and `previous_rps` (the round before's; None in the first round)."""
    conn = await asyncpg.connect(db_url)
    try:
        await conn.execute("SELECT pg_notify('atelier_changes', '*')")  # every replica empties its cache
    finally:
        await conn.close()
    await asyncio.sleep(1)
    random.seed(seed)  # the same traffic for both settings' rounds
    traffic = chaos.Traffic(args.products, run_id=f"routing-{os.getpid()}-{seed}-{base.rsplit(':', 1)[1]}")
    lookups, cpu = await chaos.cache_lookups(session, ports), chaos.cpu_reading(os.getpid())
    (step,) = await chaos.ramp(session, base, traffic, [args.concurrency], args.seconds)
    used = chaos.cpu_since(cpu)
    cache = chaos.hit_rate(lookups, await chaos.cache_lookups(session, ports))
    per_request = {group: round(1e6 * seconds / step["requests"]) for group, seconds in used.items()}
    server = round(1e6 * chaos.servers_seconds(used) / step["requests"])
    rate = open_loop_rate(args.open_load, step["throughput_rps"], previous_rps)
    open_loop = await http_bench.open_loop(
        session, base, traffic, rate, args.open_seconds, args.open_loop_nice
    )
    return step | {
        "hit_rate_pct": cache["hit_rate_pct"],
        "cpu_us_per_request": per_request,
        "server_us": server,
        "open_loop": open_loop,
    }


def open_loop_rate(load: float, throughput_rps: float, previous_rps: float | None) -> float:
    """`load` of the lower closed-loop throughput of this round and the round before: a rate both
    settings reached moments ago, which follows the machine when it slows or speeds up during the run."""
    return load * min(throughput_rps, previous_rps or throughput_rps)


async def measure(
    args: argparse.Namespace, bases: dict[str, str], ports: list[int], db_url: str
) -> dict[str, Any]:
    rounds: dict[str, list[dict[str, Any]]] = {routing: [] for routing in SETTINGS}
    previous_rps: float | None = None  # the round before's closed-loop throughput
    connector = aiohttp.TCPConnector(limit=http_bench.MAX_IN_FLIGHT)
    timeout = aiohttp.ClientTimeout(total=chaos.ATTEMPT_TIMEOUT)  # a request that hangs fails, in 10 s
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        for number in range(1, args.rounds + 1):
            order = SETTINGS if number % 2 else tuple(reversed(SETTINGS))
            for routing in order:
                result = await one_round(
                    session, bases[routing], ports, db_url, args, 1000 + number, previous_rps
                )
                previous_rps = result["throughput_rps"]
                rounds[routing].append(result)
                opened = result["open_loop"]
                log(
                    f"round {number} {routing:10s} {result['throughput_rps']:7.1f} req/s  "
                    f"p99 {result['p99_ms']} ms  errors {result['errors']}  hits {result['hit_rate_pct']}%  "
                    f"server {result['server_us']} µs/request {result['cpu_us_per_request']}; "
                    f"open loop {opened['rate_rps']} req/s: p99 {opened['p99_ms']} ms, "
                    f"errors {opened['errors']}, shed {opened['shed']}"
                )
    pairs = list(zip(rounds["least_conn"], rounds["product"], strict=True))
    summary = {
        routing: {
            "throughput_rps": statistics.median(r["throughput_rps"] for r in rs),
            "p99_ms": statistics.median(r["p99_ms"] for r in rs),
            "hit_rate_pct": statistics.median(r["hit_rate_pct"] for r in rs),
            "server_us_per_request": statistics.median(r["server_us"] for r in rs),
            "open_loop_p99_ms": statistics.median(r["open_loop"]["p99_ms"] for r in rs),
            "errors": sum(r["errors"] + r["open_loop"]["errors"] for r in rs),
            "shed": sum(r["open_loop"]["shed"] for r in rs),
        }
        for routing, rs in rounds.items()
    }
    return {
        "when": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": f"{platform.node()} ({os.cpu_count()} cores)",
        "products": args.products,
        "concurrency": args.concurrency,
        "seconds_per_round": args.seconds,
        "open_loop": {
            "load": args.open_load,
            "rates_rps": [r["open_loop"]["rate_rps"] for r in rounds["least_conn"] + rounds["product"]],
            "seconds": args.open_seconds,
        },
        "rounds": rounds,
        "median": summary,
        "product_over_least_conn": {
            "throughput": round(
                statistics.median(p["throughput_rps"] / lc["throughput_rps"] for lc, p in pairs), 3
            ),
            "server_cpu_per_request": round(
                statistics.median(p["server_us"] / lc["server_us"] for lc, p in pairs), 3
            ),
            "pairs_with_more_throughput": sum(p["throughput_rps"] > lc["throughput_rps"] for lc, p in pairs),
            "pairs_with_a_lower_open_loop_p99": sum(
                p["open_loop"]["p99_ms"] < lc["open_loop"]["p99_ms"] for lc, p in pairs
            ),
        },
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--products", type=int, default=100_000, help="products in the generated export")
    parser.add_argument("--rounds", type=int, default=6, help="rounds per setting, alternating (1-20)")
    parser.add_argument("--seconds", type=float, default=20.0, help="seconds per round (5-60)")
    parser.add_argument("--concurrency", type=int, default=16, help="requests in flight (1-256)")
    parser.add_argument("--open-seconds", type=float, default=10.0, help="seconds of each open loop (1-60)")
    parser.add_argument(
        "--open-load",
        type=float,
        default=0.7,
        help="open-loop rate: this fraction of the lower of a round's and the round before's throughput",
    )
    http_bench.add_open_loop_nice(parser)
    parser.add_argument("--results", type=Path, default=ROOT / "bench" / "results")
    args = parser.parse_args()
    if not 1 <= args.rounds <= 20 or not 5 <= args.seconds <= 60 or not 1 <= args.concurrency <= 256:
        parser.error("--rounds 1-20, --seconds 5-60, --concurrency 1-256")
    if not 1 <= args.open_seconds <= 60 or not 0.1 <= args.open_load <= 1.0:
        parser.error("--open-seconds 1-60, --open-load 0.1-1.0")
    signal.signal(signal.SIGINT, stack.interrupt)
    signal.signal(signal.SIGTERM, stack.interrupt)
    budget = 60 + 2 * args.rounds * (args.seconds + args.open_seconds + 2 * chaos.ATTEMPT_TIMEOUT + 15)
    with (
        chaos.ends_cleanly(log, budget),
        stack.database(("BENCH_DATABASE_URL", "DATABASE_URL"), "bench-pg") as server_url,
        stack.supervised() as processes,
    ):
        os.environ["NGINX_READ_ROUTING"] = "least_conn"  # for loaded_stack's own balancer
        running, least_conn_base, db_url = chaos.loaded_stack(
            server_url, processes, stack.nginx_binary(), DB_NAME, args.products, "bench", "atelier_api_bench"
        )
        ports = [replica.port for replica in running.replicas]
        bases = {"least_conn": least_conn_base, "product": start_balancer(running, "product", ports)}
        result = asyncio.run(asyncio.wait_for(measure(args, bases, ports, db_url), budget))
    print()
    print(
        f"  {'setting':12s}{'req/s':>9s}{'p99 ms':>9s}{'hits %':>9s}{'server µs/req':>15s}"
        f"{'open p99 ms':>13s}{'errors':>8s}{'shed':>6s}"
    )
    for routing, row in result["median"].items():
        print(
            f"  {routing:12s}{row['throughput_rps']:9.1f}{row['p99_ms']:9.1f}{row['hit_rate_pct']:9.1f}"
            f"{row['server_us_per_request']:15.0f}{row['open_loop_p99_ms']:13.1f}{row['errors']:8d}{row['shed']:6d}"
        )
    rates = result["open_loop"]["rates_rps"]
    print(
        f"  (medians of the rounds; open loops at {min(rates):.0f}-{max(rates):.0f} req/s, each "
        f"{args.open_load:.0%} of the lower of its round's and the round before's closed-loop throughput)"
    )
    ratios = result["product_over_least_conn"]
    print(
        f"\n  product / least_conn (median of {args.rounds} pairs): throughput {ratios['throughput']:.2f}x, "
        f"server CPU per request {ratios['server_cpu_per_request']:.2f}x; "
        f"product ahead in {ratios['pairs_with_more_throughput']} of {args.rounds} pairs, "
        f"with the lower open-loop p99 in {ratios['pairs_with_a_lower_open_loop_p99']}"
    )
    print(f"\n  written to {chaos.save_results(args.results, 'routing.json', result)}")
    # Every round's errors and shed requests (as bench/http_bench.py counts them against "0 errors").
    errors = sum(row["errors"] + row["shed"] for row in result["median"].values())
    targets = {"zero_errors": errors == 0}
    chaos.print_verdicts(targets)
    raise SystemExit(chaos.exit_status(targets))


if __name__ == "__main__":
    main()
