"""Request ids, request metrics and the access log: one middleware sees every request once.

It runs outside the error middleware, so it sees the status the client gets, errors included.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
import uuid

from aiohttp import web
from aiohttp.typedefs import Handler

from atelier_api.keys import CONFIG_KEY, METRICS_KEY, REQUEST_ID_KEY

access_log = logging.getLogger("atelier_api.access")

# A client's id goes back in a response header and into logs: only a plain token is taken as it is.
# nginx applies the same rule, so both log the same id.
PLAIN_TOKEN = re.compile(r"[A-Za-z0-9._-]{1,64}")
# Any other method (a client may send any token) is counted as `other`: labels stay bounded.
METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
# nginx's status for a client that closed the connection before the response.
CLIENT_CLOSED = 499


def request_id(request: web.Request) -> str:
    """The request's id, the same for its whole life: the client's X-Request-Id when it is a plain
    token, else a new one."""
    rid = request.get(REQUEST_ID_KEY)
    if rid is None:
        given = request.headers.get("X-Request-Id", "")
        rid = request[REQUEST_ID_KEY] = given if PLAIN_TOKEN.fullmatch(given) else uuid.uuid4().hex
    return rid


def route_label(request: web.Request) -> str:
    """The matched route's template (`/reviews/{review_id}/helpful`), or `unmatched` (404, 405)."""
    resource = request.match_info.route.resource
    return resource.canonical if resource is not None else "unmatched"


@web.middleware
async def observe(request: web.Request, handler: Handler) -> web.StreamResponse:
    rid = request_id(request)
    metrics = request.app[METRICS_KEY]
    status = 500
    start = time.perf_counter()
    metrics.in_flight += 1
    try:
        response = await handler(request)
        status = response.status
        return response
    except web.HTTPException as error:  # the redirects the error middleware lets through
        status = error.status
        raise
    except asyncio.CancelledError:
        status = CLIENT_CLOSED
        raise
    finally:
        elapsed = time.perf_counter() - start
        metrics.in_flight -= 1
        route = route_label(request)
        metrics.request_done(request.method if request.method in METHODS else "other", route, status, elapsed)
        if access_log.isEnabledFor(logging.INFO):  # (the line's fields cost more than the check)
            access_log.info(
                "%s %s %d",
                request.method,
                request.path,
                status,
                extra={
                    "request_id": rid,
                    "method": request.method,
                    "route": route,
                    "path": request.path,
                    "status": status,
                    "duration_ms": round(elapsed * 1000, 3),
                    "replica": request.app[CONFIG_KEY].replica_name,
                },
            )


async def send_request_id(request: web.Request, response: web.StreamResponse) -> None:
    """Every response carries its request's id, errors included, so a client can quote it."""
    response.headers["X-Request-Id"] = request_id(request)
