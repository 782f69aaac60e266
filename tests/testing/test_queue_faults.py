"""Fault injection: status, delay, hang and reset, before and after the handler; storage faults."""

from __future__ import annotations

import time

import aiohttp
import pytest
import taskcluster
from taskcluster.aio import download, upload

from tcworker.testing.queue import DEFAULT_TASK_QUEUE_ID as QUEUE_ID

WORKER = {"workerGroup": "test-group", "workerId": "test-worker", "tasks": 1}


async def _claimed(emu, clients):
    task_id = await emu.create_task()
    claim = await clients.claim()
    return task_id, claim, clients.queue(claim["credentials"])


async def test_status_before_refuses_and_leaves_state_unchanged(queue_emulator, clients):
    emu = queue_emulator
    task_id, claim, tq = await _claimed(emu, clients)
    fault = emu.faults.inject("reclaimTask", "status", status=500, count=2)
    for _ in range(2):
        with pytest.raises(aiohttp.ClientResponseError) as e:   # 5xx after maxRetries=0
            await tq.reclaimTask(task_id, 0)
        assert e.value.status == 500
    assert fault.hits == 2
    assert emu.status(task_id)["runs"][0]["takenUntil"] == claim["takenUntil"]
    await tq.reclaimTask(task_id, 0)
    assert [c.status for c in emu.calls_to("reclaimTask")] == [500, 500, 200]


async def test_status_after_changes_state_but_loses_the_answer(queue_emulator, clients):
    emu = queue_emulator
    task_id, _, tq = await _claimed(emu, clients)
    emu.faults.inject("queue.reportCompleted", "status", status=503, when="after")
    with pytest.raises(aiohttp.ClientResponseError):
        await tq.reportCompleted(task_id, 0)
    assert emu.task_state(task_id) == "completed"
    await tq.reportCompleted(task_id, 0)   # idempotent retry


async def test_injected_409_has_an_upstream_body(queue_emulator, clients):
    emu = queue_emulator
    task_id, _, tq = await _claimed(emu, clients)
    emu.faults.inject("reclaimTask", "status", status=409)
    with pytest.raises(taskcluster.TaskclusterRestFailure) as e:
        await tq.reclaimTask(task_id, 0)
    assert e.value.status_code == 409 and e.value.body["code"] == "RequestConflict"


async def test_client_retries_absorb_fewer_faults_than_max_retries(queue_emulator, clients):
    emu = queue_emulator
    task_id, claim, _ = await _claimed(emu, clients)
    emu.faults.inject("reclaimTask", "status", status=500, count=1)
    await clients.queue(claim["credentials"], maxRetries=1).reclaimTask(task_id, 0)
    assert [c.fault for c in emu.calls_to("reclaimTask")] == ["status", None]


async def test_delay_then_answer(queue_emulator, clients):
    emu = queue_emulator
    await emu.create_task()
    emu.faults.inject("claimWork", "delay", delay_s=0.05)
    claim = await clients.claim()
    assert emu.calls_to("claimWork")[0].fault == "delay" and claim["runId"] == 0


async def test_hang_until_the_client_gives_up(queue_emulator, clients):
    emu = queue_emulator
    emu.faults.inject("pendingTasks", "hang")
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=0.3)) as short:
        q = taskcluster.aio.Queue(emu.client_options(), session=short)
        with pytest.raises(TimeoutError):   # the client does not wrap aiohttp timeouts
            await q.pendingTasks(QUEUE_ID)
    assert (await clients.queue().pendingTasks(QUEUE_ID))["pendingTasks"] == 0


async def test_reset_before_refuses_the_connection(queue_emulator, clients):
    emu = queue_emulator
    task_id, _, tq = await _claimed(emu, clients)
    emu.faults.inject("reportFailed", "reset")
    with pytest.raises(taskcluster.exceptions.TaskclusterConnectionError):
        await tq.reportFailed(task_id, 0)
    assert emu.task_state(task_id) == "running"
    assert emu.calls_to("reportFailed")[0].status == 0


async def test_lost_claim_response_ends_as_claim_expired_and_retry(queue_emulator, clients):
    """A claimWork whose answer is lost (reset after the claim) leaves a running run nobody
    works on; it ends claim-expired with a retry run, as on a real deployment."""
    emu = queue_emulator
    task_id = await emu.create_task()
    emu.faults.inject("claimWork", "reset", when="after")
    with pytest.raises(taskcluster.exceptions.TaskclusterConnectionError):
        await clients.worker_queue().claimWork(QUEUE_ID, WORKER)
    assert emu.task_state(task_id) == "running"
    emu.clock.advance(1201)
    assert [r.reason_resolved for r in emu.runs(task_id)] == ["claim-expired", None]
    assert (await clients.claim())["runId"] == 1


async def _big_object(emu, clients, tq, task_id, data, **kw):
    a = await tq.createArtifact(task_id, 0, "public/big.bin", {
        "storageType": "object", "contentType": "application/octet-stream",
        "expires": emu.status(task_id)["expires"]})
    await upload.uploadFromBuf(projectId=a["projectId"], name=a["name"], contentType="application/octet-stream",
                               contentLength=len(data), expires=a["expires"], uploadId=a["uploadId"],
                               objectService=clients.object(a["credentials"]), data=data, **kw)
    await tq.finishArtifact(task_id, 0, "public/big.bin", {"uploadId": a["uploadId"]})


async def test_storage_put_fault_is_retried_by_the_upload_helper(queue_emulator, clients):
    emu = queue_emulator
    task_id, _, tq = await _claimed(emu, clients)
    data = b"z" * 9000   # >= 8 KiB: goes through storage, not dataInline
    emu.faults.inject("storage.put", "status", status=503)
    await _big_object(emu, clients, tq, task_id, data, maxRetries=1)
    assert [c.status for c in emu.calls_to("storage.put")] == [503, 200]
    assert emu.artifact_blob(task_id, 0, "public/big.bin").data == data


async def test_storage_reset_after_truncates_a_download(queue_emulator, clients):
    emu = queue_emulator
    task_id, _, tq = await _claimed(emu, clients)
    data = bytes(range(256)) * 100
    await _big_object(emu, clients, tq, task_id, data, maxRetries=0)
    emu.faults.inject("storage.get", "reset", when="after")
    with pytest.raises(aiohttp.ClientError):
        await download.downloadArtifactToBuf(taskId=task_id, name="public/big.bin",
                                             queueService=clients.queue(), maxRetries=0)
    emu.faults.inject("storage", "reset", when="after")
    got, _ = await download.downloadArtifactToBuf(taskId=task_id, name="public/big.bin",
                                                  queueService=clients.queue(), maxRetries=1)
    assert bytes(got) == data


async def test_storage_throttle_slows_transfers(queue_emulator, clients):
    emu = queue_emulator
    task_id, _, tq = await _claimed(emu, clients)
    data = b"t" * (64 * 1024)
    emu.faults.throttle_storage(64 * 1024 * 8)   # 1/8 s for the body
    start = time.monotonic()
    await _big_object(emu, clients, tq, task_id, data, maxRetries=0)
    assert time.monotonic() - start >= 0.12
    assert emu.artifact_blob(task_id, 0, "public/big.bin").data == data


def test_unknown_fault_kind_is_refused(queue_emulator):
    with pytest.raises(ValueError):
        queue_emulator.faults.inject("claimWork", "explode")
