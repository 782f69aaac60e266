"""``assume:`` scope expansion: the emulator's Auth service (``expandScopes`` through the official
client, roles honoured by its own Hawk checks) and the worker's use of it (a native cache mount
granted through a role under the daemon; a missing role → malformed-payload naming the scope; the
Auth service down → resource-unavailable; no call for tasks without ``assume:``).

The worker runs in-process (:class:`~tcworker.worker.Worker`, ``numberOfTasksToRun``) against the
emulator; results are read from the queue (run states, reasons, uploaded logs, the call log).
"""

from __future__ import annotations

import asyncio
import gzip
from pathlib import Path
from types import SimpleNamespace

import pytest
import pytest_asyncio
import taskcluster.aio
from taskcluster.exceptions import TaskclusterRestFailure

from test_mounts_helpers import mounts_config
from tcworker.plugins.mounts import MountsPlugin
from tcworker.scopes import held_scopes
from tcworker.testing.queue import QueueEmulator
from tcworker.testing.queue.auth_api import expand_scopes
from tcworker.worker import Worker

POOL = "proj-test/python-worker"
WAIT_S = 90.0


@pytest_asyncio.fixture
async def emu():
    async with QueueEmulator(long_poll_s=0.5) as emulator:
        yield emulator


async def expand(emu: QueueEmulator, scopes: list[str], credentials: dict | None = None) -> list[str]:
    auth = taskcluster.aio.Auth(emu.client_options(credentials))  # a session per call
    return (await auth.expandScopes({"scopes": scopes}))["scopes"]


# ------------------------------------------------------------------ the emulator's Auth service
async def test_given_roles_then_expand_scopes_follows_assume_recursively_and_normalizes(emu):
    emu.add_role("repo:github.com/org/app:branch:main", ["assume:project:app", "queue:route:a.*"])
    emu.add_role("project:app", ["generic-worker:cache:c1", "queue:route:a.b"])
    emu.add_role("unrelated", ["secret:x"])

    got = await expand(emu, ["assume:repo:github.com/org/app:branch:main", "z:literal"])

    assert got == ["assume:project:app", "assume:repo:github.com/org/app:branch:main",
                   "generic-worker:cache:c1", "queue:route:a.*", "z:literal"]


async def test_given_star_roles_and_parameters_then_prefixes_match_and_the_rest_is_substituted(emu):
    emu.add_role("repo:github.com/*", ["docker-worker:cache:<..>-build", "plain"])
    assert await expand(emu, ["assume:repo:github.com/org/app"], {}) == [
        "assume:repo:github.com/org/app", "docker-worker:cache:org/app-build", "plain"]
    # a held star scope assumes every role it prefixes; the open parameter stays open
    assert expand_scopes({"repo:github.com/*": ["c:<..>-x"], "repo:other": ["o"]}, ["assume:repo:*"]) == [
        "assume:repo:*", "c:*", "o"]
    assert expand_scopes({}, ["a:b", "a:*", "a:b"]) == ["a:*"]


async def test_given_a_body_without_scopes_then_expand_scopes_answers_400(emu):
    auth = taskcluster.aio.Auth(emu.client_options())
    with pytest.raises(TaskclusterRestFailure) as caught:
        await auth.expandScopes({"scopes": "nope"})
    assert caught.value.status_code == 400


async def test_given_a_client_holding_assume_then_hawk_checks_honour_its_roles_recursively(emu):
    creds = emu.add_client("via-role", ["assume:outer"])
    emu.add_role("outer", ["assume:inner"])
    index = taskcluster.aio.Index(emu.client_options(creds))
    body = {"taskId": "fN1WJ4bRRpuLf4-aLCjTVQ", "rank": 0, "data": {}, "expires": "2100-01-01T00:00:00.000Z"}
    with pytest.raises(TaskclusterRestFailure) as caught:
        await index.insertTask("proj.x", body)
    assert caught.value.status_code == 403
    emu.add_role("inner", ["index:insert-task:proj.*"])
    assert (await index.insertTask("proj.x", body))["namespace"] == "proj.x"


# ------------------------------------------------------------------ the worker
def run_of(task: dict, root_url: str = "") -> SimpleNamespace:
    config = SimpleNamespace(root_url=root_url, client_id="", credentials={})
    return SimpleNamespace(task=task, config=config, queue=None)


async def test_given_exec_without_root_url_then_the_literal_scopes_count_and_are_cached():
    run = run_of({"scopes": ["assume:repo:x", "a"]})
    assert await held_scopes(run) == ["assume:repo:x", "a"]
    assert run.expanded_scopes == ["assume:repo:x", "a"]


async def test_given_exec_with_a_root_url_then_scopes_are_expanded_once(emu):
    emu.add_role("repo:x", ["generic-worker:cache:c1"])
    run = run_of({"scopes": ["assume:repo:x"]}, emu.root_url)
    assert await held_scopes(run) == ["assume:repo:x", "generic-worker:cache:c1"]
    assert await held_scopes(run) == ["assume:repo:x", "generic-worker:cache:c1"]
    assert len(emu.calls_to("expandScopes")) == 1


def task_log(emu: QueueEmulator, task_id: str) -> str:
    blob = emu.artifact_blob(task_id, 0, "public/logs/live_backing.log")
    assert blob.data is not None, "backing log never uploaded"
    data = gzip.decompress(blob.data) if blob.content_encoding == "gzip" else blob.data
    return data.decode(errors="replace")


async def run_worker(emu: QueueEmulator, tmp_path: Path, tasks: int) -> None:
    config = mounts_config(tmp_path, rootURL=emu.root_url, **emu.worker_credentials(), workerPoolId=POOL,
                           workerGroup="test-group", workerId="test-worker", statusPollIntervalSecs=0.1,
                           numberOfTasksToRun=tasks)
    worker = Worker(config, plugins=[MountsPlugin(config)])
    assert await asyncio.wait_for(worker.run(), WAIT_S) == 0


CACHE_PAYLOAD = {"command": [["bash", "-c", "echo cached-bytes > c1/f && cat c1/f"]], "maxRunTime": 60,
                 "mounts": [{"directory": "c1", "cacheName": "c1"}]}


async def test_given_a_role_granting_the_cache_scope_then_the_daemon_mounts_the_cache(emu, tmp_path):
    emu.add_role("repo:x", ["generic-worker:cache:c1"])
    granted = await emu.create_task(payload=CACHE_PAYLOAD, scopes=["assume:repo:x"])
    literal = await emu.create_task(payload=CACHE_PAYLOAD, scopes=["generic-worker:cache:c1"])
    await run_worker(emu, tmp_path, 2)

    assert emu.task_state(granted) == "completed", task_log(emu, granted)
    assert "cached-bytes" in task_log(emu, granted)
    assert emu.task_state(literal) == "completed", task_log(emu, literal)
    assert (tmp_path / "caches").is_dir() and any((tmp_path / "caches").rglob("f"))
    # one expansion, for the task holding assume: (none for the literal one)
    assert len(emu.calls_to("expandScopes")) == 1


async def test_given_no_role_then_malformed_payload_names_the_missing_cache_scope(emu, tmp_path):
    task_id = await emu.create_task(payload=CACHE_PAYLOAD, scopes=["assume:repo:x"])
    await run_worker(emu, tmp_path, 1)

    run = emu.runs(task_id)[0]
    assert (run.state, run.reason_resolved) == ("exception", "malformed-payload")
    log = task_log(emu, task_id)
    assert "generic-worker:cache:c1" in log and "assume:repo:x" in log and "missing" in log


async def test_given_the_auth_service_failing_then_resource_unavailable(emu, tmp_path):
    emu.add_role("repo:x", ["generic-worker:cache:c1"])
    emu.faults.inject("expandScopes", status=500, count=20)
    task_id = await emu.create_task(payload=CACHE_PAYLOAD, scopes=["assume:repo:x"])
    await run_worker(emu, tmp_path, 1)

    run = emu.runs(task_id)[0]
    assert (run.state, run.reason_resolved) == ("exception", "resource-unavailable")
    assert "expandScopes" in task_log(emu, task_id)
