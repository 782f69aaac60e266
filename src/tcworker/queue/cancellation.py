"""Noticing that a run was resolved elsewhere (cancelled, deadline, claim expired), fast.

Lives here:

- :class:`Cancellation`: what happened (reason, source, message).
- :class:`CancelWatch`: one per run; every source (reclaim 409, status poll, later Pulse) calls
  :meth:`CancelWatch.trigger`; the first reason wins; the task runner awaits :meth:`CancelWatch.wait`.
  :meth:`CancelWatch.seal` marks the start of our own resolution, after which triggers are ignored.
- :class:`StatusPoller`: polls ``queue.status(taskId)`` every ``config.status_poll_interval_s``
  with the worker's credentials. A resolved run that we did not resolve is a cancellation; a 403
  (no ``queue:status`` scope) turns polling off with one log line and is never a cancellation.
- :func:`run_gone_reason`: the pure decision on a status answer.
- :class:`RunWatchers`: the reclaimer, the poller and the watch of one run, started and stopped
  together; what the task runner uses.

Does not live here: killing the task or uploading after a cancellation (the task runner), and
the reclaim loop (:mod:`tcworker.queue.reclaimer`).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass

from tcworker.logsetup import log_event
from tcworker.queue.client import QueueCallError, RunQueue
from tcworker.queue.reclaimer import Reclaimer

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Cancellation:
    """Why a run ended elsewhere.

    Attributes:
        reason: the queue's ``reasonResolved`` when known (``canceled``, ``deadline-exceeded``,
            ``claim-expired``, ...), else ``reclaim-conflict`` (reclaim 409), ``run-gone``.
        source: ``"reclaim"``, ``"status"`` or ``"pulse"``.
        message: one line for the task log.
    """

    reason: str
    source: str
    message: str = ""


class CancelWatch:
    """One awaitable event per run: set by the first cancellation source that fires."""

    def __init__(self, task_id: str = "", run_id: int = 0) -> None:
        self.task_id = task_id
        self.run_id = run_id
        self._event = asyncio.Event()
        self._cancellation: Cancellation | None = None
        self._sealed = False

    @property
    def cancellation(self) -> Cancellation | None:
        """The first cancellation, or None."""
        return self._cancellation

    def is_set(self) -> bool:
        """True once a cancellation was triggered."""
        return self._cancellation is not None

    def trigger(self, reason: str, source: str, message: str = "") -> bool:
        """Record a cancellation; returns True when this call was the first (and the watch open)."""
        if self._cancellation is not None or self._sealed:
            log.debug("%s/%s: ignoring %s from %s (already %s)", self.task_id, self.run_id, reason,
                      source, "sealed" if self._sealed else "cancelled")
            return False
        self._cancellation = Cancellation(reason, source, message)
        log_event(log, "task-cancelled", taskId=self.task_id, runId=self.run_id, reason=reason,
                  source=source, detail=message)
        self._event.set()
        return True

    def callback(self, source: str) -> Callable[[str, str], None]:
        """A ``(reason, message)`` callable that triggers this watch from ``source``."""
        def fire(reason: str, message: str) -> None:
            self.trigger(reason, source, message)
        return fire

    def seal(self) -> None:
        """Our own resolution starts now: later triggers are ignored (a late 409 is no news)."""
        self._sealed = True

    async def wait(self) -> Cancellation:
        """Wait for the first cancellation and return it."""
        await self._event.wait()
        assert self._cancellation is not None
        return self._cancellation


def run_gone_reason(status: dict, run_id: int) -> str | None:
    """Whether a task status shows run ``run_id`` ended.

    Args:
        status: the ``status`` dict of ``queue.status`` (``{taskId, state, runs: [...]}``).
        run_id: our run.

    Returns:
        None while the run is ``running``; else its ``reasonResolved`` (``canceled``,
        ``deadline-exceeded``, ``claim-expired``, ...), its state, or ``"run-missing"``.
    """
    runs = status.get("runs") or []
    if run_id >= len(runs):
        return "run-missing"
    run = runs[run_id]
    if run.get("state") == "running":
        return None
    return run.get("reasonResolved") or run.get("state") or "unknown"


class StatusPoller:
    """Polls ``queue.status`` of one run until stopped, the run ends, or a 403 turns it off.

    Args:
        run: the run's :class:`RunQueue` (its ``status()`` uses the worker credentials; its
            ``resolving`` flag tells our own resolution apart).
        on_gone: called once with ``(reason, message)`` when the run ended elsewhere.
        interval_s: seconds between polls (``config.status_poll_interval_s``).

    Attributes:
        enabled: False once a 403 turned polling off.
    """

    def __init__(self, run: RunQueue, on_gone: Callable[[str, str], None], *,
                 interval_s: float = 30.0) -> None:
        self.run_queue = run
        self.on_gone = on_gone
        self.interval_s = interval_s
        self.enabled = True
        self._failing = False

    async def run(self) -> None:
        """Poll until the run ends, polling is turned off, or this coroutine is cancelled."""
        run = self.run_queue
        try:
            while self.enabled:
                await asyncio.sleep(self.interval_s)
                if not await self._poll_once():
                    return
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("status poller of %s/%s failed", run.task_id, run.run_id)
            raise

    async def _poll_once(self) -> bool:
        """One poll; returns False when polling should end."""
        run = self.run_queue
        try:
            status = await run.status()
        except QueueCallError as err:
            return self._failed(err)
        if self._failing:
            log.info("status of %s works again", run.task_id)
            self._failing = False
        reason = run_gone_reason(status, run.run_id)
        if reason is None:
            return True
        if run.resolving:
            return False  # our own report: nothing to tell
        self.on_gone(reason, f"queue.status shows run {run.run_id} resolved ({reason})")
        return False

    def _failed(self, err: QueueCallError) -> bool:
        run = self.run_queue
        if err.status == 403:
            self.enabled = False
            log.warning("status polling off for %s: the worker credentials lack "
                        "queue:status:%s (%s)", run.task_id, run.task_id, err)
            return False
        level = logging.DEBUG if self._failing else logging.WARNING
        log.log(level, "status poll of %s failed, will poll again: %s", run.task_id, err)
        self._failing = True
        return True


class RunWatchers:
    """The reclaimer, the status poller and the :class:`CancelWatch` of one run.

    Usage by the task runner::

        watchers = RunWatchers(run_queue, margin_s=cfg.reclaim_margin_s,
                               poll_interval_s=cfg.status_poll_interval_s)
        watchers.start(run_group)          # an asyncio.TaskGroup, or None
        ... race the task against watchers.watch.wait() ...
        await watchers.stop()              # before any report*; seals the watch
        if watchers.watch.is_set(): upload best-effort, report nothing
        else: report

    Args:
        run: the run's :class:`RunQueue`.
        margin_s, poll_interval_s: seconds (``reclaim_margin_s``, ``status_poll_interval_s``);
            ``poll_interval_s=None`` disables status polling.
        retry_base_s: first reclaim retry delay (seconds).
    """

    def __init__(self, run: RunQueue, *, margin_s: float = 180.0,
                 poll_interval_s: float | None = 30.0, retry_base_s: float = 0.5) -> None:
        self.watch = CancelWatch(run.task_id, run.run_id)
        self.reclaimer = Reclaimer(run, self.watch.callback("reclaim"), margin_s=margin_s,
                                   retry_base_s=retry_base_s)
        self.poller = (StatusPoller(run, self.watch.callback("status"), interval_s=poll_interval_s)
                       if poll_interval_s else None)
        self._poll_task: asyncio.Task[None] | None = None

    def start(self, group: asyncio.TaskGroup | None = None) -> None:
        """Start reclaiming and polling in the background (in ``group`` when given)."""
        self.reclaimer.start(group)
        if self.poller is not None:
            coro, name = self.poller.run(), f"status {self.watch.task_id}/{self.watch.run_id}"
            self._poll_task = group.create_task(coro, name=name) if group else asyncio.create_task(coro, name=name)

    async def stop(self) -> None:
        """Seal the watch, then stop both loops and wait for them (call before any report*).

        Raises:
            Exception: a loop's own failure (a bug), so it surfaces.
        """
        self.watch.seal()
        task = self._poll_task
        if task is not None and not task.done():
            task.cancel()
        try:
            await self.reclaimer.stop()
        finally:
            if task is not None:
                await asyncio.wait([task])
        if task is not None and not task.cancelled() and task.exception() is not None:
            raise task.exception()  # type: ignore[misc]
