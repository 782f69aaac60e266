"""Upstream schema validation in the emulator, and where the shared folder is found."""

from __future__ import annotations

import pytest
import taskcluster

from tcworker.testing.fixtures import require_shared
from tcworker.testing.queue import DEFAULT_TASK_QUEUE_ID as QUEUE_ID
from tcworker.testing.queue import QueueEmulator, SchemaMismatch, find_schema_dir, find_shared_dir
from tcworker.testing.queue import model

WORKER = {"workerGroup": "test-group", "workerId": "test-worker", "tasks": 1}


def test_suite_runs_with_schema_validation_on(queue_emulator):
    require_shared()
    assert queue_emulator.schemas is not None


def test_shared_dir_follows_env_and_ci_rule(monkeypatch, tmp_path):
    monkeypatch.setenv("TCWORKER_SHARED", str(tmp_path / "absent"))
    monkeypatch.delenv("CI", raising=False)
    assert find_shared_dir() is None and find_schema_dir() is None
    monkeypatch.setenv("CI", "true")
    with pytest.raises(RuntimeError):
        find_shared_dir()
    monkeypatch.setenv("TCWORKER_SHARED", str(tmp_path))
    with pytest.raises(RuntimeError):
        find_schema_dir()   # shared exists but holds no schemas
    monkeypatch.delenv("CI")
    with pytest.raises(RuntimeError):
        QueueEmulator(validate_schemas=True)


async def test_a_malformed_response_is_caught_loudly(monkeypatch):
    require_shared()
    emu = QueueEmulator(long_poll_s=0.2, validate_schemas=True)
    with pytest.raises(SchemaMismatch):
        emu.check_response_schema("queue", "task-status-response", {"status": {"state": "bogus"}})
    original = model.Task.status_json
    monkeypatch.setattr(model.Task, "status_json", lambda self: {**original(self), "state": "sleeping"})
    with pytest.raises(AssertionError, match="task-status-response"):
        async with emu:
            task_id = await emu.create_task()
            async with taskcluster.aio.createSession() as s:
                q = taskcluster.aio.Queue(emu.client_options(), session=s)
                with pytest.raises(Exception) as e:
                    await q.status(task_id)
                assert getattr(e.value, "status", None) == 500
    assert emu.schema_errors and "queue.status" in emu.schema_errors[0]


async def test_bad_requests_get_upstream_400s(queue_emulator, clients):
    require_shared()
    worker = clients.worker_queue()
    with pytest.raises(taskcluster.TaskclusterRestFailure) as e:
        await worker.claimWork(QUEUE_ID, {"workerGroup": "test-group", "workerId": "test-worker"})
    assert e.value.status_code == 400 and e.value.body["code"] == "InputValidationError"
    with pytest.raises(taskcluster.TaskclusterRestFailure) as e:
        await clients.queue().claimWork("proj-test/Upper_Case", WORKER)
    assert e.value.status_code == 400 and e.value.body["code"] == "InvalidRequestArguments"
    with pytest.raises(taskcluster.TaskclusterRestFailure) as e:
        await clients.queue().status("not-a-slugid")
    assert e.value.body["code"] == "InvalidRequestArguments"
    task_id = await queue_emulator.create_task()
    tq = clients.queue((await clients.claim())["credentials"])
    with pytest.raises(taskcluster.TaskclusterRestFailure) as e:
        await tq.createArtifact(task_id, 0, "public/x", {"storageType": "object", "expires": "soon"})
    assert e.value.body["code"] == "InputValidationError"


async def test_create_task_helper_validates_the_definition(queue_emulator):
    require_shared()
    with pytest.raises(SchemaMismatch):
        await queue_emulator.create_task(metadata={})
