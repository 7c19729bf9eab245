"""`atelier-load`: load the legacy export's four CSV files into the service's tables, in one shot.

Each file streams (flat memory whatever its size) straight into its table in the staging schema: its
plainly valid records go to COPY as they are, the others are typed in Python and either re-encoded or
written to the rejects report with their reason (copystream.py). Two files stream at once on two
connections: Python checks one while PostgreSQL parses the other. Set-level rules (duplicate ids,
references between files, a characteristic of another product) are then decided in SQL, mostly by the
key builds that run anyway, and the few rows that break them are deleted and reported
(setrejects.py). The complete copy of the service's tables is switched in whole, in one transaction
(see staging.py). A load that fails or is killed at any point leaves the previously loaded data
served; running it again completes it.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import sys
import time
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import NoReturn
from urllib.parse import urlsplit, urlunsplit

import asyncpg
from rich.console import Console

from atelier_etl import environment, setrejects, staging
from atelier_etl.copystream import CopyStream, copy_columns, text_columns
from atelier_etl.csvsource import InputFileError, read_header
from atelier_etl.rejects import RejectsReport
from atelier_etl.report import LoadProgress, PlainProgress, RichProgress, print_summary
from atelier_etl.rows import (
    CHARACTERISTIC_REVIEWS,
    CHARACTERISTICS,
    EXPORT_FILES,
    REVIEWS,
    REVIEWS_PHOTOS,
    ExportFile,
)
from atelier_etl.summary import FileSummary, LoadError, LoadSummary

CONNECT_TIMEOUT = 15  # seconds
# --wait: the first connection is tried again, pausing from WAIT_PAUSE up to MAX_WAIT_PAUSE seconds, while
# the server is not up yet: nothing listens, its name does not resolve or it answers "starting up".
WAIT_PAUSE = 0.1
MAX_WAIT_PAUSE = 1.0

log = logging.getLogger(__name__)


async def load(
    database_url: str,
    data_dir: Path,
    rejects_path: Path | None = None,
    progress: LoadProgress | None = None,
    wait: float = 0.0,
    if_empty: bool = False,
) -> LoadSummary | None:
    """Load the export in `data_dir` and serve it; rejected rows go to `rejects_path`. `wait`: seconds
    to wait for a database server that is not up yet (see `connect`). `if_empty`: only into a database
    that serves no product yet; when it does, nothing is touched and the result is None (the compose
    stack's ETL, run on every `docker compose up`, must not replace what the API has taken since).

    Raises InputFileError before touching the database when an input file is missing or is not an
    export file, LoadError (or a database error) when the load fails: the previous data stays served.
    With `if_empty`, the inputs are checked once the database is known to serve nothing: a database
    that serves data needs none (the export folder may be gone since its load).
    """
    started = time.monotonic()
    data_dir = Path(data_dir)
    rejects_path = Path(rejects_path) if rejects_path else data_dir / "rejects.csv"
    report: RejectsReport | None = None
    if not if_empty:  # before touching the database, even before reaching it
        check_inputs(data_dir)
        report = _open_report(rejects_path)
    try:
        conn = await connect(database_url, wait)
        try:
            # if_empty: nothing is read or written for a database that serves data, and nothing waits for
            # the lock either (an atelier-verify --repair holds it: compose's ETL runs at every `up`).
            if report is None and await staging.serves_a_product(conn):
                return None  # the last load's report stays
            if not await staging.try_lock(conn):
                raise LoadError(
                    "another atelier-load (or an atelier-verify --repair) is running against this database"
                )
            if report is None:
                if await staging.serves_a_product(conn):  # another load switched in between
                    return None
                check_inputs(data_dir)
                report = _open_report(rejects_path)
            try:
                files = await _stage_and_switch(conn, database_url, data_dir, report, progress)
            except Exception as exc:
                with contextlib.suppress(Exception):  # free the space now; the next run drops it anyway
                    await staging.drop(conn)
                raise first_failure(exc) from None
        finally:
            with contextlib.suppress(Exception):
                await conn.close(timeout=CONNECT_TIMEOUT)
        report.commit()
    finally:
        if report is not None:
            report.discard()  # the partial files of a load that failed (none after a commit)
    return LoadSummary(files, rejects_path, time.monotonic() - started)


def _open_report(rejects_path: Path) -> RejectsReport:
    try:
        return RejectsReport(rejects_path, [export_file.name for export_file in EXPORT_FILES])
    except OSError as exc:
        raise InputFileError(
            f"cannot write the rejects report {rejects_path}: {exc.strerror or exc}"
        ) from None


def first_failure(exc: BaseException) -> BaseException:
    """The error to report: two connections work at once (asyncio.TaskGroup), whose failure arrives
    wrapped in an ExceptionGroup; the first one is what went wrong (the other lane was cancelled)."""
    while isinstance(exc, BaseExceptionGroup) and exc.exceptions:
        exc = exc.exceptions[0]
    return exc


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


async def connect(database_url: str, wait: float = 0.0) -> asyncpg.Connection:
    """A connection, tried again for up to `wait` seconds while the server is not up yet: the connection
    is refused or gets no answer, the server's name does not resolve (a container network starting), or
    the server answers that it is starting up or shutting down. A job started beside its database (the
    compose stack's ETL) meets all of these. Anything else the server answers (a wrong password, an
    unknown database) fails at once."""
    deadline = time.monotonic() + wait
    pause = WAIT_PAUSE
    while True:
        try:
            return await asyncpg.connect(database_url, timeout=CONNECT_TIMEOUT)
        except (OSError, asyncpg.CannotConnectNowError) as exc:  # (TimeoutError is an OSError)
            if time.monotonic() + pause > deadline:
                waited = f" (waited {wait:g} s)" if wait > 0 else ""
                message = f"cannot connect to the database {redacted(database_url)}{waited}: {exc}"
                raise LoadError(message) from None
            if pause == WAIT_PAUSE:
                log.warning("atelier-load: the database is not up yet (%s); waiting up to %g s", exc, wait)
            await asyncio.sleep(pause)
            pause = min(2 * pause, MAX_WAIT_PAUSE)
        except (ValueError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
            raise LoadError(f"cannot connect to the database {redacted(database_url)}: {exc}") from None


def redacted(database_url: str) -> str:
    """The URL without its password, fit for a message."""
    parts = urlsplit(database_url)
    if parts.password is None:
        return database_url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
    return urlunsplit(parts._replace(netloc=netloc))


async def _stage_and_switch(
    conn: asyncpg.Connection,
    database_url: str,
    data_dir: Path,
    report: RejectsReport,
    progress: LoadProgress | None,
) -> tuple[FileSummary, ...]:
    _step(progress, f"preparing the staging schema {staging.SCHEMA}")
    await staging.prepare(conn)
    streams = {export_file: _Stream(export_file, data_dir / export_file.name) for export_file in EXPORT_FILES}
    helper = indexer = None
    try:
        helper = await connect(database_url)
        await staging.session(helper)
        async with asyncio.TaskGroup() as lanes:
            for lane_conn, lane in ((conn, COPY_LANES[0]), (helper, COPY_LANES[1])):
                lanes.create_task(_copy_files(lane_conn, [streams[f] for f in lane], report, progress))
        await staging.name_tables(conn)
        indexer = await connect(database_url)
        await staging.session(indexer)
        # The summaries, computed before the keys, need no index maintenance. They may count rows that a
        # failed key build or the product check still rejects, and are then computed again. Beside them
        # on a second connection, the product check: a read-only join, only trusted once the keys hold;
        # on a third, the indexes that need not wait for the keys (staging.build_key_indexes). Three
        # statements at a time on two cores: the keys' transaction that follows uses one.
        _step(progress, "computing the summaries; checking ratings against products and indexing beside")
        async with asyncio.TaskGroup() as beside:
            beside.create_task(staging.build_summaries(conn))
            other_products = beside.create_task(setrejects.find_ratings_of_other_products(helper))
            beside.create_task(staging.build_key_indexes(indexer))
        _step(progress, "building keys")
        try:
            await staging.build_keys(conn)
            checked = False
        except asyncpg.IntegrityConstraintViolationError as exc:
            _step(progress, f"duplicate ids or missing references ({exc}): finding every one")
            await _reject_duplicates_and_bad_references(conn, streams, report)
            await staging.empty_summaries(conn)  # they may hold a duplicated id's two rows: built below
            await staging.build_keys(conn)
            checked = True  # that check covers the product rule too
        _step(progress, "building the remaining indexes")
        await staging.build_indexes(conn)
        if not checked and other_products.result():
            stream = streams[CHARACTERISTIC_REVIEWS]
            stream.removed += await setrejects.reject_ratings_of_other_products(conn, stream.path, report)
        if checked or any(stream.removed for stream in streams.values()):
            _step(progress, "computing the product summaries again, without the rejected rows")
            await staging.rebuild_summaries(conn)
    finally:
        for lane_conn in (helper, indexer):
            if lane_conn is not None:
                with contextlib.suppress(Exception):
                    await lane_conn.close(timeout=CONNECT_TIMEOUT)
    _step(progress, "analyzing the summaries")
    await staging.analyze_summaries(conn)
    # Whatever can still fail is done before the switch, so that a failure leaves the previous data
    # served with its own report: every row accounted for (FileSummary checks it), the report written.
    files = tuple(stream.summary(report) for stream in streams.values())
    report.join()
    _step(progress, "switching the loaded tables in")
    await staging.switch(conn)
    return files


# The files of each COPY connection: reviews.csv (1.6 GB) on one, the three others (1 GB, 25M rows)
# on the other; they take about as long.
COPY_LANES = ((REVIEWS,), (CHARACTERISTIC_REVIEWS, REVIEWS_PHOTOS, CHARACTERISTICS))


class _Stream:
    """One file's counts through the load."""

    def __init__(self, export_file: ExportFile, path: Path) -> None:
        self.export_file = export_file
        self.path = path
        self.read = self.copied = self.removed = 0
        self.eol = b"\n"

    def summary(self, report: RejectsReport) -> FileSummary:
        name = self.export_file.name
        return FileSummary(
            name, self.read, self.copied - self.removed, report.rejected(name), report.kinds(name)
        )


async def _copy_files(
    conn: asyncpg.Connection, streams: list[_Stream], report: RejectsReport, progress: LoadProgress | None
) -> None:
    for stream in streams:
        export_file = stream.export_file
        name = export_file.name
        source = CopyStream(stream.path, export_file, report)
        try:
            if progress:
                progress.start_file(name, stream.path.stat().st_size)
            stream.copied = await staging.copy_file(
                conn, export_file, copy_columns(export_file), text_columns(export_file),
                _chunks(source, progress),
            )  # fmt: skip
            if progress:
                progress.finish_file(name)
        finally:
            source.close()
        stream.read, stream.eol = source.read, source.eol
        if stream.copied != source.read - source.rejected:
            raise LoadError(
                f"{name}: COPY took {stream.copied} rows of {source.read - source.rejected} typed"
            )


async def _chunks(source: CopyStream, progress: LoadProgress | None) -> AsyncIterator[bytes]:
    """The file's COPY data, handing the event loop over between chunks (the other file streams too)."""
    for chunk in source.chunks():
        yield chunk
        if progress:
            progress.advance_file(source.export_file.name, source.position)
        await asyncio.sleep(0)


async def _reject_duplicates_and_bad_references(
    conn: asyncpg.Connection, streams: dict[ExportFile, _Stream], report: RejectsReport
) -> None:
    """What a failed key build means, in full: every file's duplicated ids first (the first copy is
    kept), then the references of the children, which must point at kept rows."""
    duplicated = set()
    for export_file, stream in streams.items():
        if removed := await setrejects.keep_first_copies(conn, export_file, stream.path, report, stream.eol):
            stream.removed += removed
            duplicated.add(export_file)
    for export_file, stream in streams.items():
        unique = export_file not in duplicated
        stream.removed += await setrejects.reject_bad_references(
            conn, export_file, stream.path, report, unique
        )


def _step(progress: LoadProgress | None, message: str) -> None:
    if progress:
        progress.step(message)


EPILOG = """\
exit codes:
  0    loaded (rejected rows, if any, are listed in the rejects report); with --if-empty, also
       nothing loaded because the database already serves data
  1    the load failed (database unreachable, SQL error, ...); the previous data is still served
  2    usage error, or an input file is missing, unreadable or lacks its header (database untouched)
  130  interrupted; the previous data is still served

environment:
  DATABASE_URL  postgresql://user:password@host:port/dbname (--database-url overrides it)
  ATELIER_ENV   development (default) or production: production refuses an empty or example password
"""


class _Parser(argparse.ArgumentParser):
    """argparse's parser, whose usage errors (exit 2) also print the --json failure object when asked."""

    json_requested = False

    def error(self, message: str) -> NoReturn:
        if self.json_requested:
            _fail(2, message, as_json=True)
            self.exit(2)
        super().error(message)


def build_parser() -> _Parser:
    parser = _Parser(
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
        "--wait",
        type=_seconds,
        default=0.0,
        metavar="SECONDS",
        help="wait up to SECONDS for a database server that is not up yet (refuses connections, is "
        "starting up); default 0: fail at once",
    )
    parser.add_argument(
        "--if-empty",
        action="store_true",
        help="load only when the database serves no product yet; otherwise leave it as it is and exit 0 "
        "(what a start-up job wants: reviews taken by the API since the last load are never replaced)",
    )
    parser.add_argument(
        "--json",
        action="store_true",
        help="print the summary as one JSON object on stdout (also on failure: ok, exit_code, error)",
    )
    return parser


def _seconds(text: str) -> float:
    try:
        seconds = float(text)
    except ValueError:
        seconds = -1.0
    if not 0 <= seconds <= 3600:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds from 0 to 3600")
    return seconds


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    arguments = sys.argv[1:] if argv is None else list(argv)
    # --json, or an abbreviation of it that argparse takes (--j, --js, --jso: no other option starts so)
    parser.json_requested = any(len(arg) > 2 and "--json".startswith(arg) for arg in arguments)
    args = parser.parse_args(arguments)
    database_url, refused = environment.database_url(parser, args.database_url)
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
            summary = asyncio.run(
                load(database_url, args.data, args.rejects, shown, args.wait, args.if_empty)
            )
    except InputFileError as exc:
        return _fail(2, str(exc), args.json)
    except LoadError as exc:
        return _fail(1, f"{exc}; the previous data is still served", args.json)
    except (asyncpg.PostgresError, asyncpg.InterfaceError, OSError) as exc:
        message = f"load failed: {type(exc).__name__}: {exc}; the previous data is still served"
        return _fail(1, message, args.json)
    except KeyboardInterrupt:
        return _fail(130, "interrupted; the previous data is still served", args.json)
    if summary is None:
        message = (
            "the database already serves data; nothing loaded (--if-empty: a load replaces every review, "
            "vote and report taken since; run without it to reload)"
        )
        print(json.dumps({"ok": True, "loaded": False, "reason": message}) if args.json else message)
        return 0
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
