"""The mounts plugin through TaskRun with the native engine (no queue): content sources (raw,
base64, URL from a loopback server), formats, resolutions of mount errors (the mount is named in
the log), payload checks (scopes, formats, paths), and the caches' fate: reuse, exclusive use at
capacity 2, discard after an aborted run (FM-13), ``purgeCaches``, kept across intermittent-task.
"""

from __future__ import annotations

import asyncio
import base64
import gzip
from pathlib import Path

import pytest
import pytest_asyncio

from test_mounts_helpers import ScriptedServer, mounts_config, sha256, tar_gz
from tcworker.caches import CacheStore
from tcworker.downloads import RetryPolicy
from tcworker.engines.native import NativeEngine
from tcworker.errors import RunResolvedElsewhere, WorkerShutdown
from tcworker.outlet import RunOutlet
from tcworker.payloads.taskdef import complete_task_definition
from tcworker.plugins.mounts import MountsPlugin
from tcworker.taskrun import TaskRun

CACHE_SCOPE = "generic-worker:cache:c1"
DEP = "dZT2KIzsQa6U9bvBLn0-zQ"  # a slugid, not a dependency unless listed


class LogOutlet(RunOutlet):
    def __init__(self) -> None:
        self.log = ""
        self.resolution = None

    async def publish_artifacts(self, artifacts) -> None:
        pass

    async def publish_log(self, path, names, expires) -> None:
        self.log = Path(path).read_text(errors="replace")

    async def report(self, resolution) -> None:
        self.resolution = resolution


class Runner:
    """Runs tasks one by one (or together) on one config, engine and mounts plugin."""

    def __init__(self, tmp_path: Path, **config_keys) -> None:
        self.tmp_path = tmp_path
        self.config = mounts_config(tmp_path, **config_keys)
        self.plugin = MountsPlugin(self.config, mode="exec")
        self.plugin.retry = RetryPolicy(attempts=2, first_delay_s=0.05, sock_read_timeout_s=2)
        self.engine = NativeEngine(self.config)
        self.count = 0

    def make(self, payload: dict, **task) -> TaskRun:
        self.count += 1
        payload = {"maxRunTime": 60, **payload}
        definition = complete_task_definition({"payload": payload, **task}, task_id=f"task{self.count}")
        (self.tmp_path / "logs").mkdir(exist_ok=True)
        return TaskRun(task=definition, task_id=f"task{self.count}", run_id=0, config=self.config,
                       engines={"native": self.engine}, outlet=LogOutlet(), plugins=[self.plugin],
                       log_path=self.tmp_path / "logs" / f"{self.count}.log")

    async def run(self, payload: dict, **task) -> tuple[str, str]:
        """Run to the end → ``(state[/reason], log text)``."""
        run = self.make(payload, **task)
        return await finish(run)


async def finish(run: TaskRun) -> tuple[str, str]:
    resolution = await asyncio.wait_for(run.execute(), 60)
    state = resolution.state or "elsewhere"
    if state == "exception":
        state += "/" + resolution.reason
    return state, run.outlet.log


async def wait_for_line(run: TaskRun, text: str) -> None:
    """Until ``text`` is in the run's log (the task printed it)."""
    while not run.log.path.exists():
        await asyncio.sleep(0.01)
    seen = b""
    async for chunk in run.log.follow():
        seen += chunk
        if text.encode() in seen:
            return


def bash(script: str) -> list[list[str]]:
    return [["bash", "-c", script]]


@pytest_asyncio.fixture
async def server():
    srv = await ScriptedServer().start()
    yield srv
    await srv.stop()


@pytest.fixture
def runner(tmp_path: Path) -> Runner:
    return Runner(tmp_path)


# ------------------------------------------------------------------ content sources and formats
async def test_given_raw_base64_and_url_content_then_every_mount_is_in_place(runner, server):
    archive = tar_gz({"bin/tool": (b"#!/bin/sh\necho tool-ok\n", 0o755), "lib/x.txt": (b"x-data\n", 0o644)})
    server.files["/tc.tar.gz"] = archive
    server.files["/script"] = b"#!/bin/sh\necho script-ok\n"
    server.files["/notes.gz"] = gzip.compress(b"gunzipped notes\n")
    state, log = await runner.run({
        "command": bash("chmod +x run-task && ./run-task && tc/bin/tool && cat tc/lib/x.txt sub/notes "
                        "&& printf '[%s]\\n' \"$(cat raw.txt)\" && cat b64.bin"),
        "mounts": [
            {"file": "./run-task", "content": {"url": server.url + "/script"}},
            {"directory": "tc", "format": "tar.gz",
             "content": {"url": server.url + "/tc.tar.gz", "sha256": sha256(archive)}},
            {"file": "sub/notes", "format": "gz", "content": {"url": server.url + "/notes.gz"}},
            {"file": "raw.txt", "content": {"raw": "no newline"}},
            {"file": "b64.bin", "content": {"base64": base64.b64encode(b"from base64\n").decode()}},
        ],
    })
    assert state == "completed", log
    for line in ("script-ok", "tool-ok", "x-data", "gunzipped notes", "[no newline]", "from base64"):
        assert line in log
    assert "Mounting mounts[1] read-only directory tc from url" in log


async def test_given_url_404_then_failed_with_the_mount_named(runner, server):
    state, log = await runner.run({"command": bash("true"), "mounts": [
        {"file": "tool", "content": {"url": server.url + "/nope"}}]})
    assert state == "failed"
    assert f"mounts[0] file tool from url {server.url}/nope: url {server.url}/nope: HTTP 404" in log
    assert "=== Task Starting ===" not in log


async def test_given_url_5xx_after_retries_then_resource_unavailable(runner, server):
    server.script["/flaky"] = [502] * 5
    state, log = await runner.run({"command": bash("true"), "mounts": [
        {"file": "tool", "content": {"url": server.url + "/flaky"}}]})
    assert state == "exception/resource-unavailable"
    assert "mounts[0] file tool" in log and "HTTP 502" in log


async def test_given_a_sha256_mismatch_then_failed_with_the_mount_named(runner, server):
    server.files["/a.zip"] = b"whatever"
    state, log = await runner.run({"command": bash("true"), "mounts": [
        {"directory": "d", "format": "zip", "content": {"url": server.url + "/a.zip", "sha256": "ab" * 32}}]})
    assert state == "failed"
    assert "mounts[0] read-only directory d" in log and "sha256 mismatch" in log


async def test_given_a_bad_archive_then_failed_with_the_mount_named(runner):
    state, log = await runner.run({"command": bash("true"), "mounts": [
        {"directory": "d", "format": "tar.xz", "content": {"raw": "not an archive"}}]})
    assert state == "failed"
    assert "mounts[0] read-only directory d from raw content (tar.xz): not a valid tar.xz archive" in log


# ------------------------------------------------------------------ refused before anything runs
async def test_given_a_cache_without_its_scope_then_malformed_listing_required_and_given(runner):
    state, log = await runner.run({"command": bash("echo ran"), "mounts": [
        {"cacheName": "c1", "directory": "c"}, {"cacheName": "c2", "directory": "d"}]},
        scopes=["generic-worker:cache:c2", "queue:foo"])
    assert state == "exception/malformed-payload"
    assert "['generic-worker:cache:c1', 'generic-worker:cache:c2']" in log  # required
    assert "['generic-worker:cache:c2', 'queue:foo']" in log  # given
    assert "missing ['generic-worker:cache:c1']" in log
    assert "=== Task Starting ===" not in log


async def test_given_a_wildcard_cache_scope_then_accepted(runner):
    state, log = await runner.run({"command": bash("test -d c"), "mounts": [{"cacheName": "c1", "directory": "c"}]},
                                  scopes=["generic-worker:cache:*"])
    assert state == "completed", log


@pytest.mark.parametrize("mount,message", [
    ({"directory": "d", "format": "rar", "content": {"raw": "x"}}, "format 'rar' is not supported"),
    ({"file": "../outside", "content": {"raw": "x"}}, "'../outside' is outside the task directory"),
    ({"directory": "d", "format": "zip", "content": {"taskId": DEP, "artifact": "public/x.zip"}},
     "dependencies"),
])
async def test_given_an_unusable_mount_then_malformed_payload(runner, mount, message):
    state, log = await runner.run({"command": bash("echo ran"), "mounts": [mount]})
    assert state == "exception/malformed-payload"
    assert message in log


async def test_given_artifact_content_without_a_root_url_then_malformed_payload(runner):
    dep = DEP
    state, log = await runner.run({"command": bash("true"), "mounts": [
        {"file": "x", "content": {"taskId": dep, "artifact": "public/x"}}]}, dependencies=[dep])
    assert state == "exception/malformed-payload"
    assert "rootURL" in log


# ------------------------------------------------------------------ caches
CACHE_MOUNT = {"cacheName": "c1", "directory": "cache/c1"}


def counting(extra: str = "") -> dict:
    script = "echo x >> cache/c1/count; echo \"count=$(wc -l < cache/c1/count)\"" + extra
    return {"command": bash(script), "mounts": [CACHE_MOUNT]}


async def test_given_two_tasks_with_one_cache_then_the_second_sees_the_first_ones_files(runner):
    for expected in ("count=1", "count=2"):
        state, log = await runner.run(counting(), scopes=[CACHE_SCOPE])
        assert state == "completed" and expected in log, log


@pytest.mark.parametrize("how", ["cancel", "worker-shutdown", "maxRunTime"])
async def test_fm13_given_a_task_aborted_mid_write_then_its_cache_is_discarded(runner, how):
    # FM-13: task 1 writes a lock file into cache c1 and is aborted; task 2 must see an empty cache
    write = {"command": bash("echo partial > cache/c1/index.lock; echo lock-written; sleep 30"),
             "mounts": [CACHE_MOUNT], "maxRunTime": 1 if how == "maxRunTime" else 60}
    first = runner.make(write, scopes=[CACHE_SCOPE])
    pending = asyncio.ensure_future(finish(first))
    await asyncio.wait_for(wait_for_line(first, "lock-written"), 30)
    if how == "cancel":
        first.abort(RunResolvedElsewhere("task cancelled"))
    elif how == "worker-shutdown":
        first.abort(WorkerShutdown("worker is shutting down"))
    state, log = await pending
    assert state == {"cancel": "elsewhere", "worker-shutdown": "exception/worker-shutdown",
                     "maxRunTime": "failed"}[how]
    assert "discarding cache(s) 'c1'" in log

    state, log = await runner.run({"command": bash("ls -A cache/c1; echo entries=$(ls -A cache/c1 | wc -l)"),
                                   "mounts": [CACHE_MOUNT]}, scopes=[CACHE_SCOPE])
    assert state == "completed" and "entries=0" in log, log
    assert "cache 'c1': new" in log


async def test_given_an_exit_code_in_purge_caches_then_failed_and_the_cache_discarded(runner):
    state, _ = await runner.run(counting(), scopes=[CACHE_SCOPE])
    purge = counting("; exit 72")
    purge["onExitStatus"] = {"purgeCaches": [72]}
    state, log = await runner.run(purge, scopes=[CACHE_SCOPE])
    assert state == "failed" and "count=2" in log
    assert "exit code 72 is listed in onExitStatus.purgeCaches" in log
    state, log = await runner.run(counting(), scopes=[CACHE_SCOPE])
    assert "count=1" in log


async def test_given_a_failed_or_intermittent_task_then_the_cache_is_kept(runner):
    failing = counting("; exit 3")
    failing["onExitStatus"] = {"purgeCaches": [72]}
    assert (await runner.run(failing, scopes=[CACHE_SCOPE]))[0] == "failed"
    retry = counting("; exit 128")
    retry["onExitStatus"] = {"retry": [128]}
    assert (await runner.run(retry, scopes=[CACHE_SCOPE]))[0] == "exception/intermittent-task"
    state, log = await runner.run(counting(), scopes=[CACHE_SCOPE])
    assert "count=3" in log


async def test_given_capacity_2_then_two_running_tasks_never_share_a_cache(tmp_path: Path):
    runner = Runner(tmp_path, capacity=2)
    gate = tmp_path / "gate"
    import os

    os.mkfifo(gate)
    first = runner.make({"command": bash(f"echo A > cache/c1/who; echo a-ready; read x < {gate}; ls cache/c1"),
                         "mounts": [CACHE_MOUNT]}, scopes=[CACHE_SCOPE])
    pending = asyncio.ensure_future(finish(first))
    await asyncio.wait_for(wait_for_line(first, "a-ready"), 30)
    state, log = await runner.run({"command": bash("echo entries=$(ls -A cache/c1 | wc -l); echo B > cache/c1/who"),
                                   "mounts": [CACHE_MOUNT]}, scopes=[CACHE_SCOPE])
    assert state == "completed" and "entries=0" in log  # not A's copy, which is in use
    await asyncio.to_thread(gate.write_text, "go\n")
    assert (await pending)[0] == "completed"
    idle = CacheStore(runner.config.caches_dir, capacity=2).idle()
    assert sorted((Path(runner.config.caches_dir) / e.id / "who").read_text() for e in idle) == ["A\n", "B\n"]


async def test_given_a_cache_with_content_then_unpacked_only_when_new(runner):
    archive = base64.b64encode(tar_gz({"seed.txt": (b"seeded\n", 0o644)})).decode()
    mount = {"cacheName": "c1", "directory": "cache/c1", "format": "tar.gz", "content": {"base64": archive}}
    state, log = await runner.run({"command": bash("cat cache/c1/seed.txt; echo more > cache/c1/seed.txt"),
                                   "mounts": [mount]}, scopes=[CACHE_SCOPE])
    assert state == "completed" and "seeded" in log
    state, log = await runner.run({"command": bash("cat cache/c1/seed.txt"), "mounts": [mount]}, scopes=[CACHE_SCOPE])
    assert "more" in log and "seeded" not in log.split("=== Task Starting ===")[1]
