"""Fast cancellation over Pulse: the queue's ``task-exception`` messages for this worker's runs.

Lives here:

- :func:`exchange_prefix`: the queue's exchange prefix from ``pulseNamespace``.
- :class:`PulseListener`: one per worker. With ``aio-pika`` it binds an exclusive auto-delete
  queue (``queue/<user>/tcworker/<workerGroup>/<workerId>/<random>``, the name Pulse's
  permissions allow) to ``<prefix>task-exception`` with the routing key
  ``primary.*.*.<workerGroup>.<workerId>.#``, and for each message about a run it watches calls
  that run's callback. A broker that is absent or breaks never stops the worker: it reconnects
  with backoff and logs the trouble once; reclaim 409 and status polling stay the fallback.
- :func:`pulse_listener`: the worker's ``async with`` (None when ``pulseURL`` is not set).
- :func:`watch_run`: ties one run's :class:`~tcworker.queue.cancellation.CancelWatch` to the
  listener; returns the function that unties it.

Routing key of the queue's exchanges (upstream ``queue/src/exchanges.js``):
``primary.<taskId>.<runId>.<workerGroup>.<workerId>.<provisionerId>.<workerType>.<schedulerId>.
<taskGroupId>.<reserved>``, ``_`` for missing parts.

Does not live here: killing the run (the task runner, through the watch), the emulator's
publishing side (:mod:`tcworker.testing.queue.pulse`).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import random
from collections.abc import AsyncIterator, Callable
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import slugid

if TYPE_CHECKING:
    from tcworker.config import WorkerConfig
    from tcworker.queue.cancellation import CancelWatch

log = logging.getLogger(__name__)

DEFAULT_NAMESPACE = "taskcluster-queue"
OnGone = Callable[[str, str], None]


def exchange_prefix(namespace: str = "") -> str:
    """The queue's exchange prefix for ``pulseNamespace``.

    ``""`` → ``exchange/taskcluster-queue/v1/`` (upstream); a plain name ``ns`` →
    ``exchange/ns/v1/``; a value containing ``/`` is the prefix itself (``/`` appended if missing).
    """
    if not namespace:
        namespace = DEFAULT_NAMESPACE
    if "/" in namespace:
        return namespace if namespace.endswith("/") else namespace + "/"
    return f"exchange/{namespace}/v1/"


def redact_url(url: str) -> str:
    """The AMQP URL without its password (safe to log)."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
    return parts._replace(netloc=netloc).geturl()


class PulseListener:
    """Listens for ``task-exception`` messages about this worker's runs.

    Args:
        url: AMQP URL (``amqps://user:password@host:port/vhost``).
        prefix: the queue's exchange prefix (:func:`exchange_prefix`).
        worker_group, worker_id: this worker's identity (bound in the routing key).
        backoff_max_s: longest wait between two connection attempts, seconds.

    Attributes:
        ready: set while the queue is bound and consuming (tests and benches wait for it).
        connection: the ``aio_pika`` connection while there is one, else None.
    """

    def __init__(self, url: str, *, prefix: str, worker_group: str, worker_id: str,
                 backoff_max_s: float = 60.0) -> None:
        self.url = url
        self.exchange = f"{prefix}task-exception"
        self.routing_key = f"primary.*.*.{worker_group}.{worker_id}.#"
        user = urlsplit(url).username or "guest"
        self.queue_name = f"queue/{user}/tcworker/{worker_group}/{worker_id}/{slugid.nice()}"
        self.backoff_max_s = backoff_max_s
        self.ready = asyncio.Event()
        self.connection: Any = None  # the aio-pika connection while connected
        self._watches: dict[tuple[str, int], OnGone] = {}
        self._task: asyncio.Task | None = None
        self._failures = 0

    # -- runs
    def watch(self, task_id: str, run_id: int, on_gone: OnGone) -> Callable[[], None]:
        """Call ``on_gone(reason, message)`` when a ``task-exception`` message names this run.

        Returns:
            a function that stops watching (call it when the run ends).
        """
        key = (task_id, int(run_id))
        self._watches[key] = on_gone

        def unwatch() -> None:
            if self._watches.get(key) is on_gone:
                del self._watches[key]
        return unwatch

    def handle(self, body: bytes | str, routing_key: str = "") -> bool:
        """Decode one message and fire its run's callback; True when a watched run was named.

        The body's ``status.taskId`` and ``runId`` name the run (the routing key when missing);
        the reason is that run's ``reasonResolved`` (``canceled``, ``deadline-exceeded``, ...).
        """
        try:
            message = json.loads(body)
        except ValueError:
            log.warning("Pulse: ignoring a message that is not JSON (routing key %s)", routing_key)
            return False
        status = message.get("status") if isinstance(message, dict) else None
        status = status if isinstance(status, dict) else {}
        words = routing_key.split(".")
        task_id = status.get("taskId") or (words[1] if len(words) > 2 else "")
        run_id = message.get("runId") if isinstance(message, dict) else None
        if not isinstance(run_id, int):
            run_id = int(words[2]) if len(words) > 2 and words[2].isdigit() else -1
        on_gone = self._watches.get((task_id, run_id))
        if on_gone is None:
            return False
        runs = status.get("runs") or []
        run = runs[run_id] if 0 <= run_id < len(runs) and isinstance(runs[run_id], dict) else {}
        reason = run.get("reasonResolved") or "exception"
        on_gone(reason, f"Pulse task-exception: run {run_id} resolved ({reason})")
        return True

    # -- life cycle
    def start(self) -> None:
        """Connect and listen in the background until :meth:`stop`."""
        self._task = asyncio.create_task(self._listen_forever(), name="pulse-listener")

    async def stop(self) -> None:
        """Stop listening and close the connection."""
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None
        self.ready.clear()

    async def _listen_forever(self) -> None:
        while True:
            try:
                await self._listen_once()
                self._trouble("connection lost")
            except asyncio.CancelledError:
                raise
            except Exception as err:  # any broker trouble: log once, back off, reconnect
                self._trouble(f"{type(err).__name__}: {err}")
            delay = min(self.backoff_max_s, 0.5 * 2 ** min(self._failures, 8))
            await asyncio.sleep(delay * random.uniform(0.5, 1.0))

    async def _listen_once(self) -> None:
        """One connection: bind, consume, and return when the connection or channel closes."""
        import aio_pika  # only workers with Pulse configured pay for the import

        lost = asyncio.Event()
        connection = self.connection = await aio_pika.connect(self.url, timeout=10)
        try:
            connection.close_callbacks.add(lambda *_: lost.set())
            channel = await connection.channel()
            channel.close_callbacks.add(lambda *_: lost.set())
            queue = await channel.declare_queue(self.queue_name, exclusive=True, auto_delete=True)
            await queue.bind(self.exchange, routing_key=self.routing_key)
            await queue.consume(self._on_message, no_ack=True)
            self.ready.set()
            if self._failures:
                log.info("Pulse: connected again to %s", redact_url(self.url))
            else:
                log.info("Pulse: listening on %s for %s", self.exchange, self.routing_key)
            self._failures = 0
            await lost.wait()
        finally:
            self.ready.clear()
            self.connection = None
            try:
                await asyncio.wait_for(connection.close(), 5)
            except Exception as err:  # closing a broken connection may fail too
                log.debug("Pulse: closing the connection failed: %s", err)

    async def _on_message(self, message: Any) -> None:
        try:
            self.handle(message.body, message.routing_key or "")
        except Exception:  # one odd message must not stop the consumer
            log.exception("Pulse: failed to handle a message (routing key %s)", message.routing_key)

    def _trouble(self, what: str) -> None:
        self._failures += 1
        level = logging.WARNING if self._failures == 1 else logging.DEBUG
        log.log(level, "Pulse unavailable at %s (%s): cancellation falls back to reclaim and "
                "status polling; reconnecting with backoff", redact_url(self.url), what)


@contextlib.asynccontextmanager
async def pulse_listener(config: "WorkerConfig") -> AsyncIterator[PulseListener | None]:
    """``async with pulse_listener(config) as pulse:`` → a started listener, or None without
    ``pulseURL``."""
    if not config.pulse_url:
        yield None
        return
    listener = PulseListener(config.pulse_url, prefix=exchange_prefix(config.pulse_namespace),
                             worker_group=config.worker_group, worker_id=config.worker_id)
    listener.start()
    try:
        yield listener
    finally:
        await listener.stop()


def watch_run(listener: PulseListener | None, watch: "CancelWatch") -> Callable[[], None]:
    """Fire ``watch`` (source ``pulse``) on a Pulse cancellation of its run; returns the unwatch
    function (a no-op without a listener)."""
    if listener is None:
        return lambda: None
    return listener.watch(watch.task_id, watch.run_id, watch.callback("pulse"))
