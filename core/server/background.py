"""Owns ``BackgroundServer``: uvicorn serving an ASGI app from a thread, on a free local port.

For tests, benchmarks and notebooks: ``with BackgroundServer(asgi) as server:`` returns once
uvicorn accepts connections (waiting on its ``started`` flag, bounded), and stops it (running
the lifespan's shutdown) on exit.
"""

from __future__ import annotations

import socket
import threading
import time
from typing import Any

import uvicorn


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


class BackgroundServer:
    """Run an ASGI app under uvicorn in a daemon thread on ``host`` and a free port.

    Args:
        asgi: the ASGI app (``create_asgi_app(app)``).
        host: the interface to listen on.
        port: the port (default: a free one).
        timeout: seconds to wait for startup and for shutdown.
        config: further ``uvicorn.Config`` options.
    """

    def __init__(
        self,
        asgi: Any,
        *,
        host: str = "127.0.0.1",
        port: int | None = None,
        timeout: float = 20.0,
        **config: Any,
    ):
        self.host = host
        self.port = port or free_port(host)
        self.timeout = timeout
        options = {"log_level": "warning", "lifespan": "on", **config}
        self._server = uvicorn.Server(uvicorn.Config(asgi, host=host, port=self.port, **options))
        self._thread = threading.Thread(
            target=self._server.run, name="capsule-uvicorn", daemon=True
        )

    @property
    def url(self) -> str:
        """The server's base URL, e.g. ``http://127.0.0.1:51234``."""
        return f"http://{self.host}:{self.port}"

    def start(self) -> None:
        """Start serving; return once connections are accepted.

        Raises:
            RuntimeError: uvicorn failed to start (its error is in the log) or timed out.
        """
        self._thread.start()
        deadline = time.monotonic() + self.timeout
        while not self._server.started:
            if not self._thread.is_alive():
                raise RuntimeError("uvicorn stopped during startup; see the log above.")
            if time.monotonic() > deadline:
                raise RuntimeError(f"uvicorn did not start within {self.timeout:g} s.")
            self._thread.join(0.01)

    def stop(self) -> None:
        """Shut down (lifespan shutdown included) and wait for the thread."""
        self._server.should_exit = True
        self._thread.join(self.timeout)

    def __enter__(self) -> BackgroundServer:
        self.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stop()
