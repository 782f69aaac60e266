"""Docker caches (``payload.cache``) through the worker against the queue emulator.

Real daemon, the bash+busybox test image. A cache is a ``CacheStore`` directory bind-mounted into
the container: kept after a normal run, discarded after an aborted one (cancel, ``maxRunTime``)
or an exit code listed in ``onExitStatus.purgeCaches``, dropped by a purge request; it needs
``docker-worker:cache:<name>`` (or ``...:<workerPoolId>``). FM-12 (c) runs the real
``tcworker run`` process: cancel a docker task, then at once a second task with the same cache.

Results are read from the queue (run states, uploaded logs) and from the daemon (no container or
network of the worker left).
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio

from docker_fixtures import docker_client, docker_image, leftovers  # noqa: F401
from e2e.conftest import WorkerFactory, base_config, report_calls, resolutions, start_emulator, task_log
from tcworker.config import WorkerConfig
from tcworker.plugins.registry import make_plugins
from tcworker.worker import Worker

pytestmark = pytest.mark.docker

POOL = "proj-test/python-worker"
WAIT_S = 120.0
SCOPES = ["docker-worker:cache:tcw-c1"]
COUNTER = 'n=$(cat /c/count 2>/dev/null || echo 0); n=$((n+1)); echo $n > /c/count; echo "count=$n"; '


@pytest_asyncio.fixture
async def emu():
    emulator = await start_emulator()
    try:
        yield emulator
    finally:
        await emulator.__aexit__(None, None, None)


def payload(image: str, script: str, **extra: Any) -> dict:
    return {"image": image, "command": ["/bin/sh", "-c", script], "maxRunTime": 60,
            "cache": {"tcw-c1": "/c"}, **extra}


async def run_worker(emu: Any, tmp_path: Path, tasks: int) -> None:
    """An in-process worker (docker engine only) that runs ``tasks`` tasks and exits."""
    config = WorkerConfig.from_mapping({
        **base_config(emu, tmp_path, engines=["docker"], numberOfTasksToRun=tasks, killGracePeriodSecs=0.5),
        "cachesDir": str(tmp_path / "caches"), "downloadsDir": str(tmp_path / "downloads"),
        "statusPollIntervalSecs": 0.1, "enableLiveLog": False,
    }, environ={})
    worker = Worker(config, plugins=make_plugins(config, mode="run"))
    assert await asyncio.wait_for(worker.run(), WAIT_S) == 0


async def test_given_cache_outcomes_when_tasks_run_in_turn_then_only_normal_runs_keep_the_cache(
    emu: Any, tmp_path: Path, docker_image: str, docker_client: Any,
) -> None:
    # FM-13 for docker: kept after a success, discarded after purgeCaches and after maxRunTime
    steps = [
        payload(docker_image, COUNTER),                                             # count=1, kept
        payload(docker_image, COUNTER + "exit 7", onExitStatus={"purgeCaches": [7]}),  # count=2, dropped
        payload(docker_image, COUNTER),                                             # count=1 again, kept
        payload(docker_image, COUNTER + "touch /c/lock; sleep 600", maxRunTime=1),  # count=2, dropped
        payload(docker_image, COUNTER + "ls /c"),                                   # count=1, no lock
    ]
    ids = [await emu.create_task(payload=p, scopes=SCOPES) for p in steps]
    await run_worker(emu, tmp_path, len(ids))
    logs = [task_log(emu, task_id) for task_id in ids]
    assert [emu.task_state(task_id) for task_id in ids] == ["completed", "failed", "completed", "failed", "completed"]
    assert [next(line for line in log.splitlines() if line.startswith("count=")) for log in logs] == [
        "count=1", "count=2", "count=1", "count=2", "count=1"]
    assert "cache 'tcw-c1': new, mounted at /c" in logs[0]
    assert "cache 'tcw-c1': reused, mounted at /c" in logs[1]
    assert "discarding cache(s) 'tcw-c1': exit code 7 is listed in onExitStatus.purgeCaches" in logs[1]
    assert "discarding cache(s) 'tcw-c1': the task exceeded its maxRunTime" in logs[3]
    assert "lock" not in logs[4].split("=== Task Starting ===")[1]
    assert leftovers(docker_client, str(tmp_path)) == []


async def test_given_cache_scopes_then_missing_ones_are_malformed_and_the_pool_suffix_is_accepted(
    emu: Any, tmp_path: Path, docker_image: str,
) -> None:
    missing = await emu.create_task(payload=payload(docker_image, "true"), scopes=["docker-worker:cache:other"])
    suffixed = await emu.create_task(payload=payload(docker_image, COUNTER), scopes=[f"docker-worker:cache:tcw-c1:{POOL}"])
    starred = await emu.create_task(payload=payload(docker_image, COUNTER), scopes=["docker-worker:cache:tcw-*"])
    await run_worker(emu, tmp_path, 3)
    assert resolutions(emu, missing) == [("exception", "malformed-payload")]
    log = task_log(emu, missing)
    assert "payload.cache: task.scopes do not satisfy the scopes it requires" in log
    assert "Required scopes (each also granted with the suffix ':proj-test/python-worker'):" in log
    assert "  docker-worker:cache:tcw-c1" in log and "  docker-worker:cache:other" in log
    assert "=== Task Starting ===" not in log
    assert emu.task_state(suffixed) == "completed" and emu.task_state(starred) == "completed"
    assert "count=2" in task_log(emu, starred)


async def test_given_a_purge_request_then_the_next_docker_task_gets_a_fresh_cache(
    emu: Any, tmp_path: Path, docker_image: str,
) -> None:
    first = await emu.create_task(payload=payload(docker_image, COUNTER), scopes=SCOPES)
    await run_worker(emu, tmp_path, 1)
    assert "count=1" in task_log(emu, first)
    emu.add_purge_request(POOL, "tcw-c1")
    second = await emu.create_task(payload=payload(docker_image, COUNTER), scopes=SCOPES)
    await run_worker(emu, tmp_path, 1)
    log = task_log(emu, second)
    assert "count=1" in log, log
    assert "purge request for cache 'tcw-c1'" in log


async def test_fm12c_given_a_cancelled_docker_task_when_a_second_takes_its_cache_at_once_then_it_succeeds_and_nothing_is_left(
    emu: Any, tmp_path: Path, docker_image: str, docker_client: Any,
) -> None:
    factory = WorkerFactory(tmp_path)
    try:
        first = await emu.create_task(payload=payload(docker_image, COUNTER + "echo ready; sleep 600"), scopes=SCOPES)
        worker = await factory(emu, engines=["docker"], numberOfTasksToRun=2, statusPollIntervalSecs=0.1,
                               cachesDir=str(tmp_path / "caches"), downloadsDir=str(tmp_path / "downloads"))
        running = {"label": f"tcworker.task={first}/0", "status": "running"}
        await emu.changes.until(lambda: docker_client.containers.list(filters=running), what="first container running")
        emu.cancel_task(first)
        second = await emu.create_task(payload=payload(docker_image, COUNTER), scopes=SCOPES)
        assert await worker.wait(WAIT_S) == 0, worker.log_text
    finally:
        await factory.stop_all()
    assert resolutions(emu, first) == [("exception", "canceled")]
    assert report_calls(emu, first) == []
    assert emu.task_state(second) == "completed", task_log(emu, second)
    log = task_log(emu, second)
    assert "count=1" in log  # the cancelled run's cache was discarded
    assert "discarding cache(s) 'tcw-c1': the run was aborted" in task_log(emu, first)
    assert leftovers(docker_client, str(tmp_path)) == []
