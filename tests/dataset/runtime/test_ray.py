"""The private local Ray cluster binds 127.0.0.1 only: nothing of it is reachable from another machine."""

from __future__ import annotations

import ipaddress
import os
import socket
from pathlib import Path

import pytest

from dataset.runtime.ray import LOOPBACK, init_ray

ray = pytest.importorskip("ray")


def _tcp_listeners() -> dict[int, tuple[str, int]]:
    """Socket inode -> (address, port) of every listening TCP socket of this network namespace."""
    found = {}
    for table, width in (("/proc/net/tcp", 4), ("/proc/net/tcp6", 16)):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            if fields[3] != "0A":  # LISTEN
                continue
            hex_ip, hex_port = fields[1].split(":")
            raw = bytes.fromhex(hex_ip)  # 32-bit words in host (little-endian) order
            packed = b"".join(raw[i : i + 4][::-1] for i in range(0, width, 4))
            found[int(fields[9])] = (socket.inet_ntop(socket.AF_INET if width == 4 else socket.AF_INET6, packed),
                                     int(hex_port, 16))
    return found


def _processes() -> dict[int, tuple[int, str]]:
    """pid -> (parent pid, name) of every process."""
    procs = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            text = stat.read_text()
        except OSError:  # it ended
            continue
        name, rest = text[text.index("(") + 1 : text.rindex(")")], text[text.rindex(")") + 2 :].split()
        procs[int(stat.parent.name)] = (int(rest[1]), name)
    return procs


def _socket_inodes(pid: int) -> set[int]:
    inodes = set()
    try:
        for fd in Path(f"/proc/{pid}/fd").iterdir():
            target = os.readlink(fd)
            if target.startswith("socket:["):
                inodes.add(int(target[8:-1]))
    except OSError:  # it ended, or a descriptor closed while listed
        pass
    return inodes


def _listening(pids: dict[int, str]) -> list[tuple[str, str, int]]:
    """(process name, address, port) of every listening TCP socket the processes ``pids`` hold."""
    listeners = _tcp_listeners()
    return sorted({(name, *listeners[i]) for pid, name in pids.items() for i in _socket_inodes(pid) if i in listeners})


def _descendants(root: int) -> dict[int, str]:
    procs = _processes()
    found, todo = {}, [root]
    while todo:
        parent = todo.pop()
        for pid, (ppid, name) in procs.items():
            if ppid == parent and pid not in found:
                found[pid] = name
                todo.append(pid)
    return found


def _is_loopback_v4(address: str) -> bool:
    ip = ipaddress.ip_address(address)
    return str(getattr(ip, "ipv4_mapped", None) or ip) == LOOPBACK  # IPv6 sockets may hold ::ffff:127.0.0.1


@pytest.mark.slow  # starts its own Ray cluster (5-20 s)
@pytest.mark.skipif(not Path("/proc/net/tcp").exists(), reason="reads sockets from Linux /proc")
def test_local_cluster_listens_on_loopback_only():
    if ray.is_initialized():
        ray.shutdown()  # a cluster some earlier test started its own way
    before = _listening({os.getpid(): "driver"})
    init_ray(None, 2)
    try:
        ray.get(ray.remote(lambda: 1).remote())  # a worker process starts, with its own gRPC server
        sockets = [s for s in _listening({os.getpid(): "driver", **_descendants(os.getpid())}) if s not in before]
    finally:
        ray.shutdown()
    names = {name for name, _, _ in sockets}
    assert {"gcs_server", "raylet"} <= names, f"Ray's core processes are among those found: {sockets}"
    exposed = [s for s in sockets if not _is_loopback_v4(s[1])]
    assert not exposed, f"listening beyond {LOOPBACK}: {exposed}"
