from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlparse

import httpx
import pytest

import core.files
from core import (
    ActionCtx,
    App,
    Component,
    FileMetadata,
    ForbiddenError,
    InvalidIdError,
    MutationCtx,
    Schema,
    SQLiteStorage,
    Table,
    UserError,
)
from core.config import ServerSettings
from core.server import BackgroundServer, create_asgi_app
from core.testing import TestApp

vault = Component("vault", schema=Schema(secrets=Table({"n": int})))


@vault.action
async def read_file(ctx: ActionCtx, id: str) -> Any:
    return await ctx.files.get(id)


@vault.action
async def store_file(ctx: ActionCtx, data: bytes) -> Any:
    return await ctx.files.store(data)


app = App(Schema(uploads=Table({"file": str})))
vault_handle = app.use(vault)


@app.action
async def store(ctx: ActionCtx, data: bytes, content_type: str | None = None) -> Any:
    return await ctx.files.store(data, content_type)


@app.action
async def get(ctx: ActionCtx, id: str) -> Any:
    return await ctx.files.get(id)


@app.action
async def metadata(ctx: ActionCtx, id: str) -> dict[str, Any] | None:
    meta: FileMetadata | None = await ctx.files.get_metadata(id)
    return (
        None
        if meta is None
        else {"size": meta.size, "sha256": meta.sha256, "type": meta.content_type, "id": meta.id}
    )


@app.action
async def url(ctx: ActionCtx, id: str, expires_in: float | None = None) -> Any:
    return await ctx.files.get_url(id, expires_in=expires_in)


@app.action
async def upload_url(ctx: ActionCtx) -> Any:
    return await ctx.files.generate_upload_url()


@app.action
async def delete(ctx: ActionCtx, id: str) -> None:
    await ctx.files.delete(id)


@app.action
async def vault_reads(ctx: ActionCtx, id: str) -> Any:
    return await ctx.run_action(vault_handle.read_file, {"id": id})


@app.action
async def vault_stores(ctx: ActionCtx, data: bytes) -> Any:
    return await ctx.run_action(vault_handle.store_file, {"data": data})


@app.mutation
def files_in_mutation(ctx: MutationCtx) -> None:
    ctx.files  # noqa: B018


class InDatabaseStorage(SQLiteStorage):
    """SQLite without a files folder: blobs go into the database, as on PostgreSQL."""

    def files_dir(self) -> str | None:
        return None


@pytest.fixture(params=["disk", "database"])
def t(request: Any, tmp_path: Path) -> Iterator[TestApp]:
    cls = SQLiteStorage if request.param == "disk" else InDatabaseStorage
    with TestApp(app, storage=cls(tmp_path / "files.db", synchronous="NORMAL")) as t:
        yield t


def test_store_get_metadata_delete(t: TestApp) -> None:
    data = os.urandom(3000)
    fid = t.action(store, {"data": data, "content_type": "image/png"})
    assert t.action(get, {"id": fid}) == data
    assert t.action(metadata, {"id": fid}) == {
        "size": 3000,
        "sha256": hashlib.sha256(data).hexdigest(),
        "type": "image/png",
        "id": fid,
    }
    t.action(delete, {"id": fid})
    assert t.action(get, {"id": fid}) is None
    assert t.action(metadata, {"id": fid}) is None
    assert t.action(url, {"id": fid}) is None
    t.action(delete, {"id": fid})  # already gone: no error


def test_large_and_empty_files(t: TestApp, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(core.files, "CHUNK_BYTES", 1000)
    data = os.urandom(1000 * 20 + 7)  # 21 chunks: several transactions each way
    fid = t.action(store, {"data": data})
    assert t.action(get, {"id": fid}) == data
    empty = t.action(store, {"data": b""})
    assert t.action(get, {"id": empty}) == b""
    t.action(delete, {"id": fid})
    left = t.run(lambda ctx: len(ctx.db.system.query("_storage_chunks").collect()))
    in_db = t.runtime.storage.files_dir() is None
    assert left == (1 if in_db else 0)  # only the empty file's chunk


def test_blobs_sit_beside_the_sqlite_file(tmp_path: Path) -> None:
    with TestApp(app, storage=SQLiteStorage(tmp_path / "a.db")) as t:
        fid = t.action(store, {"data": b"on disk"})
        blobs = [p for p in (tmp_path / "a.db-files").rglob("*") if p.is_file()]
        assert [p.read_bytes() for p in blobs] == [b"on disk"]
        t.action(delete, {"id": fid})
        assert not [p for p in (tmp_path / "a.db-files").rglob("*") if p.is_file()]


def test_ids_are_checked(t: TestApp) -> None:
    doc = t.run(lambda ctx: ctx.db.insert("uploads", {"file": "x"}))
    with pytest.raises(InvalidIdError):
        t.action(get, {"id": doc})
    with pytest.raises(InvalidIdError):
        t.action(get, {"id": "not-an-id"})


def test_a_component_cannot_read_the_apps_file(t: TestApp) -> None:
    fid = t.action(store, {"data": b"app secret"})
    with pytest.raises(InvalidIdError, match='not an id of a file of component "vault"'):
        t.action(vault_reads, {"id": fid})
    own = t.action(vault_stores, {"data": b"vault's own"})
    assert t.action(vault_reads, {"id": own}) == b"vault's own"
    with pytest.raises(InvalidIdError, match="of the app"):
        t.action(get, {"id": own})


def test_files_only_in_actions(t: TestApp) -> None:
    with pytest.raises(UserError, match="ctx.files"):
        t.mutation(files_in_mutation)


# -- URLs, over HTTP -----------------------------------------------------------------------------


@pytest.fixture
def served(t: TestApp) -> Iterator[tuple[TestApp, str]]:
    with BackgroundServer(create_asgi_app(app, settings=ServerSettings(), runtime=t.runtime)) as bg:
        yield t, bg.url


def call(base: str, fn: Any, args: dict[str, Any]) -> Any:
    r = httpx.post(f"{base}/api/action", json={"path": fn.path, "args": args})
    assert r.status_code == 200, r.text
    return r.json()["value"]


def test_signed_url_serves_the_file_until_it_expires(served: tuple[TestApp, str]) -> None:
    t, base = served
    fid = t.action(store, {"data": b"hello file", "content_type": "text/plain"})
    link = call(base, url, {"id": fid, "expires_in": 60})
    assert link.startswith(base + "/api/storage/")  # absolute: the action came over HTTP
    r = httpx.get(link)
    assert r.status_code == 200 and r.content == b"hello file"
    assert r.headers["content-type"].startswith("text/plain")
    tampered = link.replace(fid, t.action(store, {"data": b"other"}))
    assert httpx.get(tampered).status_code == 403
    no_sig = link.split("&sig=")[0]
    assert httpx.get(no_sig).status_code == 403
    t.advance_time(61)
    r = httpx.get(link)
    assert (r.status_code, r.json()["code"]) == (403, "forbidden")
    assert "expired" in r.json()["message"]


def test_url_made_outside_a_request_is_a_path(t: TestApp) -> None:
    fid = t.action(store, {"data": b"x"})
    assert t.action(url, {"id": fid}).startswith(f"/api/storage/{fid}?")


def test_deleted_file_url_is_404(served: tuple[TestApp, str]) -> None:
    t, base = served
    fid = t.action(store, {"data": b"soon gone"})
    link = call(base, url, {"id": fid})
    t.action(delete, {"id": fid})
    r = httpx.get(link)
    assert (r.status_code, r.json()["code"]) == (404, "file_not_found")


def test_upload_url_is_single_use_and_expires(served: tuple[TestApp, str]) -> None:
    t, base = served
    link = call(base, upload_url, {})
    r = httpx.post(link, content=b"uploaded bytes", headers={"Content-Type": "text/csv"})
    assert r.status_code == 200
    fid = r.json()["storageId"]
    assert t.action(get, {"id": fid}) == b"uploaded bytes"
    assert t.action(metadata, {"id": fid})["type"] == "text/csv"
    again = httpx.post(link, content=b"second time")
    assert (again.status_code, again.json()["code"]) == (403, "forbidden")
    assert "already used" in again.json()["message"]
    count = t.run(lambda ctx: len(ctx.db.system.query("_storage").collect()))
    assert count == 1

    late = call(base, upload_url, {})
    t.advance_time(3601)
    r = httpx.post(late, content=b"too late")
    assert r.status_code == 403 and "expired" in r.json()["message"]
    forged = link.replace(parse_qs(urlparse(link).query)["nonce"][0], "0" * 32)
    assert httpx.post(forged, content=b"forged").status_code == 403


def test_upload_into_a_component_stays_in_the_component(served: tuple[TestApp, str]) -> None:
    t, base = served
    service = t.runtime.files
    link = base + service.upload_url("vault")
    fid = httpx.post(link, content=b"for the vault").json()["storageId"]
    assert t.action(vault_reads, {"id": fid}) == b"for the vault"
    with pytest.raises(InvalidIdError):
        t.action(get, {"id": fid})


def test_forbidden_error_for_forged_url_in_process(t: TestApp) -> None:
    with pytest.raises(ForbiddenError, match="malformed"):
        t.runtime.files.check_url("x", {"exp": "soon", "sig": ""})


def test_the_signing_secret_is_shared_through_the_database(tmp_path: Path) -> None:
    storage_path = tmp_path / "shared.db"
    with TestApp(app, storage=SQLiteStorage(storage_path)) as first:
        fid = first.action(store, {"data": b"shared"})
        link = first.action(url, {"id": fid})
    with TestApp(app, storage=SQLiteStorage(storage_path)) as second:
        params = {k: v[0] for k, v in parse_qs(urlparse(link).query).items()}
        second.runtime.files.check_url(fid, params)  # a second process accepts it


def test_configured_secret(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("CAPSULE_FILE_URL_SECRET", "configured")
    monkeypatch.setenv("CAPSULE_PUBLIC_URL", "https://files.example/")
    with TestApp(app, storage=SQLiteStorage(tmp_path / "c.db")) as t:
        fid = t.action(store, {"data": b"x"})
        assert t.action(url, {"id": fid}).startswith("https://files.example/api/storage/")
        assert t.runtime.files.secret() == b"configured"
        assert t.run(lambda ctx: ctx.db.system.query("_storage_keys").first()) is None


def test_files_on_every_backend(storage: Any) -> None:
    with TestApp(app, storage=storage) as t:
        data = os.urandom(core.files.CHUNK_BYTES + 10)
        fid = t.action(store, {"data": data})
        assert t.action(get, {"id": fid}) == data
        t.action(delete, {"id": fid})
        assert t.action(get, {"id": fid}) is None
