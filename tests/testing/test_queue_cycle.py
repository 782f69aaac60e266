"""The claim → reclaim → artifacts → report cycle through the official client, and downloads."""

from __future__ import annotations

import pytest
import taskcluster
from taskcluster.aio import download, upload

from tcworker.testing.queue import DEFAULT_TASK_QUEUE_ID as QUEUE_ID


async def _object_artifact(clients, tq, task_id, run_id, name, data, content_type, expires):
    a = await tq.createArtifact(task_id, run_id, name, {
        "storageType": "object", "contentType": content_type, "expires": expires})
    assert a["name"] == f"t/{task_id}/{run_id}/{name}"
    obj = clients.object(a["credentials"])
    await upload.uploadFromBuf(projectId=a["projectId"], name=a["name"], contentType=content_type,
                               contentLength=len(data), expires=a["expires"], uploadId=a["uploadId"],
                               objectService=obj, data=data, maxRetries=0)
    await tq.finishArtifact(task_id, run_id, name, {"uploadId": a["uploadId"]})
    return a


async def test_full_cycle_with_both_upload_methods_and_s3(queue_emulator, clients, session):
    """Given a pending task, when a worker claims, reclaims, uploads an inline object, a putUrl
    object and an s3 artifact, then reports completed: the run is completed and every download
    (anonymous, through the official helpers) returns the same bytes and content type."""
    emu = queue_emulator
    task_id = await emu.create_task()
    claim = await clients.claim()
    assert claim["task"]["taskQueueId"] == QUEUE_ID and claim["status"]["state"] == "running"
    assert claim["credentials"]["clientId"].startswith(f"task-client/{task_id}/0/on/test-group/test-worker/until/")
    rc = await clients.queue(claim["credentials"]).reclaimTask(task_id, 0)
    assert "task" not in rc and rc["takenUntil"] >= claim["takenUntil"]
    tq = clients.queue(rc["credentials"])   # rotated credentials
    expires = emu.status(task_id)["expires"]
    small, big = b"small body\n", bytes(range(256)) * 64   # < 8 KiB → dataInline; 16 KiB → putUrl
    await _object_artifact(clients, tq, task_id, 0, "public/small.txt", small, "text/plain", expires)
    await _object_artifact(clients, tq, task_id, 0, "public/big.bin", big, "application/octet-stream", expires)
    s3 = await tq.createArtifact(task_id, 0, "public/s3.json", {
        "storageType": "s3", "contentType": "application/json", "expires": expires})
    async with session.put(s3["putUrl"], data=b'{"a": 1}', headers={"Content-Type": "application/json"}) as r:
        assert r.status == 200
    done = await tq.reportCompleted(task_id, 0)
    assert done["status"]["runs"][0]["state"] == "completed"

    put_calls = [c for c in emu.calls_to("storage.put")]
    assert len(put_calls) == 2   # big object + s3; the small one went inline
    anon = clients.queue({})
    for name, data, ctype in [("public/small.txt", small, "text/plain"),
                              ("public/big.bin", big, "application/octet-stream"),
                              ("public/s3.json", b'{"a": 1}', "application/json")]:
        got, got_type = await download.downloadArtifactToBuf(taskId=task_id, name=name,
                                                             queueService=anon, maxRetries=0)
        assert (bytes(got), got_type) == (data, ctype)
        assert emu.artifact_blob(task_id, 0, name).data == data
    blob = emu.artifact_blob(task_id, 0, "public/big.bin")
    assert blob.content_encoding == "identity"


async def test_get_artifact_redirects_to_storage_without_credentials(queue_emulator, clients, session):
    """getArtifact answers 303 with {storageType, url}; the url serves without credentials."""
    emu = queue_emulator
    task_id = await emu.create_task()
    claim = await clients.claim()
    tq = clients.queue(claim["credentials"])
    expires = emu.status(task_id)["expires"]
    await _object_artifact(clients, tq, task_id, 0, "public/x.txt", b"xyz", "text/plain", expires)
    r = await clients.queue({}).getArtifact(task_id, 0, "public/x.txt")
    assert r["storageType"] == "object"
    async with session.get(r["url"]) as resp:
        assert resp.status == 200 and await resp.read() == b"xyz"
        assert resp.content_type == "text/plain"


async def test_anonymous_reads_public_but_not_private_artifacts(queue_emulator, clients):
    emu = queue_emulator
    task_id = await emu.create_task()
    tq = clients.queue((await clients.claim())["credentials"])
    expires = emu.status(task_id)["expires"]
    for name in ("public/a.txt", "private/b.txt"):
        await _object_artifact(clients, tq, task_id, 0, name, b"data", "text/plain", expires)
    anon = clients.queue({})
    assert (await anon.getLatestArtifact(task_id, "public/a.txt"))["storageType"] == "object"
    with pytest.raises(taskcluster.TaskclusterRestFailure) as e:
        await anon.getLatestArtifact(task_id, "private/b.txt")
    assert e.value.status_code == 403 and e.value.body["code"] == "InsufficientScopes"
    with pytest.raises(taskcluster.TaskclusterRestFailure) as e:
        await download.downloadArtifactToBuf(taskId=task_id, name="private/b.txt", queueService=anon)
    assert e.value.status_code == 403
    got, _ = await download.downloadArtifactToBuf(taskId=task_id, name="private/b.txt",
                                                  queueService=clients.queue(), maxRetries=0)
    assert bytes(got) == b"data"


async def test_reference_link_and_error_artifacts(queue_emulator, clients):
    emu = queue_emulator
    task_id = await emu.create_task()
    tq = clients.queue((await clients.claim())["credentials"])
    expires = emu.status(task_id)["expires"]
    await tq.createArtifact(task_id, 0, "public/ref", {
        "storageType": "reference", "url": "https://example.com/x", "contentType": "text/plain", "expires": expires})
    await tq.createArtifact(task_id, 0, "public/link", {
        "storageType": "link", "artifact": "public/ref", "expires": expires})
    await tq.createArtifact(task_id, 0, "public/err", {
        "storageType": "error", "reason": "file-missing-on-worker", "message": "no such file", "expires": expires})
    q = clients.queue({})
    assert (await q.getArtifact(task_id, 0, "public/link")) == {
        "storageType": "reference", "url": "https://example.com/x"}
    with pytest.raises(taskcluster.TaskclusterRestFailure) as e:
        await q.getArtifact(task_id, 0, "public/err")
    assert e.value.status_code == 424 and e.value.body["reason"] == "file-missing-on-worker"
    assert (await q.artifact(task_id, 0, "public/err"))["storageType"] == "error"
    with pytest.raises(taskcluster.exceptions.TaskclusterArtifactError):
        await download.downloadArtifactToBuf(taskId=task_id, name="public/err", queueService=q)
    # reference may be replaced by link; other changes conflict
    await tq.createArtifact(task_id, 0, "public/ref", {
        "storageType": "link", "artifact": "public/link", "expires": expires})
    with pytest.raises(taskcluster.TaskclusterRestFailure) as e:
        await q.getArtifact(task_id, 0, "public/link")
    assert e.value.status_code == 400   # a cycle
    with pytest.raises(taskcluster.TaskclusterRestFailure) as e:
        await tq.createArtifact(task_id, 0, "public/err", {
            "storageType": "reference", "url": "https://example.com/y", "contentType": "text/plain", "expires": expires})
    assert e.value.status_code == 409


async def test_create_artifact_idempotence_and_run_state_rules(queue_emulator, clients):
    emu = queue_emulator
    task_id = await emu.create_task()
    tq = clients.queue((await clients.claim())["credentials"])
    expires = emu.status(task_id)["expires"]
    req = {"storageType": "s3", "contentType": "text/plain", "expires": expires}
    first = await tq.createArtifact(task_id, 0, "public/s3", req)
    again = await tq.createArtifact(task_id, 0, "public/s3", req)
    assert first["putUrl"] == again["putUrl"]
    with pytest.raises(taskcluster.TaskclusterRestFailure) as e:
        await tq.createArtifact(task_id, 0, "public/s3", {**req, "contentType": "text/html"})
    assert e.value.status_code == 409
    obj = {"storageType": "object", "contentType": "text/plain", "expires": expires}
    await tq.createArtifact(task_id, 0, "public/obj", obj)
    with pytest.raises(taskcluster.TaskclusterRestFailure) as e:
        await tq.createArtifact(task_id, 0, "public/obj", obj)   # would need a new uploadId
    assert e.value.status_code == 409
    # not present before finishArtifact, but listed
    with pytest.raises(taskcluster.TaskclusterRestFailure) as e:
        await clients.queue().getArtifact(task_id, 0, "public/obj")
    assert e.value.status_code == 404
    names = [a["name"] for a in (await clients.queue().listArtifacts(task_id, 0))["artifacts"]]
    assert names == ["public/obj", "public/s3"]
    await tq.reportFailed(task_id, 0)
    with pytest.raises(taskcluster.TaskclusterRestFailure) as e:
        await tq.createArtifact(task_id, 0, "public/late", req)
    assert e.value.status_code == 409


async def test_uploads_allowed_for_25_minutes_after_an_exception(queue_emulator, clients):
    emu = queue_emulator
    task_id = await emu.create_task()
    tq = clients.queue((await clients.claim())["credentials"])
    expires = emu.status(task_id)["expires"]
    req = {"storageType": "s3", "contentType": "text/plain", "expires": expires}
    await tq.reportException(task_id, 0, {"reason": "malformed-payload"})
    await tq.createArtifact(task_id, 0, "public/a", req)
    emu.clock.advance(24 * 60)
    await tq.createArtifact(task_id, 0, "public/b", req)
    emu.clock.advance(2 * 60)
    with pytest.raises(taskcluster.TaskclusterRestFailure) as e:
        await tq.createArtifact(task_id, 0, "public/c", req)
    assert e.value.status_code == 409


async def test_list_artifacts_paginates_sorted_by_name(queue_emulator, clients):
    emu = queue_emulator
    task_id = await emu.create_task()
    tq = clients.queue((await clients.claim())["credentials"])
    expires = emu.status(task_id)["expires"]
    for i in (3, 1, 2, 0, 4):
        await tq.createArtifact(task_id, 0, f"public/{i}", {
            "storageType": "reference", "url": "https://example.com/", "contentType": "text/plain",
            "expires": expires})
    q, names, token = clients.queue(), [], None
    while True:
        page = await q.listLatestArtifacts(task_id, query={"limit": 2, **({"continuationToken": token} if token else {})})
        names += [a["name"] for a in page["artifacts"]]
        token = page.get("continuationToken")
        if not token:
            break
    assert names == [f"public/{i}" for i in range(5)]
    info = await q.latestArtifactInfo(task_id, "public/3")
    assert info["storageType"] == "reference"


async def test_expired_artifact_answers_410(queue_emulator, clients):
    emu = queue_emulator
    task_id = await emu.create_task()
    tq = clients.queue((await clients.claim())["credentials"])
    soon = emu.make_task(deadline_in_s=600)["deadline"]
    await tq.createArtifact(task_id, 0, "public/r", {
        "storageType": "reference", "url": "https://example.com/", "contentType": "text/plain", "expires": soon})
    await tq.reportCompleted(task_id, 0)
    emu.clock.advance(700)
    with pytest.raises(taskcluster.TaskclusterRestFailure) as e:
        await clients.queue().getArtifact(task_id, 0, "public/r")
    assert e.value.status_code == 410


async def test_storage_put_checks_content_length_and_type(queue_emulator, clients, session):
    emu = queue_emulator
    task_id = await emu.create_task()
    tq = clients.queue((await clients.claim())["credentials"])
    s3 = await tq.createArtifact(task_id, 0, "public/s3", {
        "storageType": "s3", "contentType": "text/plain", "expires": emu.status(task_id)["expires"]})

    async def empty():
        if False:
            yield b""
    async with session.put(s3["putUrl"], data=empty(), headers={"Content-Type": "text/plain"}) as r:
        assert r.status == 411    # chunked, no Content-Length
    async with session.put(s3["putUrl"], data=b"abc", headers={"Content-Type": "text/html"}) as r:
        assert r.status == 403
    async with session.put(s3["putUrl"], data=b"abc",
                           headers={"Content-Type": "text/plain", "Content-Encoding": "gzip"}) as r:
        assert r.status == 200
    async with session.get(s3["putUrl"].split("?")[0]) as r:
        assert r.headers["Content-Encoding"] == "gzip" and r.headers["Content-Type"] == "text/plain"
    async with session.put(s3["putUrl"].split("?")[0], data=b"abc") as r:
        assert r.status == 403    # no upload token
