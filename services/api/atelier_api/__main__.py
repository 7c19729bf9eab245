"""`atelier-api`: read the environment, run the application."""

from __future__ import annotations

import logging
import sys

import uvloop
from aiohttp import web

from atelier_api import logs
from atelier_api.app import DatabaseUnreachable, create_app
from atelier_api.config import Config, ConfigError


def main() -> None:
    try:
        config = Config.from_env()
    except ConfigError as error:
        sys.exit(f"atelier-api: {error}")
    logs.configure(config.log_level, replica=config.replica_name)
    try:
        # A uvloop loop handed to run_app: same effect as uvloop.install(), which Python 3.12+ deprecates.
        logging.getLogger("atelier_api").info(
            "%s serving on http://%s:%d", config.replica_name, config.api_host, config.api_port
        )
        web.run_app(
            create_app(config),
            host=config.api_host,
            port=config.api_port,
            loop=uvloop.new_event_loop(),
            print=None,
            access_log=None,  # the app logs one JSON line per request itself (observability.py)
        )
    except DatabaseUnreachable as error:
        sys.exit(f"atelier-api: {error}")


if __name__ == "__main__":
    main()
