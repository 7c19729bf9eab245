"""The real thing: compose.yaml built and brought up through testcontainers (PostgreSQL, the one-shot
ETL, three API replicas, nginx), then the balanced-deployment suite against nginx's published port.

Needs a container engine: .ci/run starts one (../shared/containers/engine-up); anywhere else Docker
does. Without one these tests skip and say why.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import time
from collections.abc import Iterator

import aiohttp
import pytest

from tests.conftest import ROOT
from tests.e2e.balanced import REPLICAS, BalancedDeploymentSuite, Deployment
from tests.e2e.conftest import free_port


def engine_problem() -> str | None:
    """Why no container engine can be used here, or None when one answers."""
    if shutil.which("docker") is None:
        return "no docker CLI on PATH"
    try:
        info = subprocess.run(
            ["docker", "info", "--format", "{{.ServerVersion}}"], capture_output=True, text=True, timeout=30
        )
    except subprocess.TimeoutExpired:
        return "the container engine did not answer `docker info` within 30 s"
    if info.returncode != 0:
        first_line = (info.stderr.strip().splitlines() or ["no output"])[0]
        return f"no container engine answers `docker info` ({first_line})"
    if subprocess.run(["docker", "compose", "version"], capture_output=True, timeout=30).returncode != 0:
        return "the docker compose plugin is missing"
    return None


@pytest.fixture(scope="module")
def compose(tmp_path_factory: pytest.TempPathFactory) -> Iterator:
    problem = engine_problem()
    if problem:
        pytest.skip(f"container tests need an engine: {problem}")
    from testcontainers.compose import DockerCompose

    # An env file of its own: a project name and port that cannot collide with a stack the developer
    # runs, and none of the developer's .env.
    env_file = tmp_path_factory.mktemp("compose") / "test.env"
    env_file.write_text(
        f"COMPOSE_PROJECT_NAME=atelier-test-{os.getpid()}\n"
        f"HTTP_PORT={free_port()}\n"
        f"LOCUST_PORT={free_port()}\n"
        "POSTGRES_PASSWORD=test-only-password\n"
        "API_DB_PASSWORD=test-only-api-password\n"
        f"API_REPLICAS={REPLICAS}\n"
        "GENERATE_SAMPLE_PRODUCTS=300\n"
    )
    options = {"env_file": str(env_file), "build": True, "wait": True, "profiles": ["load"]}
    stack = DockerCompose(ROOT, compose_file_name="compose.yaml", **options)
    with stack:
        yield stack


def api_containers(compose) -> list:
    return [c for c in compose.get_containers() if c.Service == "api" and c.State == "running"]


@pytest.fixture(scope="module")
def deployment(compose) -> Deployment:
    host, port = compose.get_service_host_and_port("nginx", 8080)
    stopped: list[str] = []

    def stop_one() -> None:
        container = api_containers(compose)[0].ID
        subprocess.run(["docker", "stop", container], check=True, capture_output=True, timeout=60)
        stopped.append(container)

    def start_again() -> None:
        while stopped:
            subprocess.run(["docker", "start", stopped.pop()], check=True, capture_output=True, timeout=60)

    return Deployment(
        url=f"http://{host or '127.0.0.1'}:{port}", stop_replica=stop_one, restore_replica=start_again
    )


def test_the_etl_completed_and_three_replicas_serve(compose):
    etl = next(c for c in compose.get_containers(include_all=True) if c.Service == "etl")
    assert (etl.State, etl.ExitCode) == ("exited", 0)
    stdout, _ = compose.get_logs("etl")
    assert "rejects report" in stdout and "total" in stdout
    assert len(api_containers(compose)) == REPLICAS
    # `up --wait` returned only once nginx's own healthcheck (an API answer through it) passed.
    nginx = next(c for c in compose.get_containers() if c.Service == "nginx")
    assert (nginx.State, nginx.Health) == ("running", "healthy")


def wait_until_locust_reaches_nginx(compose, seconds: float = 30) -> None:
    """From inside the locust container, as its users will connect: the name resolves and nginx answers."""
    probe = "import urllib.request; urllib.request.urlopen('http://nginx:8080/healthz', timeout=2)"
    deadline = time.monotonic() + seconds
    while True:
        try:  # testcontainers raises on a non-zero exit rather than returning its code
            compose.exec_in_container(["python", "-c", probe], service_name="locust")
            return
        except subprocess.CalledProcessError as failed:
            stderr = (failed.stderr or b"").decode(errors="replace")
        if time.monotonic() > deadline:
            raise AssertionError(f"locust cannot reach nginx:8080 after {seconds:.0f} s: {stderr[-500:]}")
        time.sleep(0.5)


async def test_the_load_profile_serves_locust_and_its_traffic_succeeds(compose):
    await asyncio.to_thread(wait_until_locust_reaches_nginx, compose)
    host, port = compose.get_service_host_and_port("locust", 8089)
    async with aiohttp.ClientSession(f"http://{host or '127.0.0.1'}:{port}") as locust:
        async with locust.get("/") as page:
            assert page.status == 200 and "<title>Locust" in await page.text()
        swarm = {"user_count": "5", "spawn_rate": "5", "host": "http://nginx:8080"}
        async with locust.post("/swarm", data=swarm) as started:
            assert started.status == 200 and (await started.json())["success"]
        try:
            await asyncio.sleep(6)
            async with locust.get("/stats/requests") as response:
                stats = await response.json()
        finally:
            async with locust.post("/stop") as stopped:
                assert stopped.status == 200
    total = next(row for row in stats["stats"] if row["name"] == "Aggregated")
    assert total["num_requests"] > 0 and total["num_failures"] == 0, stats["errors"]


class TestComposeStack(BalancedDeploymentSuite):
    pass
