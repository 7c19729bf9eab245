"""Set-level rejects (duplicate ids, references to missing rows, another product's characteristic).

SQL finds them by id once every file is in (see staging.py for when) and deletes them; this module
writes each to the rejects report with its physical line and raw text, by one more streaming pass over
its file, and keeps the first copy of a duplicated id. A record is read and typed here exactly as the
load read it (csvsource.py, rows.py), so a record rows.py rejected is never mistaken for a loaded one.

The rejected ids stay in the database, in a table beside the file's own (`<table>_rejects`), not in
the loader's memory: a reviews.csv cut short (a user loading a subset) leaves every photo and rating of
the missing reviews without its review, millions of rows. The pass looks up the ids of a batch of
records at a time, and notes there the line of each rejected id's first loaded record: of a duplicated
id, the copy that is kept, and the one a reference rule then reports (the others are duplicates).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg

from atelier_etl import rejects, staging
from atelier_etl.copystream import CHUNK, encode_row, final_columns, text_columns
from atelier_etl.csvsource import CsvFile
from atelier_etl.rejects import RejectsReport
from atelier_etl.rows import (
    CHARACTERISTIC_REVIEWS,
    MAX_BIGINT,
    REVIEWS_PHOTOS,
    ExportFile,
    RowRejected,
    digits,
)
from atelier_etl.staging import SCHEMA, TABLES
from atelier_etl.summary import LoadError

# Records whose ids are looked up at once (fewer when their text passes CHUNK): one batch is all the
# pass holds, and a file of millions of records takes a few thousand queries.
BATCH = 10_000

# One file's rejects under one rule: id, kind, reason (a duplicate's is written when its copies are met)
# and the line of the id's first loaded record, once the pass has met it.
CREATE_REJECTS = {
    table: f"""
DROP TABLE IF EXISTS {SCHEMA}.{table}_rejects;
CREATE UNLOGGED TABLE {SCHEMA}.{table}_rejects (id bigint NOT NULL, kind text NOT NULL, reason text,
                                                first_line bigint)
"""
    for table in TABLES
}
# Built once the rows are in, in one go rather than row by row.
INDEX_REJECTS = {table: f"CREATE INDEX ON {SCHEMA}.{table}_rejects (id)" for table in TABLES}
REJECTS_AMONG = {
    table: f"SELECT id, kind, reason, first_line FROM {SCHEMA}.{table}_rejects WHERE id = any($1::bigint[])"
    for table in TABLES
}
NOTE_FIRST_LINES = {
    table: f"""
UPDATE {SCHEMA}.{table}_rejects AS rejected SET first_line = met.line
FROM unnest($1::bigint[], $2::bigint[]) AS met(id, line)
WHERE rejected.id = met.id
"""
    for table in TABLES
}
DELETE_REJECTED = {
    table: f"DELETE FROM {SCHEMA}.{table} AS t USING {SCHEMA}.{table}_rejects AS r WHERE t.id = r.id"
    for table in TABLES
}

DUPLICATE_IDS = {
    table: f"""
INSERT INTO {SCHEMA}.{table}_rejects (id, kind)
SELECT id, 'duplicate_id' FROM {SCHEMA}.{table} GROUP BY id HAVING count(*) > 1
"""
    for table in TABLES
}

# Each deletes the rows that break a rule and keeps their id, kind and reason (kinds as in rejects.py).
REJECT_PHOTOS_OF_MISSING_REVIEWS = f"""
WITH rejected AS (
    DELETE FROM {SCHEMA}.reviews_photos AS p
    WHERE NOT EXISTS (SELECT FROM {SCHEMA}.reviews AS r WHERE r.id = p.review_id)
    RETURNING p.id, 'missing_review' AS kind, format('review_id %s does not exist', p.review_id) AS reason
)
INSERT INTO {SCHEMA}.reviews_photos_rejects (id, kind, reason) SELECT id, kind, reason FROM rejected
"""

REJECT_RATINGS_OF_BAD_REFERENCES = f"""
WITH rejected AS (
    DELETE FROM {SCHEMA}.characteristic_reviews AS rated
    USING (
        SELECT cr.id,
               CASE WHEN r.id IS NULL THEN 'missing_review'
                    WHEN c.id IS NULL THEN 'missing_characteristic'
                    ELSE 'characteristic_of_other_product' END AS kind,
               CASE WHEN r.id IS NULL THEN format('review_id %s does not exist', cr.review_id)
                    WHEN c.id IS NULL THEN format('characteristic_id %s does not exist', cr.characteristic_id)
                    ELSE format('characteristic %s belongs to product %s, review %s to product %s',
                                c.id, c.product_id, r.id, r.product_id) END AS reason
        FROM {SCHEMA}.characteristic_reviews AS cr
        LEFT JOIN {SCHEMA}.reviews AS r ON r.id = cr.review_id
        LEFT JOIN {SCHEMA}.characteristics AS c ON c.id = cr.characteristic_id
        WHERE r.id IS NULL OR c.id IS NULL OR c.product_id <> r.product_id
    ) AS bad
    WHERE rated.id = bad.id
    RETURNING bad.id, bad.kind, bad.reason
)
INSERT INTO {SCHEMA}.characteristic_reviews_rejects (id, kind, reason) SELECT id, kind, reason FROM rejected
"""

# Once the keys hold (every reference exists, ids are unique), only the product rule is left. It is
# looked for before the keys, beside the summaries, and what it finds is deleted once the keys hold
# (with a duplicated id or a missing reference its answer is void: REJECT_RATINGS_OF_BAD_REFERENCES
# decides the product rule with the others).
RATINGS_OF_OTHER_PRODUCTS = f"""
INSERT INTO {SCHEMA}.characteristic_reviews_rejects (id, kind, reason)
SELECT cr.id, 'characteristic_of_other_product',
       format('characteristic %s belongs to product %s, review %s to product %s',
              c.id, c.product_id, r.id, r.product_id)
FROM {SCHEMA}.characteristic_reviews AS cr
JOIN {SCHEMA}.characteristics AS c ON c.id = cr.characteristic_id
JOIN {SCHEMA}.reviews AS r ON r.id = cr.review_id
WHERE c.product_id <> r.product_id
"""
# The two hash tables of those joins (ids and product ids of reviews and characteristics) fit in memory.
JOIN_WORK_MEM = "SET LOCAL work_mem = '512MB'"

REFERENCE_CHECKS = {
    REVIEWS_PHOTOS.table: REJECT_PHOTOS_OF_MISSING_REVIEWS,
    CHARACTERISTIC_REVIEWS.table: REJECT_RATINGS_OF_BAD_REFERENCES,
}


async def _chunk(records: list[bytes]) -> AsyncIterator[bytes]:
    yield b"".join(records)


def _row_count(status: str) -> int:
    """The row count of a command status such as 'DELETE 12' or 'INSERT 0 12'."""
    return int(status.rsplit(" ", 1)[1])


# (line, typed row, raw text, kind, reason, line of the id's first loaded record or None at that record)
RejectedRecord = tuple[int, tuple, str, str, str | None, int | None]


async def _rejected_records(
    conn: asyncpg.Connection, export_file: ExportFile, path: Path, unique: bool = False
) -> AsyncIterator[RejectedRecord]:
    """The file's loaded records whose id is in its rejects table, in file order. Each batch's queries
    are done before its records are yielded, so the caller may use the connection in between. `unique`:
    no id of the file was loaded twice, so none is met again and no first line needs noting (that UPDATE
    was most of the time a truncated reviews.csv's millions of orphans took)."""
    table = export_file.table
    with CsvFile(path, export_file.columns) as source:
        records = source.records()
        while True:
            batch: list[tuple[int, int, list[str], str]] = []
            size = 0
            for line, fields, raw in records:
                if not fields:
                    continue
                id = digits(fields[0])
                if id is None or not 0 < id <= MAX_BIGINT:  # rows.py rejected it
                    continue
                batch.append((line, id, fields, raw))
                size += len(raw)
                if len(batch) == BATCH or size >= CHUNK:
                    break
            if not batch:
                return
            found = {row["id"]: row for row in await conn.fetch(REJECTS_AMONG[table], [r[1] for r in batch])}
            met: dict[int, int] = {}  # id -> line of its first loaded record, met in this batch
            rejected: list[RejectedRecord] = []
            for line, id, fields, raw in batch:
                reject = found.get(id)
                if reject is None:
                    continue
                try:
                    row = export_file.parse(line, fields, raw)
                except RowRejected:
                    continue
                first_line = met.get(id, reject["first_line"])
                if first_line is None:
                    met[id] = line
                rejected.append((line, row, raw, reject["kind"], reject["reason"], first_line))
            if met and not unique:
                await conn.execute(NOTE_FIRST_LINES[table], list(met), list(met.values()))
            for record in rejected:
                yield record


async def keep_first_copies(
    conn: asyncpg.Connection, export_file: ExportFile, path: Path, report: RejectsReport, eol: bytes
) -> int:
    """Reject every copy of a duplicated id but its first (by line); returns the rows removed.

    Every copy is deleted, then the first ones are copied in again as the file is read, a chunk at a
    time (a file whose records all come twice would otherwise hold the whole file)."""
    table = export_file.table
    await conn.execute(CREATE_REJECTS[table])
    ids = _row_count(await conn.execute(DUPLICATE_IDS[table]))
    if not ids:
        return 0
    await conn.execute(INDEX_REJECTS[table])
    deleted = _row_count(await conn.execute(DELETE_REJECTED[table]))
    columns, texts = final_columns(export_file), text_columns(export_file)
    copies = inserted = size = 0
    pending: list[bytes] = []
    async for line, row, raw, _, _, first_line in _rejected_records(conn, export_file, path):
        copies += 1
        if first_line is None:
            pending.append(encode_row(export_file, row, eol, final=True))
            size += len(pending[-1])
            if size >= CHUNK:
                inserted += await staging.copy_rows(conn, export_file, columns, texts, _chunk(pending))
                pending, size = [], 0
        else:
            reason = f"duplicate id {row[1]} (first at line {first_line})"
            report.add(export_file.name, line, rejects.DUPLICATE_ID, reason, raw)
    if pending:
        inserted += await staging.copy_rows(conn, export_file, columns, texts, _chunk(pending))
    if copies != deleted or inserted != ids:
        raise LoadError(f"{export_file.name} changed during the load (duplicated ids moved)")
    return deleted - inserted


async def reject_bad_references(
    conn: asyncpg.Connection, export_file: ExportFile, path: Path, report: RejectsReport, unique: bool
) -> int:
    """Delete and report the file's rows that refer to missing rows (or another product's
    characteristic); returns how many. `unique`: keep_first_copies found no duplicated id in it."""
    check = REFERENCE_CHECKS.get(export_file.table)
    if check is None:
        return 0
    await conn.execute(CREATE_REJECTS[export_file.table])
    async with conn.transaction():
        await conn.execute(JOIN_WORK_MEM)
        deleted = _row_count(await conn.execute(check))
    return await _report(conn, export_file, path, report, deleted, unique)


async def find_ratings_of_other_products(conn: asyncpg.Connection) -> int:
    """Note, without deleting them, the ratings whose characteristic and review are of different
    products; returns how many."""
    await conn.execute(CREATE_REJECTS[CHARACTERISTIC_REVIEWS.table])
    async with conn.transaction():
        await conn.execute(JOIN_WORK_MEM)
        return _row_count(await conn.execute(RATINGS_OF_OTHER_PRODUCTS))


async def reject_ratings_of_other_products(
    conn: asyncpg.Connection, path: Path, report: RejectsReport
) -> int:
    """Delete and report what find_ratings_of_other_products found (once the keys hold); returns how many."""
    deleted = _row_count(await conn.execute(DELETE_REJECTED[CHARACTERISTIC_REVIEWS.table]))
    return await _report(conn, CHARACTERISTIC_REVIEWS, path, report, deleted, unique=True)  # keys hold


async def _report(
    conn: asyncpg.Connection,
    export_file: ExportFile,
    path: Path,
    report: RejectsReport,
    deleted: int,
    unique: bool,
) -> int:
    """Report the rows of the file's rejects table at the line of each id's first loaded record."""
    if not deleted:
        return 0
    await conn.execute(INDEX_REJECTS[export_file.table])
    reported = 0
    async for line, _, raw, kind, reason, first_line in _rejected_records(conn, export_file, path, unique):
        if first_line is None:  # its later copies are reported as duplicates already
            assert reason is not None
            report.add(export_file.name, line, kind, reason, raw)
            reported += 1
    if reported != deleted:
        gone = deleted - reported
        raise LoadError(f"{export_file.name} changed during the load ({gone} rejected rows are gone)")
    return deleted
