"""Agent benchmark: per-step overhead beside two peers, and delta-to-subscriber delay.

Per-step framework overhead is measured beside the OpenAI Agents SDK and Pydantic AI; the
delay is from a streamed delta being produced to a following subscriber seeing it.

Run ``python bench/agent.py`` (about a minute; the peers come from the ``bench`` extra:
``pip install -e '.[bench]'``). Every framework runs the same two-step tool conversation
(model → tool call → tool → model → text) with its own fake model, no network:

* ours: ``Agent.generate_text`` on a fresh thread per run with a scripted model, every
  message persisted (user, assistant with the call, tool result, assistant text: five
  transactions per run) in a SQLite file (WAL, ``synchronous=NORMAL`` and ``FULL``);
* OpenAI Agents SDK: ``Runner.run`` with ``agents.testing.ScriptedModel``, tracing off,
  nothing persisted;
* Pydantic AI: ``Agent.run`` with ``FunctionModel``, nothing persisted.

Figures are per model call (a "step"): the median run divided by two. Each side runs
alternating rounds and keeps its best, so load from elsewhere does not decide the ratio.

The streaming part measures, for each text delta a scripted model produces, the time until
a subscriber to ``stream_deltas`` (another client of the same app) sees it: p50 and p90,
with the persist throttle off (every delta written at once) and at its default (0.25 s).
"""

# ruff: noqa: T201

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import anyio

sys.path[0] = str(Path(__file__).resolve().parent.parent)

from components.agent import Agent, StreamDeltas, component, tool  # noqa: E402
from components.agent.parts import parts_text  # noqa: E402
from components.models import (  # noqa: E402
    FinalResponse,
    ModelRequest,
    ModelResponse,
    StreamEvent,
    TextDelta,
    ToolCall,
    Usage,
)
from core import ActionCtx, App, QueryCtx, SQLiteStorage  # noqa: E402

USAGE = Usage(prompt_tokens=20, completion_tokens=5, total_tokens=25)


class TwoStepModel:
    """Calls the tool once, then answers (a fixed usage, so no token counting)."""

    model = "bench"

    async def request(self, req: ModelRequest) -> ModelResponse:
        """The tool call first, the answer after the tool's result."""
        if req.messages[-1].role == "tool":
            return ModelResponse(text="It is 5.", usage=USAGE, model="bench")
        call = ToolCall(id="call_1", name="add", arguments={"a": 2, "b": 3})
        return ModelResponse(
            tool_calls=(call,), finish_reason="tool_calls", usage=USAGE, model="bench"
        )

    async def stream(self, req: ModelRequest) -> AsyncIterator[StreamEvent]:
        """The same answer as one final event."""
        yield FinalResponse(response=await self.request(req))


@tool
async def add(ctx: Any, a: int, b: int) -> int:
    """Add two numbers."""
    return a + b


async def best_of(rounds: int, run: Callable[[], Awaitable[list[float]]]) -> float:
    """The best round's median run time."""
    best = float("inf")
    for _ in range(rounds):
        times = await run()
        best = min(best, statistics.median(times))
    return best


async def ours(path: Path, synchronous: str, runs: int, rounds: int) -> float:
    """Median seconds per conversation with our agent, every message persisted."""
    app = App(storage=SQLiteStorage(path, synchronous=synchronous))
    agent = Agent(app.use(component, name="agent"), name="bench", model=TwoStepModel(), tools=[add])

    @app.action
    async def batch(ctx: ActionCtx, n: int) -> list[float]:
        times = []
        for _ in range(n):
            start = time.perf_counter()
            thread_id = await agent.create_thread(ctx)
            result = await agent.generate_text(ctx, thread_id=thread_id, prompt="2+3?")
            times.append(time.perf_counter() - start)
            if result.text != "It is 5.":
                raise RuntimeError(result.text)
        return times

    async with app.client(runtime=False) as client:
        await client.action(batch, {"n": 20})  # warm-up
        return await best_of(rounds, lambda: client.action(batch, {"n": runs}))


async def openai_agents(runs: int, rounds: int) -> float:
    """Median seconds per conversation with the OpenAI Agents SDK."""
    from agents import Agent as OAIAgent
    from agents import Runner, function_tool, set_tracing_disabled
    from agents.testing import ScriptedModel, assistant_message, function_call

    set_tracing_disabled(True)

    @function_tool  # type: ignore[untyped-decorator]  # installed by hand, untyped here
    def add_tool(a: int, b: int) -> int:
        """Add two numbers."""
        return a + b

    async def batch(n: int) -> list[float]:
        times = []
        for _ in range(n):
            model = ScriptedModel(
                [
                    [function_call("add_tool", {"a": 2, "b": 3}, call_id="c1")],
                    [assistant_message("It is 5.")],
                ]
            )
            agent = OAIAgent(name="bench", instructions="", tools=[add_tool], model=model)
            start = time.perf_counter()
            result = await Runner.run(agent, "2+3?")
            times.append(time.perf_counter() - start)
            if result.final_output != "It is 5.":
                raise RuntimeError(result.final_output)
        return times

    await batch(20)
    return await best_of(rounds, lambda: batch(runs))


async def pydantic_ai(runs: int, rounds: int) -> float:
    """Median seconds per conversation with Pydantic AI."""
    from pydantic_ai import Agent as PAIAgent
    from pydantic_ai.messages import ModelResponse as PAIResponse
    from pydantic_ai.messages import TextPart, ToolCallPart, ToolReturnPart
    from pydantic_ai.models.function import FunctionModel

    def respond(messages: list[Any], info: Any) -> PAIResponse:
        last = messages[-1].parts[-1]
        if isinstance(last, ToolReturnPart):
            return PAIResponse(parts=[TextPart("It is 5.")])
        return PAIResponse(parts=[ToolCallPart("add_tool", {"a": 2, "b": 3}, tool_call_id="c1")])

    agent = PAIAgent(FunctionModel(respond))

    @agent.tool_plain  # type: ignore[untyped-decorator]  # installed by hand, untyped here
    def add_tool(a: int, b: int) -> int:
        """Add two numbers."""
        return a + b

    async def batch(n: int) -> list[float]:
        times = []
        for _ in range(n):
            start = time.perf_counter()
            result = await agent.run("2+3?")
            times.append(time.perf_counter() - start)
            if result.output != "It is 5.":
                raise RuntimeError(result.output)
        return times

    await batch(20)
    return await best_of(rounds, lambda: batch(runs))


class PacedModel:
    """Streams ``count`` numbered words, ``gap`` seconds apart, noting when each was made."""

    model = "paced"

    def __init__(self, count: int, gap: float):
        self.count = count
        self.gap = gap
        self.made: dict[str, float] = {}

    async def request(self, req: ModelRequest) -> ModelResponse:
        """Not used: this model only streams."""
        raise RuntimeError("streamed only")

    async def stream(self, req: ModelRequest) -> AsyncIterator[StreamEvent]:
        """The words, ``gap`` seconds apart."""
        words = []
        for i in range(self.count):
            await anyio.sleep(self.gap)
            word = f"w{i} "
            self.made[word] = time.perf_counter()
            words.append(word)
            yield TextDelta(text=word)
        yield FinalResponse(response=ModelResponse(text="".join(words), model="paced"))


async def delta_latency(path: Path, throttle: float, count: int, gap: float) -> list[float]:
    """Seconds from each delta's making to a subscriber seeing it."""
    model = PacedModel(count, gap)
    app = App(storage=SQLiteStorage(path, synchronous="NORMAL"))
    agent = Agent(
        app.use(component, name="agent"), name="bench", model=model, stream_throttle=throttle
    )

    @app.action
    async def talk(ctx: ActionCtx, thread_id: str) -> None:
        async with agent.stream_text(ctx, thread_id=thread_id, prompt="talk"):
            pass

    @app.action
    async def new_thread(ctx: ActionCtx) -> str:
        return str(await agent.create_thread(ctx))

    @app.query
    def follow(ctx: QueryCtx, thread_id: str) -> StreamDeltas:
        return agent.stream_deltas(ctx, thread_id=thread_id)

    delays: list[float] = []
    async with app.client() as client:
        thread_id = await client.action(new_thread, {})
        seen: set[str] = set()
        async with anyio.create_task_group() as group:
            group.start_soon(client.action, talk, {"thread_id": thread_id})
            async for view in client.subscribe(follow, {"thread_id": thread_id}):
                now = time.perf_counter()
                text = parts_text(p for d in view["deltas"] for p in d["parts"])
                for word in text.split(" "):
                    key = word + " "
                    if word and key not in seen and key in model.made:
                        seen.add(key)
                        delays.append(now - model.made[key])
                if view["done"] and view["streams"]:
                    break
    return delays


def pct(values: list[float], q: float) -> float:
    """The ``q`` quantile."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def main(args: argparse.Namespace) -> None:
    """Run every measurement and print the figures."""
    folder = Path(tempfile.mkdtemp(prefix="capsule-agent-bench-"))
    print(
        f"two-step tool conversation, per model call (median of {args.runs} runs, "
        f"best of {args.rounds} rounds)"
    )
    peers = {}
    for name, run in (("OpenAI Agents SDK", openai_agents), ("Pydantic AI", pydantic_ai)):
        try:
            peers[name] = await run(args.runs, args.rounds) / 2
        except ImportError as exc:
            print(f"  {name}: not installed ({exc.name}); pip install -e '.[bench]'")
    results = {}
    for sync in ("NORMAL", "FULL"):
        per_step = await ours(folder / f"ours-{sync}.db", sync, args.runs, args.rounds) / 2
        results[sync] = per_step
        print(
            f"  capsule agent, every message persisted (SQLite {sync}): "
            f"{per_step * 1000:.2f} ms/step"
        )
    for name, per_step in peers.items():
        ratio = results["NORMAL"] / per_step
        print(
            f"  {name} (nothing persisted): {per_step * 1000:.2f} ms/step "
            f"(capsule/peer: {ratio:.2f}x)"
        )
    print("delta -> subscriber delay (stream_deltas subscription, SQLite NORMAL)")
    for throttle in (0.0, 0.25):
        delays = await delta_latency(
            folder / f"stream-{throttle}.db", throttle, args.deltas, args.gap
        )
        print(
            f"  throttle {throttle:.2f} s: p50 {pct(delays, 0.5) * 1000:.1f} ms, "
            f"p90 {pct(delays, 0.9) * 1000:.1f} ms ({len(delays)} deltas, one every "
            f"{args.gap * 1000:.0f} ms)"
        )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=100)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--deltas", type=int, default=60)
    parser.add_argument("--gap", type=float, default=0.03)
    anyio.run(main, parser.parse_args())
