"""Cancellation over Pulse: the emulator publishes the queue's messages, the worker listens.

Needs the RabbitMQ on 127.0.0.1:5672 (guest/guest): skipped locally when it is absent, a failure
under ``CI=true``. RabbitMQ keeps its state between sessions, so every test uses its own exchange
prefix; queues are exclusive and auto-delete. A worker pointed at a broker that is not there must
work as if Pulse were not configured (that test needs no RabbitMQ).
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import socket
from pathlib import Path

import pytest
import slugid
import taskcluster.aio

from tcworker.config import WorkerConfig
from tcworker.queue.pulse import PulseListener, exchange_prefix, redact_url
from tcworker.testing.queue import QueueEmulator
from tcworker.testing.queue.pulse import EXCHANGES, routing_key
from tcworker.worker import Worker

AMQP_URL = "amqp://guest:guest@127.0.0.1:5672/"
POOL = "proj-test/python-worker"
GROUP, WORKER_ID = "pulse-group", "pulse-worker"
WAIT_S = 30.0


def rabbitmq_up() -> bool:
    try:
        with socket.create_connection(("127.0.0.1", 5672), timeout=2):
            return True
    except OSError:
        return False


@pytest.fixture
def rabbitmq() -> str:
    if not rabbitmq_up():
        if os.environ.get("CI") == "true":
            pytest.fail("RabbitMQ is not listening on 127.0.0.1:5672 (required under CI=true)")
        pytest.skip("RabbitMQ is not listening on 127.0.0.1:5672")
    return AMQP_URL


@pytest.fixture
def prefix() -> str:
    return f"exchange/tcworker-test-{slugid.nice()}/v1/"


# ------------------------------------------------------------------ pure
def test_exchange_prefix():
    assert exchange_prefix("") == "exchange/taskcluster-queue/v1/"
    assert exchange_prefix("my-queue") == "exchange/my-queue/v1/"
    assert exchange_prefix("exchange/x/v1") == "exchange/x/v1/"
    assert redact_url("amqps://u:pw@h:5671/v") == "amqps://u:***@h:5671/v"


async def test_listener_fires_only_the_named_run():
    listener = PulseListener(AMQP_URL, prefix="p/", worker_group=GROUP, worker_id=WORKER_ID)
    fired = []
    unwatch = listener.watch("T1", 0, lambda reason, msg: fired.append((reason, msg)))
    status = {"taskId": "T1", "runs": [{"runId": 0, "state": "exception", "reasonResolved": "canceled"}]}
    assert not listener.handle(json.dumps({"status": {"taskId": "T2", "runs": []}, "runId": 0}))
    assert not listener.handle(b"not json")
    assert listener.handle(json.dumps({"status": status, "runId": 0}))
    assert fired and fired[0][0] == "canceled"
    unwatch()
    assert not listener.handle(json.dumps({"status": status, "runId": 0}))


# ------------------------------------------------------------------ the emulator's messages
async def test_emulator_publishes_the_queue_messages_with_upstream_routing_keys(rabbitmq, prefix):
    import aio_pika

    async with QueueEmulator(long_poll_s=0.2, pulse_url=rabbitmq, pulse_prefix=prefix) as emu:
        connection = await aio_pika.connect(rabbitmq)
        async with connection:
            channel = await connection.channel()
            queue = await channel.declare_queue(f"queue/guest/test-{slugid.nice()}", exclusive=True,
                                                auto_delete=True)
            for name in EXCHANGES:
                await queue.bind(prefix + name, routing_key="#")
            got: list[tuple[str, str, dict]] = []
            done = asyncio.Event()

            async def on_message(message):
                got.append((message.exchange, message.routing_key, json.loads(message.body)))
                if message.exchange.endswith("task-exception"):
                    done.set()
            await queue.consume(on_message, no_ack=True)

            creds = emu.worker_credentials(POOL, GROUP, WORKER_ID)
            group_id = slugid.nice()
            task_id = await emu.create_task(payload={}, schedulerId="sched", taskGroupId=group_id,
                                            routes=["index.project.x"])
            async with taskcluster.aio.createSession() as session:
                queue_client = taskcluster.aio.Queue(emu.client_options(creds), session=session)
                claim = await queue_client.claimWork(POOL, {"workerGroup": GROUP, "workerId": WORKER_ID, "tasks": 1})
                task_queue = taskcluster.aio.Queue(emu.client_options(claim["tasks"][0]["credentials"]),
                                                   session=session)
                await task_queue.createArtifact(task_id, 0, "public/ref", {
                    "storageType": "reference", "url": "https://example.com/x",
                    "expires": claim["tasks"][0]["task"]["expires"], "contentType": "text/plain"})
                await task_queue.reportCompleted(task_id, 0)
            failed_id = await emu.create_task(payload={})
            emu.cancel_task(failed_id)
            await asyncio.wait_for(done.wait(), WAIT_S)
            assert emu.pulse.errors == []

    kinds = [(exchange[len(prefix):], key) for exchange, key, _ in got]
    tail = f"proj-test.python-worker.sched.{group_id}._"
    assert kinds[:5] == [
        ("task-defined", f"primary.{task_id}._._._.{tail}"),
        ("task-pending", f"primary.{task_id}.0._._.{tail}"),
        ("task-running", f"primary.{task_id}.0.{GROUP}.{WORKER_ID}.{tail}"),
        ("artifact-created", f"primary.{task_id}.0.{GROUP}.{WORKER_ID}.{tail}"),
        ("task-completed", f"primary.{task_id}.0.{GROUP}.{WORKER_ID}.{tail}"),
    ]
    assert kinds[-1] == ("task-exception", f"primary.{failed_id}.0._._.proj-test.python-worker.-.{failed_id}._")
    bodies = {exchange[len(prefix):]: body for exchange, _, body in got}
    assert bodies["task-running"]["workerId"] == WORKER_ID and "takenUntil" in bodies["task-running"]
    assert bodies["artifact-created"]["artifact"]["name"] == "public/ref"
    assert bodies["task-completed"]["status"]["state"] == "completed"
    assert bodies["task-exception"]["status"]["runs"][0]["reasonResolved"] == "canceled"


def test_routing_key_has_underscores_for_what_is_missing():
    emu = QueueEmulator()
    task = emu.state.create_task("T", emu.make_task())
    assert routing_key(task, None) == "primary.T._._._.proj-test.python-worker.-.T._"


# ------------------------------------------------------------------ the worker
def worker_config(emu: QueueEmulator, tmp_path: Path, **keys) -> WorkerConfig:
    creds = emu.worker_credentials(POOL, GROUP, WORKER_ID)
    raw = {
        "rootURL": emu.root_url, "clientId": creds["clientId"], "accessToken": creds["accessToken"],
        "workerPoolId": POOL, "workerGroup": GROUP, "workerId": WORKER_ID,
        "tasksDir": str(tmp_path / "tasks"), "requiredDiskSpaceMegabytes": 1, "engines": ["native"],
        "killGracePeriodSecs": 1, "outputDrainSecs": 0.2, "enableLiveLog": False,
        "statusPollIntervalSecs": 600, "numberOfTasksToRun": 1,
    }
    raw.update(keys)
    return WorkerConfig.from_mapping(raw, environ={})


async def wait_for_pid(path: Path) -> int:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + WAIT_S
    while not (path.exists() and path.read_text().strip()):
        if loop.time() > deadline:
            pytest.fail(f"the task never wrote {path}")
        await asyncio.sleep(0.02)
    return int(path.read_text())


async def process_gone(pid: int) -> None:
    """Return once process ``pid`` exited (a pidfd becomes readable then)."""
    try:
        fd = os.pidfd_open(pid)
    except ProcessLookupError:
        return
    loop = asyncio.get_running_loop()
    gone = loop.create_future()
    loop.add_reader(fd, lambda: gone.done() or gone.set_result(None))
    try:
        await gone
    finally:
        loop.remove_reader(fd)
        os.close(fd)


async def test_given_pulse_when_the_task_is_cancelled_then_it_dies_without_polling_or_reclaim(
        rabbitmq, prefix, tmp_path, caplog):
    caplog.set_level(logging.INFO)
    pidfile = tmp_path / "pid"
    async with QueueEmulator(long_poll_s=0.5, pulse_url=rabbitmq, pulse_prefix=prefix) as emu:
        task_id = await emu.create_task(payload={"command": [["/bin/sh", "-c", f"echo $$ > {pidfile}; exec sleep 300"]],
                                                 "maxRunTime": 600})
        worker = Worker(worker_config(emu, tmp_path, pulseURL=rabbitmq, pulseNamespace=prefix))
        running = asyncio.create_task(worker.run())
        pid = await wait_for_pid(pidfile)
        await asyncio.wait_for(worker.pulse.ready.wait(), WAIT_S)
        loop = asyncio.get_running_loop()
        cancelled_at = loop.time()
        emu.cancel_task(task_id)
        await asyncio.wait_for(process_gone(pid), WAIT_S)
        latency_s = loop.time() - cancelled_at
        assert await asyncio.wait_for(running, WAIT_S) == 0
    assert latency_s < 10, latency_s          # ~0.1 s measured; polling is 600 s, reclaim ~1000 s
    assert [(r.state, r.reason_resolved) for r in emu.runs(task_id)] == [("exception", "canceled")]
    assert emu.calls_to("reclaimTask") == [] and emu.calls_to("status") == []
    assert not [c for c in emu.calls if c.api_name.startswith("report")]
    assert any("pulse" in r.getMessage() and task_id in r.getMessage() for r in caplog.records
               if "cancel" in r.getMessage()), [r.getMessage() for r in caplog.records]
    assert "public/logs/live_backing.log" in emu.runs(task_id)[0].artifacts


async def test_given_no_broker_then_the_worker_works_and_says_so_once(tmp_path, caplog):
    caplog.set_level(logging.DEBUG, logger="tcworker.queue.pulse")
    with socket.socket() as s:            # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        dead_url = f"amqp://guest:guest@127.0.0.1:{s.getsockname()[1]}/"
    async with QueueEmulator(long_poll_s=0.5) as emu:
        task_id = await emu.create_task(payload={"command": [["/bin/sh", "-c", "sleep 1"]], "maxRunTime": 60})
        worker = Worker(worker_config(emu, tmp_path, pulseURL=dead_url))
        assert await asyncio.wait_for(worker.run(), WAIT_S) == 0
    assert emu.task_state(task_id) == "completed"
    warnings = [r for r in caplog.records if r.name == "tcworker.queue.pulse" and r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "guest:***@" in warnings[0].getMessage()


async def test_given_a_lost_connection_then_the_listener_reconnects_and_fires_again(rabbitmq, prefix):
    async with QueueEmulator(long_poll_s=0.2, pulse_url=rabbitmq, pulse_prefix=prefix) as emu:
        listener = PulseListener(rabbitmq, prefix=prefix, worker_group=GROUP, worker_id=WORKER_ID,
                                 backoff_max_s=1.0)
        listener.start()
        try:
            await asyncio.wait_for(listener.ready.wait(), WAIT_S)
            old = listener.connection
            await old.close()                               # as if the broker dropped us
            loop = asyncio.get_running_loop()
            deadline = loop.time() + WAIT_S
            while not (listener.ready.is_set() and listener.connection not in (None, old)):
                assert loop.time() < deadline, "the listener never reconnected"
                await asyncio.sleep(0.01)
            task_id = await emu.create_task(payload={})
            fired = asyncio.Event()
            listener.watch(task_id, 0, lambda reason, msg: fired.set())
            creds = emu.worker_credentials(POOL, GROUP, WORKER_ID)
            async with taskcluster.aio.createSession() as session:
                queue_client = taskcluster.aio.Queue(emu.client_options(creds), session=session)
                await queue_client.claimWork(POOL, {"workerGroup": GROUP, "workerId": WORKER_ID, "tasks": 1})
            emu.cancel_task(task_id)
            await asyncio.wait_for(fired.wait(), WAIT_S)
        finally:
            await listener.stop()
