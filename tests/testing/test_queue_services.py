"""Purge-Cache, Index, the Object service directly, and the emulator as a process."""

from __future__ import annotations

import base64
import json
import subprocess
import sys

import pytest
import slugid
import taskcluster


async def test_purge_requests_for_a_worker_pool(queue_emulator, clients):
    emu = queue_emulator
    pool = "proj-test/python-worker"
    emu.add_purge_request(pool, "cargo-cache")
    anon = clients.purge_cache({})
    r = await anon.purgeRequests(pool)
    assert [x["cacheName"] for x in r["requests"]] == ["cargo-cache"]
    assert r["requests"][0]["provisionerId"] == "proj-test"
    later = emu.make_task(deadline_in_s=60)["deadline"]
    assert (await anon.purgeRequests(pool, query={"since": later}))["requests"] == []
    await clients.purge_cache().purgeCache(pool, {"cacheName": "pip"})
    assert len((await anon.purgeRequests(pool))["requests"]) == 2


async def test_index_insert_and_find_with_expiry(queue_emulator, clients):
    emu = queue_emulator
    task_id = slugid.nice()
    expires = emu.make_task(deadline_in_s=600)["deadline"]
    await clients.index().insertTask("project.tcworker.latest", {
        "taskId": task_id, "rank": 1, "data": {"k": "v"}, "expires": expires})
    found = await clients.index({}).findTask("project.tcworker.latest")
    assert found["taskId"] == task_id and found["data"] == {"k": "v"}
    with pytest.raises(taskcluster.TaskclusterRestFailure) as e:
        await clients.index(emu.worker_credentials()).insertTask("x.y", {
            "taskId": task_id, "rank": 0, "data": {}, "expires": expires})
    assert e.value.status_code == 403
    emu.clock.advance(601)
    with pytest.raises(taskcluster.TaskclusterRestFailure) as e:
        await clients.index({}).findTask("project.tcworker.latest")
    assert e.value.status_code == 404


async def test_object_service_upload_rules(queue_emulator, clients, session):
    emu = queue_emulator
    obj = clients.object()
    expires = emu.make_task()["expires"]
    up = {"projectId": "p", "uploadId": slugid.nice(), "expires": expires,
          "proposedUploadMethods": {"putUrl": {"contentType": "text/html", "contentLength": 3}}}
    r = await obj.createUpload("o/1", up)
    headers = r["uploadMethod"]["putUrl"]["headers"]
    assert headers["Content-Encoding"] == "identity" and headers["Content-Disposition"] == "attachment"
    assert (await obj.createUpload("o/1", up))["uploadId"] == up["uploadId"]   # idempotent
    with pytest.raises(taskcluster.TaskclusterRestFailure) as e:
        await obj.createUpload("o/1", {**up, "uploadId": slugid.nice()})
    assert e.value.status_code == 409
    async with session.put(r["uploadMethod"]["putUrl"]["url"], data=b"<p>", headers=headers) as resp:
        assert resp.status == 200
    with pytest.raises(taskcluster.TaskclusterRestFailure) as e:
        await obj.startDownload("o/1", {"acceptDownloadMethods": {"getUrl": True}})
    assert e.value.status_code == 404   # unfinished
    await obj.finishUpload("o/1", {"projectId": "p", "uploadId": up["uploadId"], "hashes": {"sha256": "0" * 64}})
    simple = await obj.startDownload("o/1", {"acceptDownloadMethods": {"simple": True}})
    async with session.get(simple["url"]) as resp:
        assert await resp.read() == b"<p>" and resp.content_type == "text/html"
    with pytest.raises(taskcluster.TaskclusterRestFailure) as e:
        await obj.startDownload("o/1", {"acceptDownloadMethods": {}})
    assert e.value.status_code == 406
    assert (await obj.object("o/1"))["hashes"] == {"sha256": "0" * 64}
    with pytest.raises(taskcluster.TaskclusterRestFailure) as e:
        await obj.finishUpload("o/1", {"projectId": "p", "uploadId": up["uploadId"], "hashes": {"sha256": "1" * 64}})
    assert e.value.status_code == 409
    inline = {"projectId": "p", "uploadId": slugid.nice(), "expires": expires, "proposedUploadMethods": {
        "dataInline": {"contentType": "text/plain", "objectData": base64.b64encode(b"hi").decode()}}}
    assert (await obj.createUpload("o/2", inline))["uploadMethod"] == {"dataInline": True}


def test_runs_as_a_process_and_prints_its_root_client():
    proc = subprocess.Popen([sys.executable, "-m", "tcworker.testing.queue", "--port", "0",
                             "--long-poll", "0.1"], stdout=subprocess.PIPE, text=True)
    try:
        info = json.loads(proc.stdout.readline())
        assert info["rootUrl"].startswith("http://127.0.0.1:")
        q = taskcluster.Queue({"rootUrl": info["rootUrl"], "maxRetries": 0, "credentials": {
            "clientId": info["clientId"], "accessToken": info["accessToken"]}})
        assert q.pendingTasks("proj-test/python-worker")["pendingTasks"] == 0
    finally:
        proc.terminate()
        assert proc.wait(timeout=10) == 0
