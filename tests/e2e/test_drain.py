"""Graceful drain through nginx: one replica of the local stack gets SIGTERM (a rolling restart's
stop), then comes back, while a steady stream of GETs flows through nginx. No request may fail.

The replica stops listening, closes its idle keep-alive connections and answers the requests it has
already received (atelier_api/serve.py); nginx sends new requests to the other two, and passes a GET
that met a connection closed under it to the next replica.
"""

from __future__ import annotations

import asyncio
import signal
import time

import aiohttp

from tests.e2e.conftest import LocalStack

VICTIM = "api-1"
READERS = 8


async def test_sigterm_and_restart_of_a_replica_under_steady_gets_fails_nothing(
    local_stack: LocalStack,
) -> None:
    served: list[tuple[float, str]] = []  # (when, replica) of every 200
    failures: list[tuple] = []
    stop = asyncio.Event()

    async def reader(http: aiohttp.ClientSession, n: int) -> None:
        # A product's reads go to one replica (NGINX_READ_ROUTING=product); a batch of summaries to
        # any, so the restarted replica is asked again whichever products it owns.
        requests = [
            ("/reviews", {"product_id": "1", "count": "1000"}),
            ("/reviews/meta", {"product_id": str(n + 2)}),
            ("/reviews/meta/batch", {"product_ids": f"1,{n + 2}"}),
        ]
        i = 0
        while not stop.is_set():
            path, params = requests[i % len(requests)]
            i += 1
            try:
                async with http.get(path, params=params) as r:
                    body = await r.read()
                    if r.status == 200:
                        served.append((time.monotonic(), r.headers.get("X-Replica", "")))
                    else:
                        failures.append((r.status, r.headers.get("X-Upstream"), body[:200]))
            except aiohttp.ClientError as error:
                failures.append(("client error", repr(error)))

    victim = local_stack.replicas[VICTIM]
    async with aiohttp.ClientSession(local_stack.url) as http:
        readers = [asyncio.create_task(reader(http, n)) for n in range(READERS)]
        try:
            async with asyncio.timeout(30):
                while len(served) < 200:  # nginx holds keep-alive connections to every replica now
                    await asyncio.sleep(0.01)
                victim.send_signal(signal.SIGTERM)
                exit_code = await asyncio.to_thread(victim.wait, 15)
                stopped_at, during = time.monotonic(), len(served)
                await asyncio.sleep(0.5)  # traffic on two replicas only
                # Before the start: from then on the replica may serve, so only what came before counts
                # as served while it was away.
                restarting_at = time.monotonic()
                await asyncio.to_thread(local_stack.start_replica, VICTIM, local_stack.replica_ports[VICTIM])
                await asyncio.to_thread(local_stack.wait_for_replicas)
                # nginx tries the replica again after fail_timeout (2 s); wait until it serves again.
                while not any(t > restarting_at and name == VICTIM for t, name in served):
                    await asyncio.sleep(0.05)
                await asyncio.sleep(0.5)
        finally:
            stop.set()
            await asyncio.gather(*readers, return_exceptions=True)
            if local_stack.replicas[VICTIM].poll() is not None:  # leave three replicas for the next test
                local_stack.restart_replica(VICTIM)

    assert exit_code == 0
    assert not failures, failures[:10]
    assert len(served) > during > 0
    between = {name for t, name in served if stopped_at < t < restarting_at}
    assert between and VICTIM not in between, between
