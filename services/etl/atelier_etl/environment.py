"""ATELIER_ENV for the loader: in production it refuses a DATABASE_URL whose password is an example
value, or empty unless every host it names is a Unix socket, exactly as the API does
(atelier_api.config; the ETL image does not carry the API, so the rule is repeated here and a test keeps
the two equal)."""

from __future__ import annotations

import argparse
import os
from collections.abc import Mapping
from urllib.parse import parse_qs, unquote, urlsplit

ENVIRONMENTS = ("development", "production")
EXAMPLE_PASSWORDS = frozenset(
    {"change-me", "changeme", "postgres", "password", "secret", "example", "atelier", "admin"}
)
NO_PASSWORD = (
    "DATABASE_URL has no password, which ATELIER_ENV=production refuses over TCP "
    "(a server on this host can be named by its Unix socket instead, ?host=/path, where it may authenticate "
    "the OS user)"
)


def refusal(database_url: str, environ: Mapping[str, str]) -> str | None:
    """Why the loader must not run with these settings, in one line, or None."""
    if unreadable_url_problem(database_url):
        return f"DATABASE_URL {UNREADABLE_URL}"
    environment = environ.get("ATELIER_ENV", "").strip().lower() or "development"
    if environment not in ENVIRONMENTS:
        return f"ATELIER_ENV={environment!r} is invalid: must be one of {', '.join(ENVIRONMENTS)}"
    if environment != "production":
        return None
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


UNREADABLE_URL = (
    "cannot be read as a URL: a user name or password holding / # ? @ or % must be percent-encoded "
    "(%2F %23 %3F %40 %25), or be letters and digits only (openssl rand -hex 24)"
)


def unreadable_url_problem(database_url: str) -> str | None:
    """As atelier_api.config's: the URL's parts cannot be told apart (an unencoded password)."""
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


def _unix_sockets_only(hostname: str | None, query: str) -> bool:
    """The URL names hosts, each a socket directory: PostgreSQL can then authenticate the OS user."""
    hosts = [unquote(hostname)] if hostname else []
    hosts += [h for value in parse_qs(query).get("host", []) for h in value.split(",")]
    return bool(hosts) and all(host.startswith("/") for host in hosts)


def database_url(parser: argparse.ArgumentParser, given: str | None) -> tuple[str, str | None]:
    """A command's database: --database-url, else DATABASE_URL (a usage error, exit 2, when neither is
    set), and why ATELIER_ENV refuses it, or None."""
    url = given or os.environ.get("DATABASE_URL")
    if not url:
        parser.error("DATABASE_URL is not set (or pass --database-url)")
    return url, refusal(url, os.environ)
