"""`atelier-load`: load the legacy export's four CSV files into the service's tables, in one shot.

Each file streams record by record (flat memory whatever its size): records are typed in Python and
COPYed into raw staging tables, or written to the rejects report with their reason. Set-level rules
(duplicate ids, references between files) are then decided in SQL, parents before children, and the
kept rows fill a complete copy of the service's tables in the staging schema, which is switched in
whole, in one transaction (see staging.py). A load that fails or is killed at any point leaves the
previously loaded data served; running it again completes it.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import sys
import time
from collections.abc import AsyncIterator, Iterator, Sequence
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import asyncpg
from rich.console import Console

from atelier_etl import environment, staging
from atelier_etl.csvsource import CsvFile, InputFileError, read_header
from atelier_etl.rejects import RejectsReport
from atelier_etl.report import LoadProgress, PlainProgress, RichProgress, print_summary
from atelier_etl.rows import EXPORT_FILES, ExportFile, RowRejected
from atelier_etl.summary import FileSummary, LoadError, LoadSummary

CONNECT_TIMEOUT = 15  # seconds
# Rows typed between two hand-overs to the event loop (and progress updates); a few MB of reviews.
BATCH_ROWS = 2_000


async def load(
    database_url: str,
    data_dir: Path,
    rejects_path: Path | None = None,
    progress: LoadProgress | None = None,
) -> LoadSummary:
    """Load the export in `data_dir` and serve it; rejected rows go to `rejects_path`.

    Raises InputFileError before touching the database when an input file is missing or is not an
    export file, LoadError (or a database error) when the load fails: the previous data stays served.
    """
    started = time.monotonic()
    data_dir = Path(data_dir)
    rejects_path = Path(rejects_path) if rejects_path else data_dir / "rejects.csv"
    check_inputs(data_dir)
    try:
        report = RejectsReport(rejects_path)
    except OSError as exc:
        raise InputFileError(
            f"cannot write the rejects report {rejects_path}: {exc.strerror or exc}"
        ) from None
    with report:
        conn = await connect(database_url)
        try:
            if not await staging.try_lock(conn):
                raise LoadError("another atelier-load is running against this database")
            try:
                files = await _stage_and_switch(conn, data_dir, report, progress)
            except Exception:
                with contextlib.suppress(Exception):  # free the space now; the next run drops it anyway
                    await staging.drop(conn)
                raise
        finally:
            with contextlib.suppress(Exception):
                await conn.close(timeout=CONNECT_TIMEOUT)
        report.commit()
    return LoadSummary(files, rejects_path, time.monotonic() - started)


def check_inputs(data_dir: Path) -> None:
    """Every input file exists, is readable and has its header; one error naming every problem."""
    if not data_dir.is_dir():
        raise InputFileError(f"data directory {data_dir} does not exist or is not a directory")
    problems = []
    for export_file in EXPORT_FILES:
        try:
            read_header(data_dir / export_file.name, export_file.columns)
        except InputFileError as exc:
            problems.append(str(exc))
    if problems:
        raise InputFileError("; ".join(problems))


async def connect(database_url: str) -> asyncpg.Connection:
    try:
        return await asyncpg.connect(database_url, timeout=CONNECT_TIMEOUT)
    except (OSError, TimeoutError, ValueError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
        raise LoadError(f"cannot connect to the database {redacted(database_url)}: {exc}") from None


def redacted(database_url: str) -> str:
    """The URL without its password, fit for a message."""
    parts = urlsplit(database_url)
    if parts.password is None:
        return database_url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
    return urlunsplit(parts._replace(netloc=netloc))


async def _stage_and_switch(
    conn: asyncpg.Connection, data_dir: Path, report: RejectsReport, progress: LoadProgress | None
) -> tuple[FileSummary, ...]:
    _step(progress, f"preparing the staging schema {staging.SCHEMA}")
    await staging.prepare(conn)
    files = []
    for export_file in EXPORT_FILES:  # parents first: a child's references are checked against kept rows
        files.append(await _load_file(conn, export_file, data_dir / export_file.name, report, progress))
    _step(progress, "computing the product summaries")
    await staging.build_summaries(conn)
    _step(progress, "building keys and indexes")
    await staging.build_keys_and_indexes(conn)
    _step(progress, "switching the loaded tables in")
    await staging.switch(conn)
    return tuple(files)


async def _load_file(
    conn: asyncpg.Connection,
    export_file: ExportFile,
    path: Path,
    report: RejectsReport,
    progress: LoadProgress | None,
) -> FileSummary:
    name = export_file.name
    tally = _Tally()
    with CsvFile(path, export_file.columns) as source:
        if progress:
            progress.start_file(name, source.size)
        rows = _typed_rows(source, export_file, report, tally, progress)
        copied = await staging.copy_raw(conn, export_file, rows)
        if progress:
            progress.finish_file(name)
    if copied != tally.read - tally.rejected:
        raise LoadError(f"{name}: COPY took {copied} rows of {tally.read - tally.rejected} typed")
    _step(progress, f"{name}: checking ids and references")
    if await staging.check(conn, export_file):
        await _report_sql_rejects(conn, export_file, path, report)
    loaded = await staging.insert_kept(conn, export_file)
    return FileSummary(name, tally.read, loaded, report.rejected(name), report.kinds(name))


class _Tally:
    read = 0
    rejected = 0


async def _typed_rows(
    source: CsvFile,
    export_file: ExportFile,
    report: RejectsReport,
    tally: _Tally,
    progress: LoadProgress | None,
) -> AsyncIterator[tuple]:
    """The file's typed rows for COPY, a batch at a time, yielding to the event loop in between."""
    for batch in _batches(source.records(), export_file, report, tally):
        for row in batch:
            yield row
        if progress:
            progress.advance_file(export_file.name, source.position)
        await asyncio.sleep(0)


def _batches(
    records: Iterator[tuple[int, list[str] | None, str]],
    export_file: ExportFile,
    report: RejectsReport,
    tally: _Tally,
) -> Iterator[list[tuple]]:
    parse = export_file.parse
    batch: list[tuple] = []
    read = rejected = 0
    for line, fields, raw in records:
        read += 1
        try:
            batch.append(parse(line, fields, raw))
        except RowRejected as exc:
            rejected += 1
            report.add(export_file.name, line, exc.kind, exc.reason, raw)
        if len(batch) >= BATCH_ROWS:
            tally.read, tally.rejected = read, rejected
            yield batch
            batch = []
    tally.read, tally.rejected = read, rejected
    if batch:
        yield batch


async def _report_sql_rejects(
    conn: asyncpg.Connection, export_file: ExportFile, path: Path, report: RejectsReport
) -> None:
    """Write the raw text of the records SQL rejected: one more streaming pass, merged by line."""
    with CsvFile(path, export_file.columns) as source:
        records = source.records()
        async for line, kind, reason in staging.sql_rejects(conn, export_file):
            for record_line, _, raw in records:
                if record_line == line:
                    report.add(export_file.name, line, kind, reason, raw)
                    break
            else:
                raise LoadError(f"{export_file.name} changed during the load (line {line} is gone)")


def _step(progress: LoadProgress | None, message: str) -> None:
    if progress:
        progress.step(message)


EPILOG = """\
exit codes:
  0    loaded (rejected rows, if any, are listed in the rejects report)
  1    the load failed (database unreachable, SQL error, ...); the previous data is still served
  2    usage error, or an input file is missing, unreadable or lacks its header (database untouched)
  130  interrupted; the previous data is still served

environment:
  DATABASE_URL  postgresql://user:password@host:port/dbname (--database-url overrides it)
  ATELIER_ENV   development (default) or production: production refuses an empty or example password
"""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="atelier-load",
        description="Load the Atelier reviews export (reviews.csv, reviews_photos.csv, characteristics.csv, "
        "characteristic_reviews.csv) into the database, replacing the data served so far.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--data", type=Path, required=True, metavar="DIR", help="folder of the four files")
    parser.add_argument(
        "--rejects", type=Path, metavar="PATH", help="rejects report to write (default: DIR/rejects.csv)"
    )
    parser.add_argument("--database-url", metavar="URL", help="overrides DATABASE_URL")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars or step lines")
    parser.add_argument(
        "--json",
        action="store_true",
        help="print the summary as one JSON object on stdout (also on failure: ok, exit_code, error)",
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    database_url = args.database_url or os.environ.get("DATABASE_URL")
    if not database_url:
        parser.error("DATABASE_URL is not set (or pass --database-url)")
    refused = environment.refusal(database_url, os.environ)
    if refused:
        return _fail(2, refused, args.json)
    stderr = Console(stderr=True, log_path=False)
    progress: contextlib.AbstractContextManager[LoadProgress | None]
    if args.no_progress:
        progress = contextlib.nullcontext()
    elif stderr.is_terminal:
        progress = RichProgress(stderr)
    else:
        progress = contextlib.nullcontext(PlainProgress(stderr))
    try:
        with progress as shown:
            summary = asyncio.run(load(database_url, args.data, args.rejects, shown))
    except InputFileError as exc:
        return _fail(2, str(exc), args.json)
    except LoadError as exc:
        return _fail(1, f"{exc}; the previous data is still served", args.json)
    except (asyncpg.PostgresError, asyncpg.InterfaceError, OSError) as exc:
        message = f"load failed: {type(exc).__name__}: {exc}; the previous data is still served"
        return _fail(1, message, args.json)
    except KeyboardInterrupt:
        return _fail(130, "interrupted; the previous data is still served", args.json)
    if args.json:
        print(json.dumps(summary.as_dict()))
    else:
        print_summary(Console(), summary)
    return 0


def _fail(code: int, message: str, as_json: bool = False) -> int:
    message = " ".join(message.split())
    print(f"atelier-load: error: {message}", file=sys.stderr)
    if as_json:
        print(json.dumps({"ok": False, "exit_code": code, "error": message}))
    return code


if __name__ == "__main__":
    sys.exit(main())
