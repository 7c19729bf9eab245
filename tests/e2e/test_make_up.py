"""`make up` itself (scripts/stack.py up): what a second run keeps, how it stops, what it refuses.

Each test runs the real script as `make up` does, with DATABASE_URL set to a database of its own, a
small sample, and ports of its own; the script starts the loader, three replicas and nginx."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import asyncpg
import pytest

from tests.conftest import ROOT
from tests.e2e.conftest import free_port

STACK = [sys.executable, str(ROOT / "scripts" / "stack.py")]


def free_ports(count: int) -> int:
    """A first port of `count` consecutive free ones."""
    for _ in range(50):
        base = free_port()
        if base + count < 65536 and all(_free(base + i) for i in range(count)):
            return base
    raise AssertionError(f"no {count} consecutive free ports")


def _free(port: int) -> bool:
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as servers bind: TIME_WAIT is no use
        try:
            sock.bind(("0.0.0.0", port))
        except OSError:
            return False
        return True


def answers_at(address: str, port: int) -> bool:
    try:
        with socket.create_connection((address, port), timeout=1):
            return True
    except OSError:
        return False


@dataclass
class Run:
    """One `stack.py up`, its output collected as it comes."""

    process: subprocess.Popen[str]
    lines: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.lines.append(line.rstrip("\n"))

    def wait_for(self, text: str, timeout: float = 120) -> None:
        deadline = time.monotonic() + timeout
        while not any(text in line for line in self.lines):
            if self.process.poll() is not None or time.monotonic() > deadline:
                time.sleep(0.2)  # the reader's last lines
                raise AssertionError(f"no {text!r} in:\n" + "\n".join(self.lines))
            time.sleep(0.05)

    def stopped(self, timeout: float = 40) -> int:
        return self.process.wait(timeout=timeout)


@dataclass
class Settings:
    env: dict[str, str]
    http_port: int
    api_ports: list[int]

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    def listening(self) -> list[int]:
        return [port for port in [self.http_port, *self.api_ports] if answers_at("127.0.0.1", port)]


@pytest.fixture
def settings(make_database, tmp_path: Path) -> Settings:
    base = free_ports(4)
    env = os.environ | {
        "DATABASE_URL": make_database("make_up"),
        "DATA_DIR": str(tmp_path / "data"),
        "SAMPLE_PRODUCTS": "40",
        "HTTP_PORT": str(base),
        "API_BASE_PORT": str(base + 1),
        "API_REPLICAS": "3",
        "LOG_LEVEL": "WARNING",
        "ETL_RELOAD": "",
    }
    return Settings(env, base, [base + 1, base + 2, base + 3])


@contextmanager
def make_up(settings: Settings, nohup: bool = False, **extra: str) -> Iterator[Run]:
    def ignore_hangups() -> None:
        signal.signal(signal.SIGHUP, signal.SIG_IGN)  # as `nohup` starts a command

    process = subprocess.Popen(
        [*STACK, "up"],
        env=settings.env | extra,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,  # as from a terminal of its own: the test's signals reach it alone
        preexec_fn=ignore_hangups if nohup else None,
    )
    run = Run(process)
    try:
        yield run
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
        process.wait(timeout=40)
        run.reader.join(timeout=10)  # the output ends when the stack's children have closed it too
        assert process.stdout is not None
        if not run.reader.is_alive():  # else a child left running holds it open: closing would hang
            process.stdout.close()


def stack_command(settings: Settings, command: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*STACK, command], env=settings.env, capture_output=True, text=True, timeout=60, check=False
    )


def post_review(url: str) -> str:
    body = {
        "product_id": 1,
        "rating": 4,
        "summary": "Kept across restarts",
        "body": "A review the API acknowledged, which a second make up must not replace.",
        "recommend": True,
        "name": "keeper",
        "email": "keeper@example.com",
    }
    request = urllib.request.Request(
        f"{url}/reviews", json.dumps(body).encode(), {"Content-Type": "application/json"}, method="POST"
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        assert response.status == 201
        return response.headers["Location"]


def status_of(url: str, method: str = "GET") -> int:
    try:
        with urllib.request.urlopen(urllib.request.Request(url, method=method), timeout=30) as response:
            return response.status
    except urllib.error.HTTPError as error:
        return error.code


def test_a_second_make_up_keeps_what_the_api_took_and_etl_reload_replaces_it(settings: Settings) -> None:
    with make_up(settings) as first:
        first.wait_for("ready:")
        location = post_review(settings.url)
        first.process.send_signal(signal.SIGINT)  # Ctrl-C
        assert first.stopped() == 0
    assert settings.listening() == []

    with make_up(settings) as second:
        second.wait_for("ready:")
        assert any("already serves data; nothing loaded" in line for line in second.lines), second.lines
        assert status_of(settings.url + location) == 200
        down = stack_command(settings, "down")
        assert down.returncode == 0 and "stopped" in down.stdout, down
        assert second.stopped() == 0

    with make_up(settings, ETL_RELOAD="1") as reload:
        reload.wait_for("ready:")
        assert status_of(settings.url + location) == 404  # the sample again, without the review


def test_a_closed_terminal_stops_every_process_make_up_started(settings: Settings) -> None:
    with make_up(settings) as run:
        run.wait_for("ready:")
        assert len(settings.listening()) == 4
        run.process.send_signal(signal.SIGHUP)
        assert run.stopped() == 0
    # The replicas and nginx run in sessions of their own: only the script could stop them.
    assert settings.listening() == []
    assert not (Path(settings.env["DATA_DIR"]) / "run" / "stack.pid").exists()


@contextmanager
def report_held_in(settings: Settings, port: int) -> Iterator[None]:
    """A PUT .../report in flight in the replica on `port` for as long as the block runs: the test holds
    the review's row lock, so the replica's drain waits for that request when the stack stops."""
    waiting, release = threading.Event(), threading.Event()

    async def hold() -> None:
        conn = await asyncpg.connect(settings.env["DATABASE_URL"])
        try:
            async with conn.transaction():
                review = await conn.fetchval("SELECT min(id) FROM reviews")
                await conn.execute("SELECT 1 FROM reviews WHERE id = $1 FOR UPDATE", review)
                url = f"http://127.0.0.1:{port}/reviews/{review}/report"
                threading.Thread(target=status_of, args=(url, "PUT"), daemon=True).start()
                for _ in range(200):  # until the report waits on the lock (10 s at most)
                    if await conn.fetchval(
                        "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock'"
                    ):
                        waiting.set()
                        break
                    await asyncio.sleep(0.05)
                await asyncio.to_thread(release.wait, 30)
        finally:
            await conn.close()

    holder = threading.Thread(target=asyncio.run, args=(hold(),))
    holder.start()
    try:
        assert waiting.wait(15), "the report never waited on the review's lock"
        yield
    finally:
        release.set()
        holder.join(timeout=40)


def test_ctrl_c_pressed_again_while_stopping_still_stops_every_process(settings: Settings) -> None:
    """An impatient user: Ctrl-C, then again and again while the stack stops (here, while a replica
    drains a request). Each process runs in a session of its own, so one the script had not signalled
    yet would go on serving, unseen."""
    with make_up(settings) as run:
        run.wait_for("ready:")
        # In the replica started last, which a stop in reverse start order would wait for first.
        with report_held_in(settings, settings.api_ports[-1]):
            for _ in range(10):  # 2 s of presses
                run.process.send_signal(signal.SIGINT)
                time.sleep(0.2)
        assert run.stopped() == 0
    assert settings.listening() == []


def test_under_nohup_a_closed_terminal_leaves_the_stack_serving(settings: Settings) -> None:
    with make_up(settings, nohup=True) as run:
        run.wait_for("ready:")
        run.process.send_signal(signal.SIGHUP)
        time.sleep(1)
        assert run.process.poll() is None and len(settings.listening()) == 4
    assert settings.listening() == []  # stopped by the fixture's SIGTERM


def test_a_stale_pid_file_names_no_stack_and_its_process_is_left_alone(settings: Settings) -> None:
    """After a stack was killed (or the machine rebooted), its pid may belong to another process."""
    bystander = subprocess.Popen(["sleep", "60"])
    try:
        run_dir = Path(settings.env["DATA_DIR"]) / "run"
        run_dir.mkdir(parents=True)
        (run_dir / "stack.pid").write_text(str(bystander.pid))

        down = stack_command(settings, "down")
        assert down.returncode == 0 and "no local stack is running" in down.stdout, down
        assert bystander.poll() is None  # not signalled
        assert not (run_dir / "stack.pid").exists()

        (run_dir / "stack.pid").write_text(str(bystander.pid))
        with make_up(settings) as run:
            run.wait_for("ready:")  # not "already running"
        assert bystander.poll() is None
    finally:
        bystander.kill()
        bystander.wait()


def test_a_port_in_use_is_named_before_anything_starts(settings: Settings) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", settings.http_port))
        taken.listen()
        with make_up(settings) as run:
            assert run.stopped(timeout=60) != 0
        time.sleep(0.2)
        said = "\n".join(run.lines)
        assert f"port {settings.http_port} is already in use" in said and "HTTP_PORT" in said, said
        assert "ready:" not in said
        assert settings.listening() == [settings.http_port]  # only the test's own socket


def this_machines_address() -> str | None:
    """An address of this machine other than loopback (the one a route out would use), if any."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        try:
            probe.connect(("192.0.2.1", 9))  # a documentation address: nothing is sent
        except OSError:
            return None
        address = probe.getsockname()[0]
    return None if address.startswith("127.") else address


@pytest.mark.parametrize(("host", "outside"), [("", False), ("0.0.0.0", True)])
def test_the_local_nginx_listens_on_loopback_unless_told(
    settings: Settings, host: str, outside: bool
) -> None:
    address = this_machines_address()
    if address is None:
        pytest.skip("this machine has no address but loopback")
    with make_up(settings, HTTP_HOST=host) as run:
        run.wait_for("ready:")
        assert answers_at("127.0.0.1", settings.http_port)
        assert answers_at(address, settings.http_port) is outside
