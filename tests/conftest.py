from __future__ import annotations

import ipaddress
import socket
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

pytest_plugins = ["core.testing.fixtures"]


@pytest.fixture(scope="session")
def anyio_backend() -> str:
    return "asyncio"


# -- outbound network is blocked (STYLE.md T7) --------------------------------------------------

_LOOPBACK_NAMES = {"localhost", "localhost.localdomain", "ip6-localhost"}


def _is_loopback(address: Any) -> bool:
    if not isinstance(address, tuple) or not address:
        return True  # AF_UNIX paths and other families: local by nature
    host = address[0]
    if isinstance(host, bytes):
        host = host.decode()
    if not isinstance(host, str):
        return False
    if host.lower() in _LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host.split("%")[0]).is_loopback
    except ValueError:
        return False  # a host name other than localhost


def _refuse(address: Any) -> None:
    raise ConnectionRefusedError(
        f"Outbound network is blocked in tests: connecting to {address!r}; only loopback "
        "(127.0.0.1, ::1, localhost) is allowed. Use a local fake (e.g. the "
        "OpenAI-compatible test server)."
    )


_real_connect = socket.socket.connect
_real_connect_ex = socket.socket.connect_ex
_real_getaddrinfo = socket.getaddrinfo


def _connect(self: Any, address: Any) -> None:
    if self.family in (socket.AF_INET, socket.AF_INET6) and not _is_loopback(address):
        _refuse(address)
    _real_connect(self, address)


def _connect_ex(self: Any, address: Any) -> int:
    if self.family in (socket.AF_INET, socket.AF_INET6) and not _is_loopback(address):
        return 111  # ECONNREFUSED
    return _real_connect_ex(self, address)


def _getaddrinfo(host: Any, *args: Any, **kwargs: Any) -> Any:
    # Refuse name lookups of other hosts too: a DNS query is outbound traffic.
    if host is not None and not _is_loopback((host,)):
        _refuse((host, *args[:1]))
    return _real_getaddrinfo(host, *args, **kwargs)


@pytest.fixture(scope="session", autouse=True)
def _block_outbound_network() -> Iterator[None]:
    socket.socket.connect = _connect  # type: ignore[method-assign]
    socket.socket.connect_ex = _connect_ex  # type: ignore[method-assign]
    socket.getaddrinfo = _getaddrinfo
    try:
        yield
    finally:
        socket.socket.connect = _real_connect  # type: ignore[method-assign]
        socket.socket.connect_ex = _real_connect_ex  # type: ignore[method-assign]
        socket.getaddrinfo = _real_getaddrinfo


def _wait_for(predicate: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        time.sleep(0.005)


@pytest.fixture
def wait_for() -> Callable[..., None]:
    """Poll a condition until it holds (bounded): waiting on state, not on time."""
    return _wait_for
