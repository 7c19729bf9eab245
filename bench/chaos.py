"""Soak under chaos: the realistic traffic mix at 70% of the measured peak through nginx for 10 minutes,
one API replica restarted every minute. What `make chaos` runs; loopback only, bounded in time.

    .venv/bin/python bench/chaos.py                  # 10 minutes (about 11 in all)
    .venv/bin/python bench/chaos.py --minutes 1      # a short run

It starts a stack of its own, as the local stack's code does (scripts/stack.py): PostgreSQL, a generated
export of --products products loaded by the real loader into a fresh database `atelier_chaos`, three
`atelier-api` replicas (logged in as a least-privileged role, as `make up`'s) and nginx rendered from
the project's template, on free ports. The nginx rate limit is raised (NGINX_RATE_LIMIT /
NGINX_RATE_BURST overrides) so the soak measures the service, not the limiter; the run says so.

1. Peak: a closed-loop ramp of the mix (rising concurrency, a few seconds per step). The peak is the best
   throughput of a step with no error and p99 under --p99-ms.
2. Soak: an open-loop generator sends --load (0.7) x peak requests per second, whatever the answers,
   with at most --max-in-flight in flight (a request due beyond that is counted as shed, not sent). The
   mix: ~70% GET /reviews, 25% GET /reviews/meta, 3% PUT helpful, 2% POST /reviews, product ids Zipf-
   skewed. A request that fails (connection error, 5xx, 429, or 409 for a POST whose key is in flight)
   is retried by the client when that is safe, up to 3 tries: GETs as they are, a POST with the same
   Idempotency-Key (stored once); never a helpful vote (every PUT counts, as the contract says: nginx
   retries one on another replica itself, counted once, but a client's retry is a new vote), whose
   failure leaves it counted or not: the verdict allows for both. Every 60 s one
   replica in turn gets SIGTERM, drains, exits and is started again on the same port. Every 5 s each
   replica's RSS and request counter are sampled.
3. Report and verdict: statuses, failures split into "retried safely, then succeeded" and "failed",
   p50/p99 per minute, RSS per replica per minute (and an SVG chart), the database's own counts against
   the acknowledged writes. Targets: 0 failed requests; each replica process's RSS after warm-up grows by
   less than --rss-growth (10%). Results go to bench/results/chaos.json; the exit code is 1 when a
   target is missed.

PostgreSQL is CHAOS_DATABASE_URL or DATABASE_URL (a role that may CREATE DATABASE: the run uses a fresh
database `atelier_chaos` on that server), else an embedded server in $DATA_DIR/chaos-pg.
Ctrl-C stops everything it started, the database last.
"""

from __future__ import annotations

import argparse
import asyncio
import bisect
import functools
import gc
import itertools
import json
import math
import os
import platform
import random
import signal
import subprocess
import sys
import time
from array import array
from collections import Counter, deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import orjson

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
sys.path.insert(0, str(ROOT / "scripts"))
import stack  # noqa: E402  (scripts/stack.py: the local stack behind `make up`)

REPLICAS = 3
DB_NAME = "atelier_chaos"
SAMPLE_EVERY = 5.0  # seconds between RSS / counter samples
RESTART_EVERY = 60.0  # seconds between replica restarts
TRIES = 3  # client tries per logical request (the first one included)
ATTEMPT_TIMEOUT = 10.0  # seconds per try
WARMUP = 30.0  # seconds of a replica process's life before its RSS counts as warmed up
# nginx's limit would turn the soak's single client into 429s: the soak measures the service.
UNLIMITED = {"NGINX_RATE_LIMIT": "100000r/s", "NGINX_RATE_BURST": "100000", "NGINX_CONN_LIMIT": "65535"}
RETRYABLE = {429, 502, 503, 504}


def log(message: str) -> None:
    print(f"chaos: {message}", flush=True)


# --- Traffic ------------------------------------------------------------------------------------------


@functools.cache
def zipf_tables(products: int, zipf_s: float = 1.1) -> tuple[array[float], array[int]]:
    """Rank k of all the products drawn with weight 1/k^s: a few hot products and the long tail of a real
    catalogue (until 2026-12-08 only the 100,000 hottest ranks, which left out the 8% of draws that fall
    beyond them at full scale, nearly all cache misses). Cumulative weights by rank, and the shuffled ids
    the ranks map to, so the hot products are spread over the id range. Built once per process (about a
    second of CPU at full scale; a benchmark's generator processes build them before their first step);
    arrays: 8 bytes a product, not a list's 32-36. Read only."""
    cumulative = array("d", itertools.accumulate(1.0 / (k**zipf_s) for k in range(1, products + 1)))
    ids = array("q", range(1, products + 1))
    random.Random(7).shuffle(ids)
    return cumulative, ids


class Traffic:
    """The realistic mix (as bench/locustfile.py): Zipf-skewed product ids, ids learnt from answers."""

    def __init__(self, products: int, run_id: str, zipf_s: float = 1.1) -> None:
        self.cumulative, self.ids = zipf_tables(products, zipf_s)
        self.run_id = run_id
        self.serial = itertools.count(1)
        self.review_ids: deque[int] = deque(maxlen=2000)
        self.characteristics: dict[int, dict[str, int]] = {}

    def product(self) -> int:
        rank = bisect.bisect_left(self.cumulative, random.random() * self.cumulative[-1])
        return self.ids[min(rank, len(self.ids) - 1)]

    def next_request(self) -> Request:
        roll = random.random()
        if roll < 0.03 and self.review_ids:
            return Request(
                "helpful",
                "PUT",
                f"/reviews/{random.choice(self.review_ids)}/helpful",
                {"X-Request-Id": f"chaos-{self.run_id}-v{next(self.serial)}"},
            )
        if roll < 0.05 and self.characteristics:
            product_id = random.choice(list(self.characteristics))
            body = {
                "product_id": product_id,
                "rating": random.randint(1, 5),
                "summary": "Soak test review",
                "body": "Written by the soak test to exercise the write path under chaos. " * 2,
                "recommend": random.random() < 0.75,
                "name": "chaos",
                "email": "chaos@example.com",
                "photos": [],
                "characteristics": {cid: random.randint(1, 5) for cid in self.characteristics[product_id]},
            }
            key = f"chaos-{self.run_id}-p{next(self.serial)}"
            return Request("post", "POST", "/reviews", {"Idempotency-Key": key}, orjson.dumps(body))
        if roll < 0.30:
            return Request("meta", "GET", f"/reviews/meta?product_id={self.product()}", {})
        sort = random.choice(("relevant", "relevant", "newest", "helpful"))
        count = random.choice((5, 5, 5, 20, 100))
        return Request(
            "reviews", "GET", f"/reviews?product_id={self.product()}&sort={sort}&count={count}", {}
        )

    def learn(self, request: Request, body: bytes) -> None:
        """Keep a few review ids (to vote on) and characteristic ids (to post), from 1 answer in 10."""
        if random.random() > 0.1 and self.review_ids and self.characteristics:
            return
        with suppress(ValueError, KeyError, TypeError, AttributeError):
            data = orjson.loads(body)
            if request.kind == "reviews":
                self.review_ids.extend(r["review_id"] for r in data["results"][:5])
            elif request.kind == "meta" and len(self.characteristics) < 2000:
                chars = {str(c["id"]): int(c["id"]) for c in data["characteristics"].values()}
                self.characteristics[int(data["product_id"])] = chars


@dataclass
class Request:
    kind: str
    method: str
    path: str
    headers: dict[str, str]
    body: bytes | None = None


# --- Measurements ---------------------------------------------------------------------------------------


def percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def ms(value: float | None) -> float | None:
    return None if value is None else round(value * 1000, 1)


@dataclass
class Stats:
    started: float = field(default_factory=time.monotonic)
    statuses: Counter[str] = field(default_factory=Counter)  # per try
    kinds: Counter[str] = field(default_factory=Counter)  # per logical request
    outcomes: Counter[str] = field(default_factory=Counter)  # ok / retried_ok / failed
    nginx_retried: int = 0  # answered after nginx passed the request to another replica
    idempotent_replays: int = 0
    votes_acknowledged: int = 0
    votes_unanswered: int = 0  # failed votes, which may or may not have been counted
    reviews_created: int = 0
    shed: int = 0
    failures: list[dict[str, Any]] = field(default_factory=list)  # the first few, for the report
    retried: list[dict[str, Any]] = field(default_factory=list)
    latency: dict[int, list[float]] = field(default_factory=dict)  # minute -> seconds per try
    by_kind: dict[str, list[float]] = field(default_factory=dict)  # request kind -> seconds per try
    per_minute: dict[int, Counter[str]] = field(default_factory=dict)

    last_minute: int = 1 << 30  # answers after the end of the last minute count in it

    @property
    def requests(self) -> int:
        """Logical requests with an outcome (answered, answered after retries, or failed)."""
        return sum(self.outcomes.values())

    @property
    def failed(self) -> int:
        return self.outcomes["failed"]

    def minute(self) -> int:
        return min(self.last_minute, int((time.monotonic() - self.started) // 60))

    def record_try(self, kind: str, status: str, seconds: float) -> None:
        minute = self.minute()
        self.statuses[status] += 1
        self.latency.setdefault(minute, []).append(seconds)
        self.by_kind.setdefault(kind, []).append(seconds)
        self.per_minute.setdefault(minute, Counter())["tries"] += 1

    def record_outcome(self, request: Request, outcome: str, tries: list[str]) -> None:
        self.kinds[request.kind] += 1
        self.outcomes[outcome] += 1
        self.per_minute.setdefault(self.minute(), Counter())[outcome] += 1
        if outcome != "ok":
            entry = {
                "t": round(time.monotonic() - self.started, 1),
                "kind": request.kind,
                "path": request.path,
                "tries": tries,
            }
            target = self.failures if outcome == "failed" else self.retried
            if len(target) < 50:
                target.append(entry)


async def send(
    session: aiohttp.ClientSession,
    base: str,
    request: Request,
    stats: Stats,
    traffic: Traffic,
    retry: bool,
    due: float | None = None,
) -> None:
    """One logical request: up to TRIES tries when retrying is safe (see the module's docstring). `due`:
    when an open loop meant to send it; its first try's latency counts from then, so a generator running
    late adds its lateness instead of hiding it (coordinated omission)."""
    tries: list[str] = []
    retry = retry and request.kind != "helpful"
    for attempt in range(TRIES if retry else 1):
        began = due if due is not None and attempt == 0 else time.monotonic()
        wait = 0.2 * (attempt + 1)
        try:
            async with session.request(
                request.method,
                base + request.path,
                headers=request.headers
                | ({"Content-Type": "application/json"} if request.body is not None else {}),
                data=request.body,
            ) as response:
                body = await response.read()
                status = response.status
                if "," in response.headers.get("X-Upstream", ""):
                    stats.nginx_retried += 1
                retry_after = response.headers.get("Retry-After")
        except (aiohttp.ClientError, TimeoutError) as error:
            label = f"error:{type(error).__name__}"
            stats.record_try(request.kind, label, time.monotonic() - began)
            tries.append(label)
        else:
            stats.record_try(request.kind, str(status), time.monotonic() - began)
            tries.append(str(status))
            if 200 <= status < 300:
                if request.kind == "helpful":
                    stats.votes_acknowledged += 1
                elif request.kind == "post":
                    stats.reviews_created += 1
                    if response.headers.get("Idempotent-Replayed") == "true":
                        stats.idempotent_replays += 1
                else:
                    traffic.learn(request, body)
                stats.record_outcome(request, "ok" if attempt == 0 else "retried_ok", tries)
                return
            retryable = status in RETRYABLE or (status == 409 and request.kind == "post")
            if not retryable:
                break
            with suppress(ValueError, TypeError):
                wait = min(1.0, float(retry_after or wait))
        if retry and attempt + 1 < TRIES:
            await asyncio.sleep(wait)
    if request.kind == "helpful":
        stats.votes_unanswered += 1  # counted or not: a replica may have counted it before failing
    stats.record_outcome(request, "failed", tries)


# --- The stack ------------------------------------------------------------------------------------------


async def database_counts(url: str) -> dict[str, int]:
    conn = await asyncpg.connect(url, timeout=10)
    try:
        row = await conn.fetchrow("SELECT count(*) AS reviews, sum(helpfulness) AS helpfulness FROM reviews")
    finally:
        await conn.close()
    return {"reviews": int(row["reviews"]), "helpfulness": int(row["helpfulness"] or 0)}


@dataclass
class Replica:
    name: str
    port: int
    process: subprocess.Popen[bytes]
    born: float  # monotonic time the process started serving


class Stack:
    def __init__(self, env: dict[str, str], processes: list[tuple[str, subprocess.Popen[bytes]]]) -> None:
        self.env = env
        self.processes = processes  # what stop_all stops, in reverse order
        self.replicas: list[Replica] = []

    def start_replica(self, name: str, port: int) -> subprocess.Popen[bytes]:
        replica_env = self.env | {"API_HOST": "127.0.0.1", "API_PORT": str(port), "REPLICA_NAME": name}
        entry = stack.start(name, [str(BIN / "atelier-api")], replica_env)
        self.processes[:] = [p for p in self.processes if p[0] != name]
        self.processes.insert(0, entry)  # replicas before nginx: stopped after it
        return entry[1]

    def up(self, nginx: str, prefix: Path) -> str:
        ports = [free_port() for _ in range(REPLICAS)]
        for i, port in enumerate(ports, start=1):
            process = self.start_replica(f"api-{i}", port)
            self.replicas.append(Replica(f"api-{i}", port, process, 0.0))
        for replica in self.replicas:
            stack.wait_for_port(replica.port, replica.process, replica.name)
            replica.born = time.monotonic()
        http_port = free_port()
        stack.render_nginx(prefix, ports, http_port, UNLIMITED)
        command = stack.nginx_command(prefix, nginx)
        check = subprocess.run([*command, "-t"], capture_output=True, text=True, check=False)
        if check.returncode != 0:
            raise SystemExit(f"chaos: nginx refused its configuration:\n{check.stderr}")
        self.processes.append(stack.start("nginx", command, self.env))
        stack.wait_for_port(http_port, self.processes[-1][1], "nginx")
        return f"http://127.0.0.1:{http_port}"

    async def restart(self, replica: Replica) -> dict[str, Any]:
        """SIGTERM, wait for the drain and the exit, start again on the same port, wait until it listens."""
        began = time.monotonic()
        old = replica.process
        old.send_signal(signal.SIGTERM)
        try:
            code = await asyncio.to_thread(old.wait, 15)
        except subprocess.TimeoutExpired:
            log(f"{replica.name} did not exit within 15 s of SIGTERM; killing it")
            old.kill()
            code = await asyncio.to_thread(old.wait, 5)
        exited = time.monotonic()
        replica.process = self.start_replica(replica.name, replica.port)
        await asyncio.to_thread(stack.wait_for_port, replica.port, replica.process, replica.name)
        replica.born = time.monotonic()
        return {
            "replica": replica.name,
            "old_pid": old.pid,
            "exit_code": code,
            "drain_and_exit_s": round(exited - began, 2),
            "new_pid": replica.process.pid,
            "listening_after_s": round(replica.born - exited, 2),
        }


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# cpu_reading's name for the process that calls it: the benchmark itself, generating the load.
GENERATOR = "load generator (this script)"
# cpu_reading's groups that serve a request: "the servers' CPU" in every script's figures. Neither the
# generator nor "other" (the rest of the machine: shells, the container engine, cron) is among them.
SERVERS = ("API replicas", "PostgreSQL", "nginx")

# Every process's CPU so far: (pid, start time in ticks) -> (its group, CPU seconds, user + system).
CpuReading = dict[tuple[int, int], tuple[str, float]]


def cpu_reading(own_pid: int) -> CpuReading:
    """Every process's CPU so far and what it is. The generator is the benchmark's own process and the
    processes it started with multiprocessing (bench/http_bench.py's)."""
    reading: CpuReading = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            command = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue  # gone meanwhile
        seconds = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
        if int(entry.name) == own_pid or (int(fields[1]) == own_pid and "multiprocessing" in command):
            group = GENERATOR
        elif "atelier-api" in command:
            group = "API replicas"
        elif command.startswith("nginx"):
            group = "nginx"
        elif "postgres" in command:
            group = "PostgreSQL"
        else:
            group = "other"
        reading[int(entry.name), int(fields[19])] = (group, seconds)
    return reading


def cpu_since(before: CpuReading) -> dict[str, float]:
    """The CPU seconds each group of processes used since `before` (a cpu_reading), process by process:
    one started since counts from 0, one that ended since is left out (its last moments are lost; taking
    group sums instead subtracted its whole life, and a database connection closing during a step made
    PostgreSQL's figure too small, even negative). Groups that used none are left out."""
    used: dict[str, float] = {}
    for key, (group, seconds) in cpu_reading(os.getpid()).items():
        used[group] = used.get(group, 0.0) + seconds - before.get(key, (group, 0.0))[1]
    return {group: used[group] for group in sorted(used) if used[group] > 0}


def servers_seconds(used: dict[str, float]) -> float:
    """The CPU seconds the stack's own processes (SERVERS) used, of cpu_since's figures."""
    return sum(used.get(group, 0.0) for group in SERVERS)


def cpu_shares(used: dict[str, float], seconds: float) -> dict[str, float]:
    """Each group's share (%) of all the machine's cores over `seconds` (cpu_since's figures)."""
    cores = os.cpu_count() or 1
    return {group: round(100 * used_seconds / (seconds * cores), 1) for group, used_seconds in used.items()}


def cpu_use(before: CpuReading, seconds: float, requests: int) -> dict[str, Any]:
    """What a step cost the machine since `before` (a cpu_reading): each process group's share of the
    cores, how busy the cores were in all, and each group's CPU per request, the load generator's apart
    from the servers' (SERVERS: nginx, and the replicas and PostgreSQL, or the static nginx servers). The
    generator is on the same cores as what it measures, and where it costs more (a slower machine) it caps
    the cheaper side sooner; set beside a peak's, an open loop's figures say whether its rate cost each
    request more than the peak did."""
    used = cpu_since(before)
    shares = cpu_shares(used, seconds)

    def per_request(cpu_seconds: float) -> int | None:
        return round(1e6 * cpu_seconds / requests) if requests else None

    return {
        "share_pct": shares,
        "busy_pct": round(sum(shares.values()), 1),
        "generator_us_per_request": per_request(used.get(GENERATOR, 0.0)),
        "servers_us_per_request": per_request(servers_seconds(used)),
        "us_per_request": {group: per_request(cpu_seconds) for group, cpu_seconds in used.items()},
    }


def rss_bytes(pid: int) -> int | None:
    try:
        import psutil

        return int(psutil.Process(pid).memory_info().rss)
    except ImportError:
        pass
    except Exception:  # the process just went away
        return None
    with suppress(OSError, ValueError):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return None


async def requests_counter(session: aiohttp.ClientSession, port: int) -> int | None:
    """The replica's own count of requests answered (atelier_http_requests_total, summed)."""
    try:
        async with session.get(
            f"http://127.0.0.1:{port}/metrics", timeout=aiohttp.ClientTimeout(total=2)
        ) as response:
            text = await response.text()
    except (aiohttp.ClientError, TimeoutError):
        return None
    total = 0.0
    for line in text.splitlines():
        if line.startswith("atelier_http_requests_total{"):
            total += float(line.rsplit(" ", 1)[1])
    return int(total)


async def cache_lookups(session: aiohttp.ClientSession, ports: list[int]) -> Counter[str]:
    """The replicas' response cache hits and misses so far (each replica's own /metrics)."""
    lookups: Counter[str] = Counter()
    for port in ports:
        async with session.get(f"http://127.0.0.1:{port}/metrics") as response:
            for line in (await response.text()).splitlines():
                if line.startswith("atelier_cache_lookups_total{"):
                    result = line.split('result="', 1)[1].split('"', 1)[0]
                    lookups[result] += int(float(line.rsplit(" ", 1)[1]))
    return lookups


def hit_rate(before: Counter[str], after: Counter[str]) -> dict[str, Any]:
    """The cache's hits and misses between two cache_lookups, and the share of hits."""
    hits, misses = after["hit"] - before["hit"], after["miss"] - before["miss"]
    return {"hits": hits, "misses": misses, "hit_rate_pct": round(100 * hits / max(hits + misses, 1), 1)}


# --- Phases ---------------------------------------------------------------------------------------------


@contextmanager
def without_gc_pauses() -> Iterator[None]:
    """Around a measured window of the load generator (a closed-loop step, an open loop; each bounded to
    minutes): no cyclic garbage collection inside it, so that the generator's own pauses do not land in
    the latencies it measures (a full collection of its heap took 37-72 ms on a slow machine, against
    open-loop p99s of tens of ms). Collected before and after, outside the window."""
    enabled = gc.isenabled()
    gc.collect()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()
        gc.collect()


@contextmanager
def generator_priority(nice: int) -> Iterator[int]:
    """Around an open loop: this process (the load generator) at niceness `nice` (below 0: ahead of the
    stack's processes, which stay at 0), back to where it was after; yields the niceness it got. An
    open-loop generator on the cores it measures would otherwise wait its turn behind nginx, the
    replicas and PostgreSQL, and the latencies it reports would hold its own waits: it reads no answer
    while it waits, then sends the requests that fell due meanwhile all at once. Lowering the niceness
    needs root (or CAP_SYS_NICE); without it the loop runs as it is and says so."""
    before = os.getpriority(os.PRIO_PROCESS, 0)
    try:
        os.setpriority(os.PRIO_PROCESS, 0, nice)
    except PermissionError:
        log(f"  cannot set the generator's niceness to {nice} (needs root); it stays at {before}")
        yield before
        return
    try:
        yield nice
    finally:
        os.setpriority(os.PRIO_PROCESS, 0, before)


async def closed_loop(
    session: aiohttp.ClientSession, base: str, traffic: Traffic, concurrency: int, seconds: float
) -> tuple[Stats, float]:
    """`concurrency` workers for `seconds`, each sending the next request when the last one is answered:
    what they saw, and how long it took."""
    stats = Stats()
    end = time.monotonic() + seconds

    async def worker() -> None:
        while time.monotonic() < end:
            await send(session, base, traffic.next_request(), stats, traffic, retry=False)

    with without_gc_pauses():
        began = time.monotonic()
        await asyncio.wait_for(
            asyncio.gather(*(worker() for _ in range(concurrency))), seconds + ATTEMPT_TIMEOUT + 5
        )
        elapsed = time.monotonic() - began
    return stats, elapsed


def latencies(stats: Stats) -> list[float]:
    """Every try's seconds, whatever its minute."""
    return [x for values in stats.latency.values() for x in values]


def latency_by_kind(stats: Stats) -> dict[str, dict[str, Any]]:
    """Tries, p50 and p99 of each kind of request (reviews, meta, helpful, post): says which part of the
    mix makes a tail. A write waits for its commit to reach the disk; a read does not."""
    return {
        kind: {
            "tries": len(values),
            "p50_ms": ms(percentile(values, 0.5)),
            "p99_ms": ms(percentile(values, 0.99)),
        }
        for kind, values in sorted(stats.by_kind.items())
    }


def step_result(
    concurrency: int, requests: int, errors: int, seconds_per_try: list[float], elapsed: float
) -> dict[str, Any]:
    """A closed-loop step's figures (logged as well)."""
    step = {
        "concurrency": concurrency,
        "requests": requests,
        "throughput_rps": round(requests / elapsed, 1),
        "errors": errors,
        "p50_ms": ms(percentile(seconds_per_try, 0.5)),
        "p99_ms": ms(percentile(seconds_per_try, 0.99)),
    }
    log(
        f"  ramp: {concurrency:4d} in flight  {step['throughput_rps']:7.1f} req/s  "
        f"p50 {step['p50_ms']} ms  p99 {step['p99_ms']} ms  errors {step['errors']}"
    )
    return step


async def ramp(
    session: aiohttp.ClientSession, base: str, traffic: Traffic, steps: list[int], seconds: float
) -> list[dict[str, Any]]:
    """Closed loop at each concurrency of `steps` in turn (closed_loop)."""
    results = []
    for concurrency in steps:
        stats, elapsed = await closed_loop(session, base, traffic, concurrency, seconds)
        results.append(step_result(concurrency, stats.requests, stats.failed, latencies(stats), elapsed))
    return results


async def soak(
    session: aiohttp.ClientSession,
    base: str,
    traffic: Traffic,
    running: Stack,
    rate: float,
    seconds: float,
    max_in_flight: int,
) -> tuple[Stats, list[dict[str, Any]], list[dict[str, Any]]]:
    stats = Stats(last_minute=max(0, math.ceil(seconds / 60) - 1))
    restarts: list[dict[str, Any]] = []
    samples: list[dict[str, Any]] = []
    in_flight: set[asyncio.Task[None]] = set()
    end = stats.started + seconds

    async def sampler() -> None:
        next_at = stats.started
        while next_at <= end:
            await asyncio.sleep(max(0.0, next_at - time.monotonic()))
            now = time.monotonic()
            counters = await asyncio.gather(*(requests_counter(session, r.port) for r in running.replicas))
            for replica, counter in zip(running.replicas, counters, strict=True):
                rss = rss_bytes(replica.process.pid)
                samples.append(
                    {
                        "t": round(now - stats.started, 1),
                        "replica": replica.name,
                        "pid": replica.process.pid,
                        "age_s": round(now - replica.born, 1),
                        "rss_mb": None if rss is None else round(rss / 2**20, 1),
                        "requests": counter,
                    }
                )
            next_at += SAMPLE_EVERY

    async def restarter() -> None:
        every = min(RESTART_EVERY, seconds / 2)  # a 1-minute run restarts one replica, at 30 s
        for k in itertools.count(1):
            at = stats.started + k * every
            if at >= end - 5:  # no restart in the last seconds: the run ends with every replica up
                return
            await asyncio.sleep(max(0.0, at - time.monotonic()))
            replica = running.replicas[(k - 1) % len(running.replicas)]
            event = await running.restart(replica)
            event["t"] = round(at - stats.started, 1)
            restarts.append(event)
            log(
                f"  restart {k}: {event['replica']} pid {event['old_pid']} -> {event['new_pid']}  "
                f"(drained and exited {event['exit_code']} in {event['drain_and_exit_s']} s, "
                f"listening {event['listening_after_s']} s later)"
            )

    async def reporter() -> None:
        last = 0
        while time.monotonic() < end:
            await asyncio.sleep(min(30.0, max(0.1, end - time.monotonic())))
            minute_latency = stats.latency.get(stats.minute(), [])
            done = stats.requests
            log(
                f"  t={time.monotonic() - stats.started:5.0f} s  answered {done:7d} "
                f"(+{done - last})  failed {stats.failed}  retried ok "
                f"{stats.outcomes['retried_ok']}  shed {stats.shed}  in flight {len(in_flight)}  "
                f"p99 this minute {ms(percentile(minute_latency[-5000:], 0.99))} ms"
            )
            last = done

    background = [asyncio.create_task(c) for c in (sampler(), restarter(), reporter())]
    issued = 0
    try:
        while (now := time.monotonic()) < end:
            due = int((now - stats.started) * rate) - issued
            for _ in range(due):
                if len(in_flight) >= max_in_flight:
                    stats.shed += 1
                    stats.per_minute.setdefault(stats.minute(), Counter())["shed"] += 1
                    continue
                task = asyncio.create_task(
                    send(session, base, traffic.next_request(), stats, traffic, retry=True)
                )
                in_flight.add(task)
                task.add_done_callback(in_flight.discard)
            issued += due
            await asyncio.sleep(0.002)
        if in_flight:  # the last requests: each try is bounded, so this is too
            await asyncio.wait(set(in_flight), timeout=TRIES * (ATTEMPT_TIMEOUT + 1))
        await asyncio.wait_for(asyncio.gather(*background), timeout=30)
    finally:
        for task in [*background, *in_flight]:
            task.cancel()
    return stats, restarts, samples


# --- Report ---------------------------------------------------------------------------------------------


def rss_verdicts(samples: list[dict[str, Any]], limit: float) -> list[dict[str, Any]]:
    """Per replica process: RSS after warm-up (median of its first 3 samples past WARMUP s of life)
    against its end (median of its last 3); processes that lived too briefly are listed, not judged."""
    by_pid: dict[int, list[dict[str, Any]]] = {}
    for sample in samples:
        if sample["rss_mb"] is not None:
            by_pid.setdefault(sample["pid"], []).append(sample)
    verdicts = []
    for pid, rows in by_pid.items():
        warm = [r for r in rows if r["age_s"] >= WARMUP]
        entry: dict[str, Any] = {
            "replica": rows[0]["replica"],
            "pid": pid,
            "from_t": rows[0]["t"],
            "to_t": rows[-1]["t"],
            "samples": len(rows),
            "rss_min_mb": min(r["rss_mb"] for r in rows),
            "rss_max_mb": max(r["rss_mb"] for r in rows),
        }
        if len(warm) >= 9:  # 45 s of warmed-up samples at least
            start = sorted(r["rss_mb"] for r in warm[:3])[1]
            finish = sorted(r["rss_mb"] for r in warm[-3:])[1]
            growth = finish / start - 1
            entry |= {
                "warm_rss_mb": start,
                "end_rss_mb": finish,
                "growth": round(growth, 4),
                "ok": growth < limit,
            }
        else:
            entry |= {"growth": None, "ok": None}
        verdicts.append(entry)
    return verdicts


def rss_svg(samples: list[dict[str, Any]], restarts: list[dict[str, Any]], out: Path) -> None:
    """RSS per replica over the soak, one polyline per replica, restarts as dashed lines."""
    width, height, pad = 900, 360, 50
    points = [s for s in samples if s["rss_mb"] is not None]
    if not points:
        return
    t_max = max(s["t"] for s in points) or 1.0
    top = max(s["rss_mb"] for s in points) * 1.15
    colours = {"api-1": "#1f77b4", "api-2": "#d62728", "api-3": "#2ca02c"}

    def x(t: float) -> float:
        return pad + (width - 2 * pad) * t / t_max

    def y(mb: float) -> float:
        return height - pad - (height - 2 * pad) * mb / top

    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'font-family="sans-serif" font-size="12">',
        f'<rect width="{width}" height="{height}" fill="white"/>',
        f'<text x="{pad}" y="20">RSS per replica during the soak (MB; dashed: a restart)</text>',
        f'<line x1="{pad}" y1="{height - pad}" x2="{width - pad}" y2="{height - pad}" stroke="black"/>',
        f'<line x1="{pad}" y1="{pad}" x2="{pad}" y2="{height - pad}" stroke="black"/>',
    ]
    for mb in range(0, int(top) + 1, max(10, int(top / 5) // 10 * 10)):
        parts.append(f'<text x="{pad - 8}" y="{y(mb) + 4:.0f}" text-anchor="end">{mb}</text>')
        parts.append(f'<line x1="{pad}" y1="{y(mb):.0f}" x2="{width - pad}" y2="{y(mb):.0f}" stroke="#eee"/>')
    for minute in range(int(t_max // 60) + 1):
        parts.append(
            f'<text x="{x(minute * 60):.0f}" y="{height - pad + 16}" text-anchor="middle">{minute} min</text>'
        )
    for event in restarts:
        colour = colours.get(event["replica"], "gray")
        parts.append(
            f'<line x1="{x(event["t"]):.0f}" y1="{pad}" x2="{x(event["t"]):.0f}" y2="{height - pad}" '
            f'stroke="{colour}" stroke-dasharray="4 4"/>'
        )
    for i, (name, colour) in enumerate(colours.items()):
        for pid in dict.fromkeys(s["pid"] for s in points if s["replica"] == name):
            line = " ".join(f"{x(s['t']):.1f},{y(s['rss_mb']):.1f}" for s in points if s["pid"] == pid)
            parts.append(f'<polyline points="{line}" fill="none" stroke="{colour}" stroke-width="2"/>')
        parts.append(f'<text x="{width - pad - 150 + 50 * i}" y="20" fill="{colour}">{name}</text>')
    parts.append("</svg>")
    out.write_text("\n".join(parts) + "\n")


def rss_table(samples: list[dict[str, Any]], minutes: int) -> dict[str, list[float | None]]:
    """RSS (MB) per replica at the end of each minute (the last sample at or before it)."""
    table: dict[str, list[float | None]] = {}
    for name in sorted({s["replica"] for s in samples}):
        rows = [s for s in samples if s["replica"] == name]
        column: list[float | None] = []
        for minute in range(minutes + 1):
            before = [s for s in rows if s["t"] <= minute * 60 + 0.5]
            column.append(before[-1]["rss_mb"] if before else None)
        table[name] = column
    return table


# --- Main -----------------------------------------------------------------------------------------------


async def run(args: argparse.Namespace, running: Stack, base: str, db_url: str) -> dict[str, Any]:
    traffic = Traffic(args.products, run_id=f"{random.getrandbits(32):08x}")
    connector = aiohttp.TCPConnector(limit=args.max_in_flight + 16, ttl_dns_cache=None)
    timeout = aiohttp.ClientTimeout(total=ATTEMPT_TIMEOUT)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        # Learn a few review and characteristic ids, and warm the replicas' caches and pools.
        warm = Stats()
        for _ in range(200):
            await send(session, base, traffic.next_request(), warm, traffic, retry=False)

        steps = [2, 4, 8, 16, 32, 64, 128]
        log(f"measuring the peak: closed-loop ramp, {args.step_seconds:g} s per step, concurrency {steps}")
        ramp_steps = await ramp(session, base, traffic, steps, args.step_seconds)
        qualified = [s for s in ramp_steps if s["errors"] == 0 and (s["p99_ms"] or 1e9) < args.p99_ms]
        best = max(qualified or ramp_steps[:1], key=lambda s: s["throughput_rps"])
        peak = best["throughput_rps"]
        rate = round(peak * args.load, 1)
        log(
            f"peak {peak} req/s (concurrency {best['concurrency']}, p99 {best['p99_ms']} ms"
            f"{'' if qualified else '; NO step met the p99/error bar: the lowest step is used'}); "
            f"soak at {args.load:.0%} = {rate} req/s for {args.minutes} min, a replica restarted every "
            f"{min(RESTART_EVERY, args.minutes * 30):.0f} s"
        )
        before = await database_counts(db_url)
        stats, restarts, samples = await soak(
            session, base, traffic, running, rate, args.minutes * 60, args.max_in_flight
        )
        after = await database_counts(db_url)
    elapsed = time.monotonic() - stats.started

    per_minute = [
        {
            "minute": m + 1,
            "tries": stats.per_minute.get(m, Counter())["tries"],
            "p50_ms": ms(percentile(stats.latency[m], 0.5)),
            "p99_ms": ms(percentile(stats.latency[m], 0.99)),
            "retried_ok": stats.per_minute.get(m, Counter())["retried_ok"],
            "failed": stats.per_minute.get(m, Counter())["failed"],
            "shed": stats.per_minute.get(m, Counter())["shed"],
        }
        for m in sorted(stats.latency)
    ]
    verdicts = rss_verdicts(samples, args.rss_growth)
    database = {
        "reviews_added": after["reviews"] - before["reviews"],
        # One logical POST (one key) answered 201 is one review, whether or not its 201 was a replay.
        "reviews_acknowledged": stats.reviews_created,
        "helpfulness_added": after["helpfulness"] - before["helpfulness"],
        "votes_acknowledged": stats.votes_acknowledged,
        "votes_unanswered": stats.votes_unanswered,
    }
    targets = {
        "no_failed_requests": stats.failed == 0,
        "rss_flat": all(v["ok"] is not False for v in verdicts),
        "writes_exact": database["votes_acknowledged"]
        <= database["helpfulness_added"]
        <= database["votes_acknowledged"] + database["votes_unanswered"]
        and database["reviews_added"] == database["reviews_acknowledged"],
    }
    return {
        "when": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": f"{platform.node()} ({os.cpu_count()} cores)",
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "products": args.products,
        "replicas": REPLICAS,
        "nginx_overrides": UNLIMITED,
        "ramp": ramp_steps,
        "peak_rps": peak,
        "peak_qualified": bool(qualified),
        "load": args.load,
        "rate_rps": rate,
        "soak_seconds": round(elapsed, 1),
        "achieved_rps": round(stats.requests / (args.minutes * 60), 1),
        "logical_requests": stats.requests,
        "by_kind": dict(stats.kinds),
        "tries_by_status": dict(stats.statuses.most_common()),
        "outcomes": {k: stats.outcomes[k] for k in ("ok", "retried_ok", "failed")},
        "nginx_retried": stats.nginx_retried,
        "idempotent_replays": stats.idempotent_replays,
        "shed": stats.shed,
        "failures": stats.failures,
        "retried_examples": stats.retried[:20],
        "per_minute": per_minute,
        "restarts": restarts,
        "rss_mb_per_minute": rss_table(samples, args.minutes),
        "rss_per_process": verdicts,
        "rss_growth_limit": args.rss_growth,
        "database": database,
        "targets": targets,
        "ok": all(targets.values()),
        "samples": samples,
    }


@contextmanager
def ends_cleanly(say: Callable[[str], None], budget: float) -> Iterator[None]:
    """Around a benchmark's whole run, outside the blocks that start things: Ctrl-C ends it with exit 130
    and an overrun of its `budget` (seconds, asyncio.wait_for's TimeoutError) with exit 1, one line
    each, once everything it started is stopped."""
    try:
        yield
    except KeyboardInterrupt:
        say("interrupted; everything it started is stopped")
        raise SystemExit(130) from None
    except TimeoutError:
        say(f"the run overran its {budget:.0f} s budget; stopped")
        raise SystemExit(1) from None


def save_results(folder: Path, name: str, result: dict[str, Any]) -> Path:
    """Write a benchmark's result as JSON into `folder` (bench/results by default); returns the file."""
    folder.mkdir(parents=True, exist_ok=True)
    out = folder / name
    out.write_text(json.dumps(result, indent=2) + "\n")
    return out


def print_verdicts(targets: dict[str, bool]) -> None:
    """Each target of a benchmark, PASS or FAIL, as every script in bench/ ends its report."""
    for name, ok in targets.items():
        print(f"  {'PASS' if ok else 'FAIL'}  {name}")


def exit_status(targets: dict[str, bool]) -> int:
    """A benchmark's exit status: 1 when it missed a target, so that `make bench` (which runs every
    script whatever the others did) ends with 1 when any did."""
    return 0 if all(targets.values()) else 1


def print_report(result: dict[str, Any]) -> None:
    print()
    print(f"  peak (closed loop, 0 errors, p99 < bar)  {result['peak_rps']} req/s")
    print(
        f"  soak                                    {result['rate_rps']} req/s ({result['load']:.0%}) for "
        f"{result['soak_seconds']} s; achieved {result['achieved_rps']} req/s; shed {result['shed']}"
    )
    print(f"  nginx rate limit raised for the soak    {result['nginx_overrides']}")
    print(f"  logical requests                        {result['logical_requests']}  {result['by_kind']}")
    print(f"  tries by status                         {result['tries_by_status']}")
    outcomes = result["outcomes"]
    print(
        f"  outcomes                                ok {outcomes['ok']}, retried safely then ok "
        f"{outcomes['retried_ok']}, FAILED {outcomes['failed']}; passed on by nginx "
        f"{result['nginx_retried']}; idempotent replays {result['idempotent_replays']}"
    )
    print(f"  restarts                                {len(result['restarts'])}")
    db = result["database"]
    print(
        f"  database                                helpfulness +{db['helpfulness_added']} for "
        f"{db['votes_acknowledged']} votes acknowledged (+{db['votes_unanswered']} unanswered, counted "
        f"or not); reviews +{db['reviews_added']} for "
        f"{db['reviews_acknowledged']} POSTs answered 201"
    )
    print("\n  minute  tries    p50 ms  p99 ms  retried-ok  failed  shed")
    for row in result["per_minute"]:
        print(
            f"  {row['minute']:6d}  {row['tries']:6d}  {row['p50_ms']!s:>6}  {row['p99_ms']!s:>6}  "
            f"{row['retried_ok']:10d}  {row['failed']:6d}  {row['shed']:4d}"
        )
    print("\n  RSS (MB) at the end of each minute; a restart starts a new process")
    table = result["rss_mb_per_minute"]
    print("  minute  " + "  ".join(f"{name:>7}" for name in table))
    for minute in range(len(next(iter(table.values()), []))):
        print(f"  {minute:6d}  " + "  ".join(f"{table[n][minute]!s:>7}" for n in table))
    print(f"\n  RSS per process: its first {WARMUP:.0f} s are warm-up; judged on >= 45 s after it")
    for v in result["rss_per_process"]:
        judged = (
            f"{v['warm_rss_mb']} -> {v['end_rss_mb']} MB ({v['growth']:+.1%})"
            if v["growth"] is not None
            else "too short to judge"
        )
        print(f"  {v['replica']} pid {v['pid']:>7}  t {v['from_t']:>5}-{v['to_t']:>5} s  {judged}")
    print()
    print_verdicts(result["targets"])


def loaded_stack(
    server_url: str,
    processes: list[Any],
    nginx: str,
    dbname: str,
    products: int,
    name: str,
    role: str,
) -> tuple[Stack, str, str]:
    """A fresh database loaded with a generated export, the replicas logged in as a least-privileged
    role (as `make up`'s), nginx in front with the rate limit lifted. Returns the running stack, nginx's
    base URL and the owner's database URL (for loading and counting)."""
    db_url = asyncio.run(stack.fresh_database(server_url, dbname))
    env = os.environ | {"DATABASE_URL": db_url, "LOG_LEVEL": "WARNING"}
    export = stack.DATA_DIR / f"{name}-export-{products}"
    stack.generate(export, products, env)
    log(f"loading {products:,} products into {dbname}")
    stack.run([BIN / "atelier-load", "--data", export, "--no-progress"], env)
    replica_url = stack.api_login(db_url, role)
    running = Stack(env | {"DATABASE_URL": replica_url}, processes)
    base = running.up(nginx, stack.RUN_DIR / f"{name}-nginx")
    log(
        f"{REPLICAS} replicas behind nginx on {base}; nginx rate limit lifted to "
        f"{UNLIMITED['NGINX_RATE_LIMIT']} (burst {UNLIMITED['NGINX_RATE_BURST']})"
    )
    return running, base, db_url


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--minutes", type=int, default=10, help="soak duration (default 10)")
    parser.add_argument("--products", type=int, default=10_000, help="products in the generated export")
    parser.add_argument("--load", type=float, default=0.7, help="soak rate as a fraction of the peak")
    parser.add_argument("--step-seconds", type=float, default=3.0, help="seconds per ramp step")
    parser.add_argument("--p99-ms", type=float, default=100.0, help="p99 bar of a peak step")
    parser.add_argument("--max-in-flight", type=int, default=256, help="the generator's bound")
    parser.add_argument("--rss-growth", type=float, default=0.10, help="largest RSS growth allowed")
    parser.add_argument("--results", type=Path, default=ROOT / "bench" / "results")
    args = parser.parse_args()
    if not 1 <= args.minutes <= 120:
        parser.error("--minutes must be between 1 and 120")

    signal.signal(signal.SIGINT, stack.interrupt)
    signal.signal(signal.SIGTERM, stack.interrupt)
    budget = args.minutes * 60 + 120  # the whole run, set-up included
    began = time.monotonic()
    nginx = stack.nginx_binary()
    with (
        ends_cleanly(log, budget),
        stack.database(("CHAOS_DATABASE_URL", "DATABASE_URL"), "chaos-pg") as server_url,
        stack.supervised() as processes,
    ):
        running, base, db_url = loaded_stack(
            server_url, processes, nginx, DB_NAME, args.products, "chaos", "atelier_api_chaos"
        )
        remaining = budget - (time.monotonic() - began)
        result = asyncio.run(asyncio.wait_for(run(args, running, base, db_url), remaining))

    print_report(result)
    out = save_results(args.results, "chaos.json", result)
    rss_svg(result["samples"], result["restarts"], args.results / "chaos-rss.svg")
    print(f"\n  written to {out} and {args.results / 'chaos-rss.svg'}")
    raise SystemExit(exit_status(result["targets"]))


if __name__ == "__main__":
    main()
