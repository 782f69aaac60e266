"""taskcluster-proxy end to end: the real ``tcworker run`` process against the emulator.

One worker (capacity 1) runs three tasks back to back: a producer publishing two NON-public
artifacts, then two consumers with ``features.taskclusterProxy`` and different scopes. Through
``$TASKCLUSTER_PROXY_URL`` each consumer reads its own task, creates an artifact, reads the
private artifact its scope allows (legacy path, ``%2F``-encoded name, as
``gw-taskcluster-proxy-private-artifact``) and gets 403 for the other one and for a forged
secret. Each run sees only its own scopes.
"""

from __future__ import annotations

import pytest
import pytest_asyncio

from e2e.conftest import WorkerFactory, native_payload, start_emulator, task_log

pytestmark = pytest.mark.asyncio(loop_scope="module")

CONSUMER = r"""
import json, os, sys, urllib.error, urllib.request
base, tid, rid, dep = os.environ["TASKCLUSTER_PROXY_URL"], os.environ["TASK_ID"], os.environ["RUN_ID"], sys.argv[1]

def call(url, body=None):
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"} if data else {})
    try:
        with urllib.request.urlopen(req, timeout=60) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as err:
        return err.code, err.read().decode()

status, body = call(base + "/api/queue/v1/task/" + tid)
own = json.loads(body)
print("own-task", status, own["metadata"]["name"])
for name in ("private/one.txt", "private/two.txt"):
    status, body = call(base + "/queue/v1/task/" + dep + "/artifacts/" + name.replace("/", "%2F"))
    print("artifact", name, status, body.strip() if status == 200 else "refused")
status, _ = call(base + "/api/queue/v1/task/" + tid + "/runs/" + rid + "/artifacts/public%2Fvia-proxy.txt",
                 {"storageType": "reference", "url": "https://example.com/x", "expires": own["expires"],
                  "contentType": "text/plain"})
print("create-artifact", status)
print("forged-secret", call(base.rsplit("/", 1)[0] + "/forged/api/queue/v1/task/" + tid)[0])
"""


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def proxied(tmp_path_factory):
    """Runs producer + two consumers on one worker → ``(emu, producer, first, second)``."""
    emu = await start_emulator()
    factory = WorkerFactory(tmp_path_factory.mktemp("proxy-e2e"))
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
                payload={"command": [["python3", "-c", CONSUMER, producer]], "maxRunTime": 120,
                         "features": {"taskclusterProxy": True, "liveLog": False}}))
        worker = await factory(emu, numberOfTasksToRun=3, capacity=1)
        assert await worker.wait() == 0, worker.log_text
        yield emu, producer, *consumers
    finally:
        await factory.stop_all()
        await emu.__aexit__(None, None, None)


async def test_given_a_scope_for_a_private_artifact_when_read_through_the_proxy_then_only_it_is_served(proxied):
    emu, producer, first, second = proxied
    assert emu.task_state(producer) == "completed"
    for task_id, mine, other in ((first, "one", "two"), (second, "two", "one")):
        assert emu.task_state(task_id) == "completed", task_log(emu, task_id)
        text = task_log(emu, task_id)
        assert f"artifact private/{mine}.txt 200 secret {mine}" in text
        assert f"artifact private/{other}.txt 403 refused" in text


async def test_the_proxy_reads_the_own_task_and_creates_an_artifact_with_the_run_scope(proxied):
    emu, _producer, first, second = proxied
    assert "own-task 200 first consumer" in task_log(emu, first)
    assert "own-task 200 second consumer" in task_log(emu, second)
    for task_id in (first, second):
        assert "create-artifact 200" in task_log(emu, task_id)
        assert emu.runs(task_id)[0].artifacts["public/via-proxy.txt"].storage_type == "reference"


async def test_a_forged_secret_is_refused_and_the_url_is_set_per_run(proxied):
    emu, _producer, first, second = proxied
    for task_id in (first, second):
        text = task_log(emu, task_id)
        assert "forged-secret 403" in text
        assert "Taskcluster proxy on 127.0.0.1:" in text
    calls = [c for c in emu.calls if c.api_name == "task" and c.client_id and c.client_id.startswith("task-client/")]
    assert {c.client_id.split("/")[1] for c in calls} == {first, second}  # each run its own credentials
