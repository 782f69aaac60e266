"""The run state machine: claims, long-poll, reports, retries, cancel, claim expiry, deadline."""

from __future__ import annotations

import asyncio

import pytest
import slugid
import taskcluster

from tcworker.testing.queue import DEFAULT_TASK_QUEUE_ID as QUEUE_ID
from tcworker.testing.queue import QueueEmulator

WORKER = {"workerGroup": "test-group", "workerId": "test-worker", "tasks": 1}


async def test_create_task_over_http_fills_defaults_and_is_idempotent(queue_emulator, clients):
    q, emu = clients.queue(), queue_emulator
    task_id = slugid.nice()
    definition = emu.make_task(taskQueueId=None, provisionerId="proj-test", workerType="python-worker")
    del definition["taskQueueId"]
    status = (await q.createTask(task_id, definition))["status"]
    assert status["state"] == "pending" and status["taskQueueId"] == QUEUE_ID
    task = await q.task(task_id)
    assert (task["schedulerId"], task["priority"], task["taskGroupId"], task["retries"]) == (
        "-", "lowest", task_id, 5)
    await q.createTask(task_id, definition)
    with pytest.raises(taskcluster.TaskclusterRestFailure) as e:
        await q.createTask(task_id, {**definition, "payload": {"other": 1}})
    assert e.value.status_code == 409
    with pytest.raises(taskcluster.TaskclusterRestFailure) as e:
        await q.createTask(slugid.nice(), {**definition, "taskQueueId": "proj-test/other"})
    assert e.value.status_code == 400
    assert (await q.pendingTasks(QUEUE_ID))["pendingTasks"] == 1


async def test_claim_order_is_priority_then_fifo(queue_emulator, clients):
    emu = queue_emulator
    low1 = await emu.create_task()
    low2 = await emu.create_task()
    high = await emu.create_task(priority="high")
    got = [(await clients.claim())["status"]["taskId"] for _ in range(3)]
    assert got == [high, low1, low2]


async def test_claim_work_returns_up_to_n_tasks_at_once(queue_emulator, clients):
    for _ in range(3):
        await queue_emulator.create_task()
    r = await clients.worker_queue().claimWork(QUEUE_ID, {**WORKER, "tasks": 2})
    assert len(r["tasks"]) == 2


async def test_empty_long_poll_answers_no_tasks(queue_emulator, clients):
    assert (await clients.worker_queue().claimWork(QUEUE_ID, WORKER)) == {"tasks": []}


async def test_long_poll_returns_early_when_work_arrives(clients):
    async with QueueEmulator(long_poll_s=30) as emu:
        clients.emu = emu
        claim = asyncio.create_task(clients.worker_queue().claimWork(QUEUE_ID, WORKER))
        while not emu.state._waiters.get(QUEUE_ID):   # the poll is waiting
            await asyncio.sleep(0.005)
        task_id = await emu.create_task()
        r = await asyncio.wait_for(claim, 10)
        assert r["tasks"][0]["status"]["taskId"] == task_id


async def test_reports_are_idempotent_and_conflict_otherwise(queue_emulator, clients):
    task_id = await queue_emulator.create_task()
    tq = clients.queue((await clients.claim())["credentials"])
    await tq.reportCompleted(task_id, 0)
    await tq.reportCompleted(task_id, 0)
    for call in (tq.reportFailed(task_id, 0), tq.reportException(task_id, 0, {"reason": "internal-error"}),
                 tq.reclaimTask(task_id, 0)):
        with pytest.raises(taskcluster.TaskclusterRestFailure) as e:
            await call
        assert e.value.status_code == 409
    with pytest.raises(taskcluster.TaskclusterRestFailure) as e:
        await clients.queue().reportCompleted(task_id, 1)
    assert e.value.status_code == 404


@pytest.mark.parametrize("reason,retry", [
    ("worker-shutdown", "retry"), ("intermittent-task", "task-retry"), ("malformed-payload", None),
    ("resource-unavailable", None), ("internal-error", None)])
async def test_report_exception_reasons_and_retries(queue_emulator, clients, reason, retry):
    emu = queue_emulator
    task_id = await emu.create_task()
    tq = clients.queue((await clients.claim())["credentials"])
    status = (await tq.reportException(task_id, 0, {"reason": reason}))["status"]
    assert status["runs"][0]["reasonResolved"] == reason
    await tq.reportException(task_id, 0, {"reason": reason})   # idempotent
    if retry:
        assert status["runs"][1]["reasonCreated"] == retry and status["state"] == "pending"
        assert status["retriesLeft"] == 4
    else:
        assert len(status["runs"]) == 1 and status["state"] == "exception"


async def test_report_exception_refuses_queue_only_reasons(queue_emulator, clients):
    task_id = await queue_emulator.create_task()
    tq = clients.queue((await clients.claim())["credentials"])
    with pytest.raises(taskcluster.TaskclusterRestFailure) as e:
        await tq.reportException(task_id, 0, {"reason": "canceled"})
    assert e.value.status_code == 400


async def test_no_retry_when_retries_are_used_up(queue_emulator, clients):
    task_id = await queue_emulator.create_task(retries=0)
    tq = clients.queue((await clients.claim())["credentials"])
    status = (await tq.reportException(task_id, 0, {"reason": "worker-shutdown"}))["status"]
    assert len(status["runs"]) == 1 and status["state"] == "exception"


async def test_cancel_makes_the_next_reclaim_answer_409(queue_emulator, clients):
    emu = queue_emulator
    task_id = await emu.create_task()
    tq = clients.queue((await clients.claim())["credentials"])
    await clients.queue().cancelTask(task_id)
    with pytest.raises(taskcluster.TaskclusterRestFailure) as e:
        await tq.reclaimTask(task_id, 0)
    assert e.value.status_code == 409 and e.value.body["code"] == "RequestConflict"
    with pytest.raises(taskcluster.TaskclusterRestFailure):
        await tq.reportCompleted(task_id, 0)
    # uploads stay allowed after an exception resolution
    await tq.createArtifact(task_id, 0, "public/logs/live.log", {
        "storageType": "reference", "url": "https://example.com/", "contentType": "text/plain",
        "expires": emu.status(task_id)["expires"]})
    assert [(r.state, r.reason_resolved) for r in emu.runs(task_id)] == [("exception", "canceled")]


async def test_claim_expiry_resolves_claim_expired_and_schedules_a_retry(queue_emulator, clients):
    emu = queue_emulator
    task_id = await emu.create_task()
    tq = clients.queue((await clients.claim())["credentials"])
    emu.clock.advance(1199)
    await tq.reclaimTask(task_id, 0)
    emu.clock.advance(1201)
    runs = emu.runs(task_id)
    assert [(r.state, r.reason_created, r.reason_resolved) for r in runs] == [
        ("exception", "scheduled", "claim-expired"), ("pending", "retry", None)]
    with pytest.raises(taskcluster.TaskclusterRestFailure) as e:
        await tq.reclaimTask(task_id, 0)
    assert e.value.status_code == 409
    assert (await clients.claim())["runId"] == 1


async def test_claim_expiry_happens_in_real_time_too():
    async with QueueEmulator(claim_timeout_s=0.2, resolver_interval_s=0.02, long_poll_s=0.2) as emu:
        expired = asyncio.Event()
        emu.state.listeners.append(
            lambda event, task, run: expired.set() if run and run.reason_resolved == "claim-expired" else None)
        task_id = await emu.create_task()
        async with taskcluster.aio.createSession() as s:
            q = taskcluster.aio.Queue(emu.client_options(emu.worker_credentials()), session=s)
            await q.claimWork(QUEUE_ID, WORKER)
        await asyncio.wait_for(expired.wait(), 10)
        assert emu.task_state(task_id) == "pending"


async def test_deadline_refuses_reclaim_then_resolves_deadline_exceeded(queue_emulator, clients):
    emu = queue_emulator
    task_id = await emu.create_task(deadline_in_s=600)
    never_claimed = await emu.create_task(deadline_in_s=600)
    tq = clients.queue((await clients.claim())["credentials"])
    emu.clock.advance(601)
    with pytest.raises(taskcluster.TaskclusterRestFailure) as e:
        await tq.reclaimTask(task_id, 0)
    assert e.value.status_code == 409
    assert emu.task_state(task_id) == "running"   # the deadline resolver acts 60 s later
    assert (await clients.worker_queue().claimWork(QUEUE_ID, WORKER)) == {"tasks": []}
    emu.clock.advance(60)
    for tid in (task_id, never_claimed):
        run = emu.runs(tid)[-1]
        assert (run.state, run.reason_resolved) == ("exception", "deadline-exceeded")
        assert len(emu.runs(tid)) == 1
    with pytest.raises(taskcluster.TaskclusterRestFailure) as e:
        await clients.queue().cancelTask(task_id)
    assert e.value.status_code == 409


async def test_dependencies_schedule_when_completed(queue_emulator, clients):
    emu = queue_emulator
    first = await emu.create_task()
    second = await emu.create_task(dependencies=[first])
    assert emu.task_state(second) == "unscheduled"
    await clients.queue((await clients.claim())["credentials"]).reportCompleted(first, 0)
    assert emu.task_state(second) == "pending"
