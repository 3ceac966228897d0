"""The API's HTTP server under slow, broken and vanishing clients (issue 13), over raw sockets: `harmony
api`'s serve_api in a child process on a loopback port, with short timeouts. No broker runs: nothing
here reaches one."""

from __future__ import annotations

import contextlib
import json
import os
import socket
import subprocess
import sys
import time
from dataclasses import astuple

import httpx
import pytest

from harmony.http_protocol import MAX_HEAD, MAX_HEADERS, Timeouts
from tests.conftest import free_port, wait_until

pytestmark = pytest.mark.integration

TIMEOUTS = Timeouts(head=1.5, body=1.5, keep_alive=1.0)
SLACK = 2.0  # seconds past a timeout before a connection counts as held
SERVE = """
import sys
from harmony import logs, services
from harmony.http_protocol import MAX_HEAD, MAX_HEADERS, Timeouts
from harmony.settings import load

settings = load()
logs.configure(settings.log_format)
services.serve_api(settings, "127.0.0.1", int(sys.argv[1]), timeouts=Timeouts(*map(float, sys.argv[2:])))
"""
HALF_A_BODY = (b"POST /v1/reviews HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n"
               b"Content-Length: 100\r\n\r\n" + b'{"user_id"')  # 10 bytes of 100


class Server:
    def __init__(self, port: int, log_path):
        self.port, self.log_path = port, log_path

    def connect(self) -> socket.socket:
        return socket.create_connection(("127.0.0.1", self.port), timeout=5)

    def log_mark(self) -> int:
        return self.log_path.stat().st_size

    def log_since(self, mark: int) -> str:
        return self.log_path.read_bytes()[mark:].decode(errors="replace")

    def errors_since(self, mark: int) -> list[str]:
        """Error lines and tracebacks, but the producer's complaints that no broker answers."""
        return [line for line in self.log_since(mark).splitlines()
                if ('"level":"error"' in line or '"level":"critical"' in line or "Traceback" in line)
                and '"logger":"aiokafka' not in line]


@contextlib.contextmanager
def serving(directory, **env):
    port, log_path = free_port(), directory / "api.log"
    env = {**os.environ, "HARMONY_STATE_DIR": str(directory), "HARMONY_STORE": f"sqlite:///{directory / 'p.db'}",
           "HARMONY_KAFKA_BOOTSTRAP": f"127.0.0.1:{free_port()}", "HARMONY_LOG_FORMAT": "json", **env}
    with open(log_path, "ab") as out:
        process = subprocess.Popen([sys.executable, "-c", SERVE, str(port), *map(str, astuple(TIMEOUTS))],
                                   env=env, stdout=out, stderr=subprocess.STDOUT)
    try:
        try:
            wait_until(lambda: healthy(port) or process.poll() is not None, 60, "API not serving")
        except AssertionError as error:  # the log as it is at the timeout, not as it was at the start
            raise AssertionError(f"{error}: {log_path.read_text()[-3000:]}") from None
        assert process.poll() is None, f"the API exited with {process.returncode}: {log_path.read_text()[-3000:]}"
        yield Server(port, log_path)
    finally:
        process.terminate()
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            process.kill()


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    with serving(tmp_path_factory.mktemp("http")) as server:
        yield server


def healthy(port: int) -> bool:
    try:
        return httpx.get(f"http://127.0.0.1:{port}/healthz").status_code == 200
    except httpx.HTTPError:
        return False


def closed_within(sock: socket.socket, seconds: float) -> bytes | None:
    """What the server sent before it closed the connection, or None if it is open `seconds` later."""
    deadline, received = time.monotonic() + seconds, b""
    while (left := deadline - time.monotonic()) > 0:
        sock.settimeout(left)
        try:
            chunk = sock.recv(65536)
        except TimeoutError:
            break
        except ConnectionResetError:
            return received
        if not chunk:
            return received
        received += chunk
    return None


def read_response(sock: socket.socket) -> tuple[int, dict[str, str], bytes]:
    """One response with a Content-Length, leaving the connection open."""
    data = b""
    while b"\r\n\r\n" not in data:
        data += sock.recv(65536) or pytest.fail(f"closed mid-response: {data!r}")
    status, headers, body = parse(data)
    while len(body) < int(headers["content-length"]):
        body += sock.recv(65536) or pytest.fail(f"closed mid-body: {data!r}")
    return status, headers, body


def parse(response: bytes) -> tuple[int, dict[str, str], bytes]:
    head, _, body = response.partition(b"\r\n\r\n")
    status_line, *lines = head.decode("latin-1").split("\r\n")
    headers = {name.lower(): value.strip() for name, _, value in (line.partition(":") for line in lines)}
    return int(status_line.split()[1]), headers, body


def problem_of(response: bytes, status: int) -> dict:
    code, headers, body = parse(response)
    assert code == status, response
    assert headers["content-type"] == "application/problem+json"
    problem = json.loads(body)
    assert problem["status"] == status and problem["title"] and problem["detail"]
    return problem


def test_a_head_sent_a_byte_at_a_time_is_cut_off_at_the_head_timeout(server):
    head = iter(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\n" + b"X-Slow: yes\r\n" * 100 + b"\r\n")
    with server.connect() as sock:
        started = time.monotonic()
        while time.monotonic() - started < TIMEOUTS.head + SLACK:
            try:
                sock.sendall(bytes([next(head)]))  # a byte every 0.2 s: each would restart a keep-alive timer
            except (BrokenPipeError, ConnectionResetError):
                break
            if closed_within(sock, 0.2) is not None:
                break
        else:
            pytest.fail(f"a head still arriving after {TIMEOUTS.head + SLACK} s was not cut off")
    assert time.monotonic() - started > TIMEOUTS.head - 0.2


def test_a_body_shorter_than_its_content_length_gets_a_408_at_the_body_timeout(server):
    mark = server.log_mark()
    with server.connect() as sock:
        sock.sendall(HALF_A_BODY)
        started = time.monotonic()
        response = closed_within(sock, TIMEOUTS.body + SLACK)
    assert response is not None, f"no answer {TIMEOUTS.body + SLACK} s after 10 bytes of a 100-byte body"
    assert time.monotonic() - started > TIMEOUTS.body - 0.2
    assert problem_of(response, 408)["instance"] == "/v1/reviews"
    assert server.errors_since(mark) == []


def test_a_connection_that_never_sends_a_request_is_closed_at_the_keep_alive_timeout(server):
    with server.connect() as sock:
        assert closed_within(sock, TIMEOUTS.keep_alive + SLACK) == b""


def test_a_kept_alive_connection_is_closed_once_idle_for_the_keep_alive_timeout(server):
    with server.connect() as sock:
        for _ in range(2):  # kept alive between the two
            sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\n\r\n")
            assert read_response(sock)[0] == 200
        started = time.monotonic()
        assert closed_within(sock, TIMEOUTS.keep_alive + SLACK) == b""
    assert time.monotonic() - started > TIMEOUTS.keep_alive - 0.2


@pytest.mark.parametrize("request_head", [b"GET / HTTP/1.1 and more\r\n\r\n", b"\x16\x03\x01\x02\x00\x01\x00\r\n\r\n",
                                          b"GET / HTTP/1.1\r\nHost: localhost\r\nno colon here\r\n\r\n",
                                          b"GET /\x7f HTTP/1.1\r\n\r\n"])
def test_a_malformed_request_gets_a_400_problem(server, request_head):
    with server.connect() as sock:
        sock.sendall(request_head)
        response = closed_within(sock, 5)
    assert response, "no answer"
    assert problem_of(response, 400)["title"] == "Bad Request"


def test_a_client_that_leaves_mid_body_is_no_error(server):
    mark = server.log_mark()
    with server.connect() as sock:
        sock.sendall(HALF_A_BODY)
        time.sleep(0.2)  # the application is reading the body
    wait_until(lambda: "/v1/reviews" in server.log_since(mark), 10, "nothing logged of the request")
    time.sleep(0.5)  # uvicorn's own report, if any, follows the application's
    assert server.errors_since(mark) == []


def test_a_connection_answered_before_its_body_arrived_is_closed_once_idle(server):
    with server.connect() as sock:
        sock.sendall(b"POST /v1/reviews HTTP/1.1\r\nHost: localhost\r\nContent-Type: text/plain\r\n"
                     b"Content-Length: 5\r\n\r\n")
        assert read_response(sock)[0] == 415  # answered from the headers alone
        sock.sendall(b"hello")
        started = time.monotonic()
        assert closed_within(sock, TIMEOUTS.keep_alive + SLACK) == b""
    assert time.monotonic() - started > TIMEOUTS.keep_alive - 0.2


def test_a_websocket_upgrade_is_answered_as_plain_http(server):
    mark = server.log_mark()
    with server.connect() as sock:
        sock.sendall(b"GET /ws HTTP/1.1\r\nHost: localhost\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n"
                     b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n")
        assert read_response(sock)[0] == 404  # the API has no websockets
    assert server.errors_since(mark) == []


def head_with(headers: bytes) -> bytes:
    return b"GET /healthz HTTP/1.1\r\nHost: localhost\r\n" + headers + b"\r\n"


def test_a_head_within_the_limits_is_served(server):
    with server.connect() as sock:
        sock.sendall(head_with(b"".join(b"X-%d: %s\r\n" % (n, b"v" * 200) for n in range(MAX_HEADERS - 1))))
        assert read_response(sock)[0] == 200


@pytest.mark.parametrize("headers, pieces", [
    (b"".join(b"X-%d: v\r\n" % n for n in range(MAX_HEADERS)), 1),  # one header too many
    (b"X-Big: " + b"v" * MAX_HEAD + b"\r\n", 1),  # one header too large, arriving at once
    (b"X-Big: " + b"v" * (4 * MAX_HEAD) + b"\r\n", 16),  # or in pieces: refused before it is whole
])
def test_too_many_or_too_large_headers_get_a_431_problem(server, headers, pieces):
    mark = server.log_mark()
    head, size = head_with(headers), -(-len(headers) // pieces)
    with server.connect() as sock:
        try:
            for start in range(0, len(head), size):
                sock.sendall(head[start:start + size])
                time.sleep(0.02)
        except (BrokenPipeError, ConnectionResetError):
            pass  # closed once refused, with the answer already sent
        response = closed_within(sock, 5)
    assert response, "no answer"
    problem_of(response, 431)
    assert server.errors_since(mark) == []


FORWARDED = {"X-Forwarded-Proto": "https", "X-Forwarded-For": "203.0.113.9"}


def test_forwarded_headers_are_ignored_unless_their_proxy_is_trusted(server, tmp_path):
    # A relay on the host (or a client, through one) must not pick the scheme, nor the address
    # that the sign-in throttle counts by; a proxy the deployment names may.
    cookie = httpx.get(f"http://127.0.0.1:{server.port}/signin", headers=FORWARDED).headers["set-cookie"]
    assert cookie.startswith("csrf=") and "secure" not in cookie.lower()
    with serving(tmp_path, HARMONY_TRUSTED_PROXIES="127.0.0.1") as behind_a_proxy:
        cookie = httpx.get(f"http://127.0.0.1:{behind_a_proxy.port}/signin", headers=FORWARDED).headers["set-cookie"]
        assert cookie.startswith("__Host-csrf=") and "secure" in cookie.lower()
