"""GET /docs in a real headless Chromium, through nginx and the replicas of the local stack: Swagger UI
renders every path of the API's document, offline (every host but 127.0.0.1 fails to resolve).

docs/images/docs-page.png is this test's screenshot, copied from its tmp_path.
"""

from __future__ import annotations

import re
import shutil
import struct
import subprocess
import urllib.request
from pathlib import Path

import orjson
import pytest

from tests.e2e.conftest import LocalStack

WINDOW = (1280, 2400)


def chromium() -> str:
    for name in ("chromium", "chromium-browser"):
        found = shutil.which(name)
        if found:
            return found
    pytest.fail(
        "chromium is not installed: the browser test of /docs needs it "
        "(make test installs it: scripts/ensure-chromium.sh)"
    )


def headless(tmp_path: Path, url: str, *options: str) -> subprocess.CompletedProcess[str]:
    """Chromium loads `url`, runs its scripts for up to 15 s of virtual time, and does what `options` say."""
    command = [
        chromium(),
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-first-run",
        f"--user-data-dir={tmp_path / 'profile'}",
        "--virtual-time-budget=15000",
        # Offline: a page that needed a CDN would not render.
        "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",
        *options,
        url,
    ]
    return subprocess.run(command, capture_output=True, text=True, timeout=120, check=True)


@pytest.fixture(scope="module")
def document(local_stack: LocalStack) -> dict:
    with urllib.request.urlopen(f"{local_stack.url}/openapi.json") as response:
        return orjson.loads(response.read())


def test_the_docs_page_renders_every_path(local_stack: LocalStack, document: dict, tmp_path: Path) -> None:
    dom = headless(tmp_path, f"{local_stack.url}/docs", "--dump-dom").stdout

    assert "Failed to load API definition" not in dom
    assert document["info"]["title"].replace("&", "&amp;") in dom
    paths = set(re.findall(r'class="opblock-summary-path" data-path="([^"]+)"', dom))
    assert paths == set(document["paths"])
    # Each operation's block: id="operations-<tag>-<operationId>".
    operations = set(re.findall(r'id="operations-(?!tag-)[^"]+-([A-Za-z]+)"', dom))
    assert operations == {
        operation["operationId"] for item in document["paths"].values() for operation in item.values()
    }


def test_the_docs_page_screenshot(local_stack: LocalStack, tmp_path: Path) -> None:
    screenshot = tmp_path / "docs-page.png"
    size = ",".join(map(str, WINDOW))
    headless(tmp_path, f"{local_stack.url}/docs", f"--screenshot={screenshot}", f"--window-size={size}")

    png = screenshot.read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    assert struct.unpack(">II", png[16:24]) == WINDOW  # IHDR: width, height
    assert len(png) > 50_000  # a rendered page, not a blank one
