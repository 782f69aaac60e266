"""taskcluster-proxy (:mod:`tcworker.proxy`) against the queue emulator, without a worker.

Given a claimed run's task credentials, a proxy forwards signed calls restricted to the task's
scopes; it refuses a wrong or missing secret (another run's included), other hosts, sockets of
another OS user, and follows credential changes. End to end through ``tcworker run``:
``test_proxy_e2e.py``.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import sys

import aiohttp
import pytest
import taskcluster.aio

from tcworker.proxy import ProxyRefused, TaskclusterProxy, socket_owner_uid, upstream_url
from tcworker.plugins.proxy import authorized_scopes
from tcworker.testing.fixtures import make_task, queue_emulator  # noqa: F401

POOL = "proj-test/python-worker"


# ---------------------------------------------------------------- paths
@pytest.mark.parametrize("raw, expected", [
    ("/api/queue/v1/task/T", "http://root.test/api/queue/v1/task/T"),
    ("/queue/v1/task/T/artifacts/a%2Fb%2Fc.txt", "http://root.test/api/queue/v1/task/T/artifacts/a%2Fb%2Fc.txt"),
    ("/api/index/v1/task/x.y?q=1&r=%2F", "http://root.test/api/index/v1/task/x.y?q=1&r=%2F"),
    ("/purge-cache/v1/purge-cache/p%2Fw", "http://root.test/api/purge-cache/v1/purge-cache/p%2Fw"),
])
def test_api_and_legacy_paths_map_to_the_root_url_unchanged(raw, expected):
    assert upstream_url("http://root.test", raw) == expected


@pytest.mark.parametrize("raw", ["/", "/queue", "/evil.example.com/v1/x", "/api/evil.example.com/v1/x",
                                 "/Queue%2Fx/v1/y"])
def test_other_hosts_and_non_api_paths_are_refused(raw):
    with pytest.raises(ProxyRefused) as info:
        upstream_url("http://root.test", raw)
    assert info.value.status == 404


def test_authorized_scopes_are_task_scopes_plus_create_artifact_of_the_run():
    task = {"scopes": ["queue:get-artifact:private/x", "secrets:get:y"]}
    assert authorized_scopes(task, "TID", 2) == [
        "queue:get-artifact:private/x", "secrets:get:y", "queue:create-artifact:TID/2"]


# ---------------------------------------------------------------- against the emulator
async def _claim(emu, scopes: list[str], **overrides) -> tuple[str, dict]:
    task_id = await emu.create_task(scopes=scopes, payload={}, **overrides)
    creds = emu.worker_credentials(POOL, "g", "w")
    async with taskcluster.aio.createSession() as session:
        queue = taskcluster.aio.Queue(emu.client_options(creds), session=session)
        answer = await queue.claimWork(POOL, {"workerGroup": "g", "workerId": "w", "tasks": 1})
    claim = answer["tasks"][0]
    assert claim["status"]["taskId"] == task_id
    return task_id, claim


async def _private_artifact(emu, name: str) -> str:
    """A completed task with a non-public ``reference`` artifact ``name`` → its taskId."""
    task_id, claim = await _claim(emu, [])
    async with taskcluster.aio.createSession() as session:
        queue = taskcluster.aio.Queue(emu.client_options(claim["credentials"]), session=session)
        await queue.createArtifact(task_id, 0, name, {
            "storageType": "reference", "url": f"{emu.root_url}/storage/{name}",
            "expires": claim["task"]["expires"], "contentType": "text/plain"})
        await queue.reportCompleted(task_id, 0)
    return task_id


async def _get(url: str, **kwargs) -> tuple[int, str, dict]:
    async with aiohttp.ClientSession() as session:
        async with session.request(kwargs.pop("method", "GET"), url, allow_redirects=False, **kwargs) as resp:
            return resp.status, await resp.text(), dict(resp.headers)


def _proxy(emu, claim, task_id: str, **kwargs) -> TaskclusterProxy:
    kwargs.setdefault("secret", "s3cret-one")
    return TaskclusterProxy(root_url=emu.root_url, credentials=claim["credentials"],
                            authorized_scopes=authorized_scopes(claim["task"], task_id, 0), **kwargs)


async def test_given_task_scopes_when_calling_through_the_proxy_then_signed_calls_are_restricted_to_them(
        queue_emulator):
    emu = queue_emulator
    dep = await _private_artifact(emu, "private/x.txt")
    other = await _private_artifact(emu, "private/y.txt")
    task_id, claim = await _claim(emu, ["queue:get-artifact:private/x.txt"], dependencies=[dep])
    proxy = _proxy(emu, claim, task_id)
    await proxy.start()
    try:
        status, body, headers = await _get(f"{proxy.url}/api/queue/v1/task/{task_id}")
        assert status == 200 and task_id in headers["X-Taskcluster-Endpoint"]
        # legacy path, encoded name: the redirect to the content comes back, not followed
        status, _, headers = await _get(f"{proxy.url}/queue/v1/task/{dep}/artifacts/private%2Fx.txt")
        assert status == 303 and headers["Location"].endswith("/storage/private/x.txt")
        status, body, _ = await _get(f"{proxy.url}/api/queue/v1/task/{other}/artifacts/private%2Fy.txt")
        assert status == 403 and "InsufficientScopes" in body
        # the run's own create-artifact scope is added
        status, body, _ = await _get(
            f"{proxy.url}/api/queue/v1/task/{task_id}/runs/0/artifacts/public%2Fvia-proxy", method="POST",
            json={"storageType": "reference", "url": "https://example.com/x",
                  "expires": claim["task"]["expires"], "contentType": "text/plain"})
        assert status == 200, body
        assert "public/via-proxy" in emu.runs(task_id)[0].artifacts
    finally:
        await proxy.stop()
    signed = [c for c in emu.calls if c.api_name in ("task", "getLatestArtifact", "createArtifact")
              and c.client_id == claim["credentials"]["clientId"]]
    assert len(signed) == 4


async def test_a_wrong_missing_or_other_runs_secret_is_refused(queue_emulator):
    emu = queue_emulator
    task_id, claim = await _claim(emu, [])
    first = _proxy(emu, claim, task_id, secret="first-secret")
    second = _proxy(emu, claim, task_id, secret="second-secret")
    await first.start()
    await second.start()
    try:
        base = f"http://127.0.0.1:{first.port}"
        for path in ("/api/queue/v1/task/" + task_id, "/second-secret/api/queue/v1/task/" + task_id,
                     "/first-secretX/api/queue/v1/task/" + task_id, "/first-secre"):
            status, body, _ = await _get(base + path)
            assert status == 403 and "another run" in body, path
        status, _, _ = await _get(f"{first.url}/api/queue/v1/task/{task_id}")
        assert status == 200
        status, _, _ = await _get(f"{first.url}/evil.example.com/v1/x")
        assert status == 404
    finally:
        await first.stop()
        await second.stop()
    assert first.requests == 1 and second.requests == 0
    with pytest.raises(aiohttp.ClientConnectionError):
        await _get(f"{first.url}/api/queue/v1/task/{task_id}")


async def test_after_a_reclaim_the_proxy_signs_with_the_new_credentials(queue_emulator):
    emu = queue_emulator
    task_id, claim = await _claim(emu, [])
    proxy = _proxy(emu, claim, task_id)
    await proxy.start()
    try:
        async with taskcluster.aio.createSession() as session:
            queue = taskcluster.aio.Queue(emu.client_options(claim["credentials"]), session=session)
            new = (await queue.reclaimTask(task_id, 0))["credentials"]
        assert new["clientId"] != claim["credentials"]["clientId"]
        proxy.set_credentials(new)
        status, _, _ = await _get(f"{proxy.url}/api/queue/v1/task/{task_id}")
        assert status == 200
    finally:
        await proxy.stop()
    assert [c.client_id for c in emu.calls if c.api_name == "task"][-1] == new["clientId"]


CLIENT = """
import sys, urllib.request, urllib.error
try:
    print(urllib.request.urlopen(sys.argv[1], timeout=30).status)
except urllib.error.HTTPError as err:
    print(err.code)
"""


async def _status_as(uid: int, url: str) -> int:
    python = shutil.which("python3", path="/usr/bin:/bin") or sys.executable
    proc = await asyncio.create_subprocess_exec(python, "-c", CLIENT, url, user=uid, cwd="/",
                                                stdout=asyncio.subprocess.PIPE)
    out, _ = await proc.communicate()
    return int(out)


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to connect as another uid")
async def test_with_allowed_uid_only_that_users_sockets_may_connect(queue_emulator):
    emu = queue_emulator
    task_id, claim = await _claim(emu, [])
    proxy = _proxy(emu, claim, task_id, allowed_uid=65534)
    await proxy.start()
    try:
        url = f"{proxy.url}/api/queue/v1/task/{task_id}"
        assert await _status_as(65534, url) == 200
        assert await _status_as(65533, url) == 403
    finally:
        await proxy.stop()
    assert proxy.requests == 1


async def test_socket_owner_is_read_from_proc_net_tcp():
    server = await asyncio.start_server(lambda r, w: w.close(), "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        local = writer.get_extra_info("sockname")
        assert await asyncio.to_thread(socket_owner_uid, local, ("127.0.0.1", port)) == os.geteuid()
        assert await asyncio.to_thread(socket_owner_uid, ("127.0.0.1", 1), ("127.0.0.1", port)) is None
    finally:
        writer.close()
        server.close()
        await server.wait_closed()
