"""The staging schema: the new data is built beside the served data, then switched in at once.

`atelier_load` is dropped and recreated at the start of each run and gets the service's tables (the
schema's own 01-tables.sql, applied with the search_path pointing there). Each export table is named
`raw_<table>` while its file streams in: COPY writes the records straight into its final shape, once,
with FREEZE (the table is truncated in the COPY's transaction, so nothing rewrites its pages for hint
bits later). One change to 01-tables.sql while the files stream: reviews gets a `date_ms` column and
its `date` is computed from it (STAGED_REVIEW_DATE), so COPY takes the export's epoch milliseconds
as they are; then `date` becomes a plain column again and `date_ms` is dropped (catalog changes only:
the column's 8 bytes stay in each row as dropped data). The few records that break a set-level rule
are found afterwards and deleted:

- duplicate ids and references to missing rows break the primary and foreign keys of
  02-constraints.sql, which are built anyway: only when a key build fails are the explicit queries
  of setrejects.py run (DUPLICATE_IDS, the REJECT_* deletes), then the keys are built again;
- a rating whose characteristic belongs to another product than its review breaks no key: that join
  (setrejects.RATINGS_OF_OTHER_PRODUCTS) always runs, beside the summaries; it is trusted once the keys
  hold.

The keys and indexes are the schema's own (02-constraints.sql, 03-indexes.sql), built in an order that
keeps both cores busy. Adding a primary key locks its table against readers until the keys' transaction
commits, and the foreign keys' checks that follow use one core. So the export tables' primary keys are
first built as plain unique indexes (KEY_INDEXES), and the secondary indexes of those tables too, on a
third connection beside the summaries and the product check (CREATE INDEX lets others read the table).
The keys' transaction then takes each such index over (`PRIMARY KEY USING INDEX`, a catalog change:
`with_key_indexes`) and checks the foreign keys.

The switch moves the tables to `public` in one transaction: until it commits, the previous data is
what is served.

Every statement here names its schema; only the schema files rely on the search_path.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterable, Callable
from typing import Any

import asyncpg

from atelier_etl import summaries
from atelier_etl.rows import EXPORT_FILES, ExportFile
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
# The served tables, and the API's request tables (04-requests.sql), locked up front in the order the
# API's writers take them, so that while the switch waits for one it holds none that a writer holding
# the one before could want next: a POST with an Idempotency-Key reads idempotency_keys before reviews;
# a report locks its review, then its product's summary, its characteristics' sums, their ratings; a
# vote, its review and then helpful_votes. Dropping the tables one by one instead locked
# `characteristics` and `characteristic_reviews` first (the export's order), then waited for `reviews`,
# which a report holds before it reads characteristic_reviews: a deadlock.
REQUEST_TABLES = ("helpful_votes", "idempotency_keys")
LOCK_ORDER = (
    "idempotency_keys",
    "reviews",
    "product_summaries",
    "characteristic_summaries",
    "characteristic_reviews",
    "characteristics",
    "reviews_photos",
    "helpful_votes",
)
SERVED_TABLE_EXISTS = f"SELECT to_regclass('{SERVED_SCHEMA}.' || $1::text) IS NOT NULL"
LOCK_SERVED_TABLE = {
    table: f"LOCK TABLE {SERVED_SCHEMA}.{table} IN ACCESS EXCLUSIVE MODE" for table in LOCK_ORDER
}
# What the API remembers of requests names reviews of the data being replaced (a vote counted, the review
# an Idempotency-Key created), and a reload starts the ids the API hands out again past the export's
# largest: a kept key would replay a review the reload dropped, under an id the next POST takes.
FORGET_REQUESTS = f"TRUNCATE {', '.join(REQUEST_TABLES)}"
# One loader at a time per database: a second one would drop the first one's staging schema.
ADVISORY_LOCK_KEY = 0x6174656C_6C6F6164  # "atelload"
# The switch's lock waits: short tries with pauses between them (see switch()).
SWITCH_LOCK_TIMEOUT_MS = 1000
SWITCH_PAUSE_SECONDS = 0.5
SWITCH_ATTEMPTS = 120

# A load runs long statements; sorts, hashes and index builds over millions of rows like memory.
SESSION_SETTINGS = """
SET statement_timeout = 0;
SET work_mem = '256MB';
SET maintenance_work_mem = '256MB';
"""

TRY_LOCK = "SELECT pg_try_advisory_lock($1)"

# Whether the served tables hold a product: a characteristic or a review, as the API's /readyz asks it
# (the first entry of each product index). `atelier-load --if-empty` then leaves them alone. Tables that
# are missing hold none (the second query would fail on them, so it runs only when both exist).
# `reviews` first, as the switch locks them (LOCK_ORDER): the other order could deadlock with another
# loader's switch.
SERVED_TABLES_EXIST = f"""
SELECT to_regclass('{SERVED_SCHEMA}.characteristics') IS NOT NULL
    AND to_regclass('{SERVED_SCHEMA}.reviews') IS NOT NULL
"""
HAS_A_PRODUCT = f"""
SELECT (SELECT product_id FROM {SERVED_SCHEMA}.reviews ORDER BY product_id LIMIT 1) IS NOT NULL
    OR (SELECT product_id FROM {SERVED_SCHEMA}.characteristics ORDER BY product_id LIMIT 1) IS NOT NULL
"""

# The API replicas' change channel (atelier_api/changes.py; a test keeps the names equal): `*` = everything.
CHANGES_CHANNEL = "atelier_changes"
NOTIFY_EVERYTHING = "SELECT pg_notify('atelier_changes', '*')"

CREATE_SCHEMA = f"DROP SCHEMA IF EXISTS {SCHEMA} CASCADE; CREATE SCHEMA {SCHEMA}"
USE_SCHEMA = f"SET search_path TO {SCHEMA}"
DROP_SCHEMA = f"DROP SCHEMA IF EXISTS {SCHEMA} CASCADE"

# reviews.date as 01-tables.sql declares it, and as it is while reviews.csv streams in: computed from the
# export's milliseconds (exact to 2**53 microseconds, as rows.MAX_DATE_MS allows).
REVIEW_DATE = re.compile(r"^(\s*)date(\s+)timestamptz NOT NULL DEFAULT now\(\),$", re.MULTILINE)
STAGED_REVIEW_DATE = (
    r"\1date_ms\2bigint,\n"
    r"\1date\2timestamptz NOT NULL GENERATED ALWAYS AS "
    r"((timestamp '1970-01-01' + date_ms * interval '1 millisecond') AT TIME ZONE 'UTC') STORED,"
)
UNSTAGE_REVIEW_DATE = f"""
ALTER TABLE {SCHEMA}.raw_reviews ALTER COLUMN date DROP EXPRESSION;
ALTER TABLE {SCHEMA}.raw_reviews ALTER COLUMN date SET DEFAULT now();
ALTER TABLE {SCHEMA}.raw_reviews DROP COLUMN date_ms;
"""

EMPTY_SUMMARIES = summaries.EMPTY

# Per export table, built once here from SCHEMA and TABLES (DDL cannot take names as parameters).
# While its file streams in, a table is named raw_<table>.
RENAME_TO_RAW = {table: f"ALTER TABLE {SCHEMA}.{table} RENAME TO raw_{table}" for table in TABLES}
RENAME_FROM_RAW = {table: f"ALTER TABLE {SCHEMA}.raw_{table} RENAME TO {table}" for table in TABLES}
TRUNCATE_RAW = {table: f"TRUNCATE {SCHEMA}.raw_{table}" for table in TABLES}
ANALYZE_RAW = {table: f"ANALYZE {SCHEMA}.raw_{table}" for table in TABLES}
ANALYZE_SUMMARIES = f"ANALYZE {', '.join(f'{SCHEMA}.{table}' for table in summaries.TABLES)}"
# The unique index each export table's primary key takes over; IF NOT EXISTS: built beside the summaries,
# or else by the keys' transaction itself (build_keys).
KEY_INDEXES = {
    table: f"CREATE UNIQUE INDEX IF NOT EXISTS {table}_pkey ON {SCHEMA}.{table} (id)" for table in TABLES
}
# 02-constraints.sql's primary key of an export table, as the keys' transaction adds it: over KEY_INDEXES.
EXPORT_PRIMARY_KEY = re.compile(
    rf"(ALTER TABLE\s+({'|'.join(TABLES)})\s+ADD CONSTRAINT\s+(\2_pkey)\s+)PRIMARY KEY \(id\)"
)
# A statement of 03-indexes.sql: its index and table.
CREATE_INDEX = re.compile(r"CREATE INDEX (\w+) ON (\w+) ")

# Past the largest loaded id, so the API's first insert does not collide; a fresh start when empty.
MOVE_SEQUENCE = {
    table: f"""
SELECT setval(pg_get_serial_sequence('{SCHEMA}.{table}', 'id'), coalesce(max(id), 1), max(id) IS NOT NULL)
FROM {SCHEMA}.{table}
"""
    for table in TABLES
}


def _row_count(status: str) -> int:
    """The row count of a command status such as 'COPY 12' or 'INSERT 0 12'."""
    return int(status.rsplit(" ", 1)[1])


async def try_lock(conn: asyncpg.Connection) -> bool:
    return bool(await conn.fetchval(TRY_LOCK, ADVISORY_LOCK_KEY))


async def serves_a_product(conn: asyncpg.Connection) -> bool:
    """The served tables hold a product: a load or the API has put data there."""
    return bool(await conn.fetchval(SERVED_TABLES_EXIST) and await conn.fetchval(HAS_A_PRODUCT))


async def prepare(conn: asyncpg.Connection) -> None:
    """A fresh staging schema with the service's tables; the export's ones named raw_<table>."""
    await conn.execute(SESSION_SETTINGS)
    await conn.execute(CREATE_SCHEMA)
    await _apply_schema_file(conn, TABLES_FILE, _staged_review_date)
    for table in TABLES:
        await conn.execute(RENAME_TO_RAW[table])


async def _apply_schema_file(
    conn: asyncpg.Connection, name: str, change: Callable[[str], str] | None = None
) -> None:
    await conn.execute(USE_SCHEMA)
    await conn.execute(change(schema_sql(name)) if change else schema_sql(name))


def _staged_review_date(tables_sql: str) -> str:
    staged, found = REVIEW_DATE.subn(STAGED_REVIEW_DATE, tables_sql)
    if found != 1:
        raise LoadError(
            f"{TABLES_FILE}: expected one `date timestamptz NOT NULL DEFAULT now(),` line (reviews.date)"
        )
    return staged


async def session(conn: asyncpg.Connection) -> None:
    """The settings of a loader session (for a second connection that COPYs beside the first)."""
    await conn.execute(SESSION_SETTINGS)


async def copy_file(
    conn: asyncpg.Connection,
    export_file: ExportFile,
    columns: list[str],
    text_columns: list[str],
    data: AsyncIterable[bytes],
) -> int:
    """COPY a file's CSV records into its raw_<table>; returns the row count PostgreSQL reports."""
    table = f"raw_{export_file.table}"
    async with conn.transaction():
        await conn.execute(TRUNCATE_RAW[export_file.table])  # FREEZE: the table is new in this transaction
        status = await conn.copy_to_table(
            table, source=data, columns=columns, schema_name=SCHEMA, freeze=True, **_csv(text_columns)
        )
    await conn.execute(ANALYZE_RAW[export_file.table])
    return _row_count(status)


def _csv(text_columns: list[str]) -> dict[str, Any]:
    """COPY's CSV options: a bare null is NULL, except in text columns (rows.py reads it as text)."""
    return {"format": "csv", "null": "null", "force_not_null": text_columns or None}


async def copy_rows(
    conn: asyncpg.Connection,
    export_file: ExportFile,
    columns: list[str],
    text_columns: list[str],
    data: AsyncIterable[bytes],
) -> int:
    """COPY more records (re-inserted first copies of duplicated ids) into a filled table."""
    status = await conn.copy_to_table(
        export_file.table, source=data, columns=columns, schema_name=SCHEMA, **_csv(text_columns)
    )
    return _row_count(status)


async def name_tables(conn: asyncpg.Connection) -> None:
    """Every file is in: reviews.date becomes a plain column, the tables take the service's names."""
    await conn.execute(UNSTAGE_REVIEW_DATE)
    for table in TABLES:
        await conn.execute(RENAME_FROM_RAW[table])


async def empty_summaries(conn: asyncpg.Connection) -> None:
    await conn.execute(USE_SCHEMA)
    await conn.execute(EMPTY_SUMMARIES)


async def rebuild_summaries(conn: asyncpg.Connection) -> None:
    """The summaries again, after rows they counted were rejected (a key build or the product check)."""
    await conn.execute(USE_SCHEMA)
    await summaries.rebuild(conn)


async def build_summaries(conn: asyncpg.Connection) -> None:
    """The per-product summaries of the kept rows, before the keys and indexes (a GROUP BY needs none)."""
    await conn.execute(USE_SCHEMA)
    await summaries.build(conn)


async def analyze_summaries(conn: asyncpg.Connection) -> None:
    """Statistics for the summary tables as finally built (the export tables have theirs from their
    COPY). Without them the planner guesses thousands of rows per product, and on a server with JIT on
    (PostgreSQL's default) a batch of summaries compiled for 120 ms instead of running in 2 ms."""
    await conn.execute(ANALYZE_SUMMARIES)


async def build_key_indexes(conn: asyncpg.Connection) -> None:
    """What may be built before the keys, beside the summaries: the export tables' KEY_INDEXES, then
    03-indexes.sql's indexes of those tables. Stops at a duplicate id, quietly: the keys' transaction
    meets it again and fails (build_keys), and what is left is built after the duplicates are deleted."""
    await conn.execute(USE_SCHEMA)
    try:
        for table in TABLES:
            await conn.execute(KEY_INDEXES[table])
    except asyncpg.UniqueViolationError:
        return
    for statement in _statements(schema_sql(INDEXES_FILE)):
        index = CREATE_INDEX.match(statement)
        if index is not None and index.group(2) in TABLES:
            await conn.execute(_if_not_exists(statement))


async def build_keys(conn: asyncpg.Connection) -> None:
    """02-constraints.sql, in one transaction, with the export tables' primary keys over KEY_INDEXES
    (each built here when build_key_indexes has not): a duplicate id or a missing reference fails it
    whole (asyncpg.IntegrityConstraintViolationError) and leaves the tables as they were."""
    async with conn.transaction():
        for table in TABLES:
            await conn.execute(KEY_INDEXES[table])
        await _apply_schema_file(conn, CONSTRAINTS_FILE, with_key_indexes)


def with_key_indexes(constraints_sql: str) -> str:
    """02-constraints.sql with each export table's `PRIMARY KEY (id)` taking its KEY_INDEXES index over."""
    keyed, found = EXPORT_PRIMARY_KEY.subn(r"\1PRIMARY KEY USING INDEX \3", constraints_sql)
    if found != len(TABLES):
        raise LoadError(
            f"{CONSTRAINTS_FILE}: expected `ALTER TABLE <t> ADD CONSTRAINT <t>_pkey PRIMARY KEY (id)` "
            f"for each of {', '.join(TABLES)}; found {found}"
        )
    return keyed


async def build_indexes(conn: asyncpg.Connection) -> None:
    """03-indexes.sql (each index not built yet: build_key_indexes built the export tables' ones), then
    each sequence past its table's largest id (read from the new key)."""
    await _apply_schema_file(conn, INDEXES_FILE, _if_not_exists)
    for table in TABLES:
        await conn.execute(MOVE_SEQUENCE[table])


def _if_not_exists(indexes_sql: str) -> str:
    return indexes_sql.replace("CREATE INDEX ", "CREATE INDEX IF NOT EXISTS ")


def _statements(sql: str) -> list[str]:
    """A schema file's statements, comments left out (the files hold no `;` or `--` inside a statement)."""
    code = "\n".join(line.split("--", 1)[0] for line in sql.splitlines())
    return [" ".join(statement.split()) for statement in code.split(";") if statement.strip()]


async def switch(conn: asyncpg.Connection) -> None:
    """Serve the staged tables instead of the current ones, in one transaction.

    The API's request tables (04-requests.sql: helpful votes, idempotency keys) are not export data:
    they are created in `public` when missing (the file is idempotent), so a fresh database has them once
    loaded, and emptied (FORGET_REQUESTS): what they remember is of the data replaced. Then
    05-privileges.sql grants the API's role (atelier_api) its privileges on the new tables, in the same
    transaction, so the API never sees the tables without them.
    """
    # While the switch waits for a table lock, PostgreSQL queues every later reader of that table behind
    # it. So it waits briefly (well under the API's DB_COMMAND_TIMEOUT), gives way, and tries again.
    for attempt in range(1, SWITCH_ATTEMPTS + 1):
        try:
            async with conn.transaction():
                await conn.execute(f"SET LOCAL lock_timeout = '{SWITCH_LOCK_TIMEOUT_MS}ms'")
                for table in LOCK_ORDER:
                    if await conn.fetchval(SERVED_TABLE_EXISTS, table):
                        await conn.execute(LOCK_SERVED_TABLE[table])
                for table in SWITCHED_TABLES:
                    await conn.execute(f"DROP TABLE IF EXISTS {SERVED_SCHEMA}.{table} CASCADE")
                    await conn.execute(f"ALTER TABLE {SCHEMA}.{table} SET SCHEMA {SERVED_SCHEMA}")
                await conn.execute(DROP_SCHEMA)
                await conn.execute(f"SET LOCAL search_path TO {SERVED_SCHEMA}")
                await conn.execute(schema_sql(REQUESTS_FILE))
                await conn.execute(FORGET_REQUESTS)
                await conn.execute(schema_sql(PRIVILEGES_FILE))
                # Every API replica empties its response cache when this commits (atelier_api/changes.py).
                await notify_everything(conn)
            return
        except (asyncpg.LockNotAvailableError, asyncpg.DeadlockDetectedError):
            # A deadlock all the same (another session's own lock order): PostgreSQL rolled the switch
            # back, so the previous data is still served; try again like a lock not granted in time.
            if attempt == SWITCH_ATTEMPTS:
                raise LoadError(
                    f"the served tables stayed busy for {SWITCH_ATTEMPTS} attempts; nothing was switched"
                ) from None
            await asyncio.sleep(SWITCH_PAUSE_SECONDS)


async def drop(conn: asyncpg.Connection) -> None:
    await conn.execute(DROP_SCHEMA)


async def notify_everything(conn: asyncpg.Connection) -> None:
    """Every API replica empties its response cache once the current transaction commits (atelier-verify
    --repair; the switch sends the same)."""
    await conn.execute(NOTIFY_EVERYTHING)
