"""Tests of the live log: the HTTP server (:mod:`tcworker.livelog`) on its own, and the feature
(:mod:`tcworker.plugins.livelog`) in an in-process :class:`~tcworker.worker.Worker` against the
queue emulator, read as a user reads it: ``getArtifact public/logs/live.log`` and its redirect.

Tasks that must still be running while the test reads block on a FIFO that the test writes to.
"""

from __future__ import annotations

import asyncio
import os
import socket
from datetime import datetime, timedelta, timezone
from pathlib import Path

import aiohttp
import pytest

from tcworker.config import WorkerConfig
from tcworker.livelog import LiveLogServer
from tcworker.logs import TaskLog
from tcworker.plugins.livelog import reference_expiry
from tcworker.plugins.registry import make_plugins
from tcworker.testing.fixtures import queue_emulator  # noqa: F401
from tcworker.worker import Worker

LIVE = "public/logs/live.log"
BACKING = "public/logs/live_backing.log"
WAIT_S = 60.0  # generous: two cores shared with other engineers' tests


# ---------------------------------------------------------------------- helpers
def worker_config(emu, tmp_path: Path, **keys) -> WorkerConfig:
    raw = {
        "rootURL": emu.root_url, **emu.worker_credentials(), "workerPoolId": "proj-test/python-worker",
        "workerGroup": "test-group", "workerId": "test-worker", "tasksDir": str(tmp_path / "tasks"),
        "engines": ["native"], "statusPollIntervalSecs": 0.1, "requiredDiskSpaceMegabytes": 0,
        "numberOfTasksToRun": 1, **keys,
    }
    return WorkerConfig.from_mapping(raw, environ={})


def artifact_event(emu, task_id: str, name: str, storage_type: str) -> asyncio.Event:
    """Set once artifact ``name`` of ``task_id`` exists with ``storage_type``."""
    event = asyncio.Event()

    def listener(_event: str, task, run) -> None:
        art = run.artifacts.get(name) if run is not None and task.task_id == task_id else None
        if art is not None and art.storage_type == storage_type:
            event.set()

    emu.state.listeners.append(listener)
    return event


def artifact_url(emu, task_id: str, name: str = LIVE) -> str:
    return f"{emu.root_url}/api/queue/v1/task/{task_id}/runs/0/artifacts/{name}"


async def read_until(resp: aiohttp.ClientResponse, needle: bytes, into: bytearray) -> None:
    """Read chunks of ``resp`` into ``into`` until ``needle`` is in it."""
    while needle not in into:
        chunk = await resp.content.readany()
        assert chunk, f"live log ended before {needle!r}: {bytes(into)[-500:]!r}"
        into += chunk


def blocking_payload(fifo: Path, before: str, after: str) -> dict:
    """Print ``before``, wait for a line on ``fifo``, print ``after``."""
    script = f'echo {before}; read go < "{fifo}"; echo {after}'
    return {"command": [["sh", "-c", script]], "maxRunTime": 120}


async def release(fifo: Path) -> None:
    def write() -> None:
        with open(fifo, "w") as f:  # blocks until the task opened it for reading
            f.write("go\n")
    await asyncio.wait_for(asyncio.to_thread(write), WAIT_S)


# ---------------------------------------------------------------------- the server alone
async def test_server_replays_then_follows_and_cuts_off_a_stalled_reader(tmp_path):
    """Given a log with a fast reader and a reader that never reads, when the log grows by 16 MiB
    and closes, then the fast reader gets every byte and the stalled one is cut off early."""
    task_log = TaskLog(tmp_path / "live_backing.log")
    task_log.info("before any reader")
    server = LiveLogServer(write_timeout_s=0.5)
    await server.start()
    try:
        entry = server.register(task_log)
        stalled = socket.socket()
        stalled.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        stalled.connect(("127.0.0.1", server.port))
        stalled.sendall(f"GET /log/{entry.token} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
        async with aiohttp.ClientSession() as session, session.get(entry.url) as resp:
            assert resp.status == 200
            assert resp.headers["Content-Type"] == "text/plain; charset=utf-8"
            body = bytearray()
            await read_until(resp, b"before any reader", body)
            line = b"x" * 1023 + b"\n"
            for _ in range(16):
                task_log.write(line * 1024)
                await asyncio.sleep(0)
            task_log.close()
            body += await resp.read()
        assert bytes(body) == task_log.path.read_bytes()
        await until(lambda: server.reader_count == 0, "the stalled reader is cut off")
        received = await asyncio.to_thread(_drain_socket, stalled)
        assert received < len(body) // 2  # cut off long before the end
    finally:
        await server.stop()


async def until(predicate, what: str) -> None:
    """Poll ``predicate`` (no event exists for a server-side cut-off) for up to WAIT_S."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + WAIT_S
    while not predicate():
        assert loop.time() < deadline, f"timed out waiting until {what}"
        await asyncio.sleep(0.05)


def _drain_socket(sock: socket.socket) -> int:
    """Bytes readable until the server closes the connection (it was cut off)."""
    sock.settimeout(WAIT_S)
    total = 0
    try:
        while chunk := sock.recv(1 << 16):
            total += len(chunk)
    except ConnectionResetError:
        pass
    finally:
        sock.close()
    return total


async def test_server_requires_the_token(tmp_path):
    """Given a registered log, then no token, a wrong token and an unregistered token get 404."""
    task_log = TaskLog(tmp_path / "live_backing.log")
    server = LiveLogServer()
    await server.start()
    try:
        entry = server.register(task_log)
        assert len(entry.token) >= 32 and entry.url == f"http://127.0.0.1:{server.port}/log/{entry.token}"
        async with aiohttp.ClientSession() as session:
            for path in ("/log/", "/log/" + entry.token[:-1], "/", "/log"):
                async with session.get(server.url_base + path) as resp:
                    assert resp.status == 404, path
            server.unregister(entry.token)
            async with session.get(entry.url) as resp:
                assert resp.status == 404
    finally:
        task_log.close()
        await server.stop()


def test_public_url_from_config():
    """liveLogPublicURL wins; else publicIP; else 127.0.0.1."""
    tunnel = LiveLogServer.from_config(WorkerConfig.from_mapping(
        {"liveLogPublicURL": "https://tunnel.example.com/w1/", "publicIP": "203.0.113.7"}, environ={}))
    assert tunnel.url_base == "https://tunnel.example.com/w1" and tunnel.host == "0.0.0.0"
    direct = LiveLogServer.from_config(WorkerConfig.from_mapping(
        {"publicIP": "203.0.113.7", "liveLogPort": 60099}, environ={}))
    assert direct.url_base == "http://203.0.113.7:60099"
    local = LiveLogServer.from_config(WorkerConfig.from_mapping({}, environ={}))
    assert local.host == "127.0.0.1"


def test_reference_never_outlives_the_task():
    now = datetime(2030, 1, 1, tzinfo=timezone.utc)
    assert reference_expiry(now + timedelta(days=1), 3600, now) == now + timedelta(minutes=75)
    assert reference_expiry(now + timedelta(minutes=5), 3600, now) == now + timedelta(minutes=5)


def test_enable_live_log_false_lists_no_plugin():
    def names(mode="run", **keys):
        return [p.name for p in make_plugins(WorkerConfig.from_mapping(keys, environ={}), mode=mode)]

    assert "livelog" in names()
    assert "livelog" not in names(enableLiveLog=False)
    assert "livelog" not in names(mode="exec")


# ---------------------------------------------------------------------- in a worker
async def test_live_log_streams_while_the_task_runs(queue_emulator, tmp_path):
    """Given a worker running a task that waits on a FIFO, when two users follow the live.log
    artifact's redirect, then both see the first line while the task still runs, and at the end
    both hold exactly the backing log's bytes; then live.log is a link and the URL is gone (404)."""
    emu = queue_emulator
    fifo = tmp_path / "go.fifo"
    os.mkfifo(fifo)
    task_id = await emu.create_task(payload=blocking_payload(fifo, "first-line-of-output", "second-line"))
    referenced = artifact_event(emu, task_id, LIVE, "reference")
    worker = Worker(worker_config(emu, tmp_path, numberOfTasksToRun=0))
    running = asyncio.create_task(worker.run())
    try:
        await asyncio.wait_for(referenced.wait(), WAIT_S)
        reference = emu.runs(task_id)[0].artifacts[LIVE]
        assert reference.content_type == "text/plain; charset=utf-8"
        assert reference.expires <= emu.runs(task_id)[0].started + 120 + 15 * 60 + 5
        live_url = reference.details["url"]
        async with aiohttp.ClientSession() as session:
            async with session.get(artifact_url(emu, task_id)) as first, \
                    session.get(artifact_url(emu, task_id)) as second:
                assert str(first.url) == live_url  # the queue's 303 led here
                bodies = [bytearray(), bytearray()]
                await read_until(first, b"first-line-of-output\n", bodies[0])
                await read_until(second, b"first-line-of-output\n", bodies[1])
                assert emu.task_state(task_id) == "running"
                assert b"second-line\n" not in bodies[0]
                await release(fifo)
                bodies[0] += await first.read()
                bodies[1] += await second.read()
            await until(lambda: worker.resolved_count == 1, "the run is disposed")
            backing = emu.artifact_blob(task_id, 0, BACKING).data
            assert b"second-line\n" in backing and b"=== Task Finished ===" in backing
            assert bytes(bodies[0]) == backing and bytes(bodies[1]) == backing
            assert emu.runs(task_id)[0].artifacts[LIVE].storage_type == "link"
            assert emu.task_state(task_id) == "completed"
            async with session.get(artifact_url(emu, task_id)) as resp:  # now the link
                assert await resp.read() == backing
            async with session.get(live_url) as resp:
                assert resp.status == 404
    finally:
        worker.request_stop("test over")
        await asyncio.wait_for(running, WAIT_S)


async def test_stalled_reader_does_not_slow_the_task(queue_emulator, tmp_path):
    """Given a reader of the live log that never reads, when the task prints 8 MiB, then the task
    completes with the whole output in its backing log while that reader got a small part."""
    emu = queue_emulator
    task_id = await emu.create_task(payload={
        "command": [["sh", "-c", "head -c 8388608 /dev/zero | tr '\\0' a; echo; echo done-printing"]],
        "maxRunTime": 120})
    referenced = artifact_event(emu, task_id, LIVE, "reference")
    worker = Worker(worker_config(emu, tmp_path))
    running = asyncio.create_task(worker.run())
    stalled = socket.socket()
    try:
        await asyncio.wait_for(referenced.wait(), WAIT_S)
        url = emu.runs(task_id)[0].artifacts[LIVE].details["url"]
        host_port, _, path = url.removeprefix("http://").partition("/")
        stalled.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        stalled.connect(("127.0.0.1", int(host_port.rsplit(":", 1)[1])))
        stalled.sendall(f"GET /{path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
        assert await asyncio.wait_for(running, WAIT_S) == 0
        assert emu.task_state(task_id) == "completed"
        backing = emu.artifact_blob(task_id, 0, BACKING).data
        assert b"a" * 8388608 + b"\ndone-printing\n" in backing
        assert await asyncio.to_thread(_drain_socket, stalled) < len(backing) // 2
    finally:
        stalled.close()
        if not running.done():
            worker.request_stop("test over")
            worker.request_stop("test over")
            await asyncio.wait_for(running, WAIT_S)


async def test_features_live_log_false_makes_no_reference(queue_emulator, tmp_path):
    """Given ``features.liveLog: false``, then no reference artifact is ever created; live.log
    still ends as the link to the backing log."""
    emu = queue_emulator
    task_id = await emu.create_task(payload={"command": [["sh", "-c", "echo quiet"]], "maxRunTime": 60,
                                             "features": {"liveLog": False}})
    kinds: list[str] = []
    emu.state.listeners.append(lambda _e, task, run: run is not None and task.task_id == task_id
                               and LIVE in run.artifacts and kinds.append(run.artifacts[LIVE].storage_type))
    assert await asyncio.wait_for(Worker(worker_config(emu, tmp_path)).run(), WAIT_S) == 0
    assert emu.task_state(task_id) == "completed"
    assert "reference" not in kinds and emu.runs(task_id)[0].artifacts[LIVE].storage_type == "link"
