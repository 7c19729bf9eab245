"""The staging schema: the new data is built beside the served data, then switched in at once.

`atelier_load` is dropped and recreated at the start of each run and gets the service's tables (the
schema's own 01-tables.sql, applied with the search_path pointing there) plus UNLOGGED raw tables that
take the typed rows of each file with their line numbers. Set-level rules (duplicate ids, references)
are decided here in SQL into `sql_rejects`; the kept rows then go into the service's tables, which get
their keys and indexes last, the fast order. The switch moves the four tables to `public` in one
transaction: until it commits, the previous data is what is served.

Every statement here names its schema; only the schema files rely on the search_path.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import asyncpg

from atelier_etl import summaries
from atelier_etl.rows import CHARACTERISTIC_REVIEWS, EXPORT_FILES, REVIEWS_PHOTOS, ExportFile
from atelier_etl.schema import (
    CONSTRAINTS_FILE,
    INDEXES_FILE,
    PRIVILEGES_FILE,
    REQUESTS_FILE,
    TABLES_FILE,
    schema_sql,
)
from atelier_etl.summary import LoadError

SCHEMA = "atelier_load"
SERVED_SCHEMA = "public"
TABLES = tuple(export_file.table for export_file in EXPORT_FILES)
# What the switch moves in: the export's tables and the summaries computed from them.
SWITCHED_TABLES = TABLES + summaries.TABLES
# One loader at a time per database: a second one would drop the first one's staging schema.
ADVISORY_LOCK_KEY = 0x6174656C_6C6F6164  # "atelload"
_REJECTS_PAGE = 10_000
# The switch's lock waits: short tries with pauses between them (see switch()).
SWITCH_LOCK_TIMEOUT_MS = 1000
SWITCH_PAUSE_SECONDS = 0.5
SWITCH_ATTEMPTS = 120

# A load runs long statements; sorts, hashes and index builds over millions of rows like memory.
SESSION_SETTINGS = """
SET statement_timeout = 0;
SET work_mem = '64MB';
SET maintenance_work_mem = '256MB';
"""

TRY_LOCK = "SELECT pg_try_advisory_lock($1)"

CREATE_SCHEMA = f"DROP SCHEMA IF EXISTS {SCHEMA} CASCADE; CREATE SCHEMA {SCHEMA}"
USE_SCHEMA = f"SET search_path TO {SCHEMA}"
DROP_SCHEMA = f"DROP SCHEMA IF EXISTS {SCHEMA} CASCADE"

CREATE_SQL_REJECTS = f"""
CREATE UNLOGGED TABLE {SCHEMA}.sql_rejects (
    file    text   NOT NULL,
    line_no bigint NOT NULL,
    kind    text   NOT NULL,
    reason  text   NOT NULL,
    PRIMARY KEY (file, line_no)  -- a record gets the first rule it breaks, the others are ignored
)
"""

# Keep the first occurrence of an id (by line), reject the later ones.
REJECT_DUPLICATES = """
INSERT INTO {schema}.sql_rejects (file, line_no, kind, reason)
SELECT $1, r.line_no, 'duplicate_id', format('duplicate id %s (first at line %s)', r.id, d.first_line)
FROM {schema}.{raw} AS r
JOIN (SELECT id, min(line_no) AS first_line FROM {schema}.{raw} GROUP BY id HAVING count(*) > 1) AS d
  ON d.id = r.id
WHERE r.line_no <> d.first_line
"""

REJECT_PHOTOS_OF_MISSING_REVIEWS = f"""
INSERT INTO {SCHEMA}.sql_rejects (file, line_no, kind, reason)
SELECT $1, p.line_no, 'missing_review', format('review_id %s does not exist', p.review_id)
FROM {SCHEMA}.raw_reviews_photos AS p
WHERE NOT EXISTS (SELECT FROM {SCHEMA}.reviews AS r WHERE r.id = p.review_id)
ON CONFLICT DO NOTHING
"""

REJECT_RATINGS_OF_BAD_REFERENCES = f"""
INSERT INTO {SCHEMA}.sql_rejects (file, line_no, kind, reason)
SELECT $1, cr.line_no,
       CASE WHEN r.id IS NULL THEN 'missing_review'
            WHEN c.id IS NULL THEN 'missing_characteristic'
            ELSE 'characteristic_of_other_product' END,
       CASE WHEN r.id IS NULL THEN format('review_id %s does not exist', cr.review_id)
            WHEN c.id IS NULL THEN format('characteristic_id %s does not exist', cr.characteristic_id)
            ELSE format('characteristic %s belongs to product %s, review %s to product %s',
                        c.id, c.product_id, r.id, r.product_id) END
FROM {SCHEMA}.raw_characteristic_reviews AS cr
LEFT JOIN {SCHEMA}.reviews AS r ON r.id = cr.review_id
LEFT JOIN {SCHEMA}.characteristics AS c ON c.id = cr.characteristic_id
WHERE r.id IS NULL OR c.id IS NULL OR c.product_id <> r.product_id
ON CONFLICT DO NOTHING
"""

REFERENCE_CHECKS = {
    REVIEWS_PHOTOS.table: REJECT_PHOTOS_OF_MISSING_REVIEWS,
    CHARACTERISTIC_REVIEWS.table: REJECT_RATINGS_OF_BAD_REFERENCES,
}

_NOT_REJECTED = f"""
WHERE NOT EXISTS (SELECT FROM {SCHEMA}.sql_rejects AS x WHERE x.file = $1 AND x.line_no = raw.line_no)
"""

INSERT_KEPT = {
    "characteristics": f"""
INSERT INTO {SCHEMA}.characteristics (id, product_id, name)
SELECT id, product_id, name FROM {SCHEMA}.raw_characteristics AS raw {_NOT_REJECTED}""",
    "reviews": f"""
INSERT INTO {SCHEMA}.reviews (id, product_id, rating, date, summary, body, recommend, reported,
                              reviewer_name, reviewer_email, response, helpfulness)
SELECT id, product_id, rating, timestamptz 'epoch' + date_ms * interval '1 millisecond', summary, body,
       recommend, reported, reviewer_name, reviewer_email, response, helpfulness
FROM {SCHEMA}.raw_reviews AS raw {_NOT_REJECTED}""",
    "reviews_photos": f"""
INSERT INTO {SCHEMA}.reviews_photos (id, review_id, url)
SELECT id, review_id, url FROM {SCHEMA}.raw_reviews_photos AS raw {_NOT_REJECTED}""",
    "characteristic_reviews": f"""
INSERT INTO {SCHEMA}.characteristic_reviews (id, characteristic_id, review_id, value)
SELECT id, characteristic_id, review_id, value FROM {SCHEMA}.raw_characteristic_reviews AS raw
{_NOT_REJECTED}""",
}

REJECTS_PAGE = f"""
SELECT line_no, kind, reason FROM {SCHEMA}.sql_rejects
WHERE file = $1 AND line_no > $2 ORDER BY line_no LIMIT $3
"""

COUNT_REJECTS = f"SELECT count(*) FROM {SCHEMA}.sql_rejects WHERE file = $1"

# Past the largest loaded id, so the API's first insert does not collide; a fresh start when empty.
MOVE_SEQUENCE = """
SELECT setval(pg_get_serial_sequence('{schema}.{table}', 'id'), coalesce(max(id), 1), max(id) IS NOT NULL)
FROM {schema}.{table}
"""


def _row_count(status: str) -> int:
    """The row count of a command status such as 'COPY 12' or 'INSERT 0 12'."""
    return int(status.rsplit(" ", 1)[1])


async def try_lock(conn: asyncpg.Connection) -> bool:
    return bool(await conn.fetchval(TRY_LOCK, ADVISORY_LOCK_KEY))


async def prepare(conn: asyncpg.Connection) -> None:
    """A fresh staging schema: the service's tables, a raw table per file, the SQL rejects."""
    await conn.execute(SESSION_SETTINGS)
    await conn.execute(CREATE_SCHEMA)
    await _apply_schema_file(conn, TABLES_FILE)
    for export_file in EXPORT_FILES:
        columns = ", ".join(f"{name} {sql_type}" for name, sql_type in export_file.raw_columns)
        await conn.execute(f"CREATE UNLOGGED TABLE {SCHEMA}.{export_file.raw_table} ({columns})")
    await conn.execute(CREATE_SQL_REJECTS)


async def _apply_schema_file(conn: asyncpg.Connection, name: str) -> None:
    await conn.execute(USE_SCHEMA)
    await conn.execute(schema_sql(name))


async def copy_raw(conn: asyncpg.Connection, export_file: ExportFile, rows: AsyncIterator[tuple]) -> int:
    """COPY typed rows into the file's raw table; returns the row count PostgreSQL reports."""
    status = await conn.copy_records_to_table(
        export_file.raw_table, records=rows, columns=export_file.raw_column_names, schema_name=SCHEMA
    )
    await conn.execute(f"ANALYZE {SCHEMA}.{export_file.raw_table}")
    return _row_count(status)


async def check(conn: asyncpg.Connection, export_file: ExportFile) -> int:
    """Decide the file's set-level rejects (its parents must be kept already); returns their count."""
    await conn.execute(REJECT_DUPLICATES.format(schema=SCHEMA, raw=export_file.raw_table), export_file.name)
    reference_check = REFERENCE_CHECKS.get(export_file.table)
    if reference_check is not None:
        await conn.execute(reference_check, export_file.name)
    return int(await conn.fetchval(COUNT_REJECTS, export_file.name))


async def sql_rejects(
    conn: asyncpg.Connection, export_file: ExportFile
) -> AsyncIterator[tuple[int, str, str]]:
    """The file's set-level rejects as (line, kind, reason), by line, a page at a time."""
    after = 0
    while True:
        page = await conn.fetch(REJECTS_PAGE, export_file.name, after, _REJECTS_PAGE)
        for row in page:
            yield row["line_no"], row["kind"], row["reason"]
        if len(page) < _REJECTS_PAGE:
            return
        after = page[-1]["line_no"]


async def insert_kept(conn: asyncpg.Connection, export_file: ExportFile) -> int:
    """Fill the staging copy of the service's table with the rows not rejected; returns their count."""
    status = await conn.execute(INSERT_KEPT[export_file.table], export_file.name)
    await conn.execute(f"ANALYZE {SCHEMA}.{export_file.table}")
    return _row_count(status)


async def build_summaries(conn: asyncpg.Connection) -> None:
    """The per-product summaries of the kept rows, before the keys and indexes (a GROUP BY needs none)."""
    await conn.execute(USE_SCHEMA)
    await summaries.build(conn)


async def build_keys_and_indexes(conn: asyncpg.Connection) -> None:
    await _apply_schema_file(conn, CONSTRAINTS_FILE)
    await _apply_schema_file(conn, INDEXES_FILE)
    for table in TABLES:
        await conn.execute(MOVE_SEQUENCE.format(schema=SCHEMA, table=table))


async def switch(conn: asyncpg.Connection) -> None:
    """Serve the staged tables instead of the current ones, in one transaction.

    The API's request tables (04-requests.sql: helpful votes, idempotency keys) are not export data:
    they stay, and are created in `public` when missing (the file is idempotent), so a fresh database
    has them once loaded. Then 05-privileges.sql grants the API's role (atelier_api) its privileges on
    the new tables, in the same transaction, so the API never sees the tables without them.
    """
    # While the switch waits for a table lock, PostgreSQL queues every later reader of that table behind
    # it. So it waits briefly (well under the API's DB_COMMAND_TIMEOUT), gives way, and tries again.
    for attempt in range(1, SWITCH_ATTEMPTS + 1):
        try:
            async with conn.transaction():
                await conn.execute(f"SET LOCAL lock_timeout = '{SWITCH_LOCK_TIMEOUT_MS}ms'")
                for table in SWITCHED_TABLES:
                    await conn.execute(f"DROP TABLE IF EXISTS {SERVED_SCHEMA}.{table} CASCADE")
                    await conn.execute(f"ALTER TABLE {SCHEMA}.{table} SET SCHEMA {SERVED_SCHEMA}")
                await conn.execute(DROP_SCHEMA)
                await conn.execute(f"SET LOCAL search_path TO {SERVED_SCHEMA}")
                await conn.execute(schema_sql(REQUESTS_FILE))
                await conn.execute(schema_sql(PRIVILEGES_FILE))
            return
        except asyncpg.LockNotAvailableError:
            if attempt == SWITCH_ATTEMPTS:
                raise LoadError(
                    f"the served tables stayed busy for {SWITCH_ATTEMPTS} attempts; nothing was switched"
                ) from None
            await asyncio.sleep(SWITCH_PAUSE_SECONDS)


async def drop(conn: asyncpg.Connection) -> None:
    await conn.execute(DROP_SCHEMA)
