"""Config.from_env: defaults, parsing, and one clear error naming every bad setting."""

from __future__ import annotations

import socket

import pytest

from atelier_api.config import Config, ConfigError

URL = "postgresql://atelier:secret-password@db:5432/atelier"


def test_defaults() -> None:
    assert Config.from_env({"DATABASE_URL": URL}) == Config(
        database_url=URL,
        api_host="127.0.0.1",
        api_port=8000,
        db_pool_min_size=4,
        db_pool_max_size=10,
        db_command_timeout=5.0,
        reviews_max_count=1_000_000,
        max_body_bytes=65536,
        log_level="INFO",
        replica_name=socket.gethostname(),
    )


def test_every_setting_is_read() -> None:
    config = Config.from_env(
        {
            "DATABASE_URL": "postgres://u@h/db",
            "API_HOST": "0.0.0.0",
            "API_PORT": "9000",
            "DB_POOL_MIN_SIZE": "0",
            "DB_POOL_MAX_SIZE": "20",
            "DB_COMMAND_TIMEOUT": "2.5",
            "DB_ACQUIRE_TIMEOUT": "0.5",
            "REVIEWS_MAX_COUNT": "100",
            "MAX_BODY_BYTES": "2048",
            "LOG_LEVEL": "debug",
            "REPLICA_NAME": "api-7",
        }
    )

    assert config == Config(
        "postgres://u@h/db", "0.0.0.0", 9000, 0, 20, 2.5, 100, 2048, "DEBUG", "api-7", db_acquire_timeout=0.5
    )


def test_blank_values_take_the_default() -> None:
    assert Config.from_env({"DATABASE_URL": URL, "API_PORT": " ", "LOG_LEVEL": ""}).api_port == 8000


def test_config_is_frozen() -> None:
    config = Config.from_env({"DATABASE_URL": URL})
    with pytest.raises(AttributeError):
        config.api_port = 1  # type: ignore[misc]


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"DATABASE_URL": "  "}, "DATABASE_URL is required"),
        ({"DATABASE_URL": "mysql://u:p@h/db"}, "DATABASE_URL is invalid: must be a postgresql:// URL"),
        ({"API_PORT": "http"}, "API_PORT='http' is invalid: must be an integer from 1 to 65535"),
        ({"API_PORT": "0"}, "API_PORT='0' is invalid: must be an integer from 1 to 65535"),
        ({"API_PORT": "65536"}, "API_PORT='65536' is invalid"),
        ({"API_PORT": "-1"}, "API_PORT='-1' is invalid"),
        ({"DB_POOL_MAX_SIZE": "0"}, "DB_POOL_MAX_SIZE='0' is invalid: must be an integer from 1 to 1000"),
        ({"DB_POOL_MIN_SIZE": "11"}, "DB_POOL_MIN_SIZE (11) must not exceed DB_POOL_MAX_SIZE (10)"),
        ({"DB_COMMAND_TIMEOUT": "0"}, "DB_COMMAND_TIMEOUT='0' is invalid"),
        ({"DB_COMMAND_TIMEOUT": "nan"}, "DB_COMMAND_TIMEOUT='nan' is invalid"),
        ({"DB_COMMAND_TIMEOUT": "soon"}, "DB_COMMAND_TIMEOUT='soon' is invalid"),
        ({"REVIEWS_MAX_COUNT": "0"}, "REVIEWS_MAX_COUNT='0' is invalid"),
        ({"REVIEWS_MAX_COUNT": "2147483648"}, "must be an integer from 1 to 2147483647"),
        ({"MAX_BODY_BYTES": "1.5"}, "MAX_BODY_BYTES='1.5' is invalid"),
        (
            {"MAX_BODY_BYTES": "1048577"},
            "MAX_BODY_BYTES='1048577' is invalid: must be an integer from 1024 to 1048576",
        ),
        ({"LOG_LEVEL": "LOUD"}, "LOG_LEVEL='LOUD' is invalid: must be one of DEBUG, INFO, WARNING, ERROR"),
    ],
)
def test_bad_values_are_named(env: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError, match="^invalid configuration: ") as raised:
        Config.from_env({"DATABASE_URL": URL, **env})

    assert message in str(raised.value)


def test_database_url_is_required() -> None:
    with pytest.raises(ConfigError, match="DATABASE_URL is required"):
        Config.from_env({"API_PORT": "8000"})


def test_every_problem_at_once_and_no_password_echoed() -> None:
    with pytest.raises(ConfigError) as raised:
        Config.from_env({"DATABASE_URL": "mysql://u:hunter2@h/db", "API_PORT": "x", "LOG_LEVEL": "x"})

    message = str(raised.value)
    assert "DATABASE_URL" in message and "API_PORT" in message and "LOG_LEVEL" in message
    assert "hunter2" not in message


def test_reads_the_process_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DATABASE_URL", URL)
    monkeypatch.setenv("API_PORT", "8123")

    assert Config.from_env().api_port == 8123
