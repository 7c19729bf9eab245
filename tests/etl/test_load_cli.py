"""`atelier-load` as a command: arguments, environment, messages and exit codes."""

from __future__ import annotations

import asyncio
import json
import os
import struct
import subprocess
import sys
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import pytest

from atelier_api import readiness
from atelier_api.errors import NotReady
from atelier_etl import load, staging
from atelier_etl.load import first_failure, main, redacted
from atelier_etl.schema import apply_schema
from atelier_etl.summary import LoadError
from tests.api import factories
from tests.api.outages import DatabaseProxy, closed_port
from tests.conftest import ROOT
from tests.etl.loadfiles import review, write_export

UNREACHABLE = "postgresql://postgres:secret@127.0.0.1:9/atelier"  # the discard port: nothing listens


@pytest.fixture
def db_url(make_database):
    return make_database("load_cli")


def served_reviews(db_url: str) -> list[int] | None:
    """Ids of the served reviews (None when there is no table), and no staging schema left behind."""

    async def query() -> list[int] | None:
        conn = await asyncpg.connect(db_url)
        try:
            assert await conn.fetchval("SELECT to_regnamespace($1)", staging.SCHEMA) is None
            if await conn.fetchval("SELECT to_regclass('public.reviews')") is None:
                return None
            return [row["id"] for row in await conn.fetch("SELECT id FROM public.reviews ORDER BY id")]
        finally:
            await conn.close()

    return asyncio.run(query())


def run_module(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "atelier_etl.load", *args],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
        env={**os.environ, **(env or {})},
    )


def test_loads_with_database_url_from_the_environment(db_url, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("DATABASE_URL", db_url)
    data = write_export(tmp_path, characteristic_reviews=["1,1,1,4", "2,1,999,4"])

    assert main(["--data", str(data), "--no-progress"]) == 0  # rejects do not fail the load

    out = capsys.readouterr().out
    assert "characteristic_reviews.csv" in out and "missing_review 1" in out
    assert f"rejects report: {data / 'rejects.csv'}\n" in out
    assert served_reviews(db_url) == [1, 2, 3, 5]


def test_options_override_the_environment(db_url, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("DATABASE_URL", UNREACHABLE)
    rejects = tmp_path / "out" / "my-rejects.csv"
    rejects.parent.mkdir()
    data = write_export(tmp_path / "data")

    assert (
        main(["--data", str(data), "--rejects", str(rejects), "--database-url", db_url, "--no-progress"]) == 0
    )
    assert rejects.read_text().startswith("file,line,kind,reason,raw")
    assert not (data / "rejects.csv").exists()
    assert "no rejected rows" in capsys.readouterr().out


def test_steps_are_logged_when_not_on_a_terminal(db_url, tmp_path, monkeypatch, capsys):
    assert main(["--data", str(write_export(tmp_path)), "--database-url", db_url]) == 0
    err = capsys.readouterr().err
    assert "reviews.csv: reading" in err and "switching" in err


@pytest.mark.parametrize(
    ("break_input", "message"),
    [
        (lambda data: (data / "reviews.csv").unlink(), "missing input file {data}/reviews.csv"),
        (lambda data: [path.unlink() for path in data.iterdir()],
         "missing input file {data}/characteristic_reviews.csv"),
        (lambda data: (data / "reviews_photos.csv").write_bytes(b""), "reviews_photos.csv is empty"),
        (lambda data: (data / "characteristics.csv").write_text("id,name\n1,Fit\n"),
         "characteristics.csv has an unexpected header 'id,name' (expected 'id,product_id,name')"),
        (lambda data: [(data / "reviews.csv").unlink(), (data / "reviews.csv").mkdir()],
         "cannot read {data}/reviews.csv"),
    ],
    ids=["missing-file", "empty-dir", "empty-file", "wrong-header", "unreadable"],
)  # fmt: skip
def test_a_bad_input_exits_2_before_touching_the_database(db_url, tmp_path, capsys, break_input, message):
    assert main(["--data", str(write_export(tmp_path / "a")), "--database-url", db_url, "--no-progress"]) == 0
    capsys.readouterr()
    data = write_export(tmp_path / "b", reviews=[review(id=70)], photos=[], characteristic_reviews=[])
    break_input(data)

    assert main(["--data", str(data), "--database-url", db_url, "--no-progress"]) == 2

    err = capsys.readouterr().err
    assert err.startswith("atelier-load: error: ") and err.count("\n") == 1
    assert message.format(data=data) in err
    assert served_reviews(db_url) == [1, 2, 3, 5]
    assert not (data / "rejects.csv").exists()


def test_a_missing_data_dir_exits_2(tmp_path, capsys):
    assert main(["--data", str(tmp_path / "nowhere"), "--database-url", UNREACHABLE]) == 2
    assert f"data directory {tmp_path / 'nowhere'} does not exist" in capsys.readouterr().err


def test_an_unwritable_rejects_report_exits_2(tmp_path, capsys):
    data = write_export(tmp_path)
    args = ["--data", str(data), "--rejects", str(tmp_path / "no" / "r.csv"), "--database-url", UNREACHABLE]
    assert main(args) == 2
    assert "cannot write the rejects report" in capsys.readouterr().err


def test_usage_errors_exit_2(tmp_path):
    no_url = run_module("--data", str(tmp_path), env={"DATABASE_URL": ""})
    assert no_url.returncode == 2 and "DATABASE_URL is not set" in no_url.stderr
    assert run_module("--database-url", UNREACHABLE).returncode == 2  # --data is required


def test_an_unreachable_database_exits_1_with_one_line_and_no_traceback(tmp_path):
    result = run_module("--data", str(write_export(tmp_path)), env={"DATABASE_URL": UNREACHABLE})
    assert result.returncode == 1
    assert result.stderr.startswith("atelier-load: error: cannot connect to the database ")
    assert "Traceback" not in result.stderr and "secret" not in result.stderr
    assert result.stderr.count("\n") == 1


def test_a_failed_load_exits_1_and_keeps_the_served_data(db_url, tmp_path, monkeypatch, capsys):
    assert main(["--data", str(write_export(tmp_path / "a")), "--database-url", db_url, "--no-progress"]) == 0

    async def fail(conn):
        await conn.execute("SELECT 1/0")

    monkeypatch.setattr(staging, "build_keys", fail)
    data = write_export(tmp_path / "b", reviews=[review(id=70)], photos=[], characteristic_reviews=[])
    capsys.readouterr()
    assert main(["--data", str(data), "--database-url", db_url, "--no-progress"]) == 1

    err = capsys.readouterr().err
    assert "load failed: DivisionByZeroError: division by zero; the previous data is still served" in err
    assert served_reviews(db_url) == [1, 2, 3, 5]


def test_help_documents_the_exit_codes():
    result = run_module("--help")
    assert result.returncode == 0
    assert "exit codes:" in result.stdout
    for code in ("0 ", "1 ", "2 ", "130 "):
        assert f"\n  {code}" in result.stdout
    assert "DATABASE_URL" in result.stdout


def test_messages_never_show_the_password():
    assert redacted("postgresql://user:s3cret@db:5432/atelier") == "postgresql://user:***@db:5432/atelier"
    assert redacted("postgresql://user@db/atelier") == "postgresql://user@db/atelier"


def test_json_summary_for_machines(db_url, tmp_path, capsys):
    data = write_export(tmp_path, characteristic_reviews=["1,1,1,4", "2,1,999,4"])

    assert main(["--data", str(data), "--database-url", db_url, "--no-progress", "--json"]) == 0

    summary = json.loads(capsys.readouterr().out)
    assert summary["ok"] is True and summary["rejects_report"] == str(data / "rejects.csv")
    by_file = {f["file"]: f for f in summary["files"]}
    assert by_file["characteristic_reviews.csv"] == {
        "file": "characteristic_reviews.csv",
        "read": 2,
        "loaded": 1,
        "rejected": 1,
        "rejected_by_kind": {"missing_review": 1},
    }
    assert summary["totals"]["read"] == summary["totals"]["loaded"] + summary["totals"]["rejected"]


def add_review_as_the_api_would(db_url: str, review_id: int) -> None:
    async def insert() -> None:
        conn = await asyncpg.connect(db_url)
        try:
            await factories.review(conn, 1, id=review_id, body="taken by the API after the load")
        finally:
            await conn.close()

    asyncio.run(insert())


def test_if_empty_loads_a_database_with_no_tables_or_no_product(db_url, tmp_path, capsys):
    """compose's ETL passes --if-empty: the first start loads, whether PostgreSQL's init scripts made the
    tables (empty) or nothing made them yet."""
    data = write_export(tmp_path)
    assert served_reviews(db_url) is None
    assert main(["--data", str(data), "--database-url", db_url, "--no-progress", "--if-empty"]) == 0
    assert served_reviews(db_url) == [1, 2, 3, 5]

    async def empty_the_tables() -> None:
        conn = await asyncpg.connect(db_url)
        try:
            await conn.execute("TRUNCATE public.reviews, public.characteristics CASCADE")
        finally:
            await conn.close()

    asyncio.run(empty_the_tables())
    assert main(["--data", str(data), "--database-url", db_url, "--no-progress", "--if-empty"]) == 0
    assert served_reviews(db_url) == [1, 2, 3, 5]


@pytest.mark.parametrize("as_json", [False, True])
def test_if_empty_leaves_a_database_that_serves_data_as_it_is(db_url, tmp_path, capsys, as_json):
    """The second `docker compose up` runs the ETL again: what the API took since the load must stay."""
    first = write_export(tmp_path / "first")
    assert main(["--data", str(first), "--database-url", db_url, "--no-progress"]) == 0
    add_review_as_the_api_would(db_url, 1000)
    report = (first / "rejects.csv").read_bytes()
    capsys.readouterr()

    other = write_export(tmp_path / "other", reviews=[review(id=70)], photos=[], characteristic_reviews=[])
    args = ["--data", str(first), "--database-url", db_url, "--no-progress", "--if-empty"]
    assert main([*args, "--json"] if as_json else args) == 0
    assert main(["--data", str(other), "--database-url", db_url, "--no-progress", "--if-empty"]) == 0

    out = capsys.readouterr().out
    if as_json:
        first_answer = json.loads(out.splitlines()[0])
        assert first_answer["ok"] is True and first_answer["loaded"] is False
        assert "already serves data" in first_answer["reason"]
    assert "the database already serves data; nothing loaded" in out
    assert served_reviews(db_url) == [1, 2, 3, 5, 1000]  # and no staging schema left
    assert (first / "rejects.csv").read_bytes() == report  # the last load's report, untouched
    assert not list(first.glob("rejects.csv.partial*")) and not (other / "rejects.csv").exists()

    # Without --if-empty, a load replaces the data served, the API's review with it.
    assert main(["--data", str(other), "--database-url", db_url, "--no-progress"]) == 0
    assert served_reviews(db_url) == [70]


def test_if_empty_needs_no_export_for_a_database_that_serves_data(db_url, tmp_path, capsys):
    """A stack restarted after its export folder went away: nothing to load, so nothing is missing.
    A database that serves nothing still needs every file, and is left untouched without them."""
    gone = tmp_path / "gone"  # and with it the default rejects report's folder
    args = ["--data", str(gone), "--database-url", db_url, "--no-progress", "--if-empty"]
    assert main(args) == 2
    assert "does not exist" in capsys.readouterr().err
    assert served_reviews(db_url) is None

    first = write_export(tmp_path / "first")
    assert main(["--data", str(first), "--database-url", db_url, "--no-progress"]) == 0
    capsys.readouterr()
    assert main(args) == 0
    assert "the database already serves data; nothing loaded" in capsys.readouterr().out
    assert served_reviews(db_url) == [1, 2, 3, 5]


@pytest.mark.parametrize("rows", ["no tables", "no rows", "a characteristic", "a review"])
async def test_if_empty_and_the_apis_readiness_agree_on_what_serves_data(db_url, rows):
    """The loader leaves alone exactly the databases whose /readyz says "ready": it never replaces data
    a replica serves, and a database a replica would not serve gets its load."""
    conn = await asyncpg.connect(db_url)
    try:
        if rows != "no tables":
            await apply_schema(conn)
        if rows == "a characteristic":
            await factories.characteristic(conn, 7, "Fit")
        if rows == "a review":
            await factories.review(conn, 7)
        async with asyncpg.create_pool(db_url, min_size=1, max_size=1) as pool:
            try:
                await readiness.check(pool)
                ready = True
            except NotReady:
                ready = False
        assert await staging.serves_a_product(conn) is ready
        assert ready is (rows in ("a characteristic", "a review"))
    finally:
        await conn.close()


def test_json_failure_says_why_with_the_exit_code(tmp_path, capsys):
    assert main(["--data", str(tmp_path / "nowhere"), "--database-url", UNREACHABLE, "--json"]) == 2
    failure = json.loads(capsys.readouterr().out)
    assert failure["ok"] is False and failure["exit_code"] == 2 and "nowhere" in failure["error"]


@pytest.mark.parametrize(
    ("args", "named"),
    [
        (["--wait", "soon"], "'soon' is not a number of seconds"),
        (["--unknown"], "unrecognized arguments: --unknown"),
        ([], "DATABASE_URL is not set"),
    ],
    ids=["bad value", "unknown option", "no database"],
)
@pytest.mark.parametrize("json_option", ["--json", "--js"])
def test_json_usage_errors_say_why_with_the_exit_code(
    tmp_path, capsys, monkeypatch, args, named, json_option
):
    monkeypatch.delenv("DATABASE_URL", raising=False)
    with pytest.raises(SystemExit) as exited:
        main(["--data", str(tmp_path), json_option, *args])
    assert exited.value.code == 2
    out, err = capsys.readouterr()
    failure = json.loads(out)
    assert failure["ok"] is False and failure["exit_code"] == 2 and named in failure["error"]
    assert named in err


def test_a_failure_of_one_of_two_lanes_is_reported_as_itself():
    """The loader copies on two connections at once; a TaskGroup wraps a lane's error, and the command
    must still print that error (and exit 1), not an ExceptionGroup traceback."""
    error = asyncpg.exceptions.BadCopyFileFormatError("extra data after last expected column")
    wrapped = ExceptionGroup("lanes", [ExceptionGroup("copy", [error]), ValueError("cancelled lane")])
    assert first_failure(wrapped) is error
    assert first_failure(error) is error


# --wait: a database that is not up yet (the compose stack's ETL starts beside its server).


async def answer_starting_up(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """What PostgreSQL answers a client while it starts: no TLS, then FATAL 57P03."""
    while True:
        length, code = struct.unpack("!ii", await reader.readexactly(8))
        await reader.readexactly(length - 8)
        if code != 80877103:  # not an SSLRequest: the startup message
            break
        writer.write(b"N")
    fields = b"SFATAL\0VFATAL\0C57P03\0Mthe database system is starting up\0\0"
    writer.write(b"E" + struct.pack("!i", len(fields) + 4) + fields)
    await writer.drain()
    writer.close()


async def test_wait_connects_once_the_server_is_up(db_url):
    """First the port refuses, then the server answers that it is starting up, then it is up."""
    proxy = DatabaseProxy(db_url)
    proxy.listen_port = closed_port()
    connecting = asyncio.create_task(load.connect(proxy.url(), wait=60))
    await asyncio.sleep(0.5)
    assert not connecting.done()
    starting = await asyncio.start_server(answer_starting_up, "127.0.0.1", proxy.listen_port)
    await asyncio.sleep(1)
    assert not connecting.done()
    starting.close()
    await starting.wait_closed()
    await proxy.start()
    try:
        conn = await asyncio.wait_for(connecting, 30)
        assert await conn.fetchval("SELECT 1") == 1
        await conn.close()
    finally:
        await proxy.stop()


async def test_without_wait_a_server_starting_up_fails_at_once():
    server = await asyncio.start_server(answer_starting_up, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        with pytest.raises(LoadError, match="starting up"):
            await load.connect(f"postgresql://postgres@127.0.0.1:{port}/atelier")
    finally:
        server.close()
        await server.wait_closed()


async def test_wait_does_not_try_again_what_the_server_answered(db_url, monkeypatch):
    tries = []
    real_connect = asyncpg.connect

    async def counted(*args, **kwargs):
        tries.append(args)
        return await real_connect(*args, **kwargs)

    monkeypatch.setattr(load.asyncpg, "connect", counted)
    unknown = urlunsplit(urlsplit(db_url)._replace(path="/no_such_database"))
    with pytest.raises(LoadError, match="no_such_database"):
        await load.connect(unknown, wait=60)
    assert len(tries) == 1


def test_wait_gives_up_after_its_seconds_and_says_so(tmp_path, capsys):
    data = str(write_export(tmp_path))
    assert main(["--data", data, "--database-url", UNREACHABLE, "--wait", "0.5", "--no-progress"]) == 1
    error = capsys.readouterr().err
    assert "cannot connect to the database" in error and "(waited 0.5 s)" in error
    assert "secret" not in error


@pytest.mark.parametrize("value", ["soon", "-1", "86400"])
def test_a_bad_wait_is_a_usage_error_naming_the_option(tmp_path, value):
    result = run_module("--data", str(tmp_path), "--wait", value, "--database-url", UNREACHABLE)
    assert result.returncode == 2
    assert "--wait" in result.stderr and "seconds from 0 to 3600" in result.stderr
