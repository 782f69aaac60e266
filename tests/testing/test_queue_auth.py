"""Hawk and scope checks of the emulator, driven through the official client."""

from __future__ import annotations

import datetime as dt
import json
import time

import mohawk
import pytest
import taskcluster

from tcworker.testing.queue import DEFAULT_TASK_QUEUE_ID as QUEUE_ID
from tcworker.testing.queue import QueueEmulator

WORKER = {"workerGroup": "test-group", "workerId": "test-worker", "tasks": 1}


async def test_wrong_access_token_is_refused_with_401(queue_emulator, clients):
    bad = {"clientId": queue_emulator.root_credentials["clientId"], "accessToken": "not-the-token"}
    with pytest.raises(taskcluster.TaskclusterAuthFailure) as e:
        await clients.queue(bad).pendingTasks(QUEUE_ID)
    assert e.value.status_code == 401 and e.value.body["code"] == "AuthenticationFailed"
    with pytest.raises(taskcluster.TaskclusterAuthFailure):
        await clients.queue({"clientId": "nobody", "accessToken": "x"}).pendingTasks(QUEUE_ID)


async def test_missing_scopes_are_refused_with_403_upstream_body(queue_emulator, clients):
    worker = clients.worker_queue()
    with pytest.raises(taskcluster.TaskclusterRestFailure) as e:
        await worker.claimWork("proj-test/other-pool", WORKER)
    body = e.value.body
    assert e.value.status_code == 403 and body["code"] == "InsufficientScopes"
    assert "queue:claim-work:proj-test/other-pool" in body["message"]
    assert body["requestInfo"]["method"] == "claimWork" and body["message"].count("---") == 1
    with pytest.raises(taskcluster.TaskclusterRestFailure) as e:
        await worker.claimWork(QUEUE_ID, {**WORKER, "workerId": "someone-else"})
    assert e.value.status_code == 403


async def test_task_credentials_only_cover_their_own_run(queue_emulator, clients):
    emu = queue_emulator
    t1, t2 = await emu.create_task(), await emu.create_task()
    c1 = await clients.claim()
    c2 = await clients.claim()
    own = clients.queue(c1["credentials"])
    other = c2["status"]["taskId"]
    with pytest.raises(taskcluster.TaskclusterRestFailure) as e:
        await own.reportCompleted(other, 0)
    assert e.value.status_code == 403
    with pytest.raises(taskcluster.TaskclusterRestFailure) as e:
        await own.claimWork(QUEUE_ID, WORKER)
    assert e.value.status_code == 403
    assert {t1, t2} == {c1["status"]["taskId"], other}


async def test_expired_temporary_credentials_are_refused(queue_emulator, clients):
    root = queue_emulator.root_credentials
    now = dt.datetime.now(dt.timezone.utc)
    fresh = taskcluster.createTemporaryCredentials(root["clientId"], root["accessToken"], now,
                                                   now + dt.timedelta(hours=1), ["queue:pending-count:*"])
    assert (await clients.queue(fresh).pendingTasks(QUEUE_ID))["pendingTasks"] == 0
    old = taskcluster.createTemporaryCredentials(root["clientId"], root["accessToken"],
                                                 now - dt.timedelta(hours=2), now - dt.timedelta(minutes=6),
                                                 ["*"])
    with pytest.raises(taskcluster.TaskclusterAuthFailure) as e:
        await clients.queue(old).pendingTasks(QUEUE_ID)
    assert "expired" in e.value.body["message"]
    named = taskcluster.createTemporaryCredentials(root["clientId"], root["accessToken"], now,
                                                   now + dt.timedelta(hours=1), ["*"], name="my/named")
    forged = dict(named, certificate=named["certificate"].replace('"*"', '"queue:*"'))
    assert (await clients.queue(named).pendingTasks(QUEUE_ID))["pendingTasks"] == 0
    with pytest.raises(taskcluster.TaskclusterAuthFailure):
        await clients.queue(forged).pendingTasks(QUEUE_ID)


async def test_task_credentials_expire_five_minutes_after_taken_until():
    async with QueueEmulator(claim_timeout_s=1, long_poll_s=0.2) as emu:
        await emu.create_task()
        creds = emu.auth.mint("task-client/x", ["*"], 1)
        cert = json.loads(creds["certificate"])
        assert cert["expiry"] - cert["start"] == 1000
        # The temporary credentials' lifetime equals the claim (real time), not the emulator clock.
        emu.clock.advance(3600)
        opts = emu.client_options(creds)
        async with taskcluster.aio.createSession() as s:
            assert (await taskcluster.aio.Queue(opts, session=s).pendingTasks(QUEUE_ID))["pendingTasks"] == 0


async def _raw_call(session, emu, path, ts_offset_s=0, body=b"", sign_body=None, method="GET"):
    root = emu.root_credentials
    url = emu.root_url + path
    sender = mohawk.Sender({"id": root["clientId"], "key": root["accessToken"], "algorithm": "sha256"},
                           url, method, content=sign_body if sign_body is not None else body,
                           content_type="application/json" if body else "",
                           _timestamp=str(int(time.time() + ts_offset_s)), ext="e30=")
    headers = {"Authorization": sender.request_header}
    if body:
        headers["Content-Type"] = "application/json"
    async with session.request(method, url, data=body or None, headers=headers) as resp:
        return resp.status, await resp.json()


async def test_skewed_timestamps_beyond_15_minutes_are_refused(queue_emulator, session):
    path = f"/api/queue/v1/pending/{QUEUE_ID.replace('/', '%2F')}"
    ok = await _raw_call(session, queue_emulator, path, ts_offset_s=-800)
    assert ok[0] == 200, ok
    status, body = await _raw_call(session, queue_emulator, path, ts_offset_s=-1000)
    assert status == 401 and body["code"] == "AuthenticationFailed"
    assert (await _raw_call(session, queue_emulator, path, ts_offset_s=1000))[0] == 401


async def test_body_not_matching_the_signed_hash_is_refused(queue_emulator, session):
    path = f"/api/queue/v1/claim-work/{QUEUE_ID.replace('/', '%2F')}"
    body = json.dumps(WORKER).encode()
    status, _ = await _raw_call(session, queue_emulator, path, body=body, method="POST",
                                sign_body=body.replace(b"test-worker", b"test-workez"))
    assert status == 401


async def test_authorized_scopes_restrict_and_must_be_held(queue_emulator, clients):
    emu = queue_emulator
    task_id = await emu.create_task()
    narrowed = clients.queue(authorizedScopes=["queue:status:*"])
    with pytest.raises(taskcluster.TaskclusterRestFailure) as e:
        await narrowed.cancelTask(task_id)
    assert e.value.status_code == 403
    assert (await narrowed.status(task_id))["status"]["state"] == "pending"
    worker = emu.worker_credentials()
    with pytest.raises(taskcluster.TaskclusterAuthFailure):
        await clients.queue(worker, authorizedScopes=["queue:cancel-task:*"]).cancelTask(task_id)


async def test_anonymous_scopes_can_be_configured_down_to_none():
    async with QueueEmulator(anonymous_scopes=[], long_poll_s=0.2) as emu:
        task_id = await emu.create_task()
        async with taskcluster.aio.createSession() as s:
            anon = taskcluster.aio.Queue(emu.client_options({}), session=s)
            with pytest.raises(taskcluster.TaskclusterRestFailure) as e:
                await anon.status(task_id)
            assert e.value.status_code == 403
            root = taskcluster.aio.Queue(emu.client_options(), session=s)
            assert (await root.status(task_id))["status"]["state"] == "pending"
