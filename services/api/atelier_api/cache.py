"""The replica's response cache: JSON bodies of GET /reviews and /reviews/meta, kept per product.

Never stale beyond a write's notification: every write that changes what a product's GETs answer
notifies its product id when it commits (changes.py), and each replica's listener drops that product's
entries; the writing replica also drops them itself before it answers. The cache only fills while the
listener is connected, and is emptied whenever it (re)connects, so notifications missed while it was
away cannot leave old answers behind. Entries also expire after a TTL, a backstop for what no
notification can cover (a write made by hand, outside the API).

A read that overlaps an invalidation must not store what it read: it takes a `token()` before asking
the database, and `put` stores only when no invalidation of its product (or flush) came after it.

Bounded by bytes (least recently used first out), each entry counted with its bookkeeping, so the
budget is about the memory the entries take; the overlap check's memory (below 6 MB) comes on top. An
answer larger than a 64th of the budget is served but not kept, so one huge page cannot evict everything.

Invisible to the garbage collector: a full cache holds tens of thousands of answers, and CPython's full
collection walks every container it tracks while the event loop waits. So the cache keeps only plain
dicts of plain tuples of bytes, str, numbers and tuples of them (keys included: a variant is a str or
such a tuple), which the collector stops tracking after a collection or two (a nested tuple may wait
for the next one). With a full 64 MB cache (52,000 answers) a full collection took 21 ms with dataclass
entries; now 0.6 ms, once serve.py has frozen what start-up made (9 ms without that).
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable, Hashable
from dataclasses import dataclass, field
from typing import NamedTuple

# The variant of a product's summary (GET /reviews/meta); its pages of reviews are keyed by their query.
SUMMARY = "summary"
# Bookkeeping per entry counted against the byte budget besides its bytes: the key tuple, the stored
# tuple, the etag, the expiry, dict slots in both indexes, the bytes object's own header. Measured with
# tracemalloc on 64-bit CPython 3.11: 540-550 bytes for a summary and for a page alike (200, counted
# until 2026-12-08, let a budget of small answers take 1.65x its bytes).
ENTRY_OVERHEAD = 550
# Invalidations remembered per product for the overlap check; past this many, they are forgotten at
# once by counting them as a flush (fills in flight are then not stored, which is always safe).
MAX_REMEMBERED_INVALIDATIONS = 50_000


def etag_of(body: bytes) -> str:
    """A strong validator of the body's bytes (quoted, as the header wants it)."""
    return '"' + hashlib.blake2b(body, digest_size=12).hexdigest() + '"'


class Entry(NamedTuple):
    """One cached answer. A named tuple: made on every hit, and a frozen dataclass's __init__ costs
    several times a tuple's."""

    body: bytes
    etag: str
    expires: float = 0.0
    # For a body that is a list of JSON values joined by commas: where each value starts, and one past
    # the end (len(body) + 1), so that values a..b-1 are body[starts[a] : starts[b] - 1].
    starts: tuple[int, ...] = ()
    # What the reader needs to know of those values besides their bytes, one byte per value in each
    # (http_cache.Layout: a product's reviews, their stars, photos and orders). Part of the ETag.
    layout: tuple[bytes, ...] = ()


# How an entry is kept: Entry's fields as a plain tuple, not the named tuple (see the module's docstring:
# the collector untracks exact tuples only).
_Stored = tuple[bytes, str, float, tuple[int, ...], tuple[bytes, ...]]


@dataclass
class CacheStats:
    hits: int = 0
    misses: int = 0
    invalidations: int = 0
    flushes: int = 0


@dataclass
class ResponseCache:
    max_bytes: int
    ttl: float
    clock: Callable[[], float] = time.monotonic
    live: bool = False  # the listener is connected: only then may entries be stored
    stats: CacheStats = field(default_factory=CacheStats)

    def __post_init__(self) -> None:
        # Insertion order is recency: a hit moves its entry to the end, eviction takes the first.
        self._entries: dict[tuple[int, Hashable], _Stored] = {}
        self._by_product: dict[int, dict[Hashable, None]] = {}  # a product's variants, as dict keys
        self._bytes = 0
        self._sequence = 0  # counts invalidations and flushes
        self._flushed_at = 0
        self._invalidated_at: dict[int, int] = {}

    @property
    def enabled(self) -> bool:
        return self.max_bytes > 0

    @property
    def keeping(self) -> bool:
        """Whether `put` may store now: the cache is on and its listener connected."""
        return self.enabled and self.live

    @property
    def size_bytes(self) -> int:
        return self._bytes

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, product_id: int, variant: Hashable) -> Entry | None:
        key = (product_id, variant)
        stored = self._entries.pop(key, None)
        if stored is None:
            self.stats.misses += 1
            return None
        entry = Entry(*stored)
        if entry.expires <= self.clock():
            self._forget(key, stored)
            self.stats.misses += 1
            return None
        self._entries[key] = stored  # now the most recently used
        self.stats.hits += 1
        return entry

    def token(self) -> int:
        """Take before reading the database; hand to `put` with what was read."""
        return self._sequence

    def put(
        self,
        product_id: int,
        variant: Hashable,
        body: bytes,
        token: int,
        starts: tuple[int, ...] = (),
        layout: tuple[bytes, ...] = (),
    ) -> Entry:
        """The entry for this body; stored only when the cache is live and nothing invalidated the
        product since `token` was taken."""
        etag = etag_of(body + b"".join(layout)) if layout else etag_of(body)
        entry = Entry(body, etag, self.clock() + self.ttl, starts, layout)
        size = _size(body, starts, layout)
        if (
            not self.keeping
            or size > self.max_bytes // 64
            or token < self._flushed_at
            or token < self._invalidated_at.get(product_id, 0)
        ):
            return entry
        key = (product_id, variant)
        if key in self._entries:
            self._drop(key)
        # tuple(): a named tuple (http_cache.Layout) is tracked by the collector, a plain one is not.
        self._entries[key] = (entry.body, entry.etag, entry.expires, entry.starts, tuple(entry.layout))
        self._by_product.setdefault(product_id, {})[variant] = None
        self._bytes += size
        while self._bytes > self.max_bytes:
            self._drop(next(iter(self._entries)))
        return entry

    def invalidate(self, product_id: int, summary: bool = True) -> None:
        """Forget every answer about this product, and any being read now; with summary=False, keep
        its summary (a helpful vote moves its pages of reviews only). Reads of the summary that are in
        flight are not kept either way (the overlap check is per product, which is always safe)."""
        self._sequence += 1
        self.stats.invalidations += 1
        if len(self._invalidated_at) >= MAX_REMEMBERED_INVALIDATIONS:
            self._invalidated_at.clear()
            self._flushed_at = self._sequence
        self._invalidated_at[product_id] = self._sequence
        variants = self._by_product.pop(product_id, {})
        if not summary and SUMMARY in variants:
            del variants[SUMMARY]
            self._by_product[product_id] = {SUMMARY: None}
        for variant in variants:
            stored = self._entries.pop((product_id, variant))
            self._bytes -= _size(stored[0], stored[3], stored[4])

    def flush(self) -> None:
        """Forget everything, and every answer being read now."""
        self._sequence += 1
        self.stats.flushes += 1
        self._flushed_at = self._sequence
        self._invalidated_at.clear()
        self._entries.clear()
        self._by_product.clear()
        self._bytes = 0

    def _drop(self, key: tuple[int, Hashable]) -> None:
        self._forget(key, self._entries.pop(key))

    def _forget(self, key: tuple[int, Hashable], stored: _Stored) -> None:
        """Account for an entry already taken out of _entries."""
        self._bytes -= _size(stored[0], stored[3], stored[4])
        product_id, variant = key
        variants = self._by_product[product_id]
        del variants[variant]
        if not variants:
            del self._by_product[product_id]


def _size(body: bytes, starts: tuple[int, ...], layout: tuple[bytes, ...]) -> int:
    """What an entry counts against the byte budget: its bytes, 8 per offset, and the bookkeeping."""
    return len(body) + 8 * len(starts) + sum(len(part) for part in layout) + ENTRY_OVERHEAD
