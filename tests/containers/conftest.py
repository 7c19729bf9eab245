"""A failed test against the compose stack ends its report with what the containers logged, so that a
failure seen once in CI can be read afterwards (the stack is gone by then)."""

from __future__ import annotations

import re
import subprocess
from collections.abc import Iterator
from typing import Any

import pytest

SERVICES = ("api", "nginx", "postgres")
PER_CONTAINER = 60  # the last lines of each container, merged in time order
TERMINAL_CODES = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")  # the line clearing compose prints even with --no-color


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[Any]:
    report = yield
    compose = getattr(item, "funcargs", {}).get("compose")
    if report.when == "call" and report.failed and compose is not None:
        report.sections.append(
            (f"the containers' logs (last {PER_CONTAINER} lines each)", containers_logs(compose))
        )
    return report


def containers_logs(compose: Any) -> str:
    command = [
        *compose.compose_command_property,
        *("logs", "--no-color", "--timestamps", "--tail", str(PER_CONTAINER), *SERVICES),
    ]
    try:
        logs = subprocess.run(command, capture_output=True, text=True, timeout=60, cwd=compose.context)
    except (OSError, subprocess.SubprocessError) as error:  # a help to read a failure, never a second one
        return f"(could not read them: {error!r})"
    # "api-2  | 2026-12-06T23:08:37.334412Z message": by time across the containers (a stable sort, so
    # each container's lines keep their order within a timestamp).
    lines = TERMINAL_CODES.sub("", logs.stdout + logs.stderr).splitlines()
    return "\n".join(sorted(lines, key=lambda line: line.partition("| ")[2].partition(" ")[0]))
