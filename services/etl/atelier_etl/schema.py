"""The service's schema: the SQL files of services/postgres, applied in file-name order.

The same files are the Postgres image's init scripts, so the loader, the local stack and the tests all
build exactly the schema production runs. Nothing in them is schema-qualified: the caller's
search_path decides where the tables land (the loader builds a fresh copy in a staging schema).
"""

from __future__ import annotations

import os
from pathlib import Path

import asyncpg

# services/etl/atelier_etl/schema.py -> services/postgres in a checkout; images set SCHEMA_DIR.
_CHECKOUT_SCHEMA_DIR = Path(__file__).resolve().parents[2] / "postgres"

TABLES_FILE = "01-tables.sql"
CONSTRAINTS_FILE = "02-constraints.sql"
INDEXES_FILE = "03-indexes.sql"
# What the API remembers of requests (helpful votes, idempotency keys): not export data, never staged.
REQUESTS_FILE = "04-requests.sql"
# The API role's privileges (group role atelier_api): re-applied by every load's switch, since the
# switched-in tables are new tables with no grants.
PRIVILEGES_FILE = "05-privileges.sql"


def schema_dir() -> Path:
    return Path(os.environ.get("SCHEMA_DIR") or _CHECKOUT_SCHEMA_DIR)


def schema_files(directory: Path | None = None) -> list[Path]:
    """Every SQL file of the schema, in the order Postgres' init applies them."""
    files = sorted((directory or schema_dir()).glob("*.sql"))
    if not files:
        raise FileNotFoundError(f"no schema files (*.sql) in {directory or schema_dir()}; set SCHEMA_DIR")
    return files


def schema_sql(name: str, directory: Path | None = None) -> str:
    return ((directory or schema_dir()) / name).read_text(encoding="utf-8")


async def apply_schema(conn: asyncpg.Connection, directory: Path | None = None) -> None:
    """Create every table, key and index in the connection's current schema."""
    for path in schema_files(directory):
        await conn.execute(path.read_text(encoding="utf-8"))
