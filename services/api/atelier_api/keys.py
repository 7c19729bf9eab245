"""Everything the application holds, under typed keys declared in one place."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime

import asyncpg
from aiohttp import web

from atelier_api.cache import ResponseCache
from atelier_api.config import Config
from atelier_api.metrics import Metrics

Clock = Callable[[], datetime]

CONFIG_KEY = web.AppKey("config", Config)
POOL_KEY = web.AppKey("pool", asyncpg.Pool)
# The time a new review is stamped with; tests pin it.
CLOCK_KEY: web.AppKey[Clock] = web.AppKey("clock")
# This app's own Prometheus registry and metrics (never the process-wide default registry).
METRICS_KEY = web.AppKey("metrics", Metrics)
# This replica's cache of GET answers, invalidated by the change listener (cache.py, changes.py).
CACHE_KEY = web.AppKey("cache", ResponseCache)

# Per request: the id that ties its log lines, its error and its response (X-Request-Id) together.
REQUEST_ID_KEY = web.RequestKey("request_id", str)
