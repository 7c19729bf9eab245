"""The benchmarks' load generator (bench/chaos.py): what it records of each try, against a real HTTP
server (the open loop's report splits its tail by kind of request, so every try must be counted under
its own), the priority its open loops run at, the rate bench/routing.py's open loops run at, and how
bench/http_bench.py splits the cores' time between the generator and the servers it measures."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager

import aiohttp
from aiohttp import web

from tests.conftest import ROOT

sys.path.insert(0, str(ROOT / "bench"))
import chaos  # noqa: E402
import routing  # noqa: E402


async def test_every_try_is_counted_under_its_request_kind(aiohttp_server):
    async def vote(request: web.Request) -> web.Response:
        return web.Response(status=204)

    async def post(request: web.Request) -> web.Response:
        return web.json_response({"error": "database unavailable"}, status=503)

    app = web.Application()
    app.router.add_put("/reviews/{review_id}/helpful", vote)
    app.router.add_post("/reviews", post)
    server = await aiohttp_server(app)
    base = str(server.make_url("")).rstrip("/")
    traffic = chaos.Traffic(10, run_id="test")
    stats = chaos.Stats()
    helpful = chaos.Request("helpful", "PUT", "/reviews/1/helpful", {})
    written = chaos.Request("post", "POST", "/reviews", {}, b"{}")
    async with aiohttp.ClientSession() as session:
        for _ in range(3):
            await chaos.send(session, base, helpful, stats, traffic, retry=False)
        await chaos.send(session, base, written, stats, traffic, retry=True)

    kinds = chaos.latency_by_kind(stats)
    assert set(kinds) == {"helpful", "post"}
    assert kinds["helpful"]["tries"] == 3 and stats.votes_acknowledged == 3
    # A 503 is retried: every try of the one POST counts, as in the whole run's percentiles.
    assert kinds["post"]["tries"] == chaos.TRIES == stats.statuses["503"]
    assert sum(k["tries"] for k in kinds.values()) == len(chaos.latencies(stats))
    assert all(k["p99_ms"] >= k["p50_ms"] >= 0 for k in kinds.values())


async def test_a_failed_vote_is_never_retried_and_may_have_counted(aiohttp_server):
    """Every PUT .../helpful counts (the contract): a client's retry would be a second vote, so the soak
    retries none, and the verdict lets a failed one be counted or not."""
    tries = []

    async def vote(request: web.Request) -> web.Response:
        tries.append(request.path)
        return web.json_response({"error": "service unavailable"}, status=503)

    app = web.Application()
    app.router.add_put("/reviews/{review_id}/helpful", vote)
    server = await aiohttp_server(app)
    stats = chaos.Stats()
    helpful = chaos.Request("helpful", "PUT", "/reviews/1/helpful", {})
    async with aiohttp.ClientSession() as session:
        base = str(server.make_url("")).rstrip("/")
        await chaos.send(session, base, helpful, stats, chaos.Traffic(10, run_id="test"), retry=True)

    assert tries == ["/reviews/1/helpful"]
    assert stats.votes_unanswered == 1 and stats.votes_acknowledged == 0 and stats.failed == 1


def test_the_open_loops_generator_runs_ahead_of_the_stack_and_goes_back_after():
    """chaos.generator_priority: the niceness asked for inside (root), the one before after; without the
    right to lower it, the loop runs as it is and says which niceness it had."""
    before = os.getpriority(os.PRIO_PROCESS, 0)
    with chaos.generator_priority(before - 3) as inside:
        assert os.getpriority(os.PRIO_PROCESS, 0) == inside
        assert inside == (before - 3 if os.geteuid() == 0 else before)
    assert os.getpriority(os.PRIO_PROCESS, 0) == before


def test_routings_open_loops_follow_the_slower_of_the_last_two_rounds():
    # A run whose machine slows: an open loop at 70% of a fast first round overloaded every later round.
    first = routing.open_loop_rate(0.7, 2000.0, None)
    assert first == 0.7 * 2000.0
    assert routing.open_loop_rate(0.7, 1400.0, 2000.0) == 0.7 * 1400.0  # slower now: this round's
    assert routing.open_loop_rate(0.7, 1600.0, 1400.0) == 0.7 * 1400.0  # faster now: the round before's


def _spin(cpu_seconds: float) -> None:
    end = time.process_time() + cpu_seconds
    while time.process_time() < end:
        pass


@contextmanager
def _stand_in_backend(cpu_seconds: float) -> Iterator[subprocess.Popen[str]]:
    """A process counted as PostgreSQL (its command line names postgres) that spins, says so, then waits
    until its stdin closes: alive until the block ends."""
    spin = f"import sys, time\nend = time.process_time() + {cpu_seconds}\n"
    spin += "while time.process_time() < end: pass\nprint('spun', flush=True)\nsys.stdin.read()"
    with subprocess.Popen(
        [sys.executable, "-c", spin, "postgres: a stand-in backend"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    ) as backend:
        assert backend.stdout is not None and backend.stdout.readline() == "spun\n"
        yield backend
        backend.communicate("", timeout=60)


def test_a_steps_cpu_per_request_splits_the_generator_from_the_servers():
    """chaos.cpu_use: this process is the generator, a process whose command line names postgres is
    a server, and a process that ends during the step takes nothing away from its group (one whose whole
    life was subtracted made PostgreSQL's figure too small). The open loop's servers' CPU per request,
    set beside the peak's, says whether its rate cost each request more."""
    with _stand_in_backend(0.5):  # its 0.5 CPU-s were spent before the step, and it ends during it
        before, began = chaos.cpu_reading(os.getpid()), time.monotonic()
    with _stand_in_backend(0.6):  # runs during the step
        _spin(0.3)
        cpu = chaos.cpu_use(before, time.monotonic() - began, requests=1000)

    # 0.3 and 0.6 CPU-s over 1,000 requests; /proc counts in ticks of 10 ms, hence the margins
    assert 250 <= cpu["generator_us_per_request"] < 450  # the server's time is not the generator's
    assert cpu["servers_us_per_request"] >= 500
    assert cpu["share_pct"]["PostgreSQL"] > 0
    assert cpu["busy_pct"] == round(sum(cpu["share_pct"].values()), 1)
    per_group = cpu["us_per_request"]  # each group apart: what one request cost it
    assert per_group[chaos.GENERATOR] == cpu["generator_us_per_request"]
    assert per_group["PostgreSQL"] >= 500


def test_the_servers_cpu_is_the_stacks_own_processes():
    """Every script counts the servers alike: nginx, the replicas and PostgreSQL; neither the generator
    nor the rest of the machine ("other": shells, the container engine)."""
    used = {"API replicas": 1.0, "PostgreSQL": 0.5, "nginx": 0.25, "other": 4.0, chaos.GENERATOR: 8.0}
    assert chaos.servers_seconds(used) == 1.75
    assert chaos.servers_seconds({"nginx": 0.25}) == 0.25  # a static stack has no replicas
