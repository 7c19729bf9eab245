"""The Prometheus metrics of one app: requests, latency, requests in flight and the database pool.

Each app has its own CollectorRegistry, so tests can build many apps in one process and a scrape
sees only its own app. Label values stay bounded: routes are the route table's templates (or
`unmatched`), methods the standard ones (or `other`), statuses HTTP codes.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

import asyncpg
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, ProcessCollector
from prometheus_client.exposition import choose_encoder
from prometheus_client.metrics_core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from atelier_api.cache import ResponseCache

# A request takes about a millisecond; the buckets resolve that and still show a slow tail, up to what an
# incident takes (DB_COMMAND_TIMEOUT 5 s, with its cancellation 10, nginx's proxy_read_timeout 30).
LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
# An idle connection is handed out in microseconds; waiting for one means the pool is too small (or the
# database slow: DB_ACQUIRE_TIMEOUT, 2 s by default, ends the wait).
ACQUIRE_BUCKETS = (
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0
)  # fmt: skip


class Metrics:
    def __init__(self, pool: Callable[[], asyncpg.Pool | None], cache: ResponseCache) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "atelier_http_requests",
            "HTTP requests answered, by method, route template and status.",
            ["method", "route", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "atelier_http_request_duration_seconds",
            "Time from receiving a request to having its response, by method and route template.",
            ["method", "route"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        # A plain count, read at scrape time: a Gauge's inc/dec take a lock each, per request.
        self.in_flight = 0
        Gauge(
            "atelier_http_requests_in_flight", "Requests being handled now.", registry=self.registry
        ).set_function(lambda: self.in_flight)
        # Each (method, route, status)'s counter and (method, route)'s histogram, looked up once:
        # prometheus_client's labels() validates and locks on every call.
        self._children: dict[tuple[str, str, int], tuple[Counter, Histogram]] = {}
        self.pool_acquire_wait = Histogram(
            "atelier_db_pool_acquire_wait_seconds",
            "Time spent waiting for a database connection from the pool.",
            buckets=ACQUIRE_BUCKETS,
            registry=self.registry,
        )
        self.registry.register(PoolCollector(pool))
        self.registry.register(CacheCollector(cache))
        ProcessCollector(registry=self.registry)  # CPU, memory, open files of this process

    def request_done(self, method: str, route: str, status: int, seconds: float) -> None:
        """Count one answered request and its latency (labels bounded by the caller: observability.py)."""
        key = (method, route, status)
        children = self._children.get(key)
        if children is None:
            children = self._children[key] = (
                self.requests.labels(method, route, str(status)),
                self.latency.labels(method, route),
            )
        children[0].inc()
        children[1].observe(seconds)

    def exposition(self, accept: str) -> tuple[bytes, str]:
        """The registry in the format the scraper's Accept header asks for, and its content type."""
        encode, content_type = choose_encoder(accept)
        return encode(self.registry), content_type


class PoolCollector(Collector):
    """The pool's sizes, read at scrape time (asyncpg keeps them; nothing to update per request)."""

    def __init__(self, pool: Callable[[], asyncpg.Pool | None]) -> None:
        self.pool = pool

    def collect(self) -> Iterable[Metric]:
        pool = self.pool()
        if pool is None or pool.is_closing():  # not started yet, or stopped
            return
        yield GaugeMetricFamily(
            "atelier_db_pool_connections", "Open connections in the pool.", value=pool.get_size()
        )
        yield GaugeMetricFamily(
            "atelier_db_pool_idle_connections",
            "Open connections in the pool not lent to a request.",
            value=pool.get_idle_size(),
        )
        yield GaugeMetricFamily(
            "atelier_db_pool_max_connections",
            "Most connections the pool may open (DB_POOL_MAX_SIZE).",
            value=pool.get_max_size(),
        )


class CacheCollector(Collector):
    """The response cache's figures, read at scrape time (cache.py counts them)."""

    def __init__(self, cache: ResponseCache) -> None:
        self.cache = cache

    def collect(self) -> Iterable[Metric]:
        cache, stats = self.cache, self.cache.stats
        lookups = CounterMetricFamily(
            "atelier_cache_lookups", "Response cache lookups, by result.", labels=["result"]
        )
        lookups.add_metric(["hit"], stats.hits)
        lookups.add_metric(["miss"], stats.misses)
        yield lookups
        yield CounterMetricFamily(
            "atelier_cache_invalidations",
            "Products whose cached answers a write dropped.",
            value=stats.invalidations,
        )
        yield CounterMetricFamily(
            "atelier_cache_flushes",
            "Times the whole cache was emptied (a load, or the change listener (re)connecting).",
            value=stats.flushes,
        )
        yield GaugeMetricFamily("atelier_cache_entries", "Answers in the response cache.", value=len(cache))
        yield GaugeMetricFamily(
            "atelier_cache_bytes",
            "Bytes the response cache takes, bookkeeping included (as CACHE_MAX_BYTES counts).",
            value=cache.size_bytes,
        )
        yield GaugeMetricFamily(
            "atelier_cache_listening",
            "1 while the change listener is connected (the cache fills only then).",
            value=int(cache.live),
        )
