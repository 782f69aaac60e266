"""Docker cleanup on the worker-shutdown path: SIGTERM to the real ``tcworker run`` process while
a docker task with a cache and the taskcluster proxy runs (FM-21 for the docker engine).

Expected: ``exception/worker-shutdown``; the container, the run's network and its proxy gone; the
cache discarded (an aborted run's cache is never kept); the worker exits 72. Completed, failed,
``maxRunTime`` and cancel paths are covered by ``tests/engines/test_docker.py`` and
``tests/test_docker_caches.py``; the boot sweep of labelled leftovers there too.
"""

from __future__ import annotations

import signal
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio

from docker_fixtures import docker_client, docker_image, leftovers  # noqa: F401
from e2e.conftest import WorkerFactory, resolutions, start_emulator, task_log

pytestmark = pytest.mark.docker

GRACE_S = 6.0  # as FM-21's native test: 2/3 to finish, then abort, 1/3 to report and upload


@pytest_asyncio.fixture
async def emu():
    emulator = await start_emulator()
    try:
        yield emulator
    finally:
        await emulator.__aexit__(None, None, None)


async def test_given_a_running_docker_task_when_the_worker_gets_sigterm_then_worker_shutdown_and_nothing_is_left(
    emu: Any, tmp_path: Path, docker_image: str, docker_client: Any,
) -> None:
    task_id = await emu.create_task(scopes=["docker-worker:cache:tcw-shutdown"], payload={
        "image": docker_image, "command": ["/bin/sh", "-c", "trap 'exit 143' TERM; echo kept > /c/file; sleep 600 & wait"],
        "maxRunTime": 120, "cache": {"tcw-shutdown": "/c"}, "features": {"taskclusterProxy": True}})
    factory = WorkerFactory(tmp_path)
    try:
        worker = await factory(emu, engines=["docker"], shutdownGracePeriodSecs=GRACE_S,
                               cachesDir=str(tmp_path / "caches"), downloadsDir=str(tmp_path / "downloads"))
        running = {"label": f"tcworker.task={task_id}/0", "status": "running"}
        await emu.changes.until(lambda: docker_client.containers.list(filters=running), what="container running")
        assert [n.name for n in docker_client.networks.list(filters={"label": f"tcworker.task={task_id}/0"})]
        worker.send_signal(signal.SIGTERM)
        assert await worker.wait() == 72, worker.log_text
    finally:
        await factory.stop_all()
    assert resolutions(emu, task_id)[:1] == [("exception", "worker-shutdown")], worker.log_text
    log = task_log(emu, task_id)
    assert "discarding cache(s) 'tcw-shutdown': the run was aborted" in log
    assert "Taskcluster proxy on " in log
    assert leftovers(docker_client, str(tmp_path)) == []
    assert list((tmp_path / "caches").glob("c-*")) == []  # discarded, not kept
