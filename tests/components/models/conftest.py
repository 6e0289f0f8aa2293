"""Fixtures for the model plumbing: outbound network blocked, an OpenAI-compatible server."""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Iterator
from typing import Any

import pytest

from components.models.testing import OpenAITestServer


def _is_local(host: object) -> bool:
    if not isinstance(host, str):
        return False
    if host in ("localhost", ""):
        return True
    try:
        return ipaddress.ip_address(host.split("%")[0]).is_loopback
    except ValueError:
        return False


class NetworkAttempts(list[str]):
    """Outbound connections (and name lookups) that were refused during a test."""


@pytest.fixture(autouse=True)
def network_attempts(monkeypatch: pytest.MonkeyPatch) -> NetworkAttempts:
    """Refuse every connection and lookup beyond loopback (STYLE T7), and record the tries."""
    attempts = NetworkAttempts()
    real_connect = socket.socket.connect
    real_connect_ex = socket.socket.connect_ex
    real_getaddrinfo = socket.getaddrinfo

    def allowed(address: Any) -> bool:
        if isinstance(address, str | bytes):  # A Unix socket path: local by definition.
            return True
        if _is_local(address[0]):
            return True
        attempts.append(repr(address))
        return False

    def connect(self: socket.socket, address: Any) -> None:
        if not allowed(address):
            raise OSError(f"Outbound network is blocked in tests: {address!r}")
        real_connect(self, address)

    def connect_ex(self: socket.socket, address: Any) -> int:
        if not allowed(address):
            raise OSError(f"Outbound network is blocked in tests: {address!r}")
        return real_connect_ex(self, address)

    def getaddrinfo(host: Any, *args: Any, **kwargs: Any) -> Any:
        if host is not None and not _is_local(host if isinstance(host, str) else None):
            attempts.append(f"lookup {host!r}")
            raise socket.gaierror(f"Outbound network is blocked in tests: lookup of {host!r}")
        return real_getaddrinfo(host, *args, **kwargs)

    monkeypatch.setattr(socket.socket, "connect", connect)
    monkeypatch.setattr(socket.socket, "connect_ex", connect_ex)
    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    return attempts


@pytest.fixture(scope="module")
def _running_server() -> Iterator[OpenAITestServer]:
    with OpenAITestServer() as server:
        yield server


@pytest.fixture
def server(_running_server: OpenAITestServer) -> Iterator[OpenAITestServer]:
    """The module's OpenAI-compatible test server, with an empty script and no requests."""
    _running_server.reset()
    _running_server.chunk_size = 8
    _running_server.interleave_tool_calls = False
    yield _running_server
    _running_server.reset()
