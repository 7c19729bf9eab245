"""Static checks of the deployment files: compose.yaml is valid Compose and rotates every log, every
setting any part of the project reads is documented in .env.example, and each image's requirements.lock
pins what its pyproject.toml asks for."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
import yaml
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

from tests.conftest import ROOT

CHECK_JSONSCHEMA = shutil.which("check-jsonschema", path=str(Path(sys.executable).parent))

# Where settings are read: Python (os.environ, the config readers), shell, compose and nginx templates.
PYTHON_READS = re.compile(r'(?:environ\.get\(|environ\[|setting\(|env\.get\()\s*"([A-Z][A-Z0-9_]*)"')
TEMPLATE_READS = re.compile(r"\$\{([A-Z][A-Z0-9_]*)")
SOURCES = {
    PYTHON_READS: ["services/**/*.py", "scripts/*.py", "bench/*.py", "tests/conftest.py"],
    TEMPLATE_READS: [
        "compose.yaml",
        "services/nginx/templates/*",
        "services/**/*.sh",
        "scripts/*.sh",
        "services/nginx/*.conf",
        "services/nginx/*.envsh",
    ],
}


def settings_read() -> dict[str, set[str]]:
    found: dict[str, set[str]] = {}
    for pattern, globs in SOURCES.items():
        for glob in globs:
            for path in ROOT.glob(glob):
                for name in pattern.findall(path.read_text(encoding="utf-8")):
                    found.setdefault(name, set()).add(str(path.relative_to(ROOT)))
    return found


def documented() -> set[str]:
    text = (ROOT / ".env.example").read_text(encoding="utf-8")
    return set(re.findall(r"^([A-Z][A-Z0-9_]*)=", text, flags=re.MULTILINE))


def test_every_setting_read_is_in_env_example():
    read = settings_read()
    assert len(read) > 20  # the scan finds the settings at all
    missing = {name: sorted(paths) for name, paths in read.items() if name not in documented()}
    assert not missing, f"read but not documented in .env.example: {missing}"


def test_env_example_documents_each_setting_with_a_comment():
    lines = (ROOT / ".env.example").read_text(encoding="utf-8").splitlines()
    for number, line in enumerate(lines):
        if re.match(r"^[A-Z][A-Z0-9_]*=", line):
            above = next(prev for prev in reversed(lines[:number]) if not re.match(r"^[A-Z]", prev))
            assert above.startswith("#"), f"{line} has no comment above it"


def test_the_python_services_keep_no_privilege():
    """The API and the loader run as uid 10001 and need no capability: compose drops them all and bars
    gaining privileges; the compose tests (tests/containers) run the stack so."""
    services = yaml.safe_load((ROOT / "compose.yaml").read_text(encoding="utf-8"))["services"]
    for name in ("api", "etl"):
        assert services[name].get("cap_drop") == ["ALL"], name
        assert services[name].get("security_opt") == ["no-new-privileges:true"], name
        dockerfile = (ROOT / "services" / name / "Dockerfile").read_text(encoding="utf-8")
        assert re.search(r"^USER atelier$", dockerfile, flags=re.MULTILINE), name


def test_every_compose_service_rotates_its_logs():
    """Docker's default json-file driver keeps every line forever; each service's log is capped."""
    services = yaml.safe_load((ROOT / "compose.yaml").read_text(encoding="utf-8"))["services"]
    assert {"postgres", "etl", "api", "nginx"} <= set(services)
    for name, service in services.items():
        logging = service.get("logging", {})
        assert logging.get("driver") == "json-file", f"{name}: no json-file logging"
        options = logging.get("options", {})
        assert options.get("max-size") == "${CONTAINER_LOG_MAX_SIZE:-20m}", f"{name}: {options}"
        assert options.get("max-file") == "${CONTAINER_LOG_MAX_FILES:-5}", f"{name}: {options}"


def locked(path: Path) -> dict[str, tuple[Version, list[str]]]:
    """A requirements.lock's pins: each package's version and hashes."""
    text = path.read_text(encoding="utf-8").replace("\\\n", " ")
    pins = {}
    for line in text.splitlines():
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        pin, *rest = line.split()
        name, _, version = pin.partition("==")
        pins[canonicalize_name(name)] = (
            Version(version),
            [t for t in rest if t.startswith("--hash=sha256:")],
        )
    return pins


@pytest.mark.parametrize("service", ["api", "etl"])
def test_each_images_lock_pins_what_its_pyproject_asks_for(service):
    """The images install services/<service>/requirements.lock (`make lock`): every dependency of the
    service's pyproject.toml pinned at a version its range allows, and every pin with its hashes. A
    dependency added or a range moved without `make lock` fails here rather than in an image build."""
    project = tomllib.loads((ROOT / "services" / service / "pyproject.toml").read_text(encoding="utf-8"))
    pins = locked(ROOT / "services" / service / "requirements.lock")
    for dependency in project["project"]["dependencies"]:
        requirement = Requirement(dependency)
        name = canonicalize_name(requirement.name)
        assert name in pins, f"{name} is not in {service}/requirements.lock: run `make lock`"
        version, _ = pins[name]
        assert version in requirement.specifier, (
            f"{name} {version} is outside {requirement.specifier}: `make lock`"
        )
    assert all(hashes for _, hashes in pins.values()), pins
    assert len(pins) > len(project["project"]["dependencies"])  # their own dependencies pinned too


@pytest.fixture
def validate_compose():
    if CHECK_JSONSCHEMA is None:
        pytest.fail("check-jsonschema is missing: make install")

    def validate(path: Path) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [CHECK_JSONSCHEMA, "--builtin-schema", "vendor.compose-spec", str(path)],
            capture_output=True,
            text=True,
            timeout=60,
        )

    return validate


def test_compose_file_is_valid_against_the_compose_specification(validate_compose):
    result = validate_compose(ROOT / "compose.yaml")
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_compose_check_catches_an_invalid_file(validate_compose, tmp_path):
    broken = tmp_path / "compose.yaml"
    broken.write_text(
        (ROOT / "compose.yaml").read_text().replace("restart: unless-stopped", "restart: {when: always}", 1)
    )
    assert validate_compose(broken).returncode != 0


def make_sees(folder: Path, names: list[str], env: dict[str, str]) -> list[str]:
    """What the project's Makefile, run in `folder` (a copy of it beside a .env), exports to a recipe."""
    shown = " ".join(f"[$${name}]" for name in names)  # ($$: the shell's variable, not make's)
    result = subprocess.run(
        ["make", "--no-print-directory", "--eval", f'show: ; @echo "{shown}"', "show"],
        cwd=folder,
        env={"PATH": "/usr/bin:/bin", **env},
        capture_output=True,
        text=True,
        check=True,
    )
    return re.findall(r"\[([^\]]*)\]", result.stdout)


def with_makefile(folder: Path) -> Path:
    """`folder` with a copy of the Makefile and the script that turns .env into make's assignments."""
    shutil.copy(ROOT / "Makefile", folder / "Makefile")
    (folder / "scripts").mkdir()
    shutil.copy(ROOT / "scripts" / "dotenv_mk.py", folder / "scripts" / "dotenv_mk.py")
    return folder


@pytest.mark.skipif(shutil.which("make") is None, reason="make is not installed")
def test_a_variable_set_in_the_environment_wins_over_dot_env(tmp_path):
    """`BENCH_DATABASE_URL=... make bench` with .env copied from .env.example once ran on the embedded
    server: the example's empty value overrode the command line's."""
    with_makefile(tmp_path)
    example = (ROOT / ".env.example").read_text(encoding="utf-8")
    (tmp_path / ".env").write_text(example.replace("\nNGINX_WORKERS=auto\n", "\nNGINX_WORKERS=1\n"))
    names = ["BENCH_DATABASE_URL", "NGINX_WORKERS", "NGINX_METRICS_ACCESS", "API_UPSTREAM_SERVERS"]
    url = "postgresql://postgres@127.0.0.1:5432/postgres"
    # From the environment: it wins, set or empty. From .env alone: taken whole, spaces and all.
    assert make_sees(tmp_path, names, {"BENCH_DATABASE_URL": url, "NGINX_WORKERS": ""}) == [
        url,
        "",
        "deny all",
        "server api:8000 max_fails=1 fail_timeout=2s;",
    ]
    assert make_sees(tmp_path, names[:2], {}) == ["", "1"]


# Lines of .env as people write them, each read by compose's rules (python-dotenv's parser: quotes,
# escapes, inline comments). Make, which reads .env for `make up` and the tests, once kept the quotes
# (`DATABASE_URL="postgresql://..."` then failed as a URL), expanded `$` and cut values at `#`.
TRICKY_DOT_ENV = {
    "PLAIN": "PLAIN=plain value  # a comment",
    "EXPORTED": "export EXPORTED=exported",
    "DOUBLE": 'DOUBLE="postgresql://u:p@h:5432/db"',
    "HASH_QUOTED": 'HASH_QUOTED="abc # kept" # dropped',
    "SINGLE": "SINGLE='p$w#rd \\ x' # dropped",
    "DOLLARS": "DOLLARS=pa$$w$ord$",
    "HASH_GLUED": "HASH_GLUED=pa#ss",
    "EMPTY_COMMENT": "EMPTY_COMMENT= # only a comment",
    "EMPTY": "EMPTY=",
    "LEADING": 'LEADING="  two spaces"',
    "BACKSLASH": "BACKSLASH=ends with\\",
    "ESCAPES": 'ESCAPES="say \\"hi\\" \\\\ done"',
    "SPACED": "SPACED = around the sign",
    "UPSTREAM": "UPSTREAM=server api:8000 max_fails=1 fail_timeout=2s;",
    "BACKSLASH_HASH": "BACKSLASH_HASH=a\\#b",
    "WINDOWS": "WINDOWS=crlf\r",
}


@pytest.mark.skipif(shutil.which("make") is None, reason="make is not installed")
def test_make_reads_dot_env_values_as_compose_does(tmp_path):
    from dotenv import dotenv_values

    with_makefile(tmp_path)
    # With a byte-order mark, as Windows editors save it.
    text = "\ufeff# settings\n\n" + "\n".join(TRICKY_DOT_ENV.values()) + "\n"
    (tmp_path / ".env").write_bytes(text.encode("utf-8"))
    expected = dotenv_values(tmp_path / ".env", interpolate=False)
    assert set(expected) == set(TRICKY_DOT_ENV)
    assert expected["DOUBLE"] == "postgresql://u:p@h:5432/db" and expected["HASH_GLUED"] == "pa#ss"
    names = list(TRICKY_DOT_ENV)
    assert dict(zip(names, make_sees(tmp_path, names, {}), strict=True)) == expected


@pytest.mark.skipif(shutil.which("make") is None, reason="make is not installed")
def test_make_interpolates_dot_env_references_outside_single_quotes(tmp_path):
    with_makefile(tmp_path)
    (tmp_path / ".env").write_text(
        "HOST=db.internal\n"
        "URL=postgresql://u@${HOST}/x\n"
        'QUOTED="${HOST}:${PORT:-5432}"\n'
        "LITERAL='${HOST}'\n"
        "SELF=${SELF}:x\n"
        "LIST=${UNSET:-a,b}\n"
    )
    names = ["URL", "QUOTED", "LITERAL", "SELF", "LIST"]
    assert make_sees(tmp_path, names, {}) == [
        "postgresql://u@db.internal/x",
        "db.internal:5432",
        "${HOST}",
        ":x",  # compose's: the variable is not set yet (make would refuse a self-reference)
        "a,b",
    ]
    # The environment wins over .env for a reference too, as it does for the setting itself.
    assert make_sees(tmp_path, names[:1], {"HOST": "other"}) == ["postgresql://u@other/x"]


@pytest.mark.skipif(shutil.which("make") is None, reason="make is not installed")
@pytest.mark.parametrize(
    ("line", "says"),
    [
        ("not a binding", "line 2: not KEY=VALUE"),
        ('MULTI="one\\ntwo"', "line 2: MULTI: make cannot hold a value over several lines"),
        ("OPEN='never closed", "line 2: OPEN: make cannot hold a value over several lines"),
        ("PAREN=${X:-a)b}", "line 2: PAREN: a ${NAME:-default} whose default holds a parenthesis"),
    ],
)
def test_a_dot_env_line_make_cannot_read_stops_make_naming_it(tmp_path, line, says):
    with_makefile(tmp_path)
    (tmp_path / ".env").write_text(f"FIRST=1\n{line}\n")
    result = subprocess.run(
        ["make", "--no-print-directory", "--eval", "show: ; @true", "show"],
        cwd=tmp_path,
        env={"PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode != 0 and says in result.stderr
