"""README.md's Configuration section names every variable of .env.example (the project's rule for the
README: "configuration (every variable in .env.example)"). A setting added to .env.example without a
word in the README fails here, listing each one missing."""

from __future__ import annotations

import re

from tests.conftest import ROOT
from tests.test_static import documented

# A line of .env.example commented out whole (`# KEY=value`), as people park a setting; none is today.
# Only a line that starts with the key counts: a comment that mentions `ETL_RELOAD=1 make up` does not.
COMMENTED_OUT = re.compile(r"^#\s*([A-Z][A-Z0-9_]*)=", flags=re.MULTILINE)


def env_example_keys() -> set[str]:
    """Every KEY= line of .env.example: the settings tests/test_static.py reads there, and any line
    commented out whole."""
    text = (ROOT / ".env.example").read_text(encoding="utf-8")
    return documented() | set(COMMENTED_OUT.findall(text))


def configuration_section() -> str:
    """README.md's "## Configuration" section, up to the next second-level heading."""
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    found = re.search(r"^## Configuration\n(.*?)(?=^## )", text, flags=re.MULTILINE | re.DOTALL)
    assert found, 'README.md has no "## Configuration" section'
    return found[1]


def test_the_env_example_parse_finds_the_settings():
    keys = env_example_keys()
    assert len(keys) > 40  # the parse finds the settings at all
    assert {"DATABASE_URL", "API_PORT", "NGINX_READ_ROUTING", "PYTHON"} <= keys


def test_readme_configuration_names_every_env_example_variable():
    section = configuration_section()
    missing = sorted(key for key in env_example_keys() if f"`{key}`" not in section)
    assert not missing, (
        f"{len(missing)} variable(s) of .env.example not named (as `NAME`) in README.md's "
        f"Configuration section: {', '.join(missing)}"
    )
