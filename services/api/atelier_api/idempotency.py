"""`Idempotency-Key` on POST /reviews, with Stripe's semantics.

A key is claimed in the transaction that stores the review, and written with it (in the same statement),
so a key is stored only with the review it created:

- the same key and the same body (canonical JSON, hashed) within KEY_RETENTION replays the first
  answer (201, `Location` of the same review, `Idempotent-Replayed: true`) and stores nothing;
- the same key with another body: 422 naming `Idempotency-Key`;
- while the first request's transaction is still open: 409 with Retry-After, at once (the claim is a
  transaction-level advisory lock taken with pg_try_advisory_xact_lock, which never waits);
- only 201s are remembered: a request refused (4xx) or failed (5xx) rolls back, key included, so the
  key is free again. An expired key is treated as absent and taken over by the next request.

The claim, the lookup, the review and the key's record are one statement (reviews.STORE_REVIEW_WITH_KEY,
built from claim_steps and record_steps): one round trip and one implicit transaction, so the key is
held exactly as long as the write. A first request that commits between another's lookup and its claim
makes the other one's record fail: 409, and its retry is replayed.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import timedelta

import orjson
from multidict import MultiMapping

from atelier_api.errors import DomainError, FieldError, InvalidInput
from atelier_api.review_draft import ReviewDraft

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


def claim_steps(key: str, retention: str) -> str:
    """The CTEs that claim the key and look it up, for the statement that stores the review with it
    (reviews.STORE_REVIEW_WITH_KEY; the arguments name its parameters). `claim` takes the key's lock for
    the statement's transaction; `earlier` is the key's live record, if any. The statement stores only
    when it claimed the key and found no live record."""
    return f"""
        claim AS (
            SELECT pg_try_advisory_xact_lock({LOCK_NAMESPACE}, hashtext({key})) AS claimed
        ), earlier AS (
            SELECT request_hash, review_id FROM idempotency_keys
            WHERE key = {key} AND created_at >= now() - {retention}::interval
        )
    """


def record_steps(review: str, key: str, request_hash: str, retention: str) -> str:
    """The CTEs that record the key with the review the statement stores (`review`, a CTE with an `id`).

    `recorded` writes the key when it is free or expired (an expired one is taken over). The lookup's
    snapshot predates the claim's lock, so a first request with the key that committed in between is
    not in `earlier`: `recorded` then leaves its live record alone, and `taken` inserts the key plainly,
    which fails on the primary key (TAKEN_MEANWHILE) and rolls the whole statement back: the request gets
    409 and its retry is replayed. Up to two other expired keys go with each new one, skipping any that
    another transaction holds."""
    return f"""
        expired AS (
            DELETE FROM idempotency_keys
            WHERE EXISTS (SELECT FROM {review}) AND key IN (
                SELECT key FROM idempotency_keys
                WHERE created_at < now() - {retention}::interval AND key <> {key}
                ORDER BY created_at
                LIMIT 2
                FOR UPDATE SKIP LOCKED
            )
        ), recorded AS (
            INSERT INTO idempotency_keys AS k (key, request_hash, review_id)
            SELECT {key}, {request_hash}, {review}.id FROM {review}
            ON CONFLICT (key) DO UPDATE
            SET request_hash = excluded.request_hash, review_id = excluded.review_id,
                created_at = excluded.created_at
            WHERE k.created_at < now() - {retention}::interval
            RETURNING key
        ), taken AS (
            INSERT INTO idempotency_keys (key, request_hash, review_id)
            SELECT {key}, {request_hash}, {review}.id FROM {review}
            WHERE NOT EXISTS (SELECT FROM recorded)
        )
    """


# The primary key `taken` trips over (see record_steps).
TAKEN_MEANWHILE = "idempotency_keys_pkey"


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


def claim(key: str | None, draft: ReviewDraft, payload: Mapping[str, object], body: bytes) -> Claim | None:
    """The key's claim on this request, or None: no key, or a body refused anyway (422, which records
    nothing)."""
    if key is None or draft.review is None:
        return None
    return Claim(key, request_hash(payload, body))


def request_hash(payload: Mapping[str, object], body: bytes) -> bytes:
    """SHA-256 of the body as canonical JSON: the same fields and values give the same hash. A field the
    API ignores may hold JSON nested deeper than orjson writes (254 levels; it reads 1,024), which
    answered 500: such a body is hashed as sent, so its own retry still matches."""
    try:
        canonical = orjson.dumps(payload, option=orjson.OPT_SORT_KEYS)
    except orjson.JSONEncodeError:
        canonical = body
    return hashlib.sha256(canonical).digest()


def earlier_review(
    claim: Claim, claimed: bool, request_hash: bytes | None, review_id: int | None
) -> int | None:
    """What the store statement found of the key: the review to replay, or None (the statement stored
    the review). Raises RequestInProgress when another request held the key, InvalidInput when the key
    was used with another body."""
    if not claimed:
        raise RequestInProgress()
    if review_id is None:
        return None
    if request_hash != claim.request_hash:
        raise InvalidInput([FieldError(HEADER, "was already used with a different request body")])
    return review_id
