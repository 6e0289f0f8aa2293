"""Owns the dashboard's agent pages: every agent mount's threads, and one followed live.

``/_dashboard/agents`` lists the newest threads of each mounted agent component;
``/_dashboard/agents/thread?mount=&id=`` shows a thread's messages and follows its streams as
they are written (the page polls ``/_dashboard/agents/deltas``, which answers from the
component's ``stream_deltas`` query with a cursor, so each delta arrives once). When every
stream has ended the page reloads once to show the saved messages. Agent mounts are found by
their component's name and read through its public functions, as the jobs page does for
workflows (the core never imports a component).
"""

from __future__ import annotations

import json
from functools import partial
from typing import Any
from urllib.parse import urlencode

import anyio.to_thread
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from core.database.query import Query
from core.errors import CapsuleError
from core.server.dashboard import PREFIX, Dashboard, escape, page
from core.values import to_json

THREADS_SHOWN = 50
MESSAGES_SHOWN = 200


def agent_mounts(dashboard: Dashboard) -> list[str]:
    """The app's top-level mounts of the agent component, by name."""
    instances = dashboard.server.app.components.instances
    return [
        ns
        for ns, inst in sorted(instances.items())
        if inst.component.name == "agent" and "/" not in ns
    ]


def _thread_url(mount: str, thread_id: str) -> str:
    return f"{PREFIX}/agents/thread?{urlencode({'mount': mount, 'id': thread_id})}"


async def threads(dashboard: Dashboard, request: Request) -> Response:
    """The newest threads of every agent mount."""
    mounts = agent_mounts(dashboard)
    if not mounts:
        return page("Agents", "<p class=muted>No agent component is mounted.</p>")

    def newest(txn: Any, mount: str) -> list[dict[str, Any]]:
        space = dashboard.executor.db.catalog.space(mount)
        found: list[dict[str, Any]] = (
            Query(txn, space, space.table("threads")).order("desc").take(THREADS_SHOWN)
        )
        return found

    sections = []
    for mount in mounts:
        rows = await anyio.to_thread.run_sync(dashboard.read, partial(newest, mount=mount))
        body = "".join(
            f'<tr><td><a class=thread href="{escape(_thread_url(mount, t["_id"]))}">'
            f"{escape(t.get('title') or t['_id'])}</a></td><td>{escape(t.get('user_id') or '')}"
            f"</td><td>{escape(t.get('status', ''))}</td></tr>"
            for t in rows
        )
        sections.append(
            f"<h2>{escape(mount)}</h2><table><tr><th>thread</th><th>user</th><th>status</th>"
            f"</tr>{body or '<tr><td class=muted colspan=3>No threads yet.</td></tr>'}</table>"
        )
    return page("Agents", "".join(sections))


async def thread(dashboard: Dashboard, request: Request) -> Response:
    """A thread's messages, and its streams followed live."""
    mount = request.query_params.get("mount", "")
    thread_id = request.query_params.get("id", "")
    if mount not in agent_mounts(dashboard):
        return page(
            "Agents", f'<p class="error">No agent component is mounted at "{escape(mount)}".</p>'
        )
    ref = getattr(dashboard.server.app.components, mount).list_messages
    ex = dashboard.executor
    args = {"thread_id": thread_id, "num_items": MESSAGES_SHOWN}
    try:
        listed = await anyio.to_thread.run_sync(partial(ex.query, ref, args, None, caller=""))
    except CapsuleError as exc:
        return page("Thread", f'<p class="error">{escape(exc)}</p>')
    rows = "".join(
        f'<tr class="message {escape(m["role"])}" data-status="{escape(m["status"])}">'
        f"<td>{m['order']}.{m['step_order']}</td><td>{escape(m['role'])}</td>"
        f"<td>{escape(m['status'])}</td><td><pre>{escape(m.get('text', ''))}</pre></td></tr>"
        for m in listed["page"]
    )
    deltas_url = f"{PREFIX}/agents/deltas?{urlencode({'mount': mount, 'id': thread_id})}"
    script = f"""
<script>
let cursor = ''; let sawLive = false;
async function poll() {{
  const r = await fetch({json.dumps(deltas_url)} + '&cursor=' + encodeURIComponent(cursor));
  if (!r.ok) return;
  const body = await r.json();
  const live = document.getElementById('live');
  for (const s of body.streams) {{
    let el = document.getElementById('s-' + s.stream_id);
    if (!el) {{
      el = document.createElement('div'); el.id = 's-' + s.stream_id; el.className = 'stream';
      el.innerHTML = '<p class=muted></p><pre class=text></pre>'; live.appendChild(el);
    }}
    el.dataset.status = s.status;
    el.querySelector('p').textContent =
      `turn ${{s.order}}.${{s.step_order}} · ${{s.model || ''}} · ${{s.status}}`;
    if (s.status === 'streaming') sawLive = true;
  }}
  for (const d of body.deltas) {{
    const el = document.getElementById('s-' + d.stream_id);
    if (el) el.querySelector('.text').textContent += d.text;
  }}
  cursor = body.cursor;
  if (body.done && sawLive) {{ location.reload(); return; }}
  setTimeout(poll, body.done ? 1000 : 250);
}}
poll();
</script>"""
    return page(
        f"{mount} · thread {thread_id}",
        "<table id=messages><tr><th>order</th><th>role</th><th>status</th><th>text</th></tr>"
        f"{rows}</table><h2>Streams</h2><div id=live></div>{script}",
    )


async def deltas(dashboard: Dashboard, request: Request) -> Response:
    """``stream_deltas`` of a thread after ``cursor``, as JSON."""
    mount = request.query_params.get("mount", "")
    if mount not in agent_mounts(dashboard):
        return JSONResponse({"error": f'No agent component is mounted at "{mount}".'}, 404)
    ref = getattr(dashboard.server.app.components, mount).stream_deltas
    args = {
        "thread_id": request.query_params.get("id", ""),
        "cursor": request.query_params.get("cursor") or None,
    }
    ex = dashboard.executor
    try:
        found = await anyio.to_thread.run_sync(partial(ex.query, ref, args, None, caller=""))
    except CapsuleError as exc:
        return JSONResponse({"error": str(exc)}, exc.http_status)
    return JSONResponse(to_json(found))


PAGES = [
    ("/agents", "Agents", threads),
    ("/agents/thread", None, thread),
    ("/agents/deltas", None, deltas),
]
"""The agent pages, as ``extra_pages`` entries (the dashboard adds them itself)."""
