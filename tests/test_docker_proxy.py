"""taskcluster-proxy for docker tasks, end to end: the real ``tcworker run`` process, the queue
emulator, a real daemon.

Each docker run gets its own bridge network; the proxy listens on port 80 of its gateway and the
container resolves ``taskcluster`` to it (``TASKCLUSTER_PROXY_URL=http://taskcluster``, no
secret: docker tasks hard-code that URL). Two tasks back to back with different scopes: each
reads its own task through the new (``/api/queue/v1``) and the legacy (``/queue/v1``) paths,
is redirected to the private artifact its scope allows (the emulator's storage sits on the host's
loopback, which a container cannot reach, so the redirect is not followed) and gets 403 for the
other one. Afterwards no
container or network of the worker is left.
"""

from __future__ import annotations

import ipaddress
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio

from docker_fixtures import docker_client, docker_image, leftovers  # noqa: F401
from e2e.conftest import WorkerFactory, native_payload, start_emulator, task_log

pytestmark = pytest.mark.docker

SCRIPT = r"""
echo "url=$TASKCLUSTER_PROXY_URL"
grep -w taskcluster /etc/hosts | sed 's/^/hosts: /'
wget -q -O own.json "$TASKCLUSTER_PROXY_URL/api/queue/v1/task/$TASK_ID" && echo "new-path: $(grep -oE '(first|second) consumer' own.json | head -n1)"
wget -q -O legacy.json "http://taskcluster/queue/v1/task/$TASK_ID" && echo "legacy-path: $(grep -oE '(first|second) consumer' legacy.json | head -n1)"
for name in one two; do
  # allowed: the queue's redirect to storage (on the host's loopback here, so not followed further)
  echo "artifact $name: $(wget -S -O /dev/null "http://taskcluster/api/queue/v1/task/$1/artifacts/private%2F$name.txt" 2>&1 | grep -m1 'HTTP/')"
done
"""


@pytest_asyncio.fixture
async def proxied(tmp_path: Path, docker_image: str):
    """A native producer of two private artifacts, then two docker consumers with different
    scopes, on one worker (capacity 1) → ``(emu, producer, first, second)``."""
    emu = await start_emulator()
    factory = WorkerFactory(tmp_path)
    try:
        producer = await emu.create_task(payload=native_payload(
            "mkdir -p private && echo 'secret one' > private/one.txt && echo 'secret two' > private/two.txt",
            artifacts=[{"type": "directory", "path": "private", "name": "private"}]))
        consumers = []
        for name, label in (("one", "first"), ("two", "second")):
            consumers.append(await emu.create_task(
                dependencies=[producer], scopes=[f"queue:get-artifact:private/{name}.txt"],
                metadata={"name": f"{label} consumer", "description": "", "owner": "nobody@example.com",
                          "source": "https://example.com/"},
                payload={"image": docker_image, "command": ["/bin/sh", "-c", SCRIPT, "sh", producer],
                         "maxRunTime": 120, "features": {"taskclusterProxy": True}}))
        worker = await factory(emu, engines=["native", "docker"], numberOfTasksToRun=3, capacity=1)
        assert await worker.wait(180) == 0, worker.log_text
        yield emu, producer, *consumers
    finally:
        await factory.stop_all()
        await emu.__aexit__(None, None, None)


async def test_given_docker_tasks_with_the_proxy_then_each_reaches_the_queue_with_only_its_own_scopes(
    proxied: Any, tmp_path: Path, docker_client: Any,
) -> None:
    emu, producer, first, second = proxied
    assert emu.task_state(producer) == "completed"
    for task_id, label, mine, other in ((first, "first", "one", "two"), (second, "second", "two", "one")):
        log = task_log(emu, task_id)
        assert emu.task_state(task_id) == "completed", log
        assert "url=http://taskcluster\n" in log
        assert f"new-path: {label} consumer\n" in log
        assert f"legacy-path: {label} consumer\n" in log
        assert f"artifact {mine}:   HTTP/1.1 303 See Other\n" in log
        assert f"artifact {other}:   HTTP/1.1 403 Forbidden\n" in log
        hosts = [line for line in log.splitlines() if line.startswith("hosts: ")]
        assert len(hosts) == 1 and not ipaddress.ip_address(hosts[0].split()[1]).is_loopback, hosts
    assert leftovers(docker_client, str(tmp_path)) == []
