"""An UnrealCV stand-in: the real wire protocol and the commands the backend uses, answered by the
embedded renderer in Unreal's formats (cm, left-handed, rotators, BGRA PNG, planar depth through float16).

It makes dry runs of a whole cluster set-up possible without Unreal and is what the tests run against.
Like the real server it serves one client at a time (a second connection is closed at once), answers
requests in order, and emulates the known quirks: camera 0 (the player pawn) returns the image it
rendered first (stale), and depth is planar centimetres rounded through float16.

    matrix-pano unreal standin SCENE --port 9000

Limits (a bad or stuck client gets an ``error ...`` reply or is dropped; it cannot hold or sink the server):

- ``IDLE_TIMEOUT_S`` = 300 s (``idle_timeout_s``): a client that sends no request or reads no reply as long is dropped.
- ``MAX_REQUEST_BYTES`` = 64 KiB: largest request frame; a bigger one drops the client.
- ``protocol.MAX_IMAGE_SIDE`` = 2048 px: ``vset /camera/N/size W H`` outside 1..2048 answers ``error ...``.
"""

from __future__ import annotations

import io
import math
import re
import select
import socket
import threading
import time

import numpy as np

from dataset.core.conventions import range_to_planar, ue_pose_to_c2w, world_to_ue
from ue_plugin.protocol import MAX_IMAGE_SIDE, ConnectionLost, ProtocolError, recv_frame, send_frame

PROJECT = "MatrixPanoStandin"
TICK_REQUESTS = 32
"""Requests the real server executes per game tick."""
IDLE_TIMEOUT_S = 300.0
"""Seconds a client may take to send its next full request, or to read a reply, before it is dropped."""
MAX_REQUEST_BYTES = 1 << 16
"""Largest request frame (64 KiB; commands are a line of text)."""


def _numbers(values) -> bytes:
    """Numbers as the server prints them (``%.3f``, space separated)."""
    return " ".join(f"{float(v):.3f}" for v in values).encode()


class _Camera:
    def __init__(self, name: str) -> None:
        self.name = name
        self.location = np.zeros(3)
        self.rotation = (0.0, 0.0, 0.0)
        self.fov = 90.0
        self.size = (640, 480)
        self.stale: dict[str, bytes] = {}


class StandinServer:
    """Serves one scene on ``host:port`` in a background thread (``start``/``stop``, or a ``with`` block)."""

    def __init__(self, scene, host: str = "127.0.0.1", port: int = 0, precomputed: bool = False,
                 renderer=None, tick_s: float = 0.0, idle_timeout_s: float = IDLE_TIMEOUT_S) -> None:
        from dataset.render.embedded import EmbeddedRenderer, RenderSettings

        self.scene = scene
        self.renderer = renderer or EmbeddedRenderer(scene, RenderSettings(threads=1))
        self.precomputed = precomputed
        """Answer every image request with one precomputed image (measures pure protocol cost)."""
        self.tick_s = tick_s
        """Game-tick emulation: at most TICK_REQUESTS requests per tick of this many seconds (0 = off)."""
        self.idle_timeout_s = idle_timeout_s
        """A client that sends no full request, or reads no reply, for this many seconds is dropped."""
        self.cameras = [_Camera("PlayerCameraManager")]
        self._listener = socket.create_server((host, port))
        self.host, self.port = self._listener.getsockname()[:2]
        self._busy = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._cache: dict[tuple, bytes] = {}
        self.requests = 0

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> StandinServer:
        self._thread = threading.Thread(target=self.serve_forever, daemon=True, name=f"standin:{self.port}")
        self._thread.start()
        return self

    def serve_forever(self) -> None:
        self._listener.settimeout(0.2)
        while not self._stop.is_set():
            try:
                conn, _ = self._listener.accept()
            except (TimeoutError, OSError):
                continue
            if not self._busy.acquire(blocking=False):
                conn.close()  # one client at a time, as the real server
                continue
            threading.Thread(target=self._serve_client, args=(conn,), daemon=True).start()

    def stop(self) -> None:
        self._stop.set()
        self._listener.close()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def __enter__(self) -> StandinServer:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    # ------------------------------------------------------------------ protocol

    def _serve_client(self, conn: socket.socket) -> None:
        try:
            conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            conn.settimeout(self.idle_timeout_s)
            send_frame(conn, f"connected to {PROJECT}".encode())
            in_tick = 0
            while not self._stop.is_set():
                payload = recv_frame(conn, time.monotonic() + self.idle_timeout_s, MAX_REQUEST_BYTES)
                head, sep, command = payload.partition(b":")
                if not sep or not head.isdigit():
                    continue  # the real server drops requests without an id
                if self.tick_s and in_tick == 0:  # a new batch waits for the next game tick
                    now = time.perf_counter()
                    time.sleep(math.ceil(now / self.tick_s) * self.tick_s - now)
                self.requests += 1
                reply = head + b":" + self.handle(command.decode(errors="replace").strip())
                conn.settimeout(self.idle_timeout_s)  # sendall: a total for the whole reply
                send_frame(conn, reply)
                if self.tick_s:  # up to TICK_REQUESTS per tick, while more requests are already waiting
                    in_tick += 1
                    if in_tick >= TICK_REQUESTS or not select.select([conn], [], [], 0)[0]:
                        in_tick = 0
        except (ConnectionLost, ProtocolError, OSError):
            pass
        finally:
            conn.close()
            self._busy.release()

    def handle(self, command: str) -> bytes:
        """The reply body to one command."""
        try:
            for pattern, method in self._routes:
                m = re.fullmatch(pattern, command)
                if m:
                    return method(self, *m.groups())
        except (ValueError, IndexError) as exc:
            return f"error {exc}".encode()
        return f"error Can not find a handler for this request: {command}".encode()

    def _camera(self, n: str) -> _Camera:
        i = int(n)
        if not 0 <= i < len(self.cameras):
            raise IndexError(f"camera {i} does not exist (there are {len(self.cameras)})")
        return self.cameras[i]

    def _status(self) -> bytes:
        return f"Is Listening\nClient Connected\n{self.port}\nConfiguration\nPort: {self.port}\n".encode()

    def _spawn(self) -> bytes:
        cam = _Camera(f"FusionCameraActor_{len(self.cameras)}")
        self.cameras.append(cam)
        return cam.name.encode()

    def _list(self) -> bytes:
        return ("".join(c.name + " " for c in self.cameras)).encode()

    def _set_location(self, n: str, x: str, y: str, z: str) -> bytes:
        self._camera(n).location = np.array([float(x), float(y), float(z)])
        return b"ok"

    def _get_location(self, n: str) -> bytes:
        return _numbers(self._camera(n).location)

    def _set_rotation(self, n: str, p: str, y: str, r: str) -> bytes:
        self._camera(n).rotation = (float(p), float(y), float(r))
        return b"ok"

    def _get_rotation(self, n: str) -> bytes:
        return _numbers(self._camera(n).rotation)

    def _set_fov(self, n: str, fov: str) -> bytes:
        self._camera(n).fov = float(fov)
        return b"ok"

    def _set_size(self, n: str, w: str, h: str) -> bytes:
        cam = self._camera(n)
        size = tuple(int(v) if len(v) < 10 else 0 for v in (w, h))  # int() refuses thousands of digits
        if not all(0 < v <= MAX_IMAGE_SIDE for v in size):
            raise ValueError(f"size {w[:10]} {h[:10]} is invalid: width and height must be 1 to {MAX_IMAGE_SIDE} "
                             f"pixels")
        cam.size = size
        return b"ok"

    def _set_illumination(self, n: str, mode: str) -> bytes:
        self._camera(n)
        return b"ok"

    def _render(self, cam: _Camera):
        w, h = cam.size
        c2w = ue_pose_to_c2w(cam.location, cam.rotation)
        return self.renderer.render_perspective(c2w, w, h, cam.fov)

    def _image(self, n: str, kind: str) -> bytes:
        cam = self._camera(n)
        if int(n) == 0 and kind in cam.stale:
            return cam.stale[kind]  # the pawn's camera does not update
        if self.precomputed:
            key = (kind, cam.size)
            if key not in self._cache:
                self._cache[key] = self._encode(kind, cam)
            data = self._cache[key]
        else:
            data = self._encode(kind, cam)
        if int(n) == 0:
            cam.stale[kind] = data
        return data

    def _encode(self, kind: str, cam: _Camera) -> bytes:
        frames = self._render(cam)
        buf = io.BytesIO()
        if kind == "lit":
            from PIL import Image

            rgb = frames.rgb[0]
            bgra = np.concatenate([rgb[..., ::-1], np.full(rgb.shape[:2] + (1,), 255, np.uint8)], axis=2)
            Image.fromarray(bgra, "RGBA").save(buf, "PNG", compress_level=1)
        else:
            planar_cm = range_to_planar(frames.depth[0], cam.fov) * 100.0
            planar_cm[frames.depth[0] <= 0] = 65504.0  # no hit: the far value of a float16 target
            np.save(buf, planar_cm.astype(np.float16).astype(np.float32))
        return buf.getvalue()

    def _objects(self) -> bytes:
        return " ".join(o.name.replace(" ", "_") for o in self.scene.objects).encode()

    def _bounds(self, name: str) -> bytes:
        names = [o.name.replace(" ", "_") for o in self.scene.objects]
        if name not in names:
            raise ValueError(f"object {name} not found")
        lo, hi = self.scene.object_bounds()[names.index(name)]
        a, b = world_to_ue(np.asarray(lo)), world_to_ue(np.asarray(hi))
        return _numbers(np.concatenate([np.minimum(a, b), np.maximum(a, b)]))

    _routes = [
        (r"vget /unrealcv/status", _status),
        (r"vset /cameras/spawn", _spawn),
        (r"vget /cameras", _list),
        (r"vset /camera/(\d+)/location (\S+) (\S+) (\S+)", _set_location),
        (r"vget /camera/(\d+)/location", _get_location),
        (r"vset /camera/(\d+)/rotation (\S+) (\S+) (\S+)", _set_rotation),
        (r"vget /camera/(\d+)/rotation", _get_rotation),
        (r"vset /camera/(\d+)/fov (\S+)", _set_fov),
        (r"vset /camera/(\d+)/size (\d+) (\d+)", _set_size),
        (r"vset /camera/(\d+)/illumination (\S+)", _set_illumination),
        (r"vget /camera/(\d+)/(lit) png", _image),
        (r"vget /camera/(\d+)/(depth) npy", _image),
        (r"vget /objects", _objects),
        (r"vget /object/(\S+)/bounds", _bounds),
    ]
