"""ATELIER_ENV: development by default; production refuses an example database password, and an empty
one over TCP, with one clear line that names the problem and never the password. A URL whose every host
is a Unix socket directory needs no password (the server may authenticate the OS user). The loader
applies the same rule."""

from __future__ import annotations

import subprocess
import sys
from urllib.parse import urlunsplit

import pytest

from atelier_api import config as api_config
from atelier_api.config import Config, ConfigError
from atelier_etl import environment as etl_environment

STRONG = "postgresql://atelier:Zq8-not-an-example-9Lk@db:5432/atelier"


def test_development_is_the_default_and_takes_any_password() -> None:
    assert Config.from_env({"DATABASE_URL": "postgresql://u:postgres@h/db"}).environment == "development"
    assert Config.from_env({"DATABASE_URL": "postgresql://u@h/db"}).environment == "development"


def test_production_takes_a_real_password() -> None:
    config = Config.from_env({"DATABASE_URL": STRONG, "ATELIER_ENV": "Production"})

    assert config.environment == "production"


@pytest.mark.parametrize(
    "url",
    [
        "postgresql://atelier@db:5432/atelier",
        "postgresql://atelier:@db:5432/atelier",
        "postgresql://db/atelier",
        *(
            f"postgresql://atelier:{password}@db:5432/atelier"
            for password in sorted(api_config.EXAMPLE_PASSWORDS)
        ),
        "postgresql://atelier:CHANGE-ME@db/atelier",
        "postgresql://atelier:change%2Dme@db/atelier",  # percent-encoded is the same password
        "postgresql:///atelier",  # no host named: asyncpg may fall back to TCP on localhost
        "postgresql://atelier@db/atelier?host=/var/run/postgresql",  # a TCP host too
        "postgresql://atelier@/atelier?host=/var/run/postgresql,db",
        "postgresql://atelier:postgres@/atelier?host=/var/run/postgresql",  # an example, socket or not
    ],
)
def test_production_refuses_an_empty_or_example_password(url: str) -> None:
    with pytest.raises(ConfigError, match="ATELIER_ENV=production refuses") as raised:
        Config.from_env({"DATABASE_URL": url, "ATELIER_ENV": "production"})

    message = str(raised.value)
    assert "\n" not in message
    userinfo = url.partition("://")[2].partition("@")[0]
    assert userinfo not in message  # the URL's credentials are never echoed

    assert etl_environment.refusal(url, {"ATELIER_ENV": "production"}) is not None


@pytest.mark.parametrize(
    "url",
    [
        "postgresql://atelier@/atelier?host=/var/run/postgresql",
        "postgresql://atelier@%2Fvar%2Frun%2Fpostgresql/atelier",
        "postgresql://atelier@/atelier?host=/run/postgresql,/tmp",
    ],
)
def test_production_takes_a_unix_socket_without_a_password(url: str) -> None:
    """Over a socket PostgreSQL can authenticate the OS user (peer): there is no password to copy from an
    example, and README's "Configuration" suggests the socket for a server on the replicas' host."""
    assert Config.from_env({"DATABASE_URL": url, "ATELIER_ENV": "production"}).environment == "production"
    assert etl_environment.refusal(url, {"ATELIER_ENV": "production"}) is None


def test_a_missing_password_over_tcp_points_to_the_socket() -> None:
    with pytest.raises(ConfigError, match=r"no password.*Unix socket instead, \?host=/path"):
        Config.from_env({"DATABASE_URL": "postgresql://atelier@db/atelier", "ATELIER_ENV": "production"})

    assert etl_environment.refusal("postgresql://atelier@db/atelier", {"ATELIER_ENV": "production"}) == (
        api_config.NO_PASSWORD
    )


def test_an_unknown_environment_is_named() -> None:
    with pytest.raises(ConfigError, match="ATELIER_ENV='staging' is invalid: must be one of development"):
        Config.from_env({"DATABASE_URL": STRONG, "ATELIER_ENV": "staging"})

    assert "ATELIER_ENV" in (etl_environment.refusal(STRONG, {"ATELIER_ENV": "staging"}) or "")


def test_the_api_and_the_loader_refuse_the_same_passwords() -> None:
    assert api_config.EXAMPLE_PASSWORDS == etl_environment.EXAMPLE_PASSWORDS
    assert api_config.ENVIRONMENTS == etl_environment.ENVIRONMENTS
    assert etl_environment.refusal(STRONG, {"ATELIER_ENV": "production"}) is None
    assert etl_environment.refusal("postgresql://u@h/db", {}) is None


@pytest.mark.parametrize(
    "command",
    [
        [sys.executable, "-m", "atelier_api"],
        [sys.executable, "-m", "atelier_etl.load", "--data", "/nonexistent"],
    ],
)
def test_the_commands_refuse_to_start_with_one_line(command: list[str]) -> None:
    env = {"PATH": "/usr/bin:/bin", "ATELIER_ENV": "production"}
    env["DATABASE_URL"] = "postgresql://atelier:change-me@127.0.0.1:1/atelier"
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=60)

    assert result.returncode != 0
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "example value" in lines[0] and "ATELIER_ENV=production" in lines[0]
    assert "change-me" not in lines[0]


@pytest.mark.parametrize(
    "password",
    # what `openssl rand -base64` and people write; asyncpg reads p@ss@db as host ss@db, password p
    ["ab/cd+ef==", "a#b", "a?b", "x/y#z", "p@ss"],
)
def test_a_password_that_breaks_the_url_is_named_as_such(password: str) -> None:
    """compose puts POSTGRES_PASSWORD and API_DB_PASSWORD into a URL as they are. A `/` once made the
    API say the password was missing (or fail reading the port as a number)."""
    url = with_password(password)
    for environment in ("development", "production"):
        with pytest.raises(ConfigError, match="cannot be read as a URL.*percent-encoded") as raised:
            Config.from_env({"DATABASE_URL": url, "ATELIER_ENV": environment})
        assert password not in str(raised.value)
        refused = etl_environment.refusal(url, {"ATELIER_ENV": environment})
        assert refused is not None and "cannot be read as a URL" in refused and password not in refused


def with_password(password: str, host: str = "db:5432") -> str:
    return urlunsplit(("postgresql", f"atelier:{password}@{host}", "/atelier", "", ""))


@pytest.mark.parametrize(
    "url",
    [
        STRONG,
        with_password("ab%2Fcd%2Bef%3D%3D"),  # the password above with its / + = percent-encoded
        "postgresql://atelier@/atelier?host=/var/run/postgresql",
        with_password("p%40ss", "[::1]:5432"),
        with_password("12:34"),
        with_password("x9", "h1:5432,h2:5433"),  # several hosts, as asyncpg takes them
        "postgresql://atelier@/atelier?host=/tmp&application_name=me@laptop",
    ],
)
def test_an_encoded_password_or_a_socket_url_reads_as_a_url(url: str) -> None:
    assert api_config.unreadable_url_problem(url) is None
    assert etl_environment.unreadable_url_problem(url) is None
    assert api_config.UNREADABLE_URL == etl_environment.UNREADABLE_URL
