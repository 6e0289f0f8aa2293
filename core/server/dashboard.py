"""Owns the dashboard: server-rendered admin pages under ``/_dashboard`` (no build step).

Pages: tables (the app's and each component's) with pagination and a filter; a document, edited
as JSON and validated by its table's schema; every function, run with JSON arguments (internal
ones too: the dashboard is an admin); live function logs; scheduled jobs, crons and workflows
(cancel, restart). ``capsule dashboard module:app`` serves it locally with no key; ``capsule
serve`` serves it only when ``CAPSULE_ADMIN_KEY`` is set, to requests carrying that key
(``?key=`` once, kept in a cookie, or an ``X-Capsule-Admin-Key`` header). More pages plug in
through ``extra_pages``: ``(path, nav title or None, page)``, ``page(dashboard, request)``.
The agent pages (threads, one followed live) are in ``core/server/dashboard_threads.py``.
"""

from __future__ import annotations

import hmac
import html
import json
from collections.abc import Awaitable, Callable
from functools import partial
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs, quote, urlencode

import anyio.to_thread
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from starlette.routing import Route

from core.config import setting
from core.database.query import Query
from core.errors import CapsuleError, InvalidArgumentError
from core.functions import FunctionKind
from core.logs import read_records
from core.server.openapi import describe_app
from core.system_tables import CRONS, SCHEDULED_FUNCTIONS, SYSTEM_NAMESPACE
from core.values import from_json, to_json

if TYPE_CHECKING:
    from core.server.asgi import CapsuleServer

PREFIX = "/_dashboard"
PAGE_SIZE = 20
ADMIN_HEADER = "x-capsule-admin-key"
COOKIE = "capsule_admin"
Endpoint = Callable[[Request], Awaitable[Response]]
ExtraPage = Callable[["Dashboard", Request], Awaitable[Response]]
extra_pages: list[tuple[str, str | None, ExtraPage]] = []
"""More pages: ``(path under /_dashboard, nav title or None for no link, page)``."""

_CSS = """
body{font:14px system-ui,sans-serif;margin:0;color:#222}
nav{background:#1f2937;padding:8px 16px}nav a{color:#e5e7eb;margin-right:16px;text-decoration:none}
main{padding:16px}table{border-collapse:collapse;width:100%}
td,th{border-bottom:1px solid #ddd;padding:4px 8px;text-align:left;vertical-align:top}
pre,textarea{font:12px ui-monospace,monospace}textarea{width:100%;height:12em}
.error{color:#b91c1c;font-weight:600}.ok{color:#15803d}.muted{color:#6b7280}
"""


def escape(value: Any) -> str:
    """``value`` as text safe inside HTML (and attribute values)."""
    return html.escape(str(value), quote=True)


_e = escape


def page(title: str, body: str) -> HTMLResponse:
    """A dashboard page: the navigation, ``title`` and ``body`` (HTML)."""
    links = [("", "Tables"), ("/functions", "Functions"), ("/logs", "Logs"), ("/jobs", "Jobs")]
    links += [("/agents", "Agents")]  # core/server/dashboard_threads.py
    links += [(path, name) for path, name, _ in extra_pages if name is not None]
    nav = "".join(f'<a href="{PREFIX}{p}">{_e(n)}</a>' for p, n in links)
    return HTMLResponse(
        f"<!doctype html><html><head><meta charset=utf-8><title>{_e(title)} · Capsule</title>"
        f"<style>{_CSS}</style></head><body><nav>{nav}</nav><main><h1>{_e(title)}</h1>"
        f"{body}</main></body></html>"
    )


def _json(value: Any, indent: int | None = None) -> str:
    return json.dumps(to_json(value), ensure_ascii=False, indent=indent)


class Dashboard:
    """The dashboard of one server: its pages read and write through the server's runtime."""

    def __init__(self, server: CapsuleServer, *, key: str | None):
        self.server = server
        self.key = key

    # -- plumbing --------------------------------------------------------------------------

    def guard(self, endpoint: Endpoint) -> Endpoint:
        """Refuse requests without the admin key (when one is required)."""

        async def guarded(request: Request) -> Response:
            if self.key is None:
                return await endpoint(request)
            given = (
                request.headers.get(ADMIN_HEADER)
                or request.query_params.get("key")
                or request.cookies.get(COOKIE)
                or ""
            )
            if not hmac.compare_digest(given.encode(), self.key.encode()):
                return HTMLResponse("The dashboard needs the admin key (?key=...).", 401)
            response = await endpoint(request)
            if request.query_params.get("key"):
                response.set_cookie(COOKIE, self.key, httponly=True, samesite="strict")
            return response

        return guarded

    @property
    def executor(self) -> Any:
        """The server runtime's executor."""
        return self.server.runtime.executor

    def read(self, body: Callable[[Any], Any]) -> Any:
        """``body(txn)`` in a read transaction (call it off the event loop)."""
        ex = self.executor
        txn = ex.db.transaction(now=ex.clock.time())
        try:
            return body(txn)
        finally:
            txn.close()

    def _spaces(self) -> list[tuple[str, list[str]]]:
        spaces = self.executor.db.catalog.spaces
        return [
            (ns, sorted(spaces[ns].tables))
            for ns in sorted(spaces)
            if ns != SYSTEM_NAMESPACE and spaces[ns].tables
        ]

    # -- tables ------------------------------------------------------------------------------

    async def tables(self, request: Request) -> Response:
        """Every table of the app and its components, with document counts."""

        def count(txn: Any, ns: str, name: str) -> str:
            space = self.executor.db.catalog.space(ns)
            n = len(Query(txn, space, space.table(name)).take(1001))
            return "1,000+" if n > 1000 else f"{n:,}"

        def rows(txn: Any) -> str:
            out = []
            for ns, names in self._spaces():
                for name in names:
                    link = f"{PREFIX}/table?{urlencode({'space': ns, 'table': name})}"
                    out.append(
                        f'<tr><td>{_e(ns or "(app)")}</td><td><a href="{_e(link)}">{_e(name)}</a>'
                        f"</td><td>{count(txn, ns, name)}</td></tr>"
                    )
            return "".join(out)

        body = await anyio.to_thread.run_sync(self.read, rows)
        return page(
            "Tables",
            f"<table><tr><th>component</th><th>table</th><th>documents</th></tr>{body}</table>",
        )

    async def table(self, request: Request) -> Response:
        """One page of a table's documents (newest first), optionally filtered."""
        ns = request.query_params.get("space", "")
        name = request.query_params.get("table", "")
        cursor = request.query_params.get("cursor") or None
        text = request.query_params.get("filter", "")

        def read(txn: Any) -> Any:
            space = self.executor.db.catalog.space(ns)
            query = Query(txn, space, space.table(name)).order("desc")
            if text:
                query = query.filter(lambda d: text in _json(d))
            return query.paginate(cursor, PAGE_SIZE)

        try:
            found = await anyio.to_thread.run_sync(self.read, read)
        except CapsuleError as exc:
            return page(name, f'<p class="error">{_e(exc)}</p>')
        rows = "".join(
            f'<tr><td><a href="{PREFIX}/doc?{_e(urlencode({"space": ns, "id": d["_id"]}))}">'
            f"{_e(d['_id'])}</a></td><td><pre>{_e(_json(_fields(d)))}</pre></td></tr>"
            for d in found.page
        )
        base = {"space": ns, "table": name, "filter": text}
        more = (
            ""
            if found.is_done
            else f'<a id="next" href="{PREFIX}/table?'
            f'{_e(urlencode({**base, "cursor": found.continue_cursor}))}">Next page</a>'
        )
        form = (
            f'<form method=get action="{PREFIX}/table"><input type=hidden name=space '
            f'value="{_e(ns)}"><input type=hidden name=table value="{_e(name)}">'
            f'<input name=filter placeholder="filter (text in the document)" value="{_e(text)}">'
            "<button>Filter</button></form>"
        )
        where = f"{ns}/" if ns else ""
        return page(
            f"{where}{name}",
            f"{form}<table id=documents><tr><th>_id</th><th>document</th></tr>{rows}</table>"
            f"<p>{more}</p>",
        )

    async def document(self, request: Request) -> Response:
        """A document as JSON; a POST saves an edit (validated by the table's schema)."""
        ns = request.query_params.get("space", "")
        doc_id = request.query_params.get("id", "")
        message = ""
        text = None
        if request.method == "POST":
            form = await _form(request)
            text = form.get("document", "")
            try:
                await anyio.to_thread.run_sync(self._save, ns, doc_id, text)
                message = '<p class="ok" id="message">Saved.</p>'
                text = None
            except (ValueError, CapsuleError) as exc:
                message = f'<p class="error" id="message">{_e(exc)}</p>'

        def read(txn: Any) -> Any:
            return txn.get(self.executor.db.catalog.space(ns), doc_id)

        doc = await anyio.to_thread.run_sync(self.read, read)
        if doc is None:
            return page("Document", '<p class="error">No such document.</p>')
        shown = text if text is not None else _json(_fields(doc), indent=2)
        return page(
            f"Document {doc_id}",
            f"{message}<p class=muted>created {_e(doc['_creation_time'])}</p>"
            f'<form method=post><textarea name=document id="document">{_e(shown)}</textarea>'
            "<button id=save>Save</button></form>",
        )

    def _save(self, ns: str, doc_id: str, text: str) -> None:
        try:
            value = from_json(json.loads(text))
        except ValueError as exc:
            raise InvalidArgumentError(f"The document is not valid JSON: {exc}.") from None
        if not isinstance(value, dict):
            raise InvalidArgumentError("The document must be a JSON object.")
        ex = self.executor
        space = ex.db.catalog.space(ns)
        ex.run_transaction(
            lambda txn: txn.replace(space, doc_id, _fields(value)), label="dashboard edit"
        )

    # -- functions ---------------------------------------------------------------------------

    async def functions(self, request: Request) -> Response:
        """Every function, and a form to run one with JSON arguments."""
        described = [
            d
            for d in describe_app(self.server.app, components=False)
            if d.kind in ("query", "mutation", "action")
        ]
        options = "".join(
            f'<option value="{_e(d.path)}">{_e(d.path)} ({d.kind}, {d.visibility})</option>'
            for d in described
        )
        rows = "".join(
            f"<tr><td>{_e(d.path)}</td><td>{d.kind}</td><td>{d.visibility}</td>"
            f"<td><pre>{_e(json.dumps(d.args.get('properties', {})))}</pre></td></tr>"
            for d in described
        )
        script = f"""
<script>
document.getElementById('run').onclick = async () => {{
  const out = document.getElementById('result');
  const r = await fetch('{PREFIX}/api/run', {{method: 'POST', headers: {{'content-type':
    'application/json'}}, body: JSON.stringify({{path: document.getElementById('path').value,
    args: document.getElementById('args').value}})}});
  const body = await r.json();
  out.className = r.ok ? 'ok' : 'error';
  out.textContent = r.ok ? JSON.stringify(body.value, null, 2) : body.message;
}};
</script>"""
        return page(
            "Functions",
            f"<p><select id=path>{options}</select></p>"
            '<textarea id=args style="height:5em">{}</textarea>'
            f"<p><button id=run>Run</button></p><pre id=result></pre>{script}"
            f"<table><tr><th>function</th><th>kind</th><th>visibility</th><th>arguments</th>"
            f"</tr>{rows}</table>",
        )

    async def run(self, request: Request) -> Response:
        """``POST {"path", "args": "<json>"}``: run a function; answer its value."""
        body = await request.json()
        path = str(body.get("path", ""))
        try:
            args = from_json(json.loads(body.get("args") or "{}"))
            value = await self.call(path, args)
        except json.JSONDecodeError as exc:
            return JSONResponse({"message": f"The arguments are not valid JSON: {exc}."}, 400)
        except Exception as exc:
            status = exc.http_status if isinstance(exc, CapsuleError) else 500
            return JSONResponse({"message": f"{type(exc).__name__}: {exc}"}, status)
        return JSONResponse({"value": to_json(value)})

    async def call(self, path: str, args: Any) -> Any:
        """Run any of the app's functions, internal ones included (as the app's own code)."""
        ex = self.executor
        ref = self.server.app.registry.get(path)
        if ref is None:
            return await anyio.to_thread.run_sync(lambda: ex.query(path, args))  # the 404
        if ref.kind is FunctionKind.QUERY:
            return await anyio.to_thread.run_sync(lambda: ex.query(ref, args, None, caller=""))
        if ref.kind is FunctionKind.MUTATION:
            return await anyio.to_thread.run_sync(lambda: ex.mutation(ref, args, None, caller=""))
        return await ex.action(ref, args, None, caller="")

    # -- logs --------------------------------------------------------------------------------

    async def logs(self, request: Request) -> Response:
        """Function call logs, updated live."""
        script = f"""
<script>
const seen = new Set(); let since = 0;
async function poll() {{
  const r = await fetch('{PREFIX}/api/logs?since=' + since);
  const body = await r.json();
  const list = document.getElementById('logs');
  for (const rec of body.records) {{
    if (seen.has(rec._id)) continue;
    seen.add(rec._id); since = Math.max(since, rec.ts - 30);
    const li = document.createElement('li');
    li.className = rec.outcome === 'success' ? '' : 'error';
    li.textContent = `${{new Date(rec.ts * 1000).toLocaleTimeString()}} ${{rec.kind}} `
      + `${{rec.path}} ${{rec.duration_ms.toFixed(1)}} ms ${{rec.outcome}}`
      + (rec.error ? ': ' + rec.error : '') + rec.lines.map(l => '\\n    | ' + l).join('');
    list.prepend(li);
  }}
}}
poll(); setInterval(poll, 500);
</script>"""
        return page("Logs", f'<ul id=logs style="white-space:pre-wrap"></ul>{script}')

    async def api_logs(self, request: Request) -> Response:
        """Call records as JSON (``?since=<ts>``: the batches written since then)."""
        raw = request.query_params.get("since", "0")
        since = float(raw) if raw.replace(".", "", 1).isdigit() else 0.0
        ex = self.executor
        records = await anyio.to_thread.run_sync(
            lambda: read_records(ex, since=since) if since else read_records(ex, limit=100)
        )
        return JSONResponse({"records": [to_json(r) for r in records]})

    # -- jobs ------------------------------------------------------------------------------

    async def jobs(self, request: Request) -> Response:
        """Scheduled jobs, crons and workflows."""

        def read(txn: Any) -> tuple[list[Any], list[Any]]:
            space = self.executor.db.catalog.space(SYSTEM_NAMESPACE)
            jobs = Query(txn, space, space.table(SCHEDULED_FUNCTIONS)).order("desc").take(100)
            crons = Query(txn, space, space.table(CRONS)).collect()
            return jobs, crons

        jobs, crons = await anyio.to_thread.run_sync(self.read, read)
        job_rows = "".join(
            f"<tr><td>{_e(j['name'])}</td><td>{_e(j['state'])}</td>"
            f"<td>{_e(j['scheduled_time'])}</td></tr>"
            for j in jobs
        )
        cron_rows = "".join(
            f"<tr><td>{_e(c['name'])}</td><td>{_e(c['function'])}</td>"
            f"<td>{_e(c['schedule'])}</td></tr>"
            for c in crons
        )
        return page(
            "Jobs",
            "<h2>Scheduled jobs (latest 100)</h2><table><tr><th>function</th><th>state</th>"
            f"<th>scheduled</th></tr>{job_rows}</table><h2>Crons</h2><table><tr><th>name</th>"
            f"<th>function</th><th>schedule</th></tr>{cron_rows}</table>"
            f"<h2>Workflows</h2>{await self._workflows()}",
        )

    async def _workflows(self) -> str:
        app = self.server.app
        mounts = [
            ns
            for ns, inst in sorted(app.components.instances.items())
            if inst.component.name == "workflow" and "/" not in ns
        ]
        rows = []
        ex = self.executor
        for mount in mounts:
            ref = getattr(app.components, mount).list_workflows
            listed = await anyio.to_thread.run_sync(
                partial(ex.query, ref, {"num_items": 100}, None, caller="")
            )
            for wf in listed["page"]:
                actions = "".join(
                    f'<form method=post action="{PREFIX}/workflows/{verb}" style="display:inline">'
                    f'<input type=hidden name=mount value="{_e(mount)}"><input type=hidden '
                    f'name=id value="{_e(wf["id"])}"><button>{verb}</button></form>'
                    for verb in ("cancel", "restart")
                )
                rows.append(
                    f"<tr><td>{_e(wf['id'])}</td><td>{_e(wf['name'])}</td>"
                    f"<td>{_e(wf['state'])}</td><td>{_e(mount)}</td><td>{actions}</td></tr>"
                )
        if not mounts:
            return "<p class=muted>No workflow component is mounted.</p>"
        return (
            "<table><tr><th>id</th><th>name</th><th>state</th><th>component</th><th></th></tr>"
            + "".join(rows)
            + "</table>"
        )

    async def workflow_action(self, request: Request) -> Response:
        """``POST /workflows/cancel|restart``: act on a workflow, then back to Jobs."""
        verb = request.path_params["verb"]
        form = await _form(request)
        mount, wf_id = form.get("mount", ""), form.get("id", "")
        if verb not in ("cancel", "restart"):
            return HTMLResponse("Unknown action.", 404)
        ref = getattr(getattr(self.server.app.components, mount), verb)
        ex = self.executor
        try:
            await anyio.to_thread.run_sync(
                lambda: ex.mutation(ref, {"workflow_id": wf_id}, None, caller="")
            )
        except CapsuleError as exc:
            return page("Jobs", f'<p class="error">{_e(exc)}</p>')
        return RedirectResponse(f"{PREFIX}/jobs", 303)

    # -- routes ------------------------------------------------------------------------------

    def routes(self) -> list[Route]:
        """The dashboard's routes, each behind the admin key guard."""
        g = self.guard
        pages: list[tuple[str, Endpoint, list[str]]] = [
            ("", self.tables, ["GET"]),
            ("/", self.tables, ["GET"]),
            ("/table", self.table, ["GET"]),
            ("/doc", self.document, ["GET", "POST"]),
            ("/functions", self.functions, ["GET"]),
            ("/api/run", self.run, ["POST"]),
            ("/logs", self.logs, ["GET"]),
            ("/api/logs", self.api_logs, ["GET"]),
            ("/jobs", self.jobs, ["GET"]),
            ("/workflows/{verb}", self.workflow_action, ["POST"]),
        ]
        from core.server.dashboard_threads import PAGES as AGENT_PAGES

        extra = [*AGENT_PAGES, *extra_pages]
        pages += [(path, partial(fn, self), ["GET"]) for path, _, fn in extra]
        return [Route(f"{PREFIX}{path}", g(fn), methods=methods) for path, fn, methods in pages]


async def _form(request: Request) -> dict[str, str]:
    """A url-encoded form body (the pages post nothing else; no multipart dependency)."""
    fields = parse_qs((await request.body()).decode(), keep_blank_values=True)
    return {k: v[-1] for k, v in fields.items()}


def _fields(doc: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in doc.items() if k not in ("_id", "_creation_time")}


def dashboard_routes(server: CapsuleServer, *, local: bool = False) -> list[Route]:
    """The dashboard's routes: always when ``local``, else only if ``CAPSULE_ADMIN_KEY`` is set."""
    key = setting("CAPSULE_ADMIN_KEY") or None
    if not local and key is None:
        return []
    return Dashboard(server, key=None if local else key).routes()


def dashboard_url(base: str, path: str = "") -> str:
    """The dashboard URL of a server at ``base``."""
    return f"{base.rstrip('/')}{PREFIX}{quote(path)}"


__all__ = [
    "PREFIX",
    "Dashboard",
    "ExtraPage",
    "dashboard_routes",
    "dashboard_url",
    "escape",
    "extra_pages",
    "page",
]
