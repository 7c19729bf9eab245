"""NGINX_READ_ROUTING: how nginx spreads a product's reads over the replicas. The default (`product`,
one replica per product) is what the balanced-deployment suite runs against; this checks the other
value on an nginx of its own in front of the local stack's replicas, and that an unknown value stops
nginx in both stacks rather than sending reads nowhere."""

from __future__ import annotations

import subprocess
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.conftest import LocalStack, free_port, nginx_in_front, stack


@pytest.fixture(scope="module")
def least_conn_nginx(local_stack: LocalStack, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    overrides = {"NGINX_READ_ROUTING": "least_conn", "NGINX_RATE_LIMIT": "10000r/s"}
    prefix = tmp_path_factory.mktemp("nginx-least-conn")
    with nginx_in_front(list(local_stack.replica_ports.values()), prefix, overrides) as port:
        yield f"http://127.0.0.1:{port}"


def test_least_conn_spreads_one_products_reads_over_every_replica(least_conn_nginx: str) -> None:
    served = set()
    for _ in range(60):  # one at a time: least_conn's ties go round the replicas in turn
        with urllib.request.urlopen(f"{least_conn_nginx}/reviews/meta?product_id=1", timeout=10) as r:
            assert r.status == 200
            served.add(r.headers["X-Replica"])
        if len(served) == 3:
            break
    assert len(served) == 3, served


def test_an_unknown_routing_is_refused_by_the_local_stack(tmp_path: Path) -> None:
    with pytest.raises(SystemExit, match="NGINX_READ_ROUTING='by_magic': must be one of product, least_conn"):
        stack.render_nginx(tmp_path, [free_port()], free_port(), {"NGINX_READ_ROUTING": "by_magic"})


def test_an_unknown_routing_stops_nginx_itself(tmp_path: Path) -> None:
    """The nginx image renders the template with envsubst and no check of its own: nginx must refuse."""
    prefix = tmp_path / "nginx"
    stack.render_nginx(prefix, [free_port()], free_port())
    default_conf = prefix / "conf.d" / "default.conf"
    template = (stack.NGINX_DIR / "templates" / "default.conf.template").read_text()
    values = {
        "NGINX_PORT": str(free_port()),
        "API_UPSTREAM_SERVERS": "server 127.0.0.1:9 max_fails=1 fail_timeout=2s;",
        "NGINX_RATE_LIMIT": "1000r/s",
        "NGINX_RATE_BURST": "2000",
        "NGINX_CONN_LIMIT": "512",
        "NGINX_CLIENT_TIMEOUT": "10s",
        "NGINX_ACCESS_LOG": str(prefix / "logs" / "access.log"),
        "NGINX_METRICS_ACCESS": "deny all",
        "NGINX_REAL_IP": "",
        "MAX_BODY_BYTES": "65536",
    }
    for routing, ok in (("product", True), ("least_conn", True), ("by_magic", False)):
        default_conf.write_text(stack.envsubst(template, values | {"NGINX_READ_ROUTING": routing}))
        check = subprocess.run(
            [*stack.nginx_command(prefix), "-t"],
            capture_output=True,
            text=True,
            check=False,
        )
        assert (check.returncode == 0) == ok, (routing, check.stderr)
    assert 'host not found in upstream "api_by_magic"' in check.stderr
