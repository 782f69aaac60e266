"""The download cache (tcworker.downloads.DownloadStore) with URL content from a loopback server:
reuse, verification (size, sha256), re-download of missing or corrupt entries, sha256 mismatch,
and how HTTP failures resolve (4xx → failed, 5xx/timeouts after retries → resource-unavailable).
"""

from __future__ import annotations

from pathlib import Path

import pytest
import pytest_asyncio

from test_mounts_helpers import ScriptedServer, sha256
from tcworker.downloads import DownloadStore, RetryPolicy, url_fetcher
from tcworker.errors import ResourceUnavailable, TaskFailed

FAST = RetryPolicy(attempts=3, first_delay_s=0.05, sock_read_timeout_s=0.5)
BODY = b"toolchain bytes\n" * 4096


@pytest_asyncio.fixture
async def server():
    srv = await ScriptedServer().start()
    srv.files["/tool.bin"] = BODY
    yield srv
    await srv.stop()


async def fetch(store: DownloadStore, url: str, sha: str | None = None, warnings: list | None = None) -> bytes:
    warn = (warnings if warnings is not None else []).append
    handle = await store.open(f"urlcontent:{url}", url_fetcher(url, FAST), sha256=sha, label=f"url {url}", warn=warn)
    with handle:
        return handle.read()


async def test_given_a_url_when_fetched_twice_then_downloaded_once_and_stored_by_sha256(server, tmp_path: Path):
    store = DownloadStore(tmp_path / "dl")
    url = server.url + "/tool.bin"
    warnings: list[str] = []
    assert await fetch(store, url, warnings=warnings) == BODY
    assert await fetch(store, url, sha256(BODY)) == BODY
    assert server.hits["/tool.bin"] == 1
    assert (tmp_path / "dl" / sha256(BODY)).read_bytes() == BODY
    assert any(sha256(BODY) in w for w in warnings)  # no sha256 given: the observed one is logged


@pytest.mark.parametrize("damage", ["truncate", "flip", "delete"])
async def test_given_a_damaged_cached_file_when_reused_then_downloaded_again(server, tmp_path: Path, damage: str):
    store = DownloadStore(tmp_path / "dl")
    url = server.url + "/tool.bin"
    await fetch(store, url)
    stored = tmp_path / "dl" / sha256(BODY)
    if damage == "truncate":
        stored.write_bytes(BODY[:100])
    elif damage == "flip":
        stored.write_bytes(b"X" + BODY[1:])  # same size: only the sha256 check sees it
    else:
        stored.unlink()
    warnings: list[str] = []
    assert await fetch(store, url, sha256(BODY), warnings) == BODY
    assert server.hits["/tool.bin"] == 2
    assert any("downloading again" in w for w in warnings)
    assert stored.read_bytes() == BODY


async def test_given_a_wrong_sha256_then_task_failed_and_nothing_kept(server, tmp_path: Path):
    store = DownloadStore(tmp_path / "dl")
    with pytest.raises(TaskFailed, match="sha256 mismatch: expected 0+, got " + sha256(BODY)):
        await fetch(store, server.url + "/tool.bin", "0" * 64)
    assert [p.name for p in (tmp_path / "dl").iterdir() if not p.name.startswith("downloads.json")] == []


async def test_given_a_cached_download_and_a_different_sha256_then_task_failed(server, tmp_path: Path):
    store = DownloadStore(tmp_path / "dl")
    await fetch(store, server.url + "/tool.bin")
    with pytest.raises(TaskFailed, match="sha256 mismatch"):
        await fetch(store, server.url + "/tool.bin", "1" * 64)


async def test_given_404_then_task_failed_naming_the_url(server, tmp_path: Path):
    with pytest.raises(TaskFailed, match=r"/missing: HTTP 404"):
        await fetch(DownloadStore(tmp_path / "dl"), server.url + "/missing")
    assert server.hits["/missing"] == 1  # 4xx is never retried


async def test_given_transient_500s_then_retried_and_downloaded(server, tmp_path: Path):
    server.script["/tool.bin"] = [500, 503]
    assert await fetch(DownloadStore(tmp_path / "dl"), server.url + "/tool.bin") == BODY
    assert server.hits["/tool.bin"] == 3


async def test_given_500_on_every_attempt_then_resource_unavailable(server, tmp_path: Path):
    server.script["/tool.bin"] = [500] * FAST.attempts
    with pytest.raises(ResourceUnavailable, match="after 3 attempts.*HTTP 500"):
        await fetch(DownloadStore(tmp_path / "dl"), server.url + "/tool.bin")


async def test_given_a_server_that_hangs_then_resource_unavailable_after_retries(server, tmp_path: Path):
    server.script["/tool.bin"] = ["hang"] * FAST.attempts
    with pytest.raises(ResourceUnavailable, match="after 3 attempts"):
        await fetch(DownloadStore(tmp_path / "dl"), server.url + "/tool.bin")


async def test_given_a_refused_connection_then_resource_unavailable(tmp_path: Path):
    import socket

    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    with pytest.raises(ResourceUnavailable):
        await fetch(DownloadStore(tmp_path / "dl"), f"http://127.0.0.1:{port}/x")


async def test_given_a_crashed_download_when_swept_then_partial_files_and_missing_entries_go(server, tmp_path: Path):
    store = DownloadStore(tmp_path / "dl")
    await fetch(store, server.url + "/tool.bin")
    (tmp_path / "dl" / ".part-0123").write_bytes(b"half")
    with store.index.edit() as data:
        data["urlcontent:gone"] = {"sha256": "f" * 64, "size_bytes": 1, "created": 0.0, "last_used": 0.0}
    store.sweep()
    assert not (tmp_path / "dl" / ".part-0123").exists()
    assert [f.keys for f in store.idle()] == [(f"urlcontent:{server.url}/tool.bin",)]
