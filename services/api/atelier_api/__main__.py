"""`atelier-api`: read the environment, run the application until SIGTERM, drain it (serve.py)."""

from __future__ import annotations

import asyncio
import sys

import uvloop

from atelier_api import logs, pool_log
from atelier_api.app import DatabaseUnreachable, create_app
from atelier_api.config import Config, ConfigError
from atelier_api.serve import serve


def main() -> None:
    try:
        config = Config.from_env()
    except ConfigError as error:
        sys.exit(f"atelier-api: {error}")
    logs.configure(config.log_level, replica=config.replica_name)
    pool_log.quiet_floor_retries()
    try:
        # asyncio.Runner with uvloop's loop: the same effect as uvloop.install(), which 3.12+ deprecates.
        with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
            runner.run(serve(create_app(config), config))
    except DatabaseUnreachable as error:
        sys.exit(f"atelier-api: {error}")


if __name__ == "__main__":
    main()
