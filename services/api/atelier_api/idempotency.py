"""`Idempotency-Key` on POST /reviews, with Stripe's semantics.

A key is claimed in the transaction that stores the review, and written with it, so a key is stored only
with the review it created:

- the same key and the same body (canonical JSON, hashed) within KEY_RETENTION replays the first
  answer (201, `Location` of the same review, `Idempotent-Replayed: true`) and stores nothing;
- the same key with another body: 422 naming `Idempotency-Key`;
- while the first request's transaction is still open: 409 with Retry-After, at once (the claim is a
  transaction-level advisory lock taken with pg_try_advisory_xact_lock, which never waits);
- only 201s are remembered: a request refused (4xx) or failed (5xx) rolls back, key included, so the
  key is free again. An expired key is treated as absent and taken over by the next request.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import timedelta

import asyncpg
import orjson
from multidict import MultiMapping

from atelier_api.errors import DomainError, FieldError, InvalidInput

HEADER = "Idempotency-Key"
REPLAYED_HEADER = "Idempotent-Replayed"
KEY_RETENTION = timedelta(hours=24)
MAX_KEY_LENGTH = 255
# 1-255 printable ASCII characters; not starting or ending with a space, which HTTP would drop.
KEY_PATTERN = f"^[!-~]([ -~]{{0,{MAX_KEY_LENGTH - 2}}}[!-~])?$"
_KEY = re.compile(KEY_PATTERN)
_KEY_RULE = f"must be 1 to {MAX_KEY_LENGTH} printable ASCII characters"
# The advisory locks of claims are (this namespace, hashtext(key)): the two-int form, a space apart from
# the loader's one-bigint lock. Two keys of the same hash in flight at once: the second gets a 409.
LOCK_NAMESPACE = 0x6964656D  # "idem"

TRY_CLAIM = "SELECT pg_try_advisory_xact_lock($1, hashtext($2))"

FIND_KEY = """
    SELECT request_hash, review_id FROM idempotency_keys
    WHERE key = $1 AND created_at >= now() - $2::interval
"""

# A conflict here is an expired key (a live one was replayed), which this request takes over. Up to
# two other expired keys go with each new one, skipping any another transaction holds.
RECORD_KEY = """
    WITH expired AS (
        DELETE FROM idempotency_keys
        WHERE key IN (
            SELECT key FROM idempotency_keys
            WHERE created_at < now() - $4::interval AND key <> $1
            ORDER BY created_at
            LIMIT 2
            FOR UPDATE SKIP LOCKED
        )
    )
    INSERT INTO idempotency_keys (key, request_hash, review_id) VALUES ($1, $2, $3)
    ON CONFLICT (key) DO UPDATE
    SET request_hash = excluded.request_hash, review_id = excluded.review_id, created_at = excluded.created_at
"""


class RequestInProgress(DomainError):
    """Another request with this key is still being processed: try again shortly."""

    status = 409
    headers = {"Retry-After": "1"}

    def __init__(self) -> None:
        super().__init__(
            "request in progress", [FieldError(HEADER, "a request with this key is still in progress")]
        )


@dataclass(frozen=True, slots=True)
class Claim:
    key: str
    request_hash: bytes


def key_of(headers: MultiMapping[str]) -> str | None:
    """The request's Idempotency-Key, None when it has none; InvalidInput when it breaks the rule."""
    values = headers.getall(HEADER, [])
    if not values:
        return None
    if len(values) > 1:
        raise InvalidInput([FieldError(HEADER, "must be given once")])
    if not _KEY.fullmatch(values[0]):
        raise InvalidInput([FieldError(HEADER, _KEY_RULE)])
    return values[0]


def request_hash(payload: Mapping[str, object]) -> bytes:
    """SHA-256 of the body as canonical JSON: the same fields and values give the same hash."""
    return hashlib.sha256(orjson.dumps(payload, option=orjson.OPT_SORT_KEYS)).digest()


async def claim(conn: asyncpg.Connection, claim: Claim) -> int | None:
    """Claim the key for the connection's transaction: the review id to replay when the key already
    created one with this body, else None (go on, then `record`).

    Raises RequestInProgress when another transaction holds the key, InvalidInput when the key was
    used with another body.
    """
    if not await conn.fetchval(TRY_CLAIM, LOCK_NAMESPACE, claim.key):
        raise RequestInProgress()
    stored = await conn.fetchrow(FIND_KEY, claim.key, KEY_RETENTION)
    if stored is None:
        return None
    if stored["request_hash"] != claim.request_hash:
        raise InvalidInput([FieldError(HEADER, "was already used with a different request body")])
    review_id: int = stored["review_id"]
    return review_id


async def record(conn: asyncpg.Connection, claim: Claim, review_id: int) -> None:
    """Remember the review the claimed key created; commits (or rolls back) with the review."""
    await conn.execute(RECORD_KEY, claim.key, claim.request_hash, review_id, KEY_RETENTION)
