"""``host:port`` addresses (UnrealCV endpoints, Ray cluster addresses), parsed in one place."""

from __future__ import annotations


def parse_host_port(text: str, what: str = "address") -> tuple[str, int]:
    """``(host, port)`` of ``host:port`` (``[v6]:port`` too); a ValueError names ``what`` and the expected form."""
    host, sep, port = str(text).strip().rpartition(":")
    host = host.removeprefix("[").removesuffix("]")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"{what} {text!r} must be host:port with a port in 1-65535, e.g. 127.0.0.1:9000")
    return host, int(port)


def is_host_port(text: str) -> bool:
    """Whether ``text`` is a ``host:port`` address (rather than e.g. ``auto``)."""
    try:
        parse_host_port(text)
    except ValueError:
        return False
    return True
