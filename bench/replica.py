"""One replica's own CPU per cached answer, against a bare aiohttp app serving the same bytes, measured
in the same run. Loopback only, bounded in time; part of `make bench`.

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


async def hammer(session: aiohttp.ClientSession, base: str, urls: list[str], requests: int) -> int:
    """Send `requests` GETs over the URLs in turn from CONNECTIONS workers; returns non-200 answers."""
    serial = iter(range(requests))
    failed = 0

    async def worker() -> None:
        nonlocal failed
        for i in serial:
            headers = {"X-Request-Id": f"bench-replica-{i}"}
            async with session.get(base + urls[i % len(urls)], headers=headers) as response:
                await response.read()
                failed += response.status != 200

    await asyncio.gather(*(worker() for _ in range(CONNECTIONS)))
    return failed


async def measure(args: argparse.Namespace, api: tuple[int, int], bare_app: Any) -> dict[str, Any]:
    (api_port, api_pid), urls = api, mix_urls(args.urls)
    connector = aiohttp.TCPConnector(limit=CONNECTIONS)
    async with aiohttp.ClientSession(connector=connector) as session:
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
                cpu, began = cpu_seconds(pid), time.perf_counter()
                failed = await hammer(session, base, urls, args.requests)
                used, elapsed = cpu_seconds(pid) - cpu, time.perf_counter() - began
                if failed:
                    raise SystemExit(f"replica: {failed} answers of {name} were not 200")
                rounds[name].append(
                    {"cpu_us_per_request": 1e6 * used / args.requests, "rps": args.requests / elapsed}
                )
                log(
                    f"round {round_number} {name:4s}: {1e6 * used / args.requests:6.1f} µs CPU per request, "
                    f"{args.requests / elapsed:7.0f} req/s"
                )
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
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--products", type=int, default=10_000, help="products in the generated export")
    parser.add_argument("--urls", type=int, default=40, help="products whose reads are cached and asked")
    parser.add_argument("--requests", type=int, default=20_000, help="requests per round and server")
    parser.add_argument("--rounds", type=int, default=9, help="rounds per server, alternating")
    parser.add_argument("--results", type=Path, default=ROOT / "bench" / "results")
    args = parser.parse_args()
    if not 1 <= args.rounds <= 20 or not 1_000 <= args.requests <= 200_000 or not 1 <= args.urls <= 1_000:
        parser.error("--rounds 1-20, --requests 1,000-200,000, --urls 1-1,000")
    if args.urls > args.products:
        parser.error("--urls must be at most --products")
    signal.signal(signal.SIGINT, stack.interrupt)
    signal.signal(signal.SIGTERM, stack.interrupt)
    budget = 60 + 2 * args.rounds * (10 + args.requests / 500)  # a round at >= 500 req/s, or it is stopped
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
        replica_env = env | {"API_HOST": "127.0.0.1", "API_PORT": str(api_port), "REPLICA_NAME": "bench"}
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
    print(f"\n  written to {chaos.save_results(args.results, 'replica.json', result)}")


if __name__ == "__main__":
    main()
