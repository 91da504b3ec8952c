"""The UnrealCV protocol client and stand-in: framing, pipelining, quirks, and clear errors instead of hangs."""

from __future__ import annotations

import socket
import threading
import time

import numpy as np
import pytest

from ue_plugin.protocol import CommandError, ConnectionLost, ProtocolError, UnrealCVClient
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
        import io

        assert np.load(io.BytesIO(depth)).ndim == 2
    finally:
        client.disconnect()
