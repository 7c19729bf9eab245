"""The load-test traffic (bench/locustfile.py) runs headless against the local stack, bounded in time,
and writes its HTML report with no failed request."""

from __future__ import annotations

import csv
import os
import subprocess
import sys
from pathlib import Path

from tests.conftest import ROOT
from tests.e2e.conftest import SAMPLE_PRODUCTS, LocalStack

LOCUST = Path(sys.executable).parent / "locust"


def test_a_headless_run_writes_its_report_without_failures(local_stack: LocalStack, tmp_path):
    report = tmp_path / "locust.html"
    result = subprocess.run(
        [
            LOCUST,
            "-f",
            ROOT / "bench" / "locustfile.py",
            "--host",
            local_stack.url,
            "--headless",
            "--users",
            "10",
            "--spawn-rate",
            "10",
            "--run-time",
            "6s",
            "--stop-timeout",
            "2",
            "--html",
            report,
            "--csv",
            tmp_path / "stats",
            "--only-summary",
        ],
        env=os.environ | {"LOCUST_PRODUCTS": str(SAMPLE_PRODUCTS)},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert report.stat().st_size > 10_000 and "<html" in report.read_text()[:1000].lower()

    with open(tmp_path / "stats_stats.csv", newline="") as stats:
        rows = {row["Name"]: row for row in csv.DictReader(stats)}
    total = rows["Aggregated"]
    assert int(total["Request Count"]) > 20 and int(total["Failure Count"]) == 0
    assert int(rows["/reviews"]["Request Count"]) > 0 and int(rows["/reviews/meta"]["Request Count"]) > 0
