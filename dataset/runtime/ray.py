"""Starting or joining Ray: a private local cluster by default, an existing one when given its address."""

from __future__ import annotations

import socket

from dataset.core.addresses import is_host_port, parse_host_port
from dataset.core.jobspec import JobError


class ClusterError(JobError):
    """Ray cannot be started or its cluster joined; the message says which address to use."""


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
        ray.init(address="local", num_cpus=workers, include_dashboard=False, log_to_driver=False,
                 configure_logging=False)
    return ray
