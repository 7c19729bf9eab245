"""The real thing: compose.yaml built and brought up through testcontainers (PostgreSQL, the one-shot
ETL, three API replicas, nginx), then the balanced-deployment suite against nginx's published port.

Needs a container engine: .ci/run starts one (../shared/containers/engine-up) and names it in DOCKER_HOST;
anywhere else Docker does. Without a docker CLI, or without any engine configured (no DOCKER_HOST) and none
answering, these tests skip and say why. With DOCKER_HOST set an engine was brought up for them: one that
does not answer, or lacks compose, fails them instead, since a skip would hide that the suite never ran.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from urllib.parse import urlunsplit

import aiohttp
import pytest

from tests.conftest import ROOT
from tests.e2e.balanced import REPLICAS, BalancedDeploymentSuite, Deployment, described, new_review
from tests.e2e.conftest import free_port

# The compose stack's PostgreSQL password in these tests (their own env file).
POSTGRES_PASSWORD = "test-only-password"


NO_CLI = "no docker CLI on PATH"


def engine_problem() -> str | None:
    """Why no container engine can be used here, or None when one answers."""
    if shutil.which("docker") is None:
        return NO_CLI
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
        message = f"container tests need an engine: {problem}"
        if os.environ.get("DOCKER_HOST") and problem != NO_CLI:
            pytest.fail(f"{message} (DOCKER_HOST is set: an engine was brought up for them)")
        pytest.skip(message)
    from testcontainers.compose import DockerCompose

    # An env file of its own: a project name and port that cannot collide with a stack the developer
    # runs, and none of the developer's .env.
    env_file = tmp_path_factory.mktemp("compose") / "test.env"
    env_file.write_text(
        f"COMPOSE_PROJECT_NAME=atelier-test-{os.getpid()}\n"
        f"HTTP_PORT={free_port()}\n"
        f"LOCUST_PORT={free_port()}\n"
        f"POSTGRES_PASSWORD={POSTGRES_PASSWORD}\n"
        "API_DB_PASSWORD=test-only-api-password\n"
        f"API_REPLICAS={REPLICAS}\n"
        "GENERATE_SAMPLE_PRODUCTS=300\n"
        # Documentation ranges, which hold no real proxy: nothing this suite sends is affected.
        "NGINX_TRUSTED_PROXIES=192.0.2.0/24, 198.51.100.0/24\n"
    )
    options = {"env_file": str(env_file), "build": True, "wait": True, "profiles": ["load"]}
    stack = DockerCompose(ROOT, compose_file_name="compose.yaml", **options)
    with stack:
        yield stack


def one_off(compose, service: str, *options: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    """`docker compose run` of a one-off container, with its exit code: the container is kept until the
    command has it, then removed (with `run --rm`, Podman's compose answers 0 whatever the code)."""
    name = f"atelier-one-off-{os.getpid()}-{next(_one_offs)}"
    command = [*compose.compose_command_property, "run", "--name", name, *options, service]
    try:
        return subprocess.run(command, capture_output=True, text=True, timeout=timeout)
    finally:
        subprocess.run(["docker", "rm", "-f", name], capture_output=True, timeout=60)


_one_offs = itertools.count()


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


def test_a_replica_the_engine_stops_drains_and_exits_0(compose):
    """`docker stop` (and `docker compose stop`/`down`) give a container its stop grace period, then
    SIGKILL: left to the engine, Podman's was 0, and every replica was killed (137) without draining.
    compose.yaml sets it above SHUTDOWN_TIMEOUT."""
    container = api_containers(compose)[0].ID
    try:
        subprocess.run(["docker", "stop", container], check=True, capture_output=True, timeout=60)
        inspect = ["docker", "inspect", "--format", "{{.State.ExitCode}}", container]
        code = subprocess.run(inspect, check=True, capture_output=True, text=True, timeout=60).stdout
        logs = subprocess.run(["docker", "logs", container], capture_output=True, text=True, timeout=60)
        output = logs.stdout + logs.stderr
        assert code.strip() == "0", output[-2000:]
        assert "received SIGTERM" in output and "stopped; database pool closed" in output
    finally:
        subprocess.run(["docker", "start", container], check=True, capture_output=True, timeout=60)
        health = ["docker", "inspect", "--format", "{{.State.Health.Status}}", container]
        deadline = time.monotonic() + 60
        while subprocess.run(health, capture_output=True, text=True, timeout=60).stdout.strip() != "healthy":
            assert time.monotonic() < deadline, "the replica did not become healthy again"
            time.sleep(0.5)


def test_nginx_renders_its_trusted_proxies_from_the_setting(compose):
    """The image sources its 15-real-ip.envsh before rendering the template, so NGINX_TRUSTED_PROXIES
    reaches nginx's configuration. What the directives do: tests/e2e/test_limits.py, on a local nginx."""
    # The rendered file, not `nginx -T`: that resolves the upstream's name again, and the engine's DNS
    # can miss a lookup for a moment while containers start on the network (seen here once).
    rendered = ["cat", "/etc/nginx/conf.d/default.conf"]
    config, _, _ = compose.exec_in_container(rendered, service_name="nginx")
    assert (
        "real_ip_header X-Forwarded-For; real_ip_recursive on; "
        "set_real_ip_from 192.0.2.0/24; set_real_ip_from 198.51.100.0/24;"
    ) in config
    # The main configuration allows as many connections as the local stack's (the image's 1,024 did not).
    main, _, _ = compose.exec_in_container(["cat", "/etc/nginx/nginx.conf"], service_name="nginx")
    assert "worker_connections 4096;" in main


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


async def test_starting_the_stack_again_keeps_the_reviews_the_api_took(compose):
    """Every `docker compose up` runs the one-shot ETL again. It loads only into a database that serves
    no data yet (`atelier-load --if-empty`): until it did, the next `up` replaced the served data with the
    export, and a review acknowledged with 201 was gone."""
    host, port = compose.get_service_host_and_port("nginx", 8080)
    async with aiohttp.ClientSession(f"http://{host or '127.0.0.1'}:{port}") as http:
        found = await described(http, 1)
        assert found is not None
        posted = new_review(found[0], body="Taken before the stack was started again. " * 2)
        async with http.post("/reviews", json=posted) as created:
            assert created.status == 201, await created.text()
            location = created.headers["Location"]

        await asyncio.to_thread(compose.start)  # `docker compose up --build --wait`, as an operator runs it

        async with http.get(location) as kept:
            assert kept.status == 200 and (await kept.json())["body"] == posted["body"]
        etl = next(c for c in compose.get_containers(include_all=True) if c.Service == "etl")
        assert (etl.State, etl.ExitCode) == ("exited", 0)
        stdout, _ = compose.get_logs("etl")
        assert "the database already serves data; nothing loaded" in stdout


def test_a_reload_on_purpose_reads_an_export_folder_and_keeps_its_report_apart(compose, tmp_path):
    """ETL_RELOAD=1 loads even into a database that serves data. The export may be a folder of yours
    (EXPORT_DIR) that the container's user cannot write: the loader only reads it, and the rejects report
    goes to the `reports` volume. (Until it did, a folder of yours failed the load: permission denied.)"""
    export = tmp_path / "export"
    subprocess.run(
        [str(ROOT / ".venv/bin/atelier-generate"), "--out", str(export), "--products", "300",
         "--dirty-rate", "0.02", "--no-progress"],
        check=True, capture_output=True, timeout=60,
    )  # fmt: skip
    export.chmod(0o755)  # readable by the container's user, never writable: mounted read-only below
    base = compose.compose_command_property
    loaded = one_off(compose, "etl", "-v", f"{export}:/data:ro", "-e", "ETL_RELOAD=1")
    assert loaded.returncode == 0, loaded.stdout[-2000:] + loaded.stderr[-2000:]
    assert "rejects report: /reports/rejects.csv" in loaded.stdout

    copied = tmp_path / "rejects.csv"
    subprocess.run([*base, "cp", "etl:/reports/rejects.csv", str(copied)], check=True, timeout=60)
    rejected = copied.read_text(encoding="utf-8").splitlines()
    assert rejected[0] == "file,line,kind,reason,raw" and len(rejected) > 1
    assert not (export / "rejects.csv").exists()


def test_an_export_folder_of_yours_is_never_filled_with_a_sample(compose, tmp_path):
    """EXPORT_DIR naming a folder without the export (a typo, an unmounted disk): the ETL once generated
    1,000 fake products into it, and loaded them into an empty database. Now a database that serves data
    needs no export (nothing loaded, exit 0) and an empty one fails naming the missing file."""
    folder = tmp_path / "mistyped"
    folder.mkdir()
    folder.chmod(0o777)  # writable by the container's user: only the ETL's own rule keeps it empty
    mounted = ["-v", f"{folder}:/data", "-e", f"EXPORT_DIR={folder}"]
    serving = one_off(compose, "etl", *mounted)
    assert serving.returncode == 0, serving.stdout[-2000:] + serving.stderr[-2000:]
    assert "already serves data; nothing loaded" in serving.stdout
    assert f"EXPORT_DIR={folder}" in serving.stderr and "not generating a sample" in serving.stderr

    compose.exec_in_container(
        ["psql", "-U", "atelier", "-d", "postgres", "-c", "DROP DATABASE IF EXISTS empty_check",
         "-c", "CREATE DATABASE empty_check"],
        service_name="postgres",
    )  # fmt: skip
    url = urlunsplit(("postgresql", f"atelier:{POSTGRES_PASSWORD}@postgres:5432", "/empty_check", "", ""))
    empty = one_off(compose, "etl", *mounted, "--no-deps", "-e", f"DATABASE_URL={url}")
    assert empty.returncode == 2, empty.stdout[-2000:] + empty.stderr[-2000:]
    assert "reviews.csv" in empty.stdout + empty.stderr
    assert list(folder.iterdir()) == []


def test_a_dump_restores_over_the_schema_a_new_volume_starts_with(compose):
    """README's backups: `pg_dump -Fc` of the served database, restored with `pg_restore --clean
    --if-exists --exit-on-error` over the schema PostgreSQL's init scripts create on an empty volume
    (here in a second database of the stack's server, so the stack keeps serving), gives the same rows
    and summaries that `atelier-verify` finds exact."""

    def psql(database: str, *args: str) -> str:
        command = ["psql", "-U", "atelier", "-d", database, "-v", "ON_ERROR_STOP=1", "-tA", *args]
        return compose.exec_in_container(command, service_name="postgres")[0]

    facts = (
        "SELECT (SELECT count(*) FROM reviews), (SELECT max(id) FROM reviews), "
        "(SELECT sum(helpfulness) FROM reviews), (SELECT count(*) FROM product_summaries), "
        "(SELECT count(*) FROM characteristic_summaries)"
    )
    dump = ["pg_dump", "-U", "atelier", "-d", "atelier", "-Fc", "-f", "/tmp/atelier.dump"]
    compose.exec_in_container(dump, service_name="postgres")
    psql("postgres", "-c", "DROP DATABASE IF EXISTS restore_check", "-c", "CREATE DATABASE restore_check")
    try:
        init = (
            "for f in /docker-entrypoint-initdb.d/*.sql; do"
            " psql -U atelier -d restore_check -q -v ON_ERROR_STOP=1 -f $f || exit 1; done"
        )
        compose.exec_in_container(["sh", "-c", init], service_name="postgres")
        restore = ["pg_restore", "-U", "atelier", "-d", "restore_check", "--exit-on-error"]
        over_the_init_schema = ["--clean", "--if-exists"]
        compose.exec_in_container(
            [*restore, *over_the_init_schema, "/tmp/atelier.dump"], service_name="postgres"
        )
        assert psql("restore_check", "-c", facts) == psql("atelier", "-c", facts)

        url = urlunsplit(
            ("postgresql", f"atelier:{POSTGRES_PASSWORD}@postgres:5432", "/restore_check", "", "")
        )
        options = ["--no-deps", "-e", f"DATABASE_URL={url}", "--entrypoint", "atelier-verify"]
        verified = one_off(compose, "etl", *options, timeout=120)
        assert verified.returncode == 0, verified.stdout[-2000:] + verified.stderr[-2000:]
        assert "products: 0 differences" in verified.stdout
        assert "characteristics: 0 differences" in verified.stdout
    finally:
        psql("postgres", "-c", "DROP DATABASE IF EXISTS restore_check")


class TestComposeStack(BalancedDeploymentSuite):
    pass
