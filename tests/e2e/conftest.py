"""The local stack for end-to-end tests: the real CLIs load a generated export into a fresh database,
three real API processes serve it (as a least-privileged role, like `make up`'s), and a real nginx,
rendered from the project's own template by the same code `make up` uses, balances them."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.conftest import BIN, ROOT, generate_and_load, xdist_worker

sys.path.insert(0, str(ROOT / "scripts"))
import stack  # noqa: E402  (scripts/stack.py: the local stack behind `make up`)

SAMPLE_PRODUCTS = 300


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextmanager
def nginx_in_front(
    replica_ports: list[int], prefix: Path, overrides: dict[str, str] | None = None
) -> Iterator[int]:
    """An nginx of a test's own in front of the stack's replicas, rendered from the project's template
    with these settings (a low rate limit, another routing, ...) into `prefix`: its port while it runs."""
    port = free_port()
    stack.render_nginx(prefix, replica_ports, port, overrides)
    command = stack.nginx_command(prefix)
    name, process = stack.start(prefix.name, command, {})
    try:
        stack.wait_for_port(port, process, name)
        yield port
    finally:
        stack.stop_all([(name, process)])


@dataclass
class LocalStack:
    url: str
    database_url: str
    data_dir: Path
    env: dict[str, str] = field(default_factory=dict)
    replicas: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    replica_ports: dict[str, int] = field(default_factory=dict)

    def start_replica(self, name: str, port: int) -> None:
        replica_env = self.env | {"API_HOST": "127.0.0.1", "API_PORT": str(port), "REPLICA_NAME": name}
        self.replicas[name] = stack.start(name, [str(BIN / "atelier-api")], replica_env)[1]
        self.replica_ports[name] = port

    def wait_for_replicas(self) -> None:
        for name, port in self.replica_ports.items():
            stack.wait_for_port(port, self.replicas[name], name)

    def restart_replica(self, name: str, seconds: float = 15) -> None:
        """Starts replica `name` again on its port, then waits until nginx sends it requests again: nginx
        leaves a replica that failed out for fail_timeout (2 s), and whichever test runs next on this stack
        (any module, in any order, under xdist) expects three replicas behind it."""
        self.start_replica(name, self.replica_ports[name])
        self.wait_for_replicas()
        deadline = time.monotonic() + seconds
        while True:
            served = set()
            for _ in range(2 * len(self.replicas)):  # least_conn, one at a time: each replica in turn
                with urllib.request.urlopen(f"{self.url}/healthz", timeout=5) as response:
                    served.add(response.headers["X-Replica"])
            if name in served:
                return
            if time.monotonic() > deadline:
                raise AssertionError(f"nginx sends nothing to {name} {seconds:.0f} s after its restart")
            time.sleep(0.1)


@pytest.fixture(scope="session")
def local_stack(
    make_database, tmp_path_factory: pytest.TempPathFactory, pytestconfig: pytest.Config
) -> Iterator[LocalStack]:
    try:
        nginx = stack.nginx_binary()
    except SystemExit as missing:
        pytest.fail(f"{missing} (make test installs it: scripts/ensure-nginx.sh)")
    database_url = make_database("e2e")
    data_dir = tmp_path_factory.mktemp("export")
    env = os.environ | {"DATABASE_URL": database_url, "LOG_LEVEL": "WARNING"}
    generate_and_load(data_dir, database_url, "--products", str(SAMPLE_PRODUCTS), env=env)

    # The replicas log in as a least-privileged member of atelier_api, as `make up`'s do; database_url
    # (the owner, which loaded the data) stays the tests' own connection.
    # Roles are the server's, not the database's: one per xdist worker, each stack with its own password.
    role = "_".join(filter(None, ("atelier_api_e2e", xdist_worker(pytestconfig))))
    replica_env = env | {"DATABASE_URL": stack.api_login(database_url, role)}
    running = LocalStack(url="", database_url=database_url, data_dir=data_dir, env=replica_env)
    balancer: list[tuple[str, subprocess.Popen[bytes]]] = []
    try:
        for i in (1, 2, 3):
            running.start_replica(f"api-{i}", free_port())
        running.wait_for_replicas()

        prefix = tmp_path_factory.mktemp("nginx")
        http_port = free_port()
        # The production rate limit would turn these tests' bursts (1,000 concurrent votes, fuzzing)
        # into 429s; rate limiting is tested on an nginx of its own (test_limits.py).
        unlimited = {
            "NGINX_RATE_LIMIT": "100000r/s",
            "NGINX_RATE_BURST": "100000",
            "NGINX_CONN_LIMIT": "65535",
        }
        stack.render_nginx(prefix, list(running.replica_ports.values()), http_port, unlimited)
        balancer.append(stack.start("nginx", stack.nginx_command(prefix, nginx), env))
        stack.wait_for_port(http_port, balancer[0][1], "nginx")
        running.url = f"http://127.0.0.1:{http_port}"
        yield running
    finally:
        stack.stop_all(list(running.replicas.items()) + balancer)
