"""nginx's limits in front of the replicas: oversized bodies and headers, slow clients and floods meet
them, in the JSON error shape where nginx answers at all, and the API stays quick for everyone else.

These need a low rate limit and short client timeouts, so they run their own nginx, rendered from the
same template by stack.render_nginx with overrides, in front of the local stack's replicas. The shared
stack's nginx (and its 1000r/s limit, which other tests rely on) is left alone.
"""

from __future__ import annotations

import http.client
import json
import socket
import threading
import time
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import pytest

from tests.e2e.conftest import LocalStack, free_port, stack

RATE, BURST = 20, 20
CLIENT_TIMEOUT = 1.0  # seconds: NGINX_CLIENT_TIMEOUT of this nginx
OTHER_CLIENT = "127.0.0.2"  # a second client address (all of 127/8 is loopback): its own rate bucket


@dataclass
class LimitedNginx:
    port: int
    url: str


@pytest.fixture(scope="module")
def nginx(local_stack: LocalStack, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LimitedNginx]:
    prefix = tmp_path_factory.mktemp("nginx-limits")
    port = free_port()
    overrides = {
        "NGINX_RATE_LIMIT": f"{RATE}r/s",
        "NGINX_RATE_BURST": str(BURST),
        "NGINX_CLIENT_TIMEOUT": f"{CLIENT_TIMEOUT:g}s",
    }
    stack.render_nginx(prefix, list(local_stack.replica_ports.values()), port, overrides)
    name, process = stack.start(
        "nginx-limits", [stack.nginx_binary(), "-p", str(prefix), "-c", "nginx.conf", "-g", "daemon off;"], {}
    )
    try:
        stack.wait_for_port(port, process, name)
        yield LimitedNginx(port, f"http://127.0.0.1:{port}")
    finally:
        stack.stop_all([(name, process)])


def exchange(port: int, data: bytes, timeout: float = 10.0) -> tuple[bytes, float]:
    """Send raw bytes, read until nginx closes the connection; the answer and how long it took."""
    started = time.monotonic()
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(data)
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    return answer, time.monotonic() - started


@dataclass
class Answer:
    status: int
    headers: dict[str, str]
    body: bytes


def parse(answer: bytes) -> Answer:
    head, _, body = answer.partition(b"\r\n\r\n")
    status_line, *lines = head.decode("latin-1").split("\r\n")
    headers = {}
    for line in lines:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return Answer(int(status_line.split()[1]), headers, body)


def assert_json_error(answer: Answer, status: int, message: str) -> None:
    assert answer.status == status, answer
    assert answer.headers["content-type"] == "application/json"
    assert json.loads(answer.body) == {"error": message, "details": []}
    assert answer.headers["x-content-type-options"] == "nosniff"
    assert answer.headers["x-request-id"]


def request(path: str, *headers: str, method: str = "GET", body: bytes = b"") -> bytes:
    lines = [f"{method} {path} HTTP/1.1", "Host: atelier", "Connection: close", *headers]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


def test_a_large_body_within_the_limit_reaches_a_replica(nginx: LimitedNginx) -> None:
    body = b'{"body": "' + b"x" * 40_000 + b'"}'
    for headers in ([f"Content-Length: {len(body)}"], ["Transfer-Encoding: chunked"]):
        sent = (
            body if headers[0].startswith("Content-Length") else b"%x\r\n%s\r\n0\r\n\r\n" % (len(body), body)
        )
        answer = parse(exchange(nginx.port, request("/reviews", *headers, method="POST", body=sent))[0])
        assert answer.status == 422 and "x-replica" in answer.headers, answer


def test_an_oversized_body_gets_413(nginx: LimitedNginx) -> None:
    big = b"{" + b" " * 100_000 + b"}"
    answer, _ = exchange(nginx.port, request("/reviews", f"Content-Length: {len(big)}", method="POST"))
    assert_json_error(parse(answer), 413, "request body too large")

    chunked = b"".join(b"%x\r\n%s\r\n" % (8192, b" " * 8192) for _ in range(10)) + b"0\r\n\r\n"
    answer, _ = exchange(
        nginx.port, request("/reviews", "Transfer-Encoding: chunked", method="POST", body=chunked)
    )
    assert_json_error(parse(answer), 413, "request body too large")


def test_huge_headers_get_431_and_a_huge_request_line_414(nginx: LimitedNginx) -> None:
    one_huge_header = request("/healthz", "X-Huge: " + "a" * 20_000)
    many_big_headers = request("/healthz", *(f"X-Big-{i}: {'b' * 7000}" for i in range(8)))
    for data in (one_huge_header, many_big_headers):
        answer, _ = exchange(nginx.port, data)
        assert_json_error(parse(answer), 431, "request headers too large")

    answer, _ = exchange(nginx.port, request("/reviews?product_id=" + "1" * 20_000))
    assert_json_error(parse(answer), 414, "request line too long")

    answer, _ = exchange(nginx.port, b"NOT HTTP AT ALL\r\n\r\n")
    assert_json_error(parse(answer), 400, "bad request")


def test_trace_gets_nginx_405_with_allow_in_the_json_shape(nginx: LimitedNginx) -> None:
    answer = parse(exchange(nginx.port, request("/reviews/1/helpful", method="TRACE"))[0])
    assert_json_error(answer, 405, "method not allowed")
    assert answer.headers["allow"] == "PUT"

    answer = parse(exchange(nginx.port, request("/reviews?product_id=1", method="TRACE"))[0])
    assert answer.headers["allow"] == "GET,HEAD,POST"

    assert_json_error(parse(exchange(nginx.port, request("/nowhere", method="TRACE"))[0]), 404, "not found")


def trickle(port: int, data: bytes, every: float, deadline: float) -> tuple[bytes, float]:
    """Send `data` a byte every `every` seconds, never finishing; what nginx answers, and when it closed."""
    started = time.monotonic()
    with socket.create_connection(("127.0.0.1", port), timeout=deadline) as sock:
        sock.setblocking(False)
        answer = b""
        for byte in data:
            try:
                sock.send(bytes([byte]))
            except OSError:  # closed by nginx: what the test waits for
                break
            time.sleep(every)
            try:
                chunk = sock.recv(65536)
            except BlockingIOError:
                continue
            except OSError:
                break
            if not chunk:
                break
            answer += chunk
            if time.monotonic() - started > deadline:
                break
        else:
            raise AssertionError("nginx kept a never-ending request open")
    return answer, time.monotonic() - started


def test_a_client_that_never_finishes_its_headers_is_cut_off(nginx: LimitedNginx) -> None:
    """client_header_timeout counts the whole header: trickling bytes does not keep a connection."""
    data = request("/healthz", *(f"X-Slow-{i}: {'s' * 40}" for i in range(100)))
    answer, seconds = trickle(nginx.port, data, every=0.1, deadline=CLIENT_TIMEOUT * 6)
    assert answer in (b"",) or parse(answer).status == 408
    assert CLIENT_TIMEOUT * 0.8 <= seconds <= CLIENT_TIMEOUT * 4


def test_a_client_that_stops_sending_its_body_is_cut_off(nginx: LimitedNginx) -> None:
    started = time.monotonic()
    with socket.create_connection(("127.0.0.1", nginx.port), timeout=CLIENT_TIMEOUT * 6) as sock:
        sock.sendall(
            request("/reviews", "Content-Length: 1000", "Content-Type: application/json", method="POST")
        )
        sock.sendall(b'{"product_id": 1,')  # and then nothing more
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    seconds = time.monotonic() - started
    assert answer == b"" or parse(answer).status == 408
    assert CLIENT_TIMEOUT * 0.8 <= seconds <= CLIENT_TIMEOUT * 4


def flood(port: int, requests: int, stop: threading.Event | None = None) -> Counter[int]:
    """GETs as fast as one client address can send them, on keep-alive connections."""
    statuses: Counter[int] = Counter()
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        for _ in range(requests):
            if stop is not None and stop.is_set():
                break
            connection.request("GET", "/healthz")
            response = connection.getresponse()
            body = response.read()
            statuses[response.status] += 1
            if response.status == 429:
                assert json.loads(body) == {"error": "too many requests", "details": []}
                assert response.getheader("X-Content-Type-Options") == "nosniff"
            if response.will_close:
                connection.close()
                connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    finally:
        connection.close()
    return statuses


def test_a_flood_from_one_client_gets_429_beyond_the_burst(nginx: LimitedNginx) -> None:
    time.sleep(BURST / RATE + 0.5)  # an empty bucket, whatever ran before
    with ThreadPoolExecutor(max_workers=4) as pool:
        statuses = sum(
            (f.result() for f in [pool.submit(flood, nginx.port, 100) for _ in range(4)]), Counter()
        )

    assert set(statuses) == {200, 429}
    # The burst, plus what the rate refills while the flood runs (it lasts well under a few seconds).
    assert BURST <= statuses[200] <= BURST + RATE * 5
    assert statuses[429] >= 400 - BURST - RATE * 5


def test_the_api_stays_quick_for_others_during_a_flood_and_slow_clients(nginx: LimitedNginx) -> None:
    time.sleep(BURST / RATE + 0.5)
    stop = threading.Event()
    slow_sockets: list[socket.socket] = []
    try:
        # 50 slow clients hold connections (headers started, never finished), a flood runs from the
        # same address, and meanwhile another client reads reviews.
        for _ in range(50):
            sock = socket.create_connection(("127.0.0.1", nginx.port))
            sock.sendall(b"GET /reviews?product_id=1 HTTP/1.1\r\nHost: atelier\r\n")
            slow_sockets.append(sock)
        with ThreadPoolExecutor(max_workers=4) as pool:
            floods = [pool.submit(flood, nginx.port, 100_000, stop) for _ in range(4)]
            time.sleep(0.3)
            other = http.client.HTTPConnection(
                "127.0.0.1", nginx.port, timeout=5, source_address=(OTHER_CLIENT, 0)
            )
            timings = []
            for _ in range(RATE):  # within this client's own rate
                started = time.monotonic()
                other.request("GET", "/reviews?product_id=1&count=5")
                response = other.getresponse()
                body = response.read()
                timings.append(time.monotonic() - started)
                assert response.status == 200, body
                assert json.loads(body)["product"] == "1"
                time.sleep(1 / RATE)
            other.close()
            stop.set()
            flooded = sum((f.result() for f in floods), Counter())
    finally:
        stop.set()
        for sock in slow_sockets:
            sock.close()

    assert flooded[429] > 0  # the flood was running, and limited
    assert max(timings) < 0.5, timings
    assert sorted(timings)[len(timings) // 2] < 0.1, timings
