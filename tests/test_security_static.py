"""Static security checks of the repository: no secret is committed, and every SQL statement the
services run is a constant (values always go as $n parameters, never into the SQL text)."""

from __future__ import annotations

import ast
import re
import subprocess
from pathlib import Path

import pytest

from tests.conftest import ROOT

# --- Secrets ------------------------------------------------------------------------------------------

# Split so that this file does not match itself.
PRIVATE_KEY = re.compile("-----BEGIN [A-Z ]*" + "PRIVATE KEY-----")
TOKENS = re.compile(r"\b(AKIA[0-9A-Z]{16}|gh[pousr]_[A-Za-z0-9]{36}|xox[abp]-[A-Za-z0-9-]{10,})\b")
# scheme://user:password@ (the password part captured).
URL_PASSWORD = re.compile(r"\b[a-zA-Z][a-zA-Z0-9+.-]*://[^\s:/@'\"`<>]+:([^\s@/'\"`<>]*)@")
# KEY=value or key: value lines of env and YAML files naming a password or secret.
ASSIGNED_SECRET = re.compile(
    r"^[ \t]*[A-Za-z_]*(?:PASSWORD|SECRET|TOKEN)[A-Za-z_]*[ \t]*[=:][ \t]*(\S*)", re.I | re.M
)

# Passwords that may appear in URLs, each only ever a placeholder or a test's input, never a credential:
PLACEHOLDER_PASSWORDS = {"password", "***"}  # docs' `user:password@host`, the loader's masked URL
TEST_ONLY_PASSWORDS = {  # tests that check a password is refused, masked or never echoed
    "p",
    "hunter2",
    "secret",
    "s3cret",
    "secret-password",
    "postgres",
    "change-me",
    "CHANGE-ME",
    "change%2Dme",
    "{password}",
    "Zq8-not-an-example-9Lk",
}


def repository_files() -> list[Path]:
    """The files git tracks, and new ones it would track (not ignored)."""
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=ROOT,
        capture_output=True,
        check=True,
    ).stdout.decode()
    return [ROOT / name for name in listed.split("\0") if name and (ROOT / name).is_file()]


def text_of(path: Path) -> str | None:
    data = path.read_bytes()
    if b"\0" in data[:8192]:
        return None  # binary (images)
    return data.decode("utf-8", "replace")


def secrets_in(path: Path, text: str) -> list[str]:
    found = []
    relative = path.relative_to(ROOT)
    in_tests = relative.parts[0] == "tests"
    if PRIVATE_KEY.search(text):
        found.append("a private key")
    found += [f"a token {match[:8]}..." for match in TOKENS.findall(text)]
    for password in URL_PASSWORD.findall(text):
        allowed = PLACEHOLDER_PASSWORDS | (TEST_ONLY_PASSWORDS if in_tests else set())
        if password and not password.startswith("$") and password not in allowed:
            found.append(f"a password in a URL ({password[:2]}...)")
    if path.name.startswith(".env") or path.suffix in (".yaml", ".yml", ".env", ".ini", ".toml", ".cfg"):
        for value in ASSIGNED_SECRET.findall(text):
            if value and not value.startswith(("$", "#")):
                found.append(f"an assigned secret ({value[:2]}...)")
    return found


def test_no_secret_is_committed() -> None:
    files = repository_files()
    assert len(files) > 50  # the listing works
    assert not any(path.name == ".env" for path in files), ".env holds local secrets: never commit it"
    leaks = {}
    for path in files:
        text = text_of(path)
        if text is not None and (found := secrets_in(path, text)):
            leaks[str(path.relative_to(ROOT))] = found
    assert not leaks, leaks


@pytest.mark.parametrize(
    ("name", "text"),
    [
        ("services/x.py", "URL = 'postgresql://atelier:" + "Tr0ub4dor@db/atelier'"),
        ("tests/x.py", "URL = 'postgresql://atelier:" + "Tr0ub4dor@db/atelier'"),
        ("key.txt", "-----BEGIN RSA " + "PRIVATE KEY-----\nMIIE..."),
        (".env.example", "POSTGRES_PASSWORD=" + "Tr0ub4dor"),
        ("compose.yaml", "      POSTGRES_PASSWORD: " + "Tr0ub4dor"),
    ],
)
def test_the_secret_scan_finds_a_planted_secret(name: str, text: str) -> None:
    assert secrets_in(ROOT / name, text)


def test_the_secret_scan_lets_placeholders_through() -> None:
    compose = "x: postgresql://${POSTGRES_USER:-atelier}:${POSTGRES_PASSWORD:?set it}@postgres:5432/db\n"
    assert not secrets_in(ROOT / "compose.yaml", compose + "POSTGRES_PASSWORD: ${POSTGRES_PASSWORD:?x}\n")
    assert not secrets_in(ROOT / "README.md", "postgresql://user:password@host:port/dbname")
    assert not secrets_in(ROOT / ".env.example", "POSTGRES_PASSWORD=\n")


# --- SQL ----------------------------------------------------------------------------------------------

# asyncpg's methods that take SQL text first.
SQL_METHODS = {"execute", "executemany", "fetch", "fetchrow", "fetchval", "prepare", "cursor"}

# Reviewed statements whose text is built at run time, only ever from the code's own constants. DDL
# (CREATE TABLE, ANALYZE, ALTER TABLE ... SET SCHEMA) cannot take identifiers as $n parameters, so the
# loader writes its schema and table names into the text. Each value comes from rows.EXPORT_FILES or
# staging's SCHEMA/SERVED_SCHEMA/TABLES (constants), never from a file's rows or a request. Keyed by
# (file, function); a stale entry fails the test, so the list stays exactly what is reviewed.
ALLOWED_DYNAMIC_SQL = {
    ("services/etl/atelier_etl/staging.py", "_apply_schema_file"): "the schema's own SQL files",
    ("services/etl/atelier_etl/staging.py", "switch"): "DROP/ALTER TABLE of each of TABLES",
    ("services/etl/atelier_etl/staging.py", "build_key_indexes"): "the schema's own 03-indexes.sql",
    ("services/etl/atelier_etl/schema.py", "apply_schema"): "the schema's own SQL files",
    ("services/api/atelier_api/changes.py", "_send"): "product ids notify() formatted as integers",
}


class SqlScan(ast.NodeVisitor):
    """Finds database calls whose SQL is not a constant: f-strings, %, +, .format() or other calls,
    directly or through a local variable. Names bound at module level are constants: they are built
    once at import, before any request or row exists."""

    def __init__(self, module: ast.Module) -> None:
        self.module_names = {
            target.id
            for node in module.body
            if isinstance(node, ast.Assign | ast.AnnAssign)
            for target in (node.targets if isinstance(node, ast.Assign) else [node.target])
            if isinstance(target, ast.Name)
        }
        # Imported modules: `staging.prepare(conn)` is the loader's function, not asyncpg's prepare.
        self.modules = {
            (alias.asname or alias.name).split(".")[0]
            for node in ast.walk(module)
            if isinstance(node, ast.Import | ast.ImportFrom)
            for alias in node.names
        }
        self.function: ast.FunctionDef | ast.AsyncFunctionDef | None = None
        self.found: list[tuple[str, int, str]] = []  # (function, line, why)

    def visit_FunctionDef(self, node: ast.FunctionDef | ast.AsyncFunctionDef) -> None:
        outer, self.function = self.function, node
        self.generic_visit(node)
        self.function = outer

    visit_AsyncFunctionDef = visit_FunctionDef  # noqa: N815

    def visit_Call(self, node: ast.Call) -> None:
        receiver = node.func.value if isinstance(node.func, ast.Attribute) else None
        is_module = isinstance(receiver, ast.Name) and receiver.id in self.modules
        if isinstance(node.func, ast.Attribute) and node.func.attr in SQL_METHODS and not is_module:
            sql = (
                node.args[0]
                if node.args
                else next((k.value for k in node.keywords if k.arg == "query"), None)
            )
            why = self.dynamic(sql, depth=0) if sql is not None else None
            if why:
                self.found.append((self.function.name if self.function else "<module>", node.lineno, why))
        self.generic_visit(node)

    def dynamic(self, expr: ast.expr, depth: int) -> str | None:
        """Why `expr` is SQL built at run time, or None when it is a constant."""
        if isinstance(expr, ast.Constant) and isinstance(expr.value, str):
            return None
        if isinstance(expr, ast.JoinedStr):
            return "an f-string"
        if isinstance(expr, ast.BinOp):
            return "% formatting" if isinstance(expr.op, ast.Mod) else "string arithmetic"
        if isinstance(expr, ast.Call):
            if isinstance(expr.func, ast.Attribute) and expr.func.attr == "format":
                return ".format()"
            if (
                isinstance(expr.func, ast.Attribute)
                and expr.func.attr == "get"
                and isinstance(expr.func.value, ast.Name)
                and expr.func.value.id in self.module_names
            ):
                return None  # one of a module-level mapping's constant statements
            return "the result of a call"
        if isinstance(expr, ast.Subscript):
            return self.dynamic(expr.value, depth)  # one of a mapping's statements
        if isinstance(expr, ast.Name):
            local = self.local_values(expr.id)
            if local is None:
                return None if expr.id in self.module_names else f"{expr.id}, not a module constant"
            if depth > 5:
                return f"{expr.id}, too indirect to check"
            for value in local:
                why = self.dynamic(value, depth + 1)
                if why:
                    return f"{expr.id}, {why}"
            return None
        return f"a {type(expr).__name__} expression"

    def local_values(self, name: str) -> list[ast.expr] | None:
        """What the current function assigns to `name`, or None when it assigns nothing to it."""
        if self.function is None:
            return None
        values: list[ast.expr] = []
        for node in ast.walk(self.function):
            if isinstance(node, ast.Assign) and any(
                isinstance(t, ast.Name) and t.id == name for t in node.targets
            ):
                values.append(node.value)
            elif isinstance(node, ast.AnnAssign | ast.AugAssign) and isinstance(node.target, ast.Name):
                if node.target.id == name and node.value is not None:
                    values.append(node.value if isinstance(node, ast.AnnAssign) else ast.JoinedStr([]))
            elif isinstance(node, ast.For | ast.comprehension) and isinstance(node.target, ast.Name):
                if node.target.id == name:
                    values.append(node.iter)
        return values or None


def scan(source: str) -> list[tuple[str, int, str]]:
    module = ast.parse(source)
    visitor = SqlScan(module)
    visitor.visit(module)
    return visitor.found


def test_every_sql_statement_is_a_constant_or_reviewed() -> None:
    unreviewed, used = [], set()
    for path in sorted(ROOT.glob("services/**/*.py")):
        relative = str(path.relative_to(ROOT))
        for function, line, why in scan(path.read_text(encoding="utf-8")):
            if (relative, function) in ALLOWED_DYNAMIC_SQL:
                used.add((relative, function))
            else:
                unreviewed.append(f"{relative}:{line} in {function}(): SQL built from {why}")
    assert not unreviewed, "\n".join(unreviewed)
    assert used == set(ALLOWED_DYNAMIC_SQL), f"stale allow-list entries: {set(ALLOWED_DYNAMIC_SQL) - used}"


@pytest.mark.parametrize(
    "body",
    [
        'await conn.fetch(f"SELECT * FROM reviews WHERE id = {review_id}")',
        'await conn.execute("DELETE FROM reviews WHERE id = %s" % review_id)',
        'await pool.fetchval("SELECT " + column + " FROM reviews")',
        'await conn.fetchrow("SELECT * FROM {t}".format(t=table))',
        'statement = f"SELECT {column} FROM reviews"\n    await conn.fetch(statement, 1)',
        "await conn.execute(query=build_sql(request))",
    ],
)
def test_the_sql_scan_finds_built_statements(body: str) -> None:
    source = f"async def handler(conn, pool, review_id, column, table, request):\n    {body}\n"
    assert [function for function, _, _ in scan(source)] == ["handler"]


def test_the_sql_scan_accepts_constants_and_parameters() -> None:
    source = (
        'GET = "SELECT * FROM reviews WHERE id = $1"\n'
        'BY_SORT = {"newest": "SELECT 1", "helpful": "SELECT 2"}\n'
        "async def handler(conn, sort, review_id):\n"
        "    await conn.fetch(GET, review_id)\n"
        "    await conn.fetch(BY_SORT[sort])\n"
        "    statement = BY_SORT.get(sort)\n"
        "    await conn.fetch(statement)\n"
        "    await conn.execute(\"SET LOCAL lock_timeout = '1s'\")\n"
    )
    assert scan(source) == []
