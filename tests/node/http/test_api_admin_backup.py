"""`GET /admin/backup`: a running node's store streamed as a backup file from a snapshot,
behind the admin token; refused while the store is damaged; cut (and so refused by the
reader) when a read fails midway."""

from __future__ import annotations

import io
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest

from node.backup import BackupReader, Expected, check_backup, store_chunks
from node.http.admin import make_admin_app
from node.http.problems import PROBLEM_BASE
from node.http.testing import start_api
from qchain.errors import BackupError, NotReady, StorageError
from qchain.store import Batch, MemoryStore, schema

from .test_api_admin import TOKEN, Target

CHAIN = "qchain-admin-backup"
GENESIS = b"\x22" * 32
EXPECTED = Expected(CHAIN, GENESIS)


def _store() -> MemoryStore:
    s = MemoryStore()
    b = Batch()
    b.put(schema.META_SCHEMA_VERSION, schema.u64(schema.SCHEMA_VERSION))
    b.put(schema.META_CHAIN_ID, CHAIN.encode())
    b.put(schema.META_GENESIS_HASH, GENESIS)
    b.put(schema.META_LAST_HEIGHT, schema.u64(3))
    for h in range(1, 40):
        b.put(schema.block_key(h), bytes([h]) * 100_000)  # several pieces of the stream
    s.write(b)
    return s


async def _get(source: object, token: str = TOKEN) -> tuple[int, bytes]:
    app = make_admin_app(Target(), TOKEN, backup=source)  # type: ignore[arg-type]
    runner, port = await start_api(app, "127.0.0.1", 0)
    try:
        async with aiohttp.ClientSession() as session:
            headers = {"Authorization": f"Bearer {token}"}
            url = f"http://127.0.0.1:{port}/admin/backup"
            async with session.get(url, headers=headers) as r:
                try:
                    return r.status, await r.read()
                except aiohttp.ClientPayloadError:
                    return r.status, b"<cut>"
    finally:
        await runner.cleanup()


async def test_the_backup_streams_a_snapshot(tmp_path: Path) -> None:
    store = _store()
    status, body = await _get(lambda: store_chunks(store, 1_780_000_000))
    assert status == 200
    path = tmp_path / "b.qbk"
    path.write_bytes(body)
    summary = check_backup(path, EXPECTED)
    assert (summary.header.height, summary.records) == (3, 43)


async def test_the_backup_needs_the_token() -> None:
    store = _store()
    status, body = await _get(lambda: store_chunks(store, 0), token="wrong")
    assert status == 401 and b"unauthorized" in body


async def test_a_damaged_store_is_not_backed_up() -> None:
    def refuse() -> Iterator[bytes]:
        raise NotReady(["store-corrupt: store is corrupt at key 62"])

    status, body = await _get(refuse)
    assert status == 503 and (PROBLEM_BASE + "not-ready").encode() in body


async def test_a_read_failure_midway_cuts_the_stream() -> None:
    store = _store()

    def failing() -> Iterator[bytes]:
        chunks = store_chunks(store, 0)
        yield next(chunks)
        raise StorageError("LevelDB failed at key 62")

    status, body = await _get(failing)
    assert status == 200
    if body != b"<cut>":
        with pytest.raises(BackupError):
            list(BackupReader(io.BytesIO(body), EXPECTED).records())
