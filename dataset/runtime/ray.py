"""Starting or joining Ray: a private local cluster by default, an existing one when given its address.

The private cluster listens on 127.0.0.1 only: no other machine can reach its gRPC, metrics or agent ports.
"""

from __future__ import annotations

import socket

from dataset.core.addresses import is_host_port, parse_host_port
from dataset.core.jobspec import JobError


class ClusterError(JobError):
    """Ray cannot be started or its cluster joined; the message says which address to use."""


LOOPBACK = "127.0.0.1"
"""The address every process of the private local cluster binds."""


def probe_address(address: str, timeout: float = 10.0) -> None:
    """Fail fast with a clear error when a host:port cluster address does not accept connections
    (Ray itself retries for minutes). ``auto`` and other forms are left to Ray."""
    hostport = address.removeprefix("ray://")
    if not is_host_port(hostport):
        return
    host, port = parse_host_port(hostport)
    try:
        socket.create_connection((host, port), timeout=timeout).close()
    except OSError as exc:
        raise ClusterError(f"cannot join the Ray cluster at {address!r}: nothing answers there "
                           f"({exc.strerror or exc}); use the address `ray status` prints on the head node, or "
                           f"'auto' on a cluster node") from None


def init_ray(address: str | None, workers: int | None):
    """Ray, joined at ``address`` or started here with ``workers`` CPUs (all when None); already running: as is."""
    import ray

    if address:
        probe_address(address)  # even when Ray runs already: a wrong address is an error, not ignored
    if ray.is_initialized():
        return ray
    if address:
        try:
            ray.init(address=address, log_to_driver=False)
        except (ConnectionError, RuntimeError, ValueError) as exc:
            raise ClusterError(f"cannot join the Ray cluster at {address!r}: {' '.join(str(exc).split())} (use the "
                               f"address `ray status` prints on the head node, 'auto' on a cluster node, or "
                               f"ray://HOST:10001 for Ray Client)") from None
    else:
        _init_local(ray, workers)
    return ray


def _init_local(ray, workers: int | None) -> None:
    """Start a private one-node cluster bound to ``LOOPBACK``.

    On Linux ``ray.init`` turns a ``_node_ip_address`` of 127.0.0.1 into this machine's routable address (a
    local node is meant to take joiners) unless Ray's cluster mode is off, as it is on Windows and macOS; it
    is switched off for the start only, so its processes get 127.0.0.1 and bind it. Ray's own processes read
    their address from their command line, so joining other clusters later in this process is unaffected."""
    from ray._private import ray_constants

    clusters = getattr(ray_constants, "ENABLE_RAY_CLUSTER", None)  # a private flag: tests/dataset/runtime/test_ray.py
    if clusters is not None:                                        # fails if a Ray version binds elsewhere
        ray_constants.ENABLE_RAY_CLUSTER = False
    try:
        ray.init(address="local", num_cpus=workers, include_dashboard=False, log_to_driver=False,
                 configure_logging=False, _node_ip_address=LOOPBACK)
    finally:
        if clusters is not None:
            ray_constants.ENABLE_RAY_CLUSTER = clusters
