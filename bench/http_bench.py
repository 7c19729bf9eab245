"""HTTP: the API through nginx against the static limit of the same topology, measured in the same run.
Part of `make bench`; loopback only, bounded in time.

    .venv/bin/python bench/http_bench.py                       # 100,000 products (about 3 minutes)
    .venv/bin/python bench/http_bench.py --products 1000011    # full scale (the generate + load take longer)

It starts a stack of its own, with bench/chaos.py's code: PostgreSQL, a generated export of --products
products loaded by the real loader into a fresh database `atelier_bench_http`, three `atelier-api`
replicas logged in as a least-privileged role, and nginx rendered from the project's template with its
rate limit lifted (a single client would otherwise meet the per-client limit).

The baseline is the same topology with the application taken out: three extra nginx processes (one
worker each, like the three single-process replicas) that answer every GET from a file, and a second
copy of the SAME load balancer config (rendered from the same template, keepalive included) in front of
them. The two files have the mean size of real responses, measured first from a sample of the mix:
`/reviews/meta` paths get the meta file, other GETs the reviews file, writes an empty 204. Each file is
the largest real response within the mean, padded to it with spaces: valid JSON of the mean's size, so
nginx's gzip works alike on both and the generator reads (and learns ids from) both alike.

First the API alone gets the mix for --warm-seconds (default 180; 16 in flight): its replicas' caches
fill for minutes after a start (hits rose from 68% in the first 15 s to 87% after 250 s, full scale),
and a running service is measured in its steady state, not in its first minute. The warm-up's own
throughput and hit rate are reported; --warm-seconds 0 measures from a cold start. The static stack
needs no warming: its files are in the page cache after the first requests.

Both load balancers get the same closed-loop generator (bench/chaos.py's: the realistic mix, ~70%
GET /reviews, 25% /reviews/meta, 5% writes, Zipf-skewed product ids) at rising concurrency, the static
and the API step in turn. Each step's requests in flight are shared by --generators processes (default:
one per core) that start together: a single Python process tops out at one core, which would make the
static limit the generator's own. No garbage collection of the generator's runs inside a measured
window (chaos.without_gc_pauses): its pauses would land in the latencies. Each step also records every
process group's share of the cores and the generator's CPU per request, which the report prints for
both peaks. A peak is the best throughput of a step with no error. Then an open-loop run (one
process) at 70% of the API's peak gives the p99 at that rate, and the same open loop against the static
stack gives the tail that the generator, nginx and the shared cores add at that rate whoever answers.
The open loops' process runs at niceness --open-loop-nice (default -5; root only, else as it is): among
the stack's processes it waited its turn for a core, read no answer meanwhile and then sent what fell due
all at once, and the p99 it reported held those waits (chaos.generator_priority). An open loop's latency
counts from when a request fell due, not from when it was sent, so the generator's own lateness is in
it (no coordinated omission), and a request still unanswered at the end counts as an error.
Targets (issue 7): API peak >= 0.5x the static peak (first milestone 0.25x), p99 <= 25 ms at 70% of the
API peak, 0 errors. The load generator runs on the same cores as nginx, the replicas and PostgreSQL, so
each limit is the whole machine's.

Results: bench/results/http.json, and docs/images/http-latency-throughput.png (--chart): p50 and p99
latency against throughput at each closed-loop step, static and API on one chart. PostgreSQL is
BENCH_DATABASE_URL or DATABASE_URL (a role that may CREATE DATABASE), else an embedded server in
$DATA_DIR/bench-pg. Ctrl-C stops everything it started.
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import os
import platform
import random
import signal
import subprocess
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
import chaos  # (bench/chaos.py: traffic mix, closed-loop ramp, stack start-up)
import orjson
from chaos import GENERATOR, ROOT, Stats, Traffic, ms, percentile, stack

DB_NAME = "atelier_bench_http"
SAMPLE = 400  # real responses measured for the file sizes
OPEN_LOOP_LOAD = 0.7
MAX_IN_FLIGHT = 256
# A closed-loop step's generator processes each learn ids and open their connections with this many
# requests first, then start together this many seconds after the step was handed out.
WARM_REQUESTS = 20
START_SLACK = 1.5
WARM_CONCURRENCY = 16  # the API's warm-up (--warm-seconds): requests in flight

STATIC_CONF = """\
worker_processes 1;
pid nginx.pid;
error_log logs/error.log warn;
events {{ worker_connections 4096; }}
http {{
    types {{ }}
    default_type application/json;
    sendfile on;
    tcp_nopush on;
    access_log off;
    keepalive_timeout 65;
    keepalive_requests 10000;
    client_body_temp_path tmp/client_body;
    proxy_temp_path tmp/proxy;
    fastcgi_temp_path tmp/fastcgi;
    uwsgi_temp_path tmp/uwsgi;
    scgi_temp_path tmp/scgi;
    server {{
        listen 127.0.0.1:{port};
        root {www};
        if ($request_method !~ ^(GET|HEAD)$) {{ return 204; }}
        location /reviews/meta {{ try_files /meta.json =500; }}
        location / {{ try_files /reviews.json =500; }}
    }}
}}
"""


def log(message: str) -> None:
    print(f"http: {message}", flush=True)


def start_nginx(
    nginx: str, prefix: Path, name: str, port: int, processes: list[Any], env: dict[str, str]
) -> None:
    command = stack.nginx_command(prefix, nginx)
    check = subprocess.run([*command, "-t"], capture_output=True, text=True, check=False)
    if check.returncode != 0:
        raise SystemExit(f"http: nginx refused the configuration of {name}:\n{check.stderr}")
    processes.append(stack.start(name, command, env))
    stack.wait_for_port(port, processes[-1][1], name)


def static_stack(
    nginx: str, prefix: Path, files: dict[str, bytes], processes: list[Any], env: dict[str, str]
) -> str:
    """Three static nginx servers and a copy of the project's load balancer in front of them."""
    www = prefix / "www"
    www.mkdir(parents=True, exist_ok=True)
    for name, body in files.items():
        (www / name).write_bytes(body)
    ports = [chaos.free_port() for _ in range(chaos.REPLICAS)]
    for i, port in enumerate(ports, start=1):
        server = prefix / f"static-{i}"
        for sub in ("logs", "tmp"):
            (server / sub).mkdir(parents=True, exist_ok=True)
        (server / "nginx.conf").write_text(STATIC_CONF.format(port=port, www=www))
        start_nginx(nginx, server, f"static-{i}", port, processes, env)
    http_port = chaos.free_port()
    stack.render_nginx(prefix / "lb", ports, http_port, chaos.UNLIMITED)
    start_nginx(nginx, prefix / "lb", "static-lb", http_port, processes, env)
    return f"http://127.0.0.1:{http_port}"


async def sample_sizes(session: aiohttp.ClientSession, base: str, traffic: Traffic) -> dict[str, Any]:
    """Mean uncompressed size of real /reviews and /reviews/meta answers of the mix, and a file of each."""
    bodies: dict[str, list[bytes]] = {"reviews": [], "meta": []}
    for _ in range(SAMPLE * 8):  # bounded: the mix is ~25% meta
        if min(len(b) for b in bodies.values()) >= SAMPLE:
            break
        request = traffic.next_request()
        if request.kind not in bodies or len(bodies[request.kind]) >= SAMPLE:
            continue
        async with session.get(base + request.path, headers={"Accept-Encoding": "identity"}) as response:
            body = await response.read()
            if response.status != 200:
                raise SystemExit(f"http: {request.path} answered {response.status} while sampling sizes")
        bodies[request.kind].append(body)
        traffic.learn(request, body)
    sizes: dict[str, Any] = {}
    for kind, sample in bodies.items():
        mean = round(sum(len(b) for b in sample) / len(sample))
        # The largest real answer within the mean, padded to it with spaces (JSON allows them): valid JSON,
        # so the generator reads it as it reads the API's (it learns ids from it, and so sends the mix's
        # writes to the static stack too). A cut answer (before 2026-12-08) was not JSON half the time.
        fitting = max((b for b in sample if len(b) <= mean), key=len)
        file = fitting + b" " * (mean - len(fitting))
        orjson.loads(file)
        sizes[kind] = {
            "samples": len(sample),
            "mean_bytes": mean,
            "min_bytes": min(len(b) for b in sample),
            "max_bytes": max(len(b) for b in sample),
            "file": file,
        }
    return sizes


async def open_loop(
    session: aiohttp.ClientSession, base: str, traffic: Traffic, rate: float, seconds: float, nice: int
) -> dict[str, Any]:
    """A fixed rate whatever the answers, at most MAX_IN_FLIGHT in flight (beyond that: shed), from this
    process at niceness `nice` (chaos.generator_priority)."""
    cpu_before = chaos.cpu_reading(os.getpid())
    with chaos.generator_priority(nice) as niceness, chaos.without_gc_pauses():
        stats = await _open_loop(session, base, traffic, rate, seconds)
    cpu = chaos.cpu_use(cpu_before, time.monotonic() - stats.started, stats.requests)
    latencies = chaos.latencies(stats)
    return {
        "generator_nice": niceness,
        "rate_rps": round(rate, 1),
        "seconds": seconds,
        "requests": stats.requests,
        "achieved_rps": round(stats.requests / seconds, 1),
        "errors": stats.failed,
        "shed": stats.shed,
        "statuses": dict(stats.statuses.most_common()),
        "p50_ms": ms(percentile(latencies, 0.5)),
        "p99_ms": ms(percentile(latencies, 0.99)),
        "by_kind": chaos.latency_by_kind(stats),
        "cpu": cpu,
    }


async def _open_loop(
    session: aiohttp.ClientSession, base: str, traffic: Traffic, rate: float, seconds: float
) -> Stats:
    stats = Stats()
    in_flight: set[asyncio.Task[None]] = set()
    end = stats.started + seconds
    issued = 0
    try:
        while (now := time.monotonic()) < end:
            due = int((now - stats.started) * rate) - issued
            for n in range(issued + 1, issued + due + 1):  # the n-th request falls due at n / rate
                if len(in_flight) >= MAX_IN_FLIGHT:
                    stats.shed += 1
                    continue
                request = traffic.next_request()
                due_at = stats.started + n / rate
                task = asyncio.create_task(
                    chaos.send(session, base, request, stats, traffic, retry=False, due=due_at)
                )
                in_flight.add(task)
                task.add_done_callback(in_flight.discard)
            issued += due
            await asyncio.sleep(0.002)
        if in_flight:
            await asyncio.wait(set(in_flight), timeout=chaos.ATTEMPT_TIMEOUT + 1)
    finally:
        stats.outcomes["failed"] += sum(not task.done() for task in in_flight)  # never answered
        for task in in_flight:
            task.cancel()
    return stats


REQUEST_LATENCY = "atelier_http_request_duration_seconds"
POOL_WAIT = "atelier_db_pool_acquire_wait_seconds"


async def server_buckets(
    session: aiohttp.ClientSession, ports: list[int], histogram: str = REQUEST_LATENCY
) -> dict[float, float]:
    """One of the replicas' own histograms (request latency, or the wait for a pool connection), every
    label summed over the three replicas: cumulative counts by bucket bound, in seconds."""
    buckets: dict[float, float] = {}
    for port in ports:
        async with session.get(f"http://127.0.0.1:{port}/metrics") as response:
            for line in (await response.text()).splitlines():
                if line.startswith(f"{histogram}_bucket{{"):
                    bound = line.split('le="', 1)[1].split('"', 1)[0]
                    le = float("inf") if bound == "+Inf" else float(bound)
                    buckets[le] = buckets.get(le, 0.0) + float(line.rsplit(" ", 1)[1])
    return buckets


def server_percentiles(before: dict[float, float], after: dict[float, float]) -> dict[str, Any]:
    """p50 and p99 inside the replicas over a window, as bucket bounds (upper estimates), from two
    scrapes: with the client's figures beside them, they say whether a tail is the replicas' or the
    client's own (queueing in the generator, the network, nginx)."""
    window = sorted((le, after[le] - before.get(le, 0.0)) for le in after)
    total = window[-1][1] if window else 0.0

    def bound(q: float) -> float | None:
        for le, count in window:
            if total and count >= q * total:
                return None if le == float("inf") else round(le * 1000, 1)
        return None

    return {"requests": int(total), "p50_ms_at_most": bound(0.5), "p99_ms_at_most": bound(0.99)}


async def warm_caches(
    session: aiohttp.ClientSession,
    pool: ProcessPoolExecutor,
    args: argparse.Namespace,
    api_base: str,
    replica_ports: list[int],
    run_id: str,
) -> dict[str, Any]:
    """The API's steady state before it is measured: the mix at WARM_CONCURRENCY in flight for
    --warm-seconds, so that the replicas' caches hold what a running service's hold. Their hit rate rises
    for minutes after a start (measured at full scale: 68% in the first 15 s, 86% after 150 s); a service
    runs for days. What it gave (throughput, hit rate) is reported beside the steps."""
    log(f"warming the replicas' caches: the mix at {WARM_CONCURRENCY} in flight for {args.warm_seconds:g} s")
    before = await chaos.cache_lookups(session, replica_ports)
    step = await ramp_in_processes(
        pool, args, api_base, f"http-warm-{run_id}", WARM_CONCURRENCY, args.warm_seconds
    )
    step["cache"] = chaos.hit_rate(before, await chaos.cache_lookups(session, replica_ports))
    log(
        f"  {step['throughput_rps']} req/s, errors {step['errors']}; the caches answered "
        f"{step['cache']['hit_rate_pct']}% of its lookups"
    )
    return step


async def ramp_in_processes(
    pool: ProcessPoolExecutor,
    args: argparse.Namespace,
    base: str,
    run_id: str,
    concurrency: int,
    seconds: float | None = None,
) -> dict[str, Any]:
    """A closed-loop step of `concurrency` requests in flight, shared by --generators processes that start
    together: one Python process cannot drive the static stack to the machine's limit (it would measure
    its own core), so the generator gets as many processes as it may use. With the step: what every process
    group spent of the cores meanwhile, and the generator's CPU per request."""
    loop = asyncio.get_running_loop()
    start_at = time.time() + START_SLACK
    seconds = args.step_seconds if seconds is None else seconds
    shares = [
        concurrency // args.generators + (i < concurrency % args.generators) for i in range(args.generators)
    ]
    pending = [
        loop.run_in_executor(
            pool, generate_share, base, args.products, f"{run_id}-g{i}", share, seconds, start_at
        )
        for i, share in enumerate(shares)
        if share
    ]
    await asyncio.sleep(max(0.0, start_at - time.time()))
    cpu_before, began = chaos.cpu_reading(os.getpid()), time.monotonic()
    done = await asyncio.gather(*pending)
    elapsed = time.monotonic() - began
    requests, errors = sum(d[0] for d in done), sum(d[1] for d in done)
    step = chaos.step_result(
        concurrency, requests, errors, [x for d in done for x in d[2]], max(d[3] for d in done)
    )
    step["generator_processes"] = len(done)
    step["cpu"] = chaos.cpu_use(cpu_before, elapsed, requests)
    return step


def prepare_generator(products: int) -> None:
    """In a generator process, before any step: the Zipf tables, then a pause so that every process of the
    pool gets one such call."""
    chaos.zipf_tables(products)
    time.sleep(0.5)


def generate_share(
    base: str, products: int, run_id: str, concurrency: int, seconds: float, start_at: float
) -> tuple[int, int, list[float], float]:
    """In a generator process: a closed loop of `concurrency` from `start_at` (time.time()) for `seconds`,
    after WARM_REQUESTS that learn ids to vote on and post to. Its requests, errors, seconds per try, and
    how long the loop took."""
    return asyncio.run(_generate_share(base, products, run_id, concurrency, seconds, start_at))


async def _generate_share(
    base: str, products: int, run_id: str, concurrency: int, seconds: float, start_at: float
) -> tuple[int, int, list[float], float]:
    traffic = Traffic(products, run_id=run_id)
    connector = aiohttp.TCPConnector(limit=concurrency + 16, ttl_dns_cache=None)
    timeout = aiohttp.ClientTimeout(total=chaos.ATTEMPT_TIMEOUT)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        warm = Stats()
        for _ in range(WARM_REQUESTS):
            await chaos.send(session, base, traffic.next_request(), warm, traffic, retry=False)
        await asyncio.sleep(max(0.0, start_at - time.time()))
        stats, elapsed = await chaos.closed_loop(session, base, traffic, concurrency, seconds)
    return stats.requests, stats.failed, chaos.latencies(stats), elapsed


def peak_of(steps: list[dict[str, Any]]) -> dict[str, Any] | None:
    clean = [s for s in steps if s["errors"] == 0]
    return max(clean, key=lambda s: s["throughput_rps"]) if clean else None


async def run(
    args: argparse.Namespace,
    nginx: str,
    api_base: str,
    replica_ports: list[int],
    processes: list[Any],
    env: dict[str, str],
) -> dict[str, Any]:
    run_id = f"{random.getrandbits(32):08x}"
    api_traffic = Traffic(args.products, run_id=f"http-{run_id}")
    connector = aiohttp.TCPConnector(limit=MAX_IN_FLIGHT + 16, ttl_dns_cache=None)
    timeout = aiohttp.ClientTimeout(total=chaos.ATTEMPT_TIMEOUT)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        log(f"measuring response sizes: {SAMPLE} real answers each of /reviews and /reviews/meta")
        sizes = await sample_sizes(session, api_base, api_traffic)
        for kind, size in sizes.items():
            log(f"  {kind}: mean {size['mean_bytes']} B (min {size['min_bytes']}, max {size['max_bytes']})")
        files = {"reviews.json": sizes["reviews"]["file"], "meta.json": sizes["meta"]["file"]}
        static_base = static_stack(nginx, stack.RUN_DIR / "bench-http-static", files, processes, env)
        log(f"static limit: 3 nginx file servers behind a copy of the load balancer on {static_base}")

        static_traffic = Traffic(args.products, run_id=f"http-static-{run_id}")
        warm = Stats()
        for _ in range(200):  # warm both paths; the static one learns ids from the files' contents
            await chaos.send(session, api_base, api_traffic.next_request(), warm, api_traffic, retry=False)
            await chaos.send(session, static_base, static_traffic.next_request(), warm, static_traffic, False)

        ramps: dict[str, list[dict[str, Any]]] = {"static": [], "api": []}
        warm_up: dict[str, Any] | None = None
        with ProcessPoolExecutor(args.generators, mp_context=multiprocessing.get_context("spawn")) as pool:
            loop = asyncio.get_running_loop()  # every generator process started now, not in a step,
            # each with its Zipf tables built (a second of CPU at full scale, which a step would measure)
            await asyncio.gather(
                *(
                    loop.run_in_executor(pool, prepare_generator, args.products)
                    for _ in range(args.generators)
                )
            )
            if args.warm_seconds:
                warm_up = await warm_caches(session, pool, args, api_base, replica_ports, run_id)
            log(
                f"closed loop, {args.step_seconds:g} s per step, concurrency {args.steps}; static and API "
                "in turn"
            )
            lookups_before = await chaos.cache_lookups(session, replica_ports)
            for concurrency in args.steps:
                for name, base in (("static", static_base), ("api", api_base)):
                    log(f"  {name}:")
                    ramps[name].append(
                        await ramp_in_processes(
                            pool, args, base, f"http-{name}-{run_id}-c{concurrency}", concurrency
                        )
                    )

        static_peak, api_peak = peak_of(ramps["static"]), peak_of(ramps["api"])
        reference = api_peak or max(ramps["api"], key=lambda s: s["throughput_rps"])
        rate = reference["throughput_rps"] * OPEN_LOOP_LOAD
        log(
            f"open loop at {OPEN_LOOP_LOAD:.0%} of the API peak: {rate:.0f} req/s for {args.open_seconds:g} s"
        )
        before = await server_buckets(session, replica_ports)
        waits_before = await server_buckets(session, replica_ports, POOL_WAIT)
        at_70 = await open_loop(session, api_base, api_traffic, rate, args.open_seconds, args.open_loop_nice)
        at_70["inside_replicas"] = server_percentiles(before, await server_buckets(session, replica_ports))
        at_70["pool_waits"] = server_percentiles(
            waits_before, await server_buckets(session, replica_ports, POOL_WAIT)
        )
        # Only the API's traffic reaches the replicas: its steps and this open loop.
        cache = chaos.hit_rate(lookups_before, await chaos.cache_lookups(session, replica_ports))
        log(f"  the replicas' caches answered {cache['hit_rate_pct']}% of lookups over the API's steps")
        inside, waits = at_70["inside_replicas"], at_70["pool_waits"]
        log(
            f"  p50 {at_70['p50_ms']} ms  p99 {at_70['p99_ms']} ms  errors {at_70['errors']}  "
            f"shed {at_70['shed']}; inside the replicas p50 <= {inside['p50_ms_at_most']} ms, "
            f"p99 <= {inside['p99_ms_at_most']} ms; waits for a pool connection p99 <= "
            f"{waits['p99_ms_at_most']} ms"
        )
        # The tail's baseline: the same rate against the static stack, i.e. what the generator, nginx
        # and the shared cores add to every answer at that rate, whoever answers.
        static_70 = await open_loop(
            session, static_base, static_traffic, rate, args.open_seconds, args.open_loop_nice
        )
        at_70["static_same_rate"] = {
            k: static_70[k] for k in ("achieved_rps", "p50_ms", "p99_ms", "shed", "cpu")
        }
        log(
            f"  the static stack at the same rate: p50 {static_70['p50_ms']} ms  p99 {static_70['p99_ms']} ms"
        )

    ratio = (
        round(api_peak["throughput_rps"] / static_peak["throughput_rps"], 3)
        if api_peak and static_peak
        else None
    )
    # The same comparison without the generator: the servers' CPU per request at the two peaks. The
    # generator shares the cores and costs about as much per request on both sides, which pulls the
    # throughput ratio towards 1; this one says what the servers alone cost (no target, for reading).
    static_us, api_us = (
        ((peak or {}).get("cpu") or {}).get("servers_us_per_request") for peak in (static_peak, api_peak)
    )
    servers_ratio = round(static_us / api_us, 3) if static_us and api_us else None
    errors = sum(s["errors"] for s in ramps["api"]) + at_70["errors"] + (warm_up or {}).get("errors", 0)
    targets = {
        "ratio_at_least_0.5": ratio is not None and ratio >= 0.5,
        "ratio_at_least_0.25_first_milestone": ratio is not None and ratio >= 0.25,
        "p99_at_70pct_at_most_25ms": at_70["p99_ms"] is not None and at_70["p99_ms"] <= 25.0,
        "zero_errors": errors == 0 and at_70["shed"] == 0,
    }
    return {
        "when": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": f"{platform.node()} ({os.cpu_count()} cores)",
        "note": "the load generator runs on the same cores as nginx, the replicas and PostgreSQL: "
        "each limit measured is the whole machine's",
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "products": args.products,
        "replicas": chaos.REPLICAS,
        "nginx_overrides": chaos.UNLIMITED,
        "sizes": {k: {f: v for f, v in s.items() if f != "file"} for k, s in sizes.items()},
        "step_seconds": args.step_seconds,
        "warm_seconds": args.warm_seconds,
        "warm_up": warm_up,
        "ramp": ramps,
        "static_peak": static_peak,
        "api_peak": api_peak,
        "ratio": ratio,
        "servers_cpu_ratio": servers_ratio,
        "open_loop_70pct": at_70,
        "cache": cache,
        "api_errors": errors,
        "targets": targets,
    }


def print_report(result: dict[str, Any]) -> None:
    s, a, o = result["static_peak"], result["api_peak"], result["open_loop_70pct"]
    print()
    print("  concurrency   static req/s  p50 ms  p99 ms  err    API req/s  p50 ms  p99 ms  err")
    for st, ap in zip(result["ramp"]["static"], result["ramp"]["api"], strict=True):
        print(
            f"  {st['concurrency']:11d}  {st['throughput_rps']:12.1f}  {st['p50_ms']!s:>6}  "
            f"{st['p99_ms']!s:>6}"
            f"  {st['errors']:3d}  {ap['throughput_rps']:11.1f}  {ap['p50_ms']!s:>6}  {ap['p99_ms']!s:>6}"
            f"  {ap['errors']:3d}"
        )
    print()
    warm = result.get("warm_up")
    if warm:
        print(
            f"  API warm-up        {warm['concurrency']} in flight for {result.get('warm_seconds')} s before "
            f"the steps: {warm['throughput_rps']} req/s, errors {warm['errors']}, cache hits "
            f"{warm['cache']['hit_rate_pct']}%"
        )
    else:
        print("  API warm-up        none: the steps measured the API from a cold start")
    print(f"  static peak        {s and s['throughput_rps']} req/s (concurrency {s and s['concurrency']})")
    print(
        f"  API peak           {a and a['throughput_rps']} req/s (concurrency {a and a['concurrency']}; "
        f"p50 {a and a['p50_ms']} ms, p99 {a and a['p99_ms']} ms)"
    )
    print(f"  ratio              {result['ratio']}x  (target >= 0.5x; first milestone 0.25x)")
    print(
        f"  servers only       {result.get('servers_cpu_ratio')}x  (the servers' CPU per request, static / "
        "API, at the two peaks: the cost ratio without the load generator's share of the cores; no target)"
    )
    for label, peak in (("static", s), ("API", a)):
        cpu = (peak or {}).get("cpu") or {}
        shares = cpu.get("share_pct") or {}
        print(
            f"  generator, {label:6s}  at that peak: {cpu.get('generator_us_per_request')} µs of CPU per "
            f"request, {shares.get(GENERATOR)}% of the cores (all: {shares})"
        )
    print(
        f"  at 70% of peak     {o['rate_rps']} req/s open loop for {o['seconds']:g} s: p50 {o['p50_ms']} ms, "
        f"p99 {o['p99_ms']} ms (target <= 25 ms), errors {o['errors']}, shed {o['shed']}; "
        f"the generator at niceness {o.get('generator_nice', 0)}"
    )
    open_cpu, peak_cpu = o.get("cpu") or {}, (a or {}).get("cpu") or {}
    print(
        f"  cores at 70%       {open_cpu.get('busy_pct')}% busy ({open_cpu.get('share_pct')}); the servers' "
        f"CPU per request {open_cpu.get('servers_us_per_request')} µs, against "
        f"{peak_cpu.get('servers_us_per_request')} µs at the API peak ({peak_cpu.get('busy_pct')}% busy)"
    )
    kinds = o.get("by_kind") or {}
    print(
        "  by kind            "
        + "; ".join(
            f"{kind} p50 {k['p50_ms']} ms, p99 {k['p99_ms']} ms ({k['tries']})" for kind, k in kinds.items()
        )
    )
    same_rate = o.get("static_same_rate") or {}
    print(
        f"  static, same rate  the static stack at that rate (the tail's baseline): p50 "
        f"{same_rate.get('p50_ms')} ms, p99 {same_rate.get('p99_ms')} ms; the cores "
        f"{(same_rate.get('cpu') or {}).get('busy_pct')}% busy"
    )
    inside = o.get("inside_replicas") or {}
    print(
        f"  inside replicas    the same window from the replicas' own histograms: "
        f"p50 <= {inside.get('p50_ms_at_most')} ms, p99 <= {inside.get('p99_ms_at_most')} ms"
    )
    waits = o.get("pool_waits") or {}
    print(
        f"  pool waits         waits for a database connection in that window: "
        f"p50 <= {waits.get('p50_ms_at_most')} ms, p99 <= {waits.get('p99_ms_at_most')} ms"
    )
    cache = result.get("cache") or {}
    print(
        f"  replicas' caches   {cache.get('hit_rate_pct')}% of lookups were hits over the API's steps "
        f"and open loop ({cache.get('hits')} hits, {cache.get('misses')} misses)"
    )
    print(f"  API errors         {result['api_errors']} (target 0)")
    print(f"  note               {result['note']}")
    print()
    chaos.print_verdicts(result["targets"])


def latency_chart(result: dict[str, Any], out: Path) -> None:
    """p50 and p99 against throughput for each closed-loop step, static and API on one figure."""
    import matplotlib

    matplotlib.use("Agg")  # files only, no display
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(9, 5.5), dpi=110)
    colors = {"static": "tab:gray", "api": "tab:blue"}
    labels = {"static": "static limit (nginx files, same topology)", "api": "API (3 replicas + PostgreSQL)"}
    for name, steps in result["ramp"].items():
        x = [s["throughput_rps"] for s in steps]
        for key, style in (("p50_ms", "o-"), ("p99_ms", "s--")):
            ax.plot(x, [s[key] for s in steps], style, color=colors[name], label=f"{labels[name]}: {key[:3]}")
        for s in steps:
            ax.annotate(
                f"{s['concurrency']}",
                (s["throughput_rps"], s["p99_ms"]),
                textcoords="offset points",
                xytext=(4, 4),
                fontsize=8,
                color=colors[name],
            )
    at_70 = result["open_loop_70pct"]
    if at_70["p99_ms"] is not None:
        ax.plot([at_70["achieved_rps"]], [at_70["p99_ms"]], "*", color="tab:red", markersize=12,
                label=f"API open loop at 70% of peak: p99 {at_70['p99_ms']} ms")  # fmt: skip
    ax.axhline(25, color="tab:red", linewidth=0.8, linestyle=":", label="p99 target at 70% of peak (25 ms)")
    ax.set_yscale("log")
    ax.set_xlim(left=0)
    ax.set_xlabel("throughput (requests/s, closed loop; numbers: requests in flight)")
    ax.set_ylabel("latency through nginx (ms, log scale)")
    ax.set_title(
        f"Latency against throughput, realistic mix, {result['products']:,} products "
        f"({result['when'][:10]}, {result['machine'].split(' (')[-1].rstrip(')')})",
        fontsize=10,
    )
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.12), ncol=2, frameon=False)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, bbox_inches="tight")
    plt.close(fig)


def add_open_loop_nice(parser: argparse.ArgumentParser) -> None:
    """The open loops' --open-loop-nice (chaos.generator_priority), for this script and routing.py."""

    def niceness(text: str) -> int:
        value = int(text)
        if not -20 <= value <= 0:
            raise argparse.ArgumentTypeError("must be -20 to 0")
        return value

    parser.add_argument(
        "--open-loop-nice",
        type=niceness,
        default=-5,
        help="niceness of the open loops' generator process, -20 to 0 (default -5: ahead of the stack's "
        "processes, which stay at 0; 0 runs it among them)",
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--products", type=int, default=100_000, help="products in the generated export")
    parser.add_argument("--steps", type=int, nargs="+", default=[4, 16, 64], help="closed-loop concurrency")
    parser.add_argument("--step-seconds", type=float, default=10.0, help="seconds per step and target")
    parser.add_argument("--open-seconds", type=float, default=15.0, help="seconds of the open-loop run")
    parser.add_argument(
        "--warm-seconds",
        type=float,
        default=180.0,
        help="seconds of the mix sent to the API before its steps, so that they measure its steady state "
        "(0: measure from a cold start)",
    )
    parser.add_argument(
        "--generators",
        type=int,
        default=os.cpu_count() or 1,
        help="processes sharing each closed-loop step's requests (default: one per core)",
    )
    add_open_loop_nice(parser)
    parser.add_argument("--results", type=Path, default=ROOT / "bench" / "results")
    parser.add_argument(
        "--chart",
        type=Path,
        default=ROOT / "docs" / "images" / "http-latency-throughput.png",
        help="PNG chart",
    )
    args = parser.parse_args()
    if not 1 <= args.step_seconds <= 60 or not 1 <= args.open_seconds <= 120:
        parser.error("--step-seconds must be 1-60 and --open-seconds 1-120")
    if not 0 <= args.warm_seconds <= 600:
        parser.error("--warm-seconds must be 0-600")
    if not 1 <= len(args.steps) <= 8 or not all(1 <= c <= 256 for c in args.steps):
        parser.error("--steps: 1 to 8 steps, each 1-256")
    if not 1 <= args.generators <= 16:
        parser.error("--generators must be 1-16")

    signal.signal(signal.SIGINT, stack.interrupt)
    signal.signal(signal.SIGTERM, stack.interrupt)
    measure_budget = (
        2 * len(args.steps) * (args.step_seconds + 20) + 2 * args.open_seconds + args.warm_seconds + 140
    )
    nginx = stack.nginx_binary()
    with (
        chaos.ends_cleanly(log, measure_budget),
        stack.database(("BENCH_DATABASE_URL", "DATABASE_URL"), "bench-pg") as server_url,
        stack.supervised() as processes,
    ):
        running, api_base, db_url = chaos.loaded_stack(
            server_url, processes, nginx, DB_NAME, args.products, "bench", "atelier_api_bench"
        )
        env = os.environ | {"DATABASE_URL": db_url, "LOG_LEVEL": "WARNING"}
        ports = [replica.port for replica in running.replicas]
        measured = run(args, nginx, api_base, ports, processes, env)
        result = asyncio.run(asyncio.wait_for(measured, measure_budget))

    print_report(result)
    out = chaos.save_results(args.results, "http.json", result)
    latency_chart(result, args.chart)
    print(f"\n  written to {out} and {args.chart}")
    raise SystemExit(chaos.exit_status(result["targets"]))


if __name__ == "__main__":
    main()
