"""Set-level rejects (duplicate ids, references to missing rows, another product's characteristic).

SQL finds them by id once every file is in (staging.py); this module writes each to the rejects report
with its physical line and raw text, by one more streaming pass over its file, and keeps the first copy
of a duplicated id. A record is read and typed here exactly as the load read it (csvsource.py, rows.py),
so a record rows.py rejected is never mistaken for a loaded one.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import asyncpg

from atelier_etl import rejects, staging
from atelier_etl.copystream import CHUNK, encode_row, final_columns, text_columns
from atelier_etl.csvsource import CsvFile
from atelier_etl.rejects import RejectsReport
from atelier_etl.rows import ExportFile, RowRejected, digits
from atelier_etl.summary import LoadError


def _loaded_rows(
    path: Path, export_file: ExportFile, ids: set[int] | dict
) -> Iterator[tuple[int, tuple, str]]:
    """(line, typed row, raw text) of the file's records that rows.py accepted and whose id is in `ids`."""
    with CsvFile(path, export_file.columns) as source:
        for line, fields, raw in source.records():
            if not (fields and digits(fields[0]) in ids):
                continue
            try:
                row = export_file.parse(line, fields, raw)
            except RowRejected:
                continue
            yield line, row, raw


async def keep_first_copies(
    conn: asyncpg.Connection, export_file: ExportFile, path: Path, report: RejectsReport, eol: bytes
) -> int:
    """Reject every copy of a duplicated id but its first (by line); returns the rows removed.

    Every copy is deleted, then the first ones are copied in again as the file is read: they stream to
    COPY a chunk at a time, never all held at once (a file whose records all come twice would hold the
    whole file)."""
    copies = await staging.duplicate_ids(conn, export_file)
    if not copies:
        return 0
    rows, ids = sum(copies.values()), len(copies)
    deleted = await staging.delete_ids(conn, export_file, list(copies))
    # One dict for both: an id's count of copies until its first copy is read, then minus that line.
    seen = copies

    async def first_copies() -> AsyncIterator[bytes]:
        pending: list[bytes] = []
        size = 0
        for line, row, raw in _loaded_rows(path, export_file, seen):
            id = row[1]
            if seen[id] > 0:
                seen[id] = -line
                pending.append(encode_row(export_file, row, eol, final=True))
                size += len(pending[-1])
                if size >= CHUNK:
                    yield b"".join(pending)
                    pending, size = [], 0
            else:
                reason = f"duplicate id {id} (first at line {-seen[id]})"
                report.add(export_file.name, line, rejects.DUPLICATE_ID, reason, raw)
        if pending:
            yield b"".join(pending)

    inserted = await staging.copy_rows(
        conn, export_file, final_columns(export_file), text_columns(export_file), first_copies()
    )
    if deleted != rows or inserted != ids:
        raise LoadError(f"{export_file.name} changed during the load (duplicated ids moved)")
    return deleted - inserted


async def report_by_id(
    export_file: ExportFile, path: Path, report: RejectsReport, deleted: dict[int, tuple[str, str]]
) -> int:
    """Report rows SQL deleted (id -> kind, reason) at the line of the id's first loaded record."""
    if not deleted:
        return 0
    left = dict(deleted)
    for line, row, raw in _loaded_rows(path, export_file, deleted):
        found = left.pop(row[1], None)
        if found is not None:
            report.add(export_file.name, line, found[0], found[1], raw)
    if left:
        raise LoadError(f"{export_file.name} changed during the load (id {next(iter(left))} is gone)")
    return len(deleted)
