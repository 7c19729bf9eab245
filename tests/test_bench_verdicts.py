"""The benchmarks' verdicts: a script under bench/ that misses a target exits 1, so `make bench` (which
runs every script whatever the others did, then exits 1 when one failed) says so, as docs/benchmarks.md
promises. The scripts themselves run only in `make bench`; here, what decides their exit status."""

from __future__ import annotations

import ast
import sys

import pytest

from tests.conftest import ROOT

sys.path.insert(0, str(ROOT / "bench"))
import chaos  # noqa: E402  (bench/chaos.py: the helpers every benchmark ends with)

BENCH = ROOT / "bench"


@pytest.mark.parametrize(
    ("targets", "status"),
    [
        ({"ratio": True, "zero_errors": True}, 0),
        ({"ratio": True, "zero_errors": False}, 1),
        ({"ratio": False}, 1),
    ],
)
def test_a_missed_target_is_exit_status_1(targets, status):
    assert chaos.exit_status(targets) == status


def calls(tree: ast.AST, name: str) -> list[ast.Call]:
    return [
        node
        for node in ast.walk(tree)
        if isinstance(node, ast.Call)
        and (
            (isinstance(node.func, ast.Attribute) and node.func.attr == name)
            or (isinstance(node.func, ast.Name) and node.func.id == name)
        )
    ]


def exits_by_verdict(tree: ast.AST) -> bool:
    """Whether the script raises SystemExit(exit_status(...))."""
    return any(
        isinstance(node, ast.Raise)
        and isinstance(node.exc, ast.Call)
        and isinstance(node.exc.func, ast.Name)
        and node.exc.func.id == "SystemExit"
        and calls(node.exc, "exit_status")
        for node in ast.walk(tree)
    )


def test_every_benchmark_that_judges_a_target_exits_by_its_verdicts():
    judged = []
    for path in sorted(BENCH.glob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        if path.name == "chaos.py" or calls(tree, "print_verdicts"):
            judged.append(path.name)
            assert exits_by_verdict(tree), f"bench/{path.name} prints verdicts but exits 0 when one fails"
    # The scan finds them at all: the loader, the statements, writes, HTTP, routing and the soak.
    assert {"etl.py", "db.py", "writes.py", "http_bench.py", "routing.py", "chaos.py"} <= set(judged)
