"""Settings, read once from the environment into one frozen value (12factor.net/config)."""

from __future__ import annotations

import os
import socket
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TypeVar
from urllib.parse import parse_qs, unquote, urlsplit

T = TypeVar("T")

LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
# nginx in front holds a body of up to MAX_BODY_BYTES in memory (client_body_buffer_size): 1 MiB at
# most, some 80 reviews of the largest size.
MAX_BODY_BYTES_LIMIT = 1_048_576
# product_id and page are Postgres integers; keeping count below 2**31 too keeps (page - 1) * count, the
# OFFSET, inside a bigint.
INT32_MAX = 2**31 - 1

ENVIRONMENTS = ("development", "production")
# Database passwords that appear in examples and documentation (ours and the usual ones). In production
# the API and the loader refuse them, and an empty one, so a copied example never becomes a deployment's
# secret. atelier_etl.environment holds the same list for the loader (a test keeps the two equal).
EXAMPLE_PASSWORDS = frozenset(
    {"change-me", "changeme", "postgres", "password", "secret", "example", "atelier", "admin"}
)


class ConfigError(ValueError):
    """The environment holds a missing or bad setting; the message names every one."""


@dataclass(frozen=True, slots=True)
class Config:
    database_url: str
    api_host: str = "127.0.0.1"
    api_port: int = 8000
    db_pool_min_size: int = 4  # opened before the replica serves: none on a first burst's path
    db_pool_max_size: int = 10
    db_command_timeout: float = 5.0  # seconds, for every statement and for opening a connection
    reviews_max_count: int = 1_000_000  # the largest `count` GET /reviews accepts
    max_body_bytes: int = 65536
    log_level: str = "INFO"
    replica_name: str = ""  # names this process in the X-Replica header; the host name by default
    environment: str = "development"  # "production" refuses example secrets
    shutdown_timeout: float = 8.0  # seconds in-flight requests get to finish after SIGTERM
    cache_max_bytes: int = 80 * 2**20  # the response cache's budget per replica; 0 turns it off
    cache_ttl: float = 300.0  # seconds an answer may be cached at most (a backstop: writes invalidate)
    http_cache_max_age: int = 5  # seconds clients may reuse a GET answer (Cache-Control max-age)
    db_acquire_timeout: float = 2.0  # seconds a request waits for a pooled connection before its 503

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Config:
        env = _Environment(os.environ if environ is None else environ)
        database_url = env.get("DATABASE_URL", None, _database_url, secret=True)
        config = cls(
            database_url=database_url or "",
            api_host=env.get("API_HOST", "127.0.0.1", str),
            api_port=env.get("API_PORT", 8000, _bounded_int(1, 65535)),
            db_pool_min_size=env.get("DB_POOL_MIN_SIZE", 4, _bounded_int(0, 1000)),
            db_pool_max_size=env.get("DB_POOL_MAX_SIZE", 10, _bounded_int(1, 1000)),
            db_command_timeout=env.get("DB_COMMAND_TIMEOUT", 5.0, _positive_seconds),
            db_acquire_timeout=env.get("DB_ACQUIRE_TIMEOUT", 2.0, _positive_seconds),
            shutdown_timeout=env.get("SHUTDOWN_TIMEOUT", 8.0, _positive_seconds),
            reviews_max_count=env.get("REVIEWS_MAX_COUNT", 1_000_000, _bounded_int(1, INT32_MAX)),
            max_body_bytes=env.get("MAX_BODY_BYTES", 65536, _bounded_int(1024, MAX_BODY_BYTES_LIMIT)),
            log_level=env.get("LOG_LEVEL", "INFO", _log_level),
            replica_name=env.get("REPLICA_NAME", socket.gethostname(), str),
            environment=env.get("ATELIER_ENV", "development", _environment),
            cache_max_bytes=env.get("CACHE_MAX_BYTES", 80 * 2**20, _bounded_int(0, 2**40)),
            cache_ttl=env.get("CACHE_TTL", 300.0, _positive_seconds),
            http_cache_max_age=env.get("HTTP_CACHE_MAX_AGE", 5, _bounded_int(0, 86400)),
        )
        if config.environment == "production" and database_url:
            problem = weak_password_problem(database_url)
            if problem:
                env.problems.append(problem)
        if config.db_pool_min_size > config.db_pool_max_size:
            env.problems.append(
                f"DB_POOL_MIN_SIZE ({config.db_pool_min_size}) must not exceed "
                f"DB_POOL_MAX_SIZE ({config.db_pool_max_size})"
            )
        if env.problems:
            raise ConfigError("invalid configuration: " + "; ".join(env.problems))
        return config


class _Environment:
    """Reads variables, collecting every problem so one start-up reports them all."""

    def __init__(self, environ: Mapping[str, str]) -> None:
        self.environ = environ
        self.problems: list[str] = []

    def get(self, name: str, default: T, parse: Callable[[str], T], *, secret: bool = False) -> T:
        raw = self.environ.get(name, "").strip()
        if not raw:
            if default is None:
                self.problems.append(f"{name} is required")
            return default
        try:
            return parse(raw)
        except ValueError as error:
            shown = name if secret else f"{name}={raw!r}"  # a URL may hold a password: never echo it
            self.problems.append(f"{shown} is invalid: {error}")
            return default


def _database_url(raw: str) -> str:
    if urlsplit(raw).scheme not in ("postgres", "postgresql"):
        raise ValueError("must be a postgresql:// URL")
    if unreadable := unreadable_url_problem(raw):
        raise ValueError(unreadable)
    return raw


UNREADABLE_URL = (
    "cannot be read as a URL: a user name or password holding / # ? @ or % must be percent-encoded "
    "(%2F %23 %3F %40 %25), or be letters and digits only (openssl rand -hex 24)"
)


def unreadable_url_problem(database_url: str) -> str | None:
    """UNREADABLE_URL when the URL's parts cannot be told apart, as with a password such as `ab/c` put
    into a URL unencoded (compose's x-database-url does that): the password would be read as missing,
    or the port as `ab`. atelier_etl.environment has the same rule."""
    try:
        parts = urlsplit(database_url)
    except ValueError:
        return UNREADABLE_URL
    # What an unencoded / # or ? leaves after the host: an @ in the path, the fragment or a query
    # parameter's name (a value may hold one: application_name=me@host). Several hosts (h1:5432,h2)
    # and a socket directory stay readable.
    # An unencoded @ in the user name or password: Python splits the login from the host at the last @,
    # asyncpg at the first (p@ss@db is host ss@db, password p to it).
    names = [pair.partition("=")[0] for pair in parts.query.split("&")]
    if (
        "@" in parts.path + parts.fragment
        or any("@" in name for name in names)
        or parts.netloc.count("@") > 1
    ):
        return UNREADABLE_URL
    return None


NO_PASSWORD = (
    "DATABASE_URL has no password, which ATELIER_ENV=production refuses over TCP "
    "(a server on this host can be named by its Unix socket instead, ?host=/path, where it may authenticate "
    "the OS user)"
)


def weak_password_problem(database_url: str) -> str | None:
    """Why DATABASE_URL's password is unfit for production (an example value; or none, unless every
    host it names is a Unix socket directory), or None. atelier_etl.environment.refusal is the same rule
    for the loader."""
    try:
        parts = urlsplit(database_url)
        password = unquote(parts.password or "")
    except ValueError:
        return NO_PASSWORD
    if password.lower() in EXAMPLE_PASSWORDS:
        return "DATABASE_URL's password is an example value, which ATELIER_ENV=production refuses"
    if not password and not _unix_sockets_only(parts.hostname, parts.query):
        return NO_PASSWORD
    return None


def _unix_sockets_only(hostname: str | None, query: str) -> bool:
    """The URL names one or more hosts, each a socket directory (an absolute path, in the host part
    percent-encoded or in ?host=): over a Unix socket PostgreSQL can authenticate the OS user (peer),
    so no password is needed and none can have been copied from an example."""
    hosts = [unquote(hostname)] if hostname else []
    hosts += [h for value in parse_qs(query).get("host", []) for h in value.split(",")]
    return bool(hosts) and all(host.startswith("/") for host in hosts)


def _environment(raw: str) -> str:
    if raw.lower() not in ENVIRONMENTS:
        raise ValueError(f"must be one of {', '.join(ENVIRONMENTS)}")
    return raw.lower()


def _bounded_int(low: int, high: int) -> Callable[[str], int]:
    def parse(raw: str) -> int:
        if not raw.isascii() or not raw.isdigit() or len(raw) > 12 or not low <= int(raw) <= high:
            raise ValueError(f"must be an integer from {low} to {high}")
        return int(raw)

    return parse


def _positive_seconds(raw: str) -> float:
    try:
        seconds = float(raw)
    except ValueError:
        seconds = float("nan")
    if not 0 < seconds <= 3600:  # also false for nan
        raise ValueError("must be a number of seconds above 0 and at most 3600")
    return seconds


def _log_level(raw: str) -> str:
    if raw.upper() not in LOG_LEVELS:
        raise ValueError(f"must be one of {', '.join(LOG_LEVELS)}")
    return raw.upper()
