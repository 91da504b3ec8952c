"""The UnrealCV protocol client and stand-in: framing, pipelining, quirks, and clear errors instead of hangs."""

from __future__ import annotations

import io
import socket
import threading
import time

import numpy as np
import pytest

from ue_plugin.backend import decode_png_bgra
from ue_plugin.protocol import (
    HEADER,
    MAGIC,
    MAX_IMAGE_SIDE,
    MAX_PAYLOAD,
    CommandError,
    ConnectionLost,
    ProtocolError,
    UnrealCVClient,
    recv_frame,
    send_frame,
)
from ue_plugin.standin import StandinServer


@pytest.fixture(scope="module")
def standin(box_room_module):
    with StandinServer(box_room_module) as srv:
        yield srv


@pytest.fixture(scope="module")
def box_room_module():
    from scene_helpers import make_scene

    return make_scene([((-2, -3, 0), (2, 3, 3), True, (0.8, 0.8, 0.8), "room"),
                       ((1.0, 2.0, 0.0), (1.5, 2.5, 0.5), False, (0.8, 0.2, 0.2), "crate")])


def test_greeting_pipelining_and_error_replies_keep_the_stream_in_step(standin):
    with UnrealCVClient("127.0.0.1", standin.port, timeout=5) as c:
        assert c.greeting.startswith("connected to")
        assert "Is Listening" in c.request_text("vget /unrealcv/status")
        replies = c.request_batch([f"vset /camera/0/location {i} 0 100" for i in range(40)] +
                                  ["vget /camera/0/location"])
        assert replies[:40] == [b"ok"] * 40 and replies[40] == b"39.000 0.000 100.000"
        with pytest.raises(CommandError, match="vget /nonsense.*Can not find a handler"):
            c.request_batch(["vget /nonsense", "vget /camera/0/location"])
        assert c.request_text("vget /camera/0/location") == "39.000 0.000 100.000"
        assert c.request_text("vget /objects").split() == ["room", "crate"]
        lo_hi = [float(v) for v in c.request_text("vget /object/crate/bounds").split()]
        assert lo_hi == pytest.approx([100, -250, 0, 150, -200, 50])  # UE cm, Y flipped


def test_camera_zero_is_stale_spawned_cameras_are_not(standin):
    with UnrealCVClient("127.0.0.1", standin.port, timeout=5) as c:
        c.request("vset /cameras/spawn")
        cam = len(c.request_text("vget /cameras").split()) - 1
        images = {}
        for n in (0, cam):
            c.request_batch([f"vset /camera/{n}/size 32 32", f"vset /camera/{n}/location 0 0 160"])
            first = c.request(f"vget /camera/{n}/lit png")
            c.request(f"vset /camera/{n}/rotation 0 90 0")
            images[n] = (first, c.request(f"vget /camera/{n}/lit png"))
        assert images[0][0] == images[0][1], "the pawn camera returns its first image"
        assert images[cam][0] != images[cam][1]


def test_second_client_is_refused_while_one_is_connected(standin):
    with UnrealCVClient("127.0.0.1", standin.port, timeout=5):
        other = UnrealCVClient("127.0.0.1", standin.port, timeout=2)
        with pytest.raises(ConnectionLost, match="after 2 attempts"):
            other.connect(attempts=2, backoff=0.05)


def test_wrong_port_fails_fast_with_backoff():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # bound but not listening: connections are refused
        start = time.perf_counter()
        with pytest.raises(ConnectionLost, match=rf"127.0.0.1:{port} after 3 attempts.*-UnrealCVPort {port}"):
            UnrealCVClient("127.0.0.1", port, timeout=1).connect(attempts=3, backoff=0.05)
        assert time.perf_counter() - start < 5


def _fake_server(behaviour):
    srv = socket.create_server(("127.0.0.1", 0))

    def run():
        conn, _ = srv.accept()
        behaviour(conn)
        time.sleep(3)
        conn.close()

    threading.Thread(target=run, daemon=True).start()
    return srv


def test_server_that_never_greets_times_out():
    srv = _fake_server(lambda conn: None)
    with srv:
        start = time.perf_counter()
        with pytest.raises(ConnectionLost, match="sent no greeting within 0.5 s"):
            UnrealCVClient("127.0.0.1", srv.getsockname()[1], timeout=0.5).connect(attempts=1)
        assert time.perf_counter() - start < 3


def test_garbage_server_is_a_protocol_error():
    srv = _fake_server(lambda conn: conn.sendall(b"HTTP/1.1 400 Bad Request\r\n\r\n"))
    with srv, pytest.raises(ProtocolError, match="bad frame magic.*not an UnrealCV server"):
        UnrealCVClient("127.0.0.1", srv.getsockname()[1], timeout=2).connect(attempts=3)


def test_server_that_stops_answering_times_out(box_room_module):
    with StandinServer(box_room_module) as srv:
        c = UnrealCVClient("127.0.0.1", srv.port, timeout=0.5)
        c.connect()
        srv.handle = lambda command: time.sleep(2) or b"ok"  # a hung game
        with pytest.raises(ConnectionLost, match="did not answer 'vget /unrealcv/status'"):
            c.request("vget /unrealcv/status")
        assert c.sock is None


def test_the_unrealcv_pypi_client_talks_to_the_standin(standin):
    unrealcv = pytest.importorskip("unrealcv")
    client = unrealcv.Client(("127.0.0.1", standin.port))
    assert client.connect(timeout=5)
    try:
        assert "Is Listening" in client.request("vget /unrealcv/status", timeout=5)
        assert client.request_batch(["vset /camera/0/location 1 2 3", "vget /camera/0/location"]) == [
            "ok", "1.000 2.000 3.000"]
        depth = client.request("vget /camera/0/depth npy", timeout=5)
        assert np.load(io.BytesIO(depth)).ndim == 2
    finally:
        client.disconnect()


# ---------------------------------------------------------------------- peers without bounds (issue 13)

def _drip(conn, data: bytes, every: float = 0.2, seconds: float = 4.0) -> None:
    """Send ``data`` one byte every ``every`` seconds, for at most ``seconds`` (a peer that is slow, not dead)."""
    for byte in data[: int(seconds / every)]:
        time.sleep(every)
        try:
            conn.sendall(bytes([byte]))
        except OSError:
            return


def _greet_and_read_request(conn) -> None:
    send_frame(conn, b"connected to drip")
    recv_frame(conn)


def test_reply_dripping_a_byte_at_a_time_fails_within_the_timeout():
    def behaviour(conn):
        _greet_and_read_request(conn)
        conn.sendall(HEADER.pack(MAGIC, 100))
        _drip(conn, b"0:" + b"x" * 98)

    srv = _fake_server(behaviour)
    with srv:
        c = UnrealCVClient("127.0.0.1", srv.getsockname()[1], timeout=0.5)
        c.connect(attempts=1)
        start = time.perf_counter()
        with pytest.raises(ConnectionLost, match=r"did not answer 'vget /unrealcv/status'.*within 0.5 s"):
            c.request("vget /unrealcv/status")
        assert time.perf_counter() - start < 1.5
        assert c.sock is None


def test_greeting_dripping_a_byte_at_a_time_fails_within_the_timeout():
    greeting = b"connected to a very slow server"
    srv = _fake_server(lambda conn: _drip(conn, HEADER.pack(MAGIC, len(greeting)) + greeting))
    with srv:
        start = time.perf_counter()
        with pytest.raises(ConnectionLost, match="sent no greeting within 0.5 s"):
            UnrealCVClient("127.0.0.1", srv.getsockname()[1], timeout=0.5).connect(attempts=1)
        assert time.perf_counter() - start < 1.5


def test_oversized_reply_is_refused_before_it_is_read():
    def behaviour(conn):
        _greet_and_read_request(conn)
        conn.sendall(HEADER.pack(MAGIC, 512 << 20))  # and nothing more

    srv = _fake_server(behaviour)
    with srv:
        c = UnrealCVClient("127.0.0.1", srv.getsockname()[1], timeout=2)
        c.connect(attempts=1)
        start = time.perf_counter()
        with pytest.raises(ProtocolError, match=rf"frame of {512 << 20} bytes announced, over the limit of "
                                                rf"{MAX_PAYLOAD} bytes.*image over {MAX_IMAGE_SIDE} px a side"):
            c.request("vget /camera/1/lit png")
        assert time.perf_counter() - start < 1
        assert c.sock is None


def test_standin_answers_bad_image_sizes_with_an_error_and_keeps_serving(standin):
    with UnrealCVClient("127.0.0.1", standin.port, timeout=5) as c:
        c.request("vset /cameras/spawn")
        cam = len(c.request_text("vget /cameras").split()) - 1
        c.request(f"vset /camera/{cam}/size 8 6")
        for size in ("0 0", "16 0", "100000 100000", f"{MAX_IMAGE_SIDE + 1} 16", "9" * 5000 + " 16"):
            with pytest.raises(CommandError, match=rf"size .* is invalid: width and height must be 1 to "
                                                   rf"{MAX_IMAGE_SIDE} pixels"):
                c.request(f"vset /camera/{cam}/size {size}")
        assert decode_png_bgra(c.request(f"vget /camera/{cam}/lit png")).shape == (6, 8, 3)


@pytest.mark.parametrize("hog", ["silent", "dripping", "not reading"])
def test_standin_drops_a_stuck_client_so_the_next_one_is_served(box_room_module, hog):
    with StandinServer(box_room_module, precomputed=True, idle_timeout_s=0.5) as srv:
        stuck = socket.socket()
        stuck.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # before connecting: a small window
        stuck.connect(("127.0.0.1", srv.port))
        stuck.settimeout(3)
        assert recv_frame(stuck).startswith(b"connected")
        if hog == "dripping":
            threading.Thread(target=_drip, args=(stuck, HEADER.pack(MAGIC, 30) + b"0:vget /unrealcv/status"),
                             daemon=True).start()
        elif hog == "not reading":  # 64 MiB of replies that are never read
            stuck.sendall(b"".join(HEADER.pack(MAGIC, len(p)) + p for p in
                                   [b"0:vset /camera/0/size 512 512"] +
                                   [f"{i}:vget /camera/0/depth npy".encode() for i in range(1, 65)]))
        start = time.perf_counter()
        c = UnrealCVClient("127.0.0.1", srv.port, timeout=2)
        c.connect(attempts=6, backoff=0.1)  # refused while the stuck client is served
        assert "Is Listening" in c.request_text("vget /unrealcv/status")
        assert time.perf_counter() - start < 3
        c.close()
        stuck.close()


@pytest.mark.slow
def test_largest_image_fits_the_reply_limit(box_room_module):
    with StandinServer(box_room_module) as srv, UnrealCVClient("127.0.0.1", srv.port, timeout=60) as c:
        c.request("vset /cameras/spawn")
        side = MAX_IMAGE_SIDE
        depth = c.request_batch([f"vset /camera/1/size {side} {side}", "vget /camera/1/depth npy"])[1]
        assert np.load(io.BytesIO(depth)).shape == (side, side)
