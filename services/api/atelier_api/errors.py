"""Domain errors, and the one middleware that turns every failure into the contract's JSON error."""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import asyncpg
import orjson
from aiohttp import web
from aiohttp.typedefs import Handler

from atelier_api.observability import request_id

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class FieldError:
    field: str
    message: str


class DomainError(Exception):
    status = 500
    headers: Mapping[str, str] = {}

    def __init__(self, message: str, details: Iterable[FieldError] = ()) -> None:
        super().__init__(message)
        self.message = message
        self.details = tuple(details)


class InvalidInput(DomainError):
    """One or more inputs broke their rules; `details` lists every one."""

    status = 422

    def __init__(self, details: Iterable[FieldError]) -> None:
        details = tuple(details)
        # "invalid product_id provided", as the hosted API said, naming every field that broke a rule.
        fields = dict.fromkeys(re.split(r"[.\[]", detail.field, maxsplit=1)[0] for detail in details)
        super().__init__(f"invalid {', '.join(fields) or 'input'} provided", details)


class MalformedBody(DomainError):
    status = 400

    def __init__(self) -> None:
        super().__init__("body must be a JSON object")


class UnsupportedEncoding(DomainError):
    """A request body sent compressed (any Content-Encoding but identity): the API reads bodies as sent."""

    status = 415

    def __init__(self, encoding: str) -> None:
        super().__init__(
            "unsupported content encoding",
            [
                FieldError(
                    "Content-Encoding", f"must be identity (the body uncompressed), not {encoding[:40]!r}"
                )
            ],
        )


class ReviewNotFound(DomainError):
    """No review has this id (or, for GET /reviews/{review_id}, the one that has it is reported)."""

    status = 404

    def __init__(self, review_id: int | str) -> None:
        super().__init__("review not found", [FieldError("review_id", "no such review")])
        self.review_id = review_id


class NotReady(DomainError):
    """The database is unreachable or holds no data yet: a balancer should try again shortly."""

    status = 503
    headers = {"Retry-After": "1"}

    def __init__(self, reason: str) -> None:
        super().__init__("not ready", [FieldError("database", reason)])


# What a lost or unreachable database raises. TimeoutError (connect and command timeouts),
# ConnectionRefusedError and FileNotFoundError (a Unix socket that is gone) are OSErrors. The Postgres
# classes: 08 connection exception, 53 insufficient resources (too many connections), 57 operator
# intervention (shutdown, restart, statement cancelled).
DATABASE_UNAVAILABLE = (
    OSError,
    asyncpg.PostgresConnectionError,
    asyncpg.InsufficientResourcesError,
    asyncpg.OperatorInterventionError,
)

ROLLED_BACK = "the database rolled the request back, nothing was changed; send it again"

_HTTP_ERROR_MESSAGES = {
    400: "bad request",
    404: "not found",
    405: "method not allowed",
    413: "request body too large",
}


def json_error(
    status: int, message: str, details: Iterable[FieldError] = (), headers: Mapping[str, str] | None = None
) -> web.Response:
    """The JSON error, never kept by a cache (HTTP lets one keep a 404, say, by heuristic)."""
    body = {"error": message, "details": [{"field": d.field, "message": d.message} for d in details]}
    return web.Response(
        status=status,
        body=orjson.dumps(body),
        content_type="application/json",
        headers={**(headers or {}), "Cache-Control": "no-store"},
    )


@web.middleware
async def error_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except DomainError as error:
        return json_error(error.status, error.message, error.details, error.headers)
    except web.HTTPException as error:
        if error.status < 400:
            raise
        message = _HTTP_ERROR_MESSAGES.get(error.status, error.reason.lower())
        headers = {"Allow": error.headers["Allow"]} if "Allow" in error.headers else {}
        return json_error(error.status, message, headers=headers)
    except asyncpg.TransactionRollbackError as error:
        # Class 40 (a deadlock, a serialization failure): PostgreSQL rolled the transaction back, so
        # nothing of the request was done and the same request may simply be sent again. API writes
        # never deadlock among themselves (one lock order); a load's switch or an operator's
        # transaction taking locks in another order can.
        return _retry_later(request, error, "transaction rolled back by the database", ROLLED_BACK)
    except Exception as error:
        if not lost_the_database(error):
            # Logged here, once, with the traceback and the request id the client sees in X-Request-Id;
            # the client gets nothing of the failure, and the log no row's personal data.
            _without_row_details(error)
            log.exception(
                "unexpected error: %s %s",
                request.method,
                request.path,
                extra={"request_id": request_id(request)},
            )
            return json_error(500, "internal server error")
        return _retry_later(request, error, "database unavailable", "database unavailable")


def _without_row_details(error: BaseException) -> None:
    """Drop PostgreSQL's DETAIL from the database errors of this failure's chain before it is logged:
    asyncpg prints it with the message, and for a rule a row broke it quotes the row ("Failing row
    contains (..., <e-mail>, <name>, <body>, ...)"). The message, class and constraint stay."""
    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, asyncpg.PostgresError):
            current.detail = None  # type: ignore[attr-defined]
        current = current.__cause__ or current.__context__


def _retry_later(request: web.Request, error: Exception, logged: str, message: str) -> web.Response:
    """503 with Retry-After for a failure the same request may simply retry; one warning line, no
    traceback (the failure is the database's, not a bug)."""
    log.warning(
        "%s: %s %s: %r",
        logged,
        request.method,
        request.path,
        error,
        extra={"request_id": request_id(request)},
    )
    return json_error(503, message, headers={"Retry-After": "1"})


def lost_the_database(error: BaseException) -> bool:
    """Whether the request failed because the database was lost or out of reach: one of
    DATABASE_UNAVAILABLE, or asyncpg's InterfaceError raised while leaving a transaction whose connection
    such an error broke (asyncpg then says "the underlying connection is closed" instead)."""
    if isinstance(error, DATABASE_UNAVAILABLE):
        return True
    return isinstance(error, asyncpg.InterfaceError) and isinstance(error.__context__, DATABASE_UNAVAILABLE)
