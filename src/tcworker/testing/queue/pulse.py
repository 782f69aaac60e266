"""The emulator's Pulse messages: :class:`PulsePublisher` publishes the queue's exchanges to AMQP.

Lives here: routing keys and message bodies as upstream (``queue/src/exchanges.js``) for
``task-defined``, ``task-pending``, ``task-running``, ``artifact-created``, ``task-completed``,
``task-failed`` and ``task-exception``, and the publisher, which listens to the emulator's state
events (:attr:`QueueState.listeners`), turns each into a message at once (the status as of the
event) and publishes them in order from one background task with ``aio-pika``.

Exchanges are topic exchanges named ``<prefix><name>`` (upstream prefix
``exchange/taskcluster-queue/v1/``), declared at start and deleted at stop: tests use a unique
prefix, because the RabbitMQ on the test machines keeps its state between sessions.

Does not live here: the state machine (``state.py``), the worker's listener
(:mod:`tcworker.queue.pulse`).
"""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any

from .clock import iso
from .model import Artifact, Run, Task
from .state import QueueState

log = logging.getLogger(__name__)

DEFAULT_PREFIX = "exchange/taskcluster-queue/v1/"
EXCHANGES = ("task-defined", "task-pending", "task-running", "artifact-created",
             "task-completed", "task-failed", "task-exception")


def routing_key(task: Task, run: Run | None) -> str:
    """``primary.<taskId>.<runId>.<workerGroup>.<workerId>.<provisionerId>.<workerType>.
    <schedulerId>.<taskGroupId>._`` with ``_`` for what is missing (the last word is reserved)."""
    d = task.definition
    words = ["primary", task.task_id,
             str(run.run_id) if run is not None else None,
             run.worker_group if run is not None else None,
             run.worker_id if run is not None else None,
             d["provisionerId"], d["workerType"], d["schedulerId"], d["taskGroupId"], None]
    return ".".join(w if w else "_" for w in words)


def message_body(event: str, task: Task, run: Run | None, artifact: Artifact | None = None) -> dict:
    """The upstream message of ``event`` (one of :data:`EXCHANGES`): ``{version, status, ...}``."""
    body: dict[str, Any] = {"version": 1, "status": task.status_json()}
    if event != "artifact-created":
        body["task"] = {"tags": task.definition.get("tags", {})}
    if run is None:
        return body
    body["runId"] = run.run_id
    if run.worker_group is not None and event != "task-pending":
        body["workerGroup"], body["workerId"] = run.worker_group, run.worker_id
    if event == "task-running" and run.taken_until is not None:
        body["takenUntil"] = iso(run.taken_until)
    if event == "artifact-created" and artifact is not None:
        body["artifact"] = {"storageType": artifact.storage_type, "name": artifact.name,
                            "expires": iso(artifact.expires), "contentType": artifact.content_type}
    return body


class PulsePublisher:
    """Publishes the emulator's events to ``<prefix><exchange>`` over AMQP.

    Args:
        url: AMQP URL, e.g. ``amqp://guest:guest@127.0.0.1:5672/``.
        prefix: exchange prefix (default upstream's); use a unique one per test run.

    Attributes:
        published: ``(exchange, routing_key, body)`` of every message sent, in order.
        errors: publishing failures (str), for tests to assert on.
    """

    def __init__(self, url: str, prefix: str = DEFAULT_PREFIX) -> None:
        self.url = url
        self.prefix = prefix
        self.published: list[tuple[str, str, dict]] = []
        self.errors: list[str] = []
        self._outbox: asyncio.Queue[tuple[str, str, dict, list[str]]] = asyncio.Queue()
        self._seen: dict[tuple[str, int], dict[str, tuple[int, bool]]] = {}
        self._state: QueueState | None = None
        self._connection: Any = None
        self._exchanges: dict[str, Any] = {}
        self._sender: asyncio.Task | None = None

    async def start(self, state: QueueState) -> "PulsePublisher":
        """Connect, declare the exchanges, and publish every later event of ``state``."""
        import aio_pika

        self._connection = await aio_pika.connect(self.url, timeout=10)
        channel = await self._connection.channel()
        for name in EXCHANGES:
            self._exchanges[name] = await channel.declare_exchange(
                self.prefix + name, aio_pika.ExchangeType.TOPIC, durable=False)
        self._state = state
        state.listeners.append(self._on_event)
        self._sender = asyncio.create_task(self._send_forever(), name="emulator-pulse")
        return self

    async def flush(self, timeout_s: float = 10.0) -> None:
        """Wait until every event so far was published."""
        await asyncio.wait_for(self._outbox.join(), timeout_s)

    async def stop(self) -> None:
        """Publish what is queued (up to 5 s), delete the exchanges, close the connection."""
        if self._state is not None and self._on_event in self._state.listeners:
            self._state.listeners.remove(self._on_event)
        if self._sender is not None:
            try:
                await self.flush(5.0)
            except TimeoutError:
                self.errors.append("messages left unpublished at stop")
            self._sender.cancel()
            await asyncio.gather(self._sender, return_exceptions=True)
        for exchange in self._exchanges.values():
            try:
                await exchange.delete()
            except Exception as err:  # a broker gone at teardown: nothing left to clean
                log.warning("emulator Pulse: cannot delete exchange %s: %s", exchange.name, err)
        if self._connection is not None:
            await self._connection.close()

    # -- events → messages
    def _on_event(self, event: str, task: Task, run: Run | None) -> None:
        if event not in EXCHANGES:
            return
        cc = [f"route.{route}" for route in task.definition.get("routes", [])]
        if event != "artifact-created":
            self._outbox.put_nowait((event, routing_key(task, run), message_body(event, task, run), cc))
            return
        assert run is not None
        for artifact in self._new_artifacts(task, run):
            body = message_body(event, task, run, artifact)
            self._outbox.put_nowait((event, routing_key(task, run), body, cc))

    def _new_artifacts(self, task: Task, run: Run) -> list[Artifact]:
        """Artifacts created or made present since the last event of this run (the state's
        event does not say which one)."""
        seen = self._seen.setdefault((task.task_id, run.run_id), {})
        new = []
        for name, art in run.artifacts.items():
            mark = (id(art), art.present)
            if seen.get(name) != mark:
                seen[name] = mark
                if art.present:
                    new.append(art)
        return new

    async def _send_forever(self) -> None:
        import aio_pika

        while True:
            event, key, body, cc = await self._outbox.get()
            try:
                message = aio_pika.Message(json.dumps(body).encode(), content_type="application/json",
                                           headers={"CC": cc} if cc else None)
                await self._exchanges[event].publish(message, routing_key=key)
                self.published.append((self.prefix + event, key, body))
            except asyncio.CancelledError:
                raise
            except Exception as err:  # recorded: a test asserting on Pulse sees it
                log.warning("emulator Pulse: publishing %s failed: %s", event, err)
                self.errors.append(f"{event} {key}: {err}")
            finally:
                self._outbox.task_done()
