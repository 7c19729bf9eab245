"""Everything the application holds, under typed keys declared in one place."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime

import asyncpg
from aiohttp import web

from atelier_api.config import Config

Clock = Callable[[], datetime]

CONFIG_KEY = web.AppKey("config", Config)
POOL_KEY = web.AppKey("pool", asyncpg.Pool)
# The time a new review is stamped with; tests pin it.
CLOCK_KEY: web.AppKey[Clock] = web.AppKey("clock")
