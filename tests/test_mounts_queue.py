"""Mounts with a Queue: artifact and indexed content through the daemon (task credentials, a
private artifact), and through ``tcworker exec`` with a configured rootURL; the Purge-Cache
service (purge requests drop caches; a 403 turns polling off with one log line).

The worker runs in-process (:class:`~tcworker.worker.Worker`, ``numberOfTasksToRun``) against the
emulator; results are read from the queue (run states, uploaded logs).
"""

from __future__ import annotations

import asyncio
import gzip
import logging
from pathlib import Path

import pytest_asyncio

from test_mounts_helpers import mounts_config
from tcworker.execrun import ExecOptions, exec_task
from tcworker.plugins.mounts import MountsPlugin
from tcworker.testing.queue import QueueEmulator
from tcworker.testing.queue.auth import PUBLIC_ANONYMOUS_SCOPES
from tcworker.worker import Worker

POOL = "proj-test/python-worker"
WAIT_S = 90.0


@pytest_asyncio.fixture
async def emu():
    async with QueueEmulator(long_poll_s=0.5) as emulator:
        yield emulator


def daemon_config(emu: QueueEmulator, tmp_path: Path, tasks: int):
    return mounts_config(tmp_path, rootURL=emu.root_url, **emu.worker_credentials(), workerPoolId=POOL,
                         workerGroup="test-group", workerId="test-worker", statusPollIntervalSecs=0.1,
                         numberOfTasksToRun=tasks)


async def run_worker(emu: QueueEmulator, tmp_path: Path, tasks: int) -> None:
    config = daemon_config(emu, tmp_path, tasks)
    worker = Worker(config, plugins=[MountsPlugin(config)])
    assert await asyncio.wait_for(worker.run(), WAIT_S) == 0


def task_log(emu: QueueEmulator, task_id: str, run_id: int = 0) -> str:
    blob = emu.artifact_blob(task_id, run_id, "public/logs/live_backing.log")
    assert blob.data is not None, "backing log never uploaded"
    data = gzip.decompress(blob.data) if blob.content_encoding == "gzip" else blob.data
    return data.decode(errors="replace")


def payload(script: str, **extra) -> dict:
    return {"command": [["bash", "-c", script]], "maxRunTime": 60, **extra}


PRODUCER = payload(
    "mkdir -p out/pack/bin && printf '#!/bin/sh\\necho packed-tool-ran\\n' > out/pack/bin/t && chmod 755 out/pack/bin/t"
    " && tar -czf out/private.tar.gz -C out/pack . && printf '#!/bin/sh\\necho indexed-ok\\n' > out/tool.sh",
    artifacts=[{"type": "file", "path": "out/private.tar.gz", "name": "private/pack.tar.gz"},
               {"type": "file", "path": "out/tool.sh", "name": "public/tool.sh"}])


async def produce(emu: QueueEmulator, tmp_path: Path) -> str:
    producer = await emu.create_task(payload=PRODUCER)
    await run_worker(emu, tmp_path, 1)
    assert emu.task_state(producer) == "completed", task_log(emu, producer)
    emu.index.insert("proj.tools.latest", producer)
    return producer


def consumer_payload(producer: str) -> dict:
    return payload("pack/bin/t && sh tool.sh", mounts=[
        {"directory": "pack", "format": "tar.gz", "content": {"taskId": producer, "artifact": "private/pack.tar.gz"}},
        {"file": "tool.sh", "content": {"namespace": "proj.tools.latest", "artifact": "public/tool.sh"}},
    ])


async def test_given_artifact_and_indexed_content_then_the_daemon_mounts_them_with_task_credentials(emu, tmp_path):
    producer = await produce(emu, tmp_path)
    consumer = await emu.create_task(payload=consumer_payload(producer), dependencies=[producer],
                                     scopes=["queue:get-artifact:private/pack.tar.gz"])
    no_scope = await emu.create_task(payload=consumer_payload(producer), dependencies=[producer])
    await run_worker(emu, tmp_path, 2)

    log = task_log(emu, consumer)
    assert emu.task_state(consumer) == "completed", log
    assert "packed-tool-ran" in log and "indexed-ok" in log
    # without queue:get-artifact:private/... the queue refuses the task's credentials: failed, mount named
    log = task_log(emu, no_scope)
    assert emu.task_state(no_scope) == "failed", log
    assert "mounts[0] read-only directory pack from artifact private/pack.tar.gz" in log and "403" in log


async def test_given_a_missing_artifact_or_index_entry_then_failed_naming_the_mount(emu, tmp_path):
    producer = await produce(emu, tmp_path)
    missing = await emu.create_task(payload=payload("true", mounts=[
        {"file": "x", "content": {"taskId": producer, "artifact": "public/nope"}}]), dependencies=[producer])
    unindexed = await emu.create_task(payload=payload("true", mounts=[
        {"file": "x", "content": {"namespace": "proj.nothing.here", "artifact": "public/tool.sh"}}]))
    await run_worker(emu, tmp_path, 2)
    assert emu.task_state(missing) == "failed"
    assert "mounts[0] file x from artifact public/nope" in task_log(emu, missing)
    assert emu.task_state(unindexed) == "failed"
    assert "index namespace proj.nothing.here: no task found (HTTP 404)" in task_log(emu, unindexed)


async def test_given_a_root_url_then_tcworker_exec_mounts_artifact_and_indexed_content(emu, tmp_path):
    producer = await produce(emu, tmp_path)
    task_file = tmp_path / "task.yml"
    import json

    task_file.write_text(json.dumps({"dependencies": [producer], "payload": {
        **consumer_payload(producer), "mounts": [
            {"directory": "pack", "format": "tar.gz", "content": {"taskId": producer, "artifact": "private/pack.tar.gz"}},
            {"file": "tool.sh", "content": {"namespace": "proj.tools.latest", "artifact": "public/tool.sh"}}]}}))
    root = emu.add_client("exec-user", ["queue:get-artifact:private/*"])
    config = mounts_config(tmp_path / "exec", rootURL=emu.root_url, **root)
    out = tmp_path / "out"
    code = await asyncio.to_thread(exec_task, ExecOptions(task_file=task_file, out_dir=out), config)
    log = (out / "public" / "logs" / "live_backing.log").read_text()
    assert code == 0, log
    assert "packed-tool-ran" in log and "indexed-ok" in log


CACHE_TASK = payload("echo x >> c/count; echo count=$(wc -l < c/count)",
                     mounts=[{"cacheName": "purgeable", "directory": "c"}])


async def test_given_a_purge_request_then_the_next_task_gets_a_fresh_cache(emu, tmp_path):
    scopes = ["generic-worker:cache:purgeable"]
    first = await emu.create_task(payload=CACHE_TASK, scopes=scopes)
    await run_worker(emu, tmp_path, 1)
    assert "count=1" in task_log(emu, first)
    second = await emu.create_task(payload=CACHE_TASK, scopes=scopes)
    await run_worker(emu, tmp_path, 1)
    assert "count=2" in task_log(emu, second)  # kept between tasks

    emu.add_purge_request(POOL, "purgeable")
    third = await emu.create_task(payload=CACHE_TASK, scopes=scopes)
    await run_worker(emu, tmp_path, 1)
    log = task_log(emu, third)
    assert "count=1" in log, log
    assert "purge request for cache 'purgeable'" in log
    assert emu.calls_to("purgeRequests")[-1].status == 200


async def test_given_purge_requests_forbidden_then_polling_stops_after_one_log_line(tmp_path, caplog):
    anonymous = [s for s in PUBLIC_ANONYMOUS_SCOPES if not s.startswith("purge-cache:")]
    async with QueueEmulator(long_poll_s=0.5, anonymous_scopes=anonymous) as emu:
        scopes = ["generic-worker:cache:purgeable"]
        tasks = [await emu.create_task(payload=CACHE_TASK, scopes=scopes) for _ in range(2)]
        caplog.set_level(logging.WARNING, logger="tcworker.plugins.mounts")
        await run_worker(emu, tmp_path, 2)
        assert [emu.task_state(t) for t in tasks] == ["completed", "completed"]
        assert "count=2" in task_log(emu, tasks[1])  # caches kept: purge state unknown is optimistic
        assert [c.status for c in emu.calls_to("purgeRequests")] == [403]
    lines = [r.getMessage() for r in caplog.records if "purge" in r.getMessage()]
    assert len(lines) == 1 and "polling off" in lines[0]


async def test_given_a_short_disk_then_the_worker_evicts_idle_caches_before_claiming(emu, tmp_path, monkeypatch):
    import tcworker.caches as caches_module

    scopes = ["generic-worker:cache:purgeable"]
    big = payload("head -c 3000000 /dev/zero > c/blob; echo stored", mounts=[{"cacheName": "purgeable", "directory": "c"}])
    first = await emu.create_task(payload=big, scopes=scopes)
    await run_worker(emu, tmp_path, 1)
    assert emu.task_state(first) == "completed"
    assert caches_module.CacheStore(tmp_path / "caches").idle()  # kept, idle

    # a pretend 4 MiB disk holding tasks, caches and downloads; the worker requires 2 MiB free
    def free_bytes(_config) -> int:
        used = sum(caches_module.tree_size_bytes(tmp_path / d) for d in ("tasks", "caches", "downloads"))
        return 4 * 1024 * 1024 - used

    monkeypatch.setattr(caches_module, "_free_bytes", free_bytes)
    check = payload("echo entries=$(ls -A c | wc -l)", mounts=[{"cacheName": "purgeable", "directory": "c"}])
    second = await emu.create_task(payload=check, scopes=scopes)
    config = daemon_config(emu, tmp_path, 1).model_copy(update={"required_disk_space_megabytes": 2})
    worker = Worker(config, plugins=[MountsPlugin(config)])
    assert await asyncio.wait_for(worker.run(), WAIT_S) == 0
    assert emu.task_state(second) == "completed"
    assert "entries=0" in task_log(emu, second)  # evicted before the claim: a new, empty cache
