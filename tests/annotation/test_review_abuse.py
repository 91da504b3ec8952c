"""The review server against hostile requests: other web pages, rebinding Host names, bad lengths and bodies, idle
connections. Raw HTTP, so every header is the test's to choose."""

from __future__ import annotations

import http.client
import json
import shutil
import socket
import threading
import time

import pytest

from annotation.review import MAX_BODY, ReviewLog, parse_decision, serve
from dataset.store.reader import PanoDataset


@pytest.fixture
def folder(small_dataset, tmp_path):
    """A copy of the small dataset to review."""
    shutil.copytree(small_dataset, tmp_path / "ds")
    return tmp_path / "ds"


@pytest.fixture
def start(folder):
    """``start(**serve_options)`` runs a review server over ``folder`` on a free port; returns its port."""
    servers = []

    def run(**options) -> int:
        srv = serve(folder, port=0, reviewer="tester", **options)
        threading.Thread(target=srv.serve_forever, args=(0.05,), daemon=True).start()
        servers.append(srv)
        return srv.server_address[1]

    yield run
    for srv in servers:
        srv.shutdown()
        srv.server_close()


def send(port: int, method: str, path: str, headers: dict[str, str], body: bytes = b"",
         timeout: float = 5) -> tuple[int, dict | bytes]:
    """Send exactly these headers (no Host or Content-Length unless given); returns status and body."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.putrequest(method, path, skip_host=True, skip_accept_encoding=True)
        for key, value in headers.items():
            conn.putheader(key, value)
        conn.endheaders(body or None)
        response = conn.getresponse()
        data = response.read()
        is_json = response.getheader("Content-Type") == "application/json"
        return response.status, json.loads(data) if is_json else data
    finally:
        conn.close()


def page_headers(port: int, body: bytes, host: str = "127.0.0.1") -> dict[str, str]:
    """The headers of the review page's own fetch."""
    return {"Host": f"{host}:{port}", "Origin": f"http://{host}:{port}", "Content-Type": "application/json",
            "Content-Length": str(len(body))}


def a_decision(folder) -> bytes:
    return json.dumps({"clip_id": next(PanoDataset(folder).clips()).clip_id, "verdict": "reject",
                       "reviewer": "mallory"}).encode()


def test_cross_site_posts_are_refused(folder, start, capfd):
    port, body = start(), a_decision(folder)
    own = page_headers(port, body)
    simple = {**own, "Origin": "http://evil.example", "Content-Type": "text/plain"}  # a browser sends no preflight
    for headers in (simple, {**own, "Origin": "http://evil.example"}, {**own, "Origin": "null"},
                    {**own, "Origin": f"http://127.0.0.1:{port + 1}"},
                    {k: v for k, v in own.items() if k != "Origin"}):
        status, answer = send(port, "POST", "/api/decision", headers, body)
        assert status == 403 and "Origin" in answer["error"]
    status, answer = send(port, "POST", "/api/decision", {**own, "Content-Type": "text/plain"}, body)
    assert status == 415 and "application/json" in answer["error"]
    assert not ReviewLog(folder).decisions()
    assert send(port, "POST", "/api/decision", {**own, "Content-Type": "application/json; charset=utf-8"},
                body)[0] == 200
    assert send(port, "POST", "/api/decision", page_headers(port, body, "localhost"), body)[0] == 200
    assert "Traceback" not in capfd.readouterr().err


def test_foreign_host_names_are_refused(folder, start, capfd):
    port = start()
    for host in ("evil.example", f"evil.example:{port}", f"127.0.0.1:{port + 1}", f"127.0.0.2:{port}",
                 f"user@127.0.0.1:{port}", ""):
        for path in ("/", "/api/clips"):
            status, answer = send(port, "GET", path, {"Host": host} if host else {})
            assert status == 421 and "not this server" in answer["error"], host
        body = a_decision(folder)
        assert send(port, "POST", "/api/decision", {**page_headers(port, body), "Host": host}, body)[0] == 421
    assert not ReviewLog(folder).decisions()
    for host in (f"127.0.0.1:{port}", f"localhost:{port}", f"LOCALHOST:{port}"):
        assert send(port, "GET", "/api/clips", {"Host": host})[0] == 200
    assert "Traceback" not in capfd.readouterr().err


def test_any_ip_literal_is_a_host_of_a_wildcard_bind(folder):
    srv = serve(folder, host="0.0.0.0", port=0)
    try:
        port = srv.server_address[1]
        assert srv.owns(f"127.0.0.1:{port}") and srv.owns(f"192.168.1.20:{port}") and srv.owns(f"localhost:{port}")
        assert not srv.owns(f"evil.example:{port}") and not srv.owns(f"127.0.0.1:{port + 1}")
    finally:
        srv.server_close()


@pytest.mark.parametrize(("length", "code"), [(None, 411), ("-1", 400), ("abc", 400), ("1e3", 400),
                                              (str(MAX_BODY + 1), 413), (str(300 * 2**20), 413)])
def test_bad_content_lengths_are_refused_before_reading(folder, start, capfd, length, code):
    port, body = start(), a_decision(folder)
    headers = {k: v for k, v in page_headers(port, body).items() if k != "Content-Length"}
    if length is not None:
        headers["Content-Length"] = length
    begin = time.monotonic()
    status, answer = send(port, "POST", "/api/decision", headers, body, timeout=3)
    assert status == code and "Content-Length" in answer["error"]
    assert time.monotonic() - begin < 2  # answered at once, not after waiting for the body
    assert not ReviewLog(folder).decisions()
    assert "Traceback" not in capfd.readouterr().err


@pytest.mark.parametrize("body", [b"[" * 60000, b'{"clip_id": ' + b"[" * 2000 + b"]" * 2000 + b"}",
                                  b"[" * 4000, b'["a", "reject"]', b'{"clip_id": 5, "verdict": "reject"}',
                                  b'{"clip_id": {"a": "b"}, "verdict": "reject"}', b'{"clip_id": "a", "verd',
                                  b'{"clip_id": "a", "verdict": "reject", "admin": "yes"}', b"\xff\xfe"])
def test_bodies_that_are_not_flat_objects_of_strings_are_refused(folder, start, capfd, body):
    port = start()
    status, answer = send(port, "POST", "/api/decision", page_headers(port, body), body)
    assert status in (400, 413) and answer["error"]
    assert not ReviewLog(folder).decisions()
    assert "Traceback" not in capfd.readouterr().err
    assert send(port, "GET", "/api/clips", {"Host": f"127.0.0.1:{port}"})[0] == 200  # still serving


def test_nested_bodies_are_refused_before_parsing():
    with pytest.raises(ValueError, match="flat JSON object"):
        parse_decision(b'{"clip_id": "a", "verdict": "reject", "reviewer": ' + b"[" * 100000 + b"}")
    assert parse_decision(b'{"clip_id": "a [{", "verdict": "reject"}') == {"clip_id": "a [{", "verdict": "reject"}
    assert parse_decision(b'{"clip_id": "a \\" [", "verdict": "reject"}')["clip_id"] == 'a " ['


def test_idle_connections_time_out_on_a_bounded_pool(start, capfd):
    port = start(timeout=0.5, workers=3)
    threads = threading.active_count()
    idle = socket.create_connection(("127.0.0.1", port))
    idle.settimeout(5)
    begin = time.monotonic()
    assert idle.recv(1) == b""  # closed by the server after its read timeout
    assert 0.3 < time.monotonic() - begin < 3
    idle.close()
    crowd = [socket.create_connection(("127.0.0.1", port)) for _ in range(12)]
    try:
        time.sleep(0.3)
        assert threading.active_count() <= threads  # no thread per connection
        begin = time.monotonic()
        status, _ = send(port, "GET", "/api/clips", {"Host": f"127.0.0.1:{port}"}, timeout=15)
        assert status == 200 and time.monotonic() - begin < 10  # served once the idle ones timed out
    finally:
        for s in crowd:
            s.close()
    assert "Traceback" not in capfd.readouterr().err


def test_server_binds_loopback_by_default(folder):
    srv = serve(folder, port=0)
    try:
        assert srv.server_address[0] == "127.0.0.1"
    finally:
        srv.server_close()


def test_port_in_use_is_a_one_line_error(folder, start):
    port = start()
    with pytest.raises(ValueError, match=f"cannot serve on 127.0.0.1:{port}: .*--port"):
        serve(folder, port=port)


def test_a_browser_cancelling_its_requests_prints_nothing(start, capfd):
    import socket
    import struct

    port = start()
    for _ in range(10):  # a browser scrolling past thumbnails: the request sent, the connection reset at once
        s = socket.create_connection(("127.0.0.1", port))
        s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        s.sendall(f"GET / HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\r\n".encode())
        s.close()
    status, _ = send(port, "GET", "/api/clips", {"Host": f"127.0.0.1:{port}"})
    assert status == 200  # still serving
    err = capfd.readouterr().err
    assert "Traceback" not in err and "BrokenPipe" not in err and "ConnectionReset" not in err, err
