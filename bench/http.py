"""HTTP benchmark: queries/s and mutations/s over HTTP beside the in-process client, and SSE.

Run ``python bench/http.py`` (about 20 seconds). The server is one uvicorn worker in a
subprocess (``capsule serve``'s stack: Starlette, JSON wire format, SQLite WAL with
``synchronous=NORMAL``). The load comes from this process: 8 concurrent clients, each on its
own keep-alive connection (a minimal HTTP/1.1 client, since httpx would spend more CPU than the
server), each sending its next request when the previous one answered. The in-process figures
use the async client (``app.client()``) with 8 concurrent tasks on a database of its own, in
the same run. The SSE figures are p50 / p90 over 200 mutations of (time the SSE event arrived -
time the mutation's HTTP response arrived), and of the whole trip from sending the mutation to
the event.

The load generator is Python too, so on a small machine it shares the CPU with the server:
the HTTP figures are what one client process gets, a floor of what the server can serve.
"""

# ruff: noqa: T201

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

# Run as a script, this file's folder comes first on sys.path and would shadow packages
# (``http``!): put the repository root there instead.
sys.path[0] = str(Path(__file__).resolve().parent.parent)

import anyio  # noqa: E402
import anyio.abc  # noqa: E402
import httpx  # noqa: E402

from core import App, HttpClient, MutationCtx, QueryCtx, Schema, SQLiteStorage, Table  # noqa: E402

CLIENTS = 8
SECONDS = 3.0
SSE_SAMPLES = 200

schema = Schema(
    tasks=Table({"text": str, "room": str}).index("by_room", ["room"]),
)


def make_app(path: str) -> App:
    """The benchmark's app on a SQLite file."""
    app = App(schema, storage=SQLiteStorage(path, synchronous="NORMAL"))

    @app.mutation(name="add")
    def add(ctx: MutationCtx, text: str, room: str = "load") -> str:
        return ctx.db.insert("tasks", {"text": text, "room": room})

    @app.query(name="get")
    def get(ctx: QueryCtx, id: str) -> dict[str, Any] | None:
        return ctx.db.get(id)

    @app.query(name="latest")
    def latest(ctx: QueryCtx, room: str) -> str | None:
        q = ctx.db.query("tasks").with_index("by_room", lambda q: q.eq("room", room))
        doc = q.order("desc").first()
        return None if doc is None else doc["text"]

    return app


def serve(db: str, port: int) -> None:
    """The server subprocess: one uvicorn worker."""
    import uvicorn

    from core.config import ServerSettings
    from core.server import create_asgi_app

    app = make_app(db)
    asgi = create_asgi_app(app, settings=ServerSettings(sse_ping_seconds=15))
    uvicorn.run(asgi, host="127.0.0.1", port=port, log_level="warning", access_log=False)


# -- load --------------------------------------------------------------------------------------


async def closed_loop(call: Any, seconds: float) -> float:
    """Calls/s of ``CLIENTS`` tasks each calling ``call(i)`` back to back for ``seconds``."""
    done = [0] * CLIENTS
    deadline = time.perf_counter() + seconds

    async def worker(i: int) -> None:
        while time.perf_counter() < deadline:
            await call(i)
            done[i] += 1

    start = time.perf_counter()
    async with anyio.create_task_group() as tg:
        for i in range(CLIENTS):
            tg.start_soon(worker, i)
    return sum(done) / (time.perf_counter() - start)


class Connection:
    """A minimal keep-alive HTTP/1.1 client: one connection, one request at a time.

    httpx spends more CPU per request than the server does, and on a small machine the load
    generator shares the CPU with the server; this one sends prepared bytes and reads the
    answer by its Content-Length, so the figure is the server's.
    """

    def __init__(self, stream: anyio.abc.ByteStream):
        self.stream = stream
        self.buffer = b""

    @classmethod
    async def open(cls, port: int) -> Connection:
        """Connect to the server."""
        return cls(await anyio.connect_tcp("127.0.0.1", port))

    @staticmethod
    def request(path: str, body: dict[str, Any]) -> bytes:
        """The bytes of a JSON POST request."""
        data = json.dumps(body).encode()
        head = (
            f"POST {path} HTTP/1.1\r\nHost: bench\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(data)}\r\n\r\n"
        )
        return head.encode() + data

    async def call(self, request: bytes) -> bytes:
        """Send a request; return the body of its (200) response."""
        await self.stream.send(request)
        while b"\r\n\r\n" not in self.buffer:
            self.buffer += await self.stream.receive()
        head, _, rest = self.buffer.partition(b"\r\n\r\n")
        length = int(head.lower().split(b"content-length:")[1].split(b"\r\n")[0])
        while len(rest) < length:
            rest += await self.stream.receive()
        if not head.startswith(b"HTTP/1.1 200"):
            raise SystemExit(f"unexpected answer: {head!r} {rest!r}")
        self.buffer = rest[length:]
        return rest[:length]


async def http_figures(url: str, port: int) -> tuple[float, float, list[tuple[float, float]]]:
    """Queries/s and mutations/s over HTTP, then the SSE delays."""
    conns = [await Connection.open(port) for _ in range(CLIENTS)]
    try:
        add = Connection.request("/api/mutation", {"path": "http:add", "args": {"text": "x"}})
        ids = [json.loads(await c.call(add))["value"] for c in conns]
        gets = [
            Connection.request("/api/query", {"path": "http:get", "args": {"id": i}}) for i in ids
        ]

        async def query(i: int) -> None:
            await conns[i].call(gets[i])

        async def mutation(i: int) -> None:
            await conns[i].call(add)

        await closed_loop(query, 0.5)  # warm up
        qps = await closed_loop(query, SECONDS)
        mps = await closed_loop(mutation, SECONDS)
    finally:
        for c in conns:
            await c.stream.aclose()
    return qps, mps, await sse_delays(url)


async def sse_delays(url: str) -> list[tuple[float, float]]:
    """(response -> event, request -> event) delays of ``SSE_SAMPLES`` mutations."""
    arrived: dict[str, float] = {}
    ready = anyio.Event()
    changed = anyio.Event()
    async with HttpClient(url) as sub, HttpClient(url) as writer:

        async def listen() -> None:
            async for text in sub.subscribe("http:latest", {"room": "sse"}):
                arrived[str(text)] = time.perf_counter()
                ready.set()
                changed.set()

        delays = []
        async with anyio.create_task_group() as tg:
            tg.start_soon(listen)
            await ready.wait()
            for n in range(SSE_SAMPLES):
                text = f"message {n}"
                sent = time.perf_counter()
                await writer.mutation("http:add", {"text": text, "room": "sse"})
                answered = time.perf_counter()
                with anyio.fail_after(10):
                    while text not in arrived:
                        await changed.wait()
                        changed = anyio.Event()
                delays.append((arrived[text] - answered, arrived[text] - sent))
            tg.cancel_scope.cancel()
    return delays


async def in_process_figures(path: str) -> tuple[float, float]:
    """Queries/s and mutations/s through the in-process async client."""
    app = make_app(path)
    async with app.client() as client:
        ids = [await client.mutation("http:add", {"text": "seed"}) for _ in range(CLIENTS)]

        async def query(i: int) -> None:
            await client.query("http:get", {"id": ids[i]})

        async def mutation(i: int) -> None:
            await client.mutation("http:add", {"text": "x"})

        await closed_loop(query, 0.5)
        qps = await closed_loop(query, SECONDS)
        mps = await closed_loop(mutation, SECONDS)
    return qps, mps


def wait_until_up(url: str, proc: subprocess.Popen[bytes]) -> None:
    """Poll until the server answers (bounded)."""
    deadline = time.monotonic() + 30
    while True:
        try:
            httpx.post(f"{url}/api/query", json={"path": "http:latest", "args": {"room": "x"}})
            return
        except httpx.TransportError:
            if proc.poll() is not None or time.monotonic() > deadline:
                raise SystemExit("the server did not start") from None
            time.sleep(0.05)


def main() -> None:
    """Run the server, measure, print the figures."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--db", help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        serve(args.db, args.port)
        return

    from core.server.background import free_port

    with tempfile.TemporaryDirectory(prefix="capsule-bench-http-") as tmp:
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parent.parent)}
        proc = subprocess.Popen(
            [
                sys.executable,
                __file__,
                "--serve",
                "--db",
                os.path.join(tmp, "http.db"),
                "--port",
                str(port),
            ],
            env=env,
        )
        try:
            wait_until_up(url, proc)
            http_q, http_m, delays = anyio.run(http_figures, url, port)
        finally:
            proc.terminate()
            proc.wait(20)
        local_q, local_m = anyio.run(in_process_figures, os.path.join(tmp, "local.db"))

    def p50_p90(values: list[float]) -> str:
        ms = [v * 1000 for v in values]
        return f"p50 {statistics.median(ms):.2f} ms, p90 {statistics.quantiles(ms, n=10)[8]:.2f} ms"

    print(
        f"{CLIENTS} concurrent clients, {SECONDS:g} s each, one uvicorn worker, SQLite WAL NORMAL"
    )
    print(f"{'':24}{'HTTP':>12}{'in-process':>14}{'HTTP / in-process':>20}")
    print(f"{'queries/s (point get)':24}{http_q:>12,.0f}{local_q:>14,.0f}{http_q / local_q:>20.2f}")
    print(f"{'mutations/s (insert)':24}{http_m:>12,.0f}{local_m:>14,.0f}{http_m / local_m:>20.2f}")
    print(f"SSE, {SSE_SAMPLES} mutations each changing a subscribed query's result:")
    print(f"  mutation's HTTP response -> SSE event: {p50_p90([d[0] for d in delays])}")
    print("  (a negative delay: the event arrived before the mutation's own response)")
    print(f"  mutation request sent -> SSE event:    {p50_p90([d[1] for d in delays])}")


if __name__ == "__main__":
    main()
