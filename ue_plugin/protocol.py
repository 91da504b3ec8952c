"""The UnrealCV wire protocol: framing, and a client with a deadline on every request and pipelined requests.

Frames are a little-endian uint32 magic ``0x9E2B83C1``, a uint32 payload length, then the payload. On
connect the server sends ``connected to <project>``; requests are ``"<id>:<command>"`` with ids counting
up, and replies come back as ``"<id>:<body>"`` in request order. Bodies are text (``ok``,
``error <message>``, numbers) or raw bytes (PNG, NPY).

Why not the ``unrealcv`` PyPI client (1.3.2): its ``connect`` waits forever for a greeting and
``request_batch`` for replies (a hung instance hangs the job), and it depends on the GUI build of
OpenCV and on ``docker``. This client speaks the same protocol (the tests run the ``unrealcv`` client
against our stand-in server to keep both honest) with explicit timeouts, id checks and reconnects.

Limits (a hung or hostile peer costs at most the timeout and the memory of one largest reply):

- ``timeout``: the whole budget of one request (send and full reply) and of connecting (with the greeting).
- ``MAX_IMAGE_SIDE`` = 2048 px: largest image side asked for (cube faces of equirects up to 8192 px wide).
- ``MAX_PAYLOAD`` = 32 MiB: largest frame accepted, twice a BGRA or float32 image of that side.
"""

from __future__ import annotations

import socket
import struct
import time
from collections.abc import Sequence

from dataset.core.jobspec import MAX_UNREAL_WIDTH

MAGIC = 0x9E2B83C1
HEADER = struct.Struct("<II")
MAX_IMAGE_SIDE = MAX_UNREAL_WIDTH // 4
"""Largest image width or height (px) the backend asks for and the stand-in renders (2048): cube faces of the
widest equirect the unreal renderer makes."""
MAX_PAYLOAD = 2 * 4 * MAX_IMAGE_SIDE**2
"""Largest frame accepted (32 MiB): twice the 4 bytes per pixel of the largest BGRA PNG or float32 NPY image;
a bigger announced length is refused before anything is read."""


class UnrealCVError(RuntimeError):
    """Base of the errors talking to an UnrealCV server; messages say which endpoint and what to do."""


class ProtocolError(UnrealCVError):
    """The peer does not speak the UnrealCV protocol (bad magic, bad reply id, no greeting)."""


class CommandError(UnrealCVError):
    """The server answered ``error ...`` to a command."""


class ConnectionLost(UnrealCVError):
    """The connection could not be made, timed out or was closed."""


def send_frame(sock: socket.socket, payload: bytes) -> None:
    """Send one framed payload."""
    sock.sendall(HEADER.pack(MAGIC, len(payload)) + payload)


def _recv_exact(sock: socket.socket, n: int, deadline: float | None) -> bytes:
    """``n`` bytes; TimeoutError once ``deadline`` (``time.monotonic``) passes, however the bytes trickle in."""
    chunks, got = [], 0
    while got < n:
        if deadline is not None:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError
            sock.settimeout(left)
        chunk = sock.recv(min(n - got, 1 << 20))
        if not chunk:
            raise ConnectionLost("connection closed by the peer")
        chunks.append(chunk)
        got += len(chunk)
    return b"".join(chunks)


def recv_frame(sock: socket.socket, deadline: float | None = None, max_size: int = MAX_PAYLOAD) -> bytes:
    """Receive one framed payload of at most ``max_size`` bytes, complete by ``deadline`` (``time.monotonic``;
    it sets the socket's timeout) or TimeoutError; without a deadline the socket's timeout applies per read."""
    magic, size = HEADER.unpack(_recv_exact(sock, HEADER.size, deadline))
    if magic != MAGIC:
        raise ProtocolError(f"bad frame magic 0x{magic:08X} (expected 0x{MAGIC:08X}): not an UnrealCV server")
    if size > max_size:
        raise ProtocolError(f"frame of {size} bytes announced, over the limit of {max_size} bytes: "
                            f"not an UnrealCV server, or an image over {MAX_IMAGE_SIDE} px a side")
    return _recv_exact(sock, size, deadline)


class UnrealCVClient:
    """One connection to one UnrealCV server.

    ``request`` sends one command; ``request_batch`` pipelines many (all sent, then all replies read),
    which is what makes per-frame capture fast: the server runs up to 32 requests per game tick.
    ``timeout`` is the budget of each request from sending it to its full reply (in a batch, each reply has
    ``timeout`` seconds from the one before), and of each connection attempt up to the full greeting;
    ``connect`` retries with exponential backoff.
    """

    def __init__(self, host: str, port: int, timeout: float = 30.0) -> None:
        self.host, self.port, self.timeout = host, port, timeout
        self.endpoint = f"{host}:{port}"
        self.sock: socket.socket | None = None
        self.greeting = ""
        self._next_id = 0

    def connect(self, attempts: int = 5, backoff: float = 0.5) -> str:
        """Connect and read the greeting; retries refused/unanswered connections with backoff."""
        last: Exception | None = None
        for attempt in range(attempts):
            try:
                return self._connect_once()
            except ProtocolError:
                self.close()
                raise
            except (OSError, ConnectionLost) as exc:
                self.close()
                last = exc
                if attempt + 1 < attempts:
                    time.sleep(backoff * 2**attempt)
        raise ConnectionLost(f"cannot connect to UnrealCV at {self.endpoint} after {attempts} attempts ({last}): "
                             f"is the game running with -UnrealCVPort {self.port}?")

    def _connect_once(self) -> str:
        deadline = time.monotonic() + self.timeout
        sock = socket.create_connection((self.host, self.port), timeout=self.timeout)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.sock = sock
        try:
            greeting = recv_frame(sock, deadline)
        except TimeoutError:
            raise ConnectionLost(f"{self.endpoint} accepted the connection but sent no greeting within "
                                 f"{self.timeout} s (another client connected, or the game is stuck)") from None
        if not greeting.startswith(b"connected"):
            raise ProtocolError(f"{self.endpoint} greeted with {greeting[:60]!r}, not 'connected to ...': "
                                f"not an UnrealCV server, or it refused this client")
        self.greeting = greeting.decode(errors="replace")
        self._next_id = 0
        return self.greeting

    def close(self) -> None:
        if self.sock is not None:
            try:
                self.sock.close()
            finally:
                self.sock = None

    def __enter__(self) -> UnrealCVClient:
        if self.sock is None:
            self.connect()
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def request(self, command: str) -> bytes:
        """Send one command, return its raw reply body; ``error ...`` replies raise CommandError."""
        return self.request_batch([command])[0]

    def request_text(self, command: str) -> str:
        return self.request(command).decode(errors="replace").strip()

    def request_batch(self, commands: Sequence[str], check: bool = True) -> list[bytes]:
        """Pipeline commands: send all, then read the replies in order (ids checked), each within ``timeout``."""
        if self.sock is None:
            raise ConnectionLost(f"not connected to {self.endpoint}")
        first = self._next_id
        try:
            late, deadline = next(iter(commands), ""), time.monotonic() + self.timeout
            self.sock.settimeout(self.timeout)  # sendall: a total, not per send
            self.sock.sendall(b"".join(HEADER.pack(MAGIC, len(p)) + p for p in
                                       (f"{first + i}:{c}".encode() for i, c in enumerate(commands))))
            self._next_id += len(commands)
            replies = []
            for i, command in enumerate(commands):
                late = command
                payload = recv_frame(self.sock, deadline)
                deadline = time.monotonic() + self.timeout
                head, sep, body = payload.partition(b":")
                if not sep or not head.isdigit():
                    raise ProtocolError(f"{self.endpoint} sent a reply without an id: {payload[:60]!r}")
                if int(head) != first + i:
                    raise ProtocolError(f"{self.endpoint} answered id {int(head)} where {first + i} was expected "
                                        f"(to {command!r}): replies are out of step")
                replies.append(body)
        except TimeoutError:
            self.close()
            raise ConnectionLost(f"{self.endpoint} did not answer {late!r} (batch of {len(commands)}) "
                                 f"within {self.timeout} s") from None
        except (OSError, ConnectionLost) as exc:
            self.close()
            raise ConnectionLost(f"connection to {self.endpoint} lost: {exc}") from None
        except ProtocolError:
            self.close()
            raise
        if check:  # every reply is read first, so an error leaves the stream in step
            for command, body in zip(commands, replies, strict=True):
                if body.startswith(b"error"):
                    raise CommandError(f"{self.endpoint}: {command!r} failed: {body.decode(errors='replace')}")
        return replies
