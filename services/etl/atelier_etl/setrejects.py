"""Set-level rejects (duplicate ids, references to missing rows, another product's characteristic).

SQL finds them by id once every file is in (staging.py); this module writes each to the rejects report
with its physical line and raw text, by one more streaming pass over its file, and keeps the first copy
of a duplicated id. A record is read and typed here exactly as the load read it (csvsource.py, rows.py),
so a record rows.py rejected is never mistaken for a loaded one.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import asyncpg

from atelier_etl import rejects, staging
from atelier_etl.copystream import encode_row, final_columns, text_columns
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
    """Reject every copy of a duplicated id but its first (by line); returns the rows removed."""
    copies = await staging.duplicate_ids(conn, export_file)
    if not copies:
        return 0
    first_lines: dict[int, int] = {}
    kept: list[bytes] = []
    for line, row, raw in _loaded_rows(path, export_file, copies):
        id = row[1]
        if id not in first_lines:
            first_lines[id] = line
            kept.append(encode_row(export_file, row, eol, final=True))
        else:
            reason = f"duplicate id {id} (first at line {first_lines[id]})"
            report.add(export_file.name, line, rejects.DUPLICATE_ID, reason, raw)
    deleted = await staging.delete_ids(conn, export_file, list(copies))
    inserted = await staging.copy_rows(
        conn, export_file, final_columns(export_file), text_columns(export_file), b"".join(kept)
    )
    if deleted != sum(copies.values()) or inserted != len(copies):
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
