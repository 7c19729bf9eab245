"""Profile: where the CPU goes while the stack serves the realistic mix. Never in CI; loopback only.

    .venv/bin/python bench/cpu_profile.py                                  # 100,000 products, 20 s
    .venv/bin/python bench/cpu_profile.py --products 1000011 --seconds 30  # full scale (loads it first)

It starts the same stack as bench/http_bench.py (a fresh load, three `atelier-api` replicas as a
least-privileged role, nginx from the project's template with its rate limit lifted) and drives it with
bench/chaos.py's closed loop (~70% GET /reviews, 25% /reviews/meta, 5% writes, Zipf-skewed products)
at --concurrency requests in flight: first for --warm-seconds (default 60), so that the replicas' caches
hold what a replica that has served a while holds (bench/http_bench.py's warm-up, for the same reason),
then for the measured --seconds. Over those it measures two things:

- the machine's CPU by process group (API replicas, nginx, PostgreSQL, this load generator, the rest),
  from /proc: user + system seconds over the run, as a share of the time both cores had;
- one replica's Python stacks, sampled by py-spy (100 per second): the functions its CPU is spent in
  (self time), and how it splits between the app's own modules, aiohttp, asyncpg, the event loop and
  the rest (inclusive time, by the first frame of each group on the stack).

Results: bench/results/profile.json and the raw py-spy stacks in bench/results/profile-api-1.txt.
PostgreSQL is BENCH_DATABASE_URL or DATABASE_URL, else an embedded server in $DATA_DIR/bench-pg.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any, NamedTuple

import aiohttp
import chaos  # (bench/chaos.py: traffic mix, closed loop, stack start-up)
from chaos import ROOT, stack

DB_NAME = "atelier_bench_profile"
# A sample whose innermost Python frame is the event loop's run call is time in uvloop's C code (socket
# I/O, the HTTP parser's C part, callbacks) with no Python frame above it.
EVENT_LOOP = ("asyncio/runners.py", "asyncio/base_events.py")
# Frames that say which layer a sample is in (the innermost match wins). The app's entry points
# (__main__, serve) are on every stack and say nothing.
NOT_A_LAYER = ("atelier_api/__main__.py", "atelier_api/serve.py")
LAYERS = (
    ("json logging (access log)", ("logging/", "logs.py")),
    ("asyncpg (protocol, pool)", ("asyncpg/",)),
    ("the app's handlers and data layer", ("atelier_api/",)),
    ("aiohttp (HTTP parsing, responses)", ("aiohttp/",)),
    ("prometheus_client", ("prometheus_client/",)),
    ("orjson", ("orjson",)),
)


def summarize_stacks(raw: Path) -> dict[str, Any]:
    """py-spy's collapsed stacks ("frame;frame;... count" per line): self time per function, and time per
    layer."""
    leaves: Counter[str] = Counter()
    layers: Counter[str] = Counter()
    total = 0
    for line in raw.read_text().splitlines():
        stack_text, _, count_text = line.rpartition(" ")
        if not count_text.isdigit():
            continue
        count = int(count_text)
        total += count
        frames = stack_text.split(";")
        leaves[frames[-1]] += count
        if any(mark in frames[-1] for mark in EVENT_LOOP):
            layers["uvloop (C: sockets, callbacks)"] += count
            continue
        for frame in reversed(frames):
            if any(mark in frame for mark in NOT_A_LAYER):
                continue
            layer = next((name for name, marks in LAYERS if any(mark in frame for mark in marks)), None)
            if layer:
                layers[layer] += count
                break
        else:
            layers["the rest (asyncio, yarl, ...)"] += count
    share = lambda n: round(100 * n / total, 1) if total else 0.0  # noqa: E731
    return {
        "samples": total,
        "layers_pct": {name: share(n) for name, n in layers.most_common()},
        "top_functions_pct": {name: share(n) for name, n in leaves.most_common(20)},
    }


class Measured(NamedTuple):
    """The measured --seconds of the mix."""

    step: dict[str, Any]  # chaos.ramp's step: throughput, latencies, errors
    cache: dict[str, Any]  # the replicas' cache hits and misses over it
    cpu_used: dict[str, float]  # CPU seconds by process group (chaos.cpu_since)
    seconds: float
    sampler: subprocess.Popen[bytes]  # py-spy, recording the first replica


async def drive(
    base: str, ports: list[int], args: argparse.Namespace, sample: Callable[[], subprocess.Popen[bytes]]
) -> Measured:
    """The mix for --warm-seconds (the replicas' caches fill, as in a replica that has served a while),
    then the measured --seconds: py-spy (`sample`) and the CPU reading start after the warm-up."""
    traffic = chaos.Traffic(args.products, f"profile{os.getpid()}")
    connector = aiohttp.TCPConnector(limit=args.concurrency)
    timeout = aiohttp.ClientTimeout(total=chaos.ATTEMPT_TIMEOUT)  # a request that hangs fails, in 10 s
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        await chaos.ramp(session, base, traffic, [8], 3)  # learn ids, first connections
        if args.warm_seconds:
            print(
                f"profile: the mix at {args.concurrency} in flight for {args.warm_seconds:.0f} s first",
                flush=True,
            )
            await chaos.ramp(session, base, traffic, [args.concurrency], args.warm_seconds)
        before = await chaos.cache_lookups(session, ports)
        cpu_before, began = chaos.cpu_reading(os.getpid()), time.monotonic()
        sampler = sample()
        (step,) = await chaos.ramp(session, base, traffic, [args.concurrency], args.seconds)
        used, elapsed = chaos.cpu_since(cpu_before), time.monotonic() - began
        after = await chaos.cache_lookups(session, ports)
    return Measured(step, chaos.hit_rate(before, after), used, elapsed, sampler)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--products", type=int, default=100_000)
    parser.add_argument("--seconds", type=float, default=20.0, help="seconds of measured load (5-120)")
    parser.add_argument("--concurrency", type=int, default=32, help="requests in flight (1-256)")
    parser.add_argument(
        "--warm-seconds",
        type=float,
        default=60.0,
        help="seconds of the mix before the profile (0-600; 0: from a cold start, as before 2026-12-07)",
    )
    parser.add_argument("--results", type=Path, default=ROOT / "bench" / "results")
    args = parser.parse_args()
    if not 5 <= args.seconds <= 120 or not 1 <= args.concurrency <= 256 or not 0 <= args.warm_seconds <= 600:
        parser.error("--seconds must be 5-120, --concurrency 1-256 and --warm-seconds 0-600")
    py_spy = shutil.which("py-spy", path=str(Path(sys.executable).parent)) or shutil.which("py-spy")
    if py_spy is None:
        raise SystemExit("py-spy is not installed: make install (it is in the dev extras)")
    args.results.mkdir(parents=True, exist_ok=True)
    raw = args.results / "profile-api-1.txt"

    with (
        stack.database(("BENCH_DATABASE_URL", "DATABASE_URL"), "bench-pg") as server_url,
        stack.supervised() as processes,
    ):
        running, base, _ = chaos.loaded_stack(
            server_url, processes, stack.nginx_binary(), DB_NAME, args.products, "bench", "atelier_api_bench"
        )
        ports = [replica.port for replica in running.replicas]
        replica = running.replicas[0].process

        def sample() -> subprocess.Popen[bytes]:
            return subprocess.Popen(
                [py_spy, "record", "--pid", str(replica.pid), "--rate", "100", "--format", "raw",
                 "--duration", str(int(args.seconds)), "--output", str(raw), "--nonblocking"],
                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
            )  # fmt: skip

        step, cache, used, elapsed, sampler = asyncio.run(drive(base, ports, args, sample))
        _, errors = sampler.communicate(timeout=args.seconds + 30)
        if sampler.returncode != 0:
            raise SystemExit(f"py-spy failed: {errors.decode(errors='replace').strip()}")

    cores = os.cpu_count() or 1
    most_first = dict(sorted(used.items(), key=lambda item: -item[1]))
    result = {
        "products": args.products,
        "concurrency": args.concurrency,
        "warm_seconds": args.warm_seconds,
        "seconds": round(elapsed, 1),
        "cores": cores,
        "load": step,
        "cache": cache,
        "cpu_seconds": {group: round(seconds, 2) for group, seconds in most_first.items()},
        "cpu_share_pct": chaos.cpu_shares(most_first, elapsed),
        "api_1": summarize_stacks(raw),
    }
    chaos.save_results(args.results, "profile.json", result)
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
