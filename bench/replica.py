"""One replica's own CPU per cached answer, against a bare aiohttp app serving the same bytes, measured
in the same run; then its CPU per miss, and per hit from fewer connections. Loopback only, bounded in
time; part of `make bench`.

    .venv/bin/python bench/replica.py                 # 10,000 products, about a minute

Why: through nginx (bench/http_bench.py) a request's cost is spread over the generator, nginx, the
replicas and PostgreSQL, and the machine's speed drifts between runs. This isolates the part the
application's own code adds to every cache hit: the middlewares (request id, metrics, access log, error
shape, validators), validation, the cache lookup and the response's headers.

How: a fresh database (`atelier_bench_replica`) loaded with a generated export of --products products;
one `atelier-api` process; the mix's cached reads (GET /reviews with its sorts and page sizes, GET
/reviews/meta) on --urls products, each read once so that it is cached, then checked to be a hit. The
baseline is a bare aiohttp app on uvloop (one catch-all route, no middleware) answering each of those
URLs with the very bytes the replica answered. Both get the same requests from one client with 32
connections, each request with an X-Request-Id as nginx sends; a server's CPU time (user + system, from
/proc) over --requests requests is its cost. Rounds alternate (replica, bare, replica, ...) so that the
machine's drift falls on both: the app's own cost is the median of the rounds' differences (replica minus
the bare app measured right after it), the ratio the median of their ratios.

Then, on the same replica, what a cache miss costs against a hit, and what fewer requests in flight
cost: --kind-requests reads of each kind (GET /reviews, GET /reviews/meta) as hits (the cached products)
and as misses (products not read before, each once; every answer checked to be one by its X-Cache
header), in turn; then hits from 1, 4 and CONNECTIONS connections. Through nginx, three replicas share
two cores with PostgreSQL, nginx and the load generator: each replica gets few requests per wake-up, and
`bench/cpu_profile.py` measures about twice this part's CPU per request for the same mix.

PostgreSQL is BENCH_DATABASE_URL or DATABASE_URL (a role that may CREATE DATABASE), else an embedded
server in $DATA_DIR/bench-pg. Results: bench/results/replica.json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import signal
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
import chaos  # (bench/chaos.py: the stack helpers, a free port)
from chaos import BIN, ROOT, stack

DB_NAME = "atelier_bench_replica"
CONNECTIONS = 32

# The baseline: aiohttp's own floor for answering a request with bytes it already holds.
BARE_APP = """
import json, os, sys
import uvloop
from aiohttp import web

bodies = json.load(open(sys.argv[1]))
prepared = {path: body.encode() for path, body in bodies.items()}

async def answer(request):
    body = prepared.get(request.path_qs)
    if body is None:
        return web.Response(status=204)
    return web.Response(body=body, content_type="application/json")

app = web.Application()
app.router.add_route("GET", "/{tail:.*}", answer)
uvloop.install()
web.run_app(app, host="127.0.0.1", port=int(sys.argv[2]), access_log=None, print=None)
"""


def log(message: str) -> None:
    print(f"replica: {message}", flush=True)


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def mix_urls(products: int) -> list[str]:
    """The mix's cached reads (bench/chaos.py's Traffic) on the first `products` products."""
    urls = []
    for product_id in range(1, products + 1):
        urls.append(f"/reviews/meta?product_id={product_id}")
        for sort in ("relevant", "newest", "helpful"):
            for count in (5, 20, 100):
                urls.append(f"/reviews?product_id={product_id}&sort={sort}&count={count}")
    return urls


async def hammer(
    session: aiohttp.ClientSession,
    base: str,
    urls: list[str],
    requests: int,
    connections: int = CONNECTIONS,
    expect: str | None = None,
) -> int:
    """Send `requests` GETs over the URLs in turn from `connections` workers; returns the answers that
    were not 200 (or, with `expect`, whose X-Cache was not that)."""
    serial = iter(range(requests))
    failed = 0

    async def worker() -> None:
        nonlocal failed
        for i in serial:
            headers = {"X-Request-Id": f"bench-replica-{i}"}
            async with session.get(base + urls[i % len(urls)], headers=headers) as response:
                await response.read()
                cache = response.headers.get("X-Cache")
                failed += response.status != 200 or (expect is not None and cache != expect)

    await asyncio.gather(*(worker() for _ in range(connections)))
    return failed


async def cpu_per_request(
    session: aiohttp.ClientSession,
    base: str,
    pid: int,
    urls: list[str],
    requests: int,
    connections: int = CONNECTIONS,
    expect: str | None = None,
) -> dict[str, float]:
    """The server's CPU time per request (µs) and the requests per second over one `hammer`; every
    answer must be 200 (and, with `expect`, have that X-Cache)."""
    cpu, began = cpu_seconds(pid), time.perf_counter()
    failed = await hammer(session, base, urls, requests, connections, expect)
    used, elapsed = cpu_seconds(pid) - cpu, time.perf_counter() - began
    if failed:
        raise SystemExit(f"replica: {failed} of {requests} answers were not 200 {expect or ''}")
    return {"cpu_us_per_request": 1e6 * used / requests, "rps": requests / elapsed}


async def misses_and_wakeups(
    session: aiohttp.ClientSession, base: str, pid: int, args: argparse.Namespace
) -> dict[str, Any]:
    """A miss against a hit per kind (products beyond --urls, each read once), then hits at fewer
    connections: the replica's CPU per request for each."""
    n = args.kind_requests
    fresh = iter(range(args.urls + 1, args.products + 1))
    hot = range(1, args.urls + 1)
    kinds = {
        "reviews": "/reviews?product_id={}&sort=relevant&count=5",
        "meta": "/reviews/meta?product_id={}",
    }
    result: dict[str, Any] = {}
    hits = {kind: [url.format(hot[i % len(hot)]) for i in range(n)] for kind, url in kinds.items()}
    for kind, url in kinds.items():
        misses = [url.format(next(fresh)) for _ in range(n)]
        hit = (await cpu_per_request(session, base, pid, hits[kind], n, expect="hit"))["cpu_us_per_request"]
        miss = (await cpu_per_request(session, base, pid, misses, n, expect="miss"))["cpu_us_per_request"]
        hit, miss = round(hit, 1), round(miss, 1)
        result[kind] = {"hit_us": hit, "miss_us": miss, "miss_over_hit": round(miss / hit, 2)}
        log(f"{kind:7s}: a hit {hit:6.1f} µs CPU, a miss {miss:6.1f} µs ({miss / hit:.1f}x)")
    result["hits_by_connections"] = {}
    for connections in (1, 4, CONNECTIONS):
        measured = await cpu_per_request(session, base, pid, hits["reviews"], n, connections, expect="hit")
        used = round(measured["cpu_us_per_request"], 1)
        result["hits_by_connections"][connections] = used
        log(f"hits from {connections:2d} connections: {used:6.1f} µs CPU per request")
    return result


async def measure(args: argparse.Namespace, api: tuple[int, int], bare_app: Any) -> dict[str, Any]:
    (api_port, api_pid), urls = api, mix_urls(args.urls)
    connector = aiohttp.TCPConnector(limit=CONNECTIONS)
    timeout = aiohttp.ClientTimeout(total=chaos.ATTEMPT_TIMEOUT)  # a request that hangs fails, in 10 s
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        api_base = f"http://127.0.0.1:{api_port}"
        bodies: dict[str, str] = {}
        hits = 0
        for _ in range(20):  # until every answer is cached (the cache fills once its listener is up)
            hits = 0
            for url in urls:  # keeping each answer for the bare app
                async with session.get(api_base + url) as response:
                    assert response.status == 200, (url, response.status)
                    bodies[url] = (await response.read()).decode()
                    hits += response.headers.get("X-Cache") == "hit"
            if hits == len(urls):
                break
            await asyncio.sleep(0.25)
        else:
            raise SystemExit(f"replica: only {hits} of {len(urls)} reads came from the cache")
        bare_port, bare_pid = await bare_app(bodies)
        targets = {"api": (api_base, api_pid), "bare": (f"http://127.0.0.1:{bare_port}", bare_pid)}
        await hammer(session, targets["bare"][0], urls, len(urls))  # its connections and first answers
        rounds: dict[str, list[dict[str, float]]] = {"api": [], "bare": []}
        for round_number in range(1, args.rounds + 1):
            for name, (base, pid) in targets.items():
                expect = "hit" if name == "api" else None  # every answer of the replica's from its cache
                measured = await cpu_per_request(session, base, pid, urls, args.requests, expect=expect)
                rounds[name].append(measured)
                log(
                    f"round {round_number} {name:4s}: {measured['cpu_us_per_request']:6.1f} µs CPU per "
                    f"request, {measured['rps']:7.0f} req/s"
                )
        kinds = await misses_and_wakeups(session, api_base, api_pid, args)
    median = {name: statistics.median(r["cpu_us_per_request"] for r in rs) for name, rs in rounds.items()}
    # Each round's replica against the bare app measured right after it: the pairs share the machine's state.
    paired = [
        (api["cpu_us_per_request"], bare["cpu_us_per_request"])
        for api, bare in zip(rounds["api"], rounds["bare"], strict=True)
    ]
    return {
        "when": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": f"{platform.node()} ({os.cpu_count()} cores)",
        "products_loaded": args.products,
        "urls": len(urls),
        "requests_per_round": args.requests,
        "rounds": rounds,
        "api_cpu_us_per_request": round(median["api"], 1),
        "bare_cpu_us_per_request": round(median["bare"], 1),
        "app_overhead_us_per_request": round(statistics.median(api - bare for api, bare in paired), 1),
        "ratio": round(statistics.median(api / bare for api, bare in paired), 2),
        "kind_requests": args.kind_requests,
        "misses_and_wakeups": kinds,
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--products", type=int, default=10_000, help="products in the generated export")
    parser.add_argument("--urls", type=int, default=40, help="products whose reads are cached and asked")
    parser.add_argument("--requests", type=int, default=20_000, help="requests per round and server")
    parser.add_argument("--rounds", type=int, default=9, help="rounds per server, alternating")
    parser.add_argument(
        "--kind-requests", type=int, default=3_000, help="requests per kind, as hits and as misses"
    )
    parser.add_argument("--results", type=Path, default=ROOT / "bench" / "results")
    args = parser.parse_args()
    if not 1 <= args.rounds <= 20 or not 1_000 <= args.requests <= 200_000 or not 1 <= args.urls <= 1_000:
        parser.error("--rounds 1-20, --requests 1,000-200,000, --urls 1-1,000")
    if args.urls + 2 * args.kind_requests > args.products:
        parser.error("--products must hold --urls plus two --kind-requests of products never read")
    if args.kind_requests < 100:
        parser.error("--kind-requests at least 100")
    signal.signal(signal.SIGINT, stack.interrupt)
    signal.signal(signal.SIGTERM, stack.interrupt)
    # Every round at >= 500 req/s, the misses and hits at fewer connections at >= 200, or it is stopped.
    budget = 60 + 2 * args.rounds * (10 + args.requests / 500) + 7 * (10 + args.kind_requests / 200)
    with (
        chaos.ends_cleanly(log, budget),
        stack.database(("BENCH_DATABASE_URL", "DATABASE_URL"), "bench-pg") as server_url,
        stack.supervised() as processes,
        tempfile.TemporaryDirectory(prefix="atelier-bench-replica-") as scratch,
    ):
        db_url = asyncio.run(stack.fresh_database(server_url, DB_NAME))
        env = os.environ | {"DATABASE_URL": db_url, "LOG_LEVEL": "WARNING"}
        export = stack.DATA_DIR / f"bench-export-{args.products}"
        stack.generate(export, args.products, env)
        log(f"loading {args.products:,} products into {DB_NAME}")
        stack.run([BIN / "atelier-load", "--data", export, "--no-progress"], env)
        api_port = chaos.free_port()
        # Entries live longer than the run (a TTL of 60 s, the default until 2026-12-07, expired some
        # between the warm-up and the rounds, which then measured misses as hits: 74 of 3,000 "hits" in a
        # whole make bench).
        replica_env = env | {
            "API_HOST": "127.0.0.1",
            "API_PORT": str(api_port),
            "REPLICA_NAME": "bench",
            "CACHE_TTL": str(round(2 * budget)),
        }
        processes.append(stack.start("api", [str(BIN / "atelier-api")], replica_env))
        stack.wait_for_port(api_port, processes[-1][1], "api")

        async def bare_app(bodies: dict[str, str]) -> tuple[int, int]:
            answers, port = Path(scratch) / "bodies.json", chaos.free_port()
            answers.write_text(json.dumps(bodies))
            command = [sys.executable, "-c", BARE_APP, str(answers), str(port)]
            processes.append(stack.start("bare", command, env))
            await asyncio.to_thread(stack.wait_for_port, port, processes[-1][1], "bare")
            return port, processes[-1][1].pid

        measured = measure(args, (api_port, processes[-1][1].pid), bare_app)
        result = asyncio.run(asyncio.wait_for(measured, budget))
    print()
    for label, key in [
        ("replica (atelier-api, cache hits)", "api_cpu_us_per_request"),
        ("bare aiohttp app, same bytes", "bare_cpu_us_per_request"),
        ("the application's own code (paired)", "app_overhead_us_per_request"),
    ]:
        print(f"  {label:36s}{result[key]:7.1f} µs CPU per request")
    print(f"  {'ratio':36s}{result['ratio']:7.2f}x  (median of {args.rounds} paired rounds)")
    kinds = result["misses_and_wakeups"]
    for kind in ("reviews", "meta"):
        row = kinds[kind]
        print(
            f"  {kind + ': a miss against a hit':36s}{row['miss_us']:7.1f} against {row['hit_us']:.1f} µs"
            f"  ({row['miss_over_hit']:.1f}x)"
        )
    by_connections = ", ".join(f"{c}: {us:.1f}" for c, us in kinds["hits_by_connections"].items())
    print(f"  {'hits by connections (µs per request)':36s} {by_connections}")
    print(f"\n  written to {chaos.save_results(args.results, 'replica.json', result)}")


if __name__ == "__main__":
    main()
