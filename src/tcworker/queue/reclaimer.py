"""Keeping one run's claim alive: the reclaim loop.

Lives here: :class:`Reclaimer` (one per run) and its pure timing and classification decisions,
:func:`reclaim_delay_s`, :func:`retry_delay_s` and :func:`reclaim_outcome`.

The rules (``../shared/reference/queue-contract.md`` 2.1, ``peer-workers.md`` 3.4, cases FM-11 and
FM-20):

- Reclaim ``margin_s`` before ``takenUntil`` (generic-worker uses 3 min), but never use more than
  half the remaining claim time as margin: a 20 min claim is reclaimed after 17 min, a 1 s test
  claim after 0.5 s (never at once and again at once: no hammering).
- Each success swaps in the returned task credentials (:meth:`RunQueue.set_credentials` tells the
  proxy and the uploaders) and the new ``takenUntil``.
- 5xx, connection errors, timeouts (left after the client's own retries), and 401/403 are retried
  with backoff until ``takenUntil``, never silently abandoned; a claim that lapses anyway is
  reported through ``on_gone("claim-expired", ...)``.
- 409, or another 4xx (404: the run is gone), → ``on_gone(reason, message)``: the run was
  cancelled, passed its deadline, or expired. The loop ends; the task runner kills the task.
- :meth:`Reclaimer.stop` is called by the task runner before it reports: no reclaim runs after it,
  and an answer arriving late (a 409 racing our own resolution) is ignored without error logs.

Does not live here: the calls themselves (:mod:`tcworker.queue.client`) and combining cancellation
sources (:mod:`tcworker.queue.cancellation`).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Literal

from tcworker.errors import RunResolvedElsewhere
from tcworker.logsetup import log_event
from tcworker.queue.client import QueueCallError, RunQueue

log = logging.getLogger(__name__)

GoneCallback = Callable[[str, str], None]
"""``on_gone(reason, message)``: reason such as ``"reclaim-conflict"``; message for the log."""

Outcome = Literal["retry", "gone"]


# ------------------------------------------------------------------ pure decisions
def reclaim_delay_s(seconds_left: float, margin_s: float, floor_s: float = 0.05) -> float:
    """Seconds to wait before the next reclaim.

    Args:
        seconds_left: seconds until ``takenUntil`` (server time), may be negative.
        margin_s: reclaim this long before ``takenUntil`` (``config.reclaim_margin_s``), but with
            at most half of ``seconds_left`` as margin.
        floor_s: the least wait, so a claim that looks lapsed (clock skew) is not hammered.

    Returns:
        ``max(seconds_left - margin_s, seconds_left / 2, floor_s)``.
    """
    return max(seconds_left - margin_s, seconds_left / 2, floor_s)


def retry_delay_s(attempt: int, seconds_left: float, *, base_s: float = 0.5, cap_s: float = 30.0,
                  floor_s: float = 0.05) -> float:
    """Seconds to wait before retry number ``attempt`` (0-based) of a failed reclaim.

    Exponential backoff (``base_s * 2**attempt``, at most ``cap_s``), but at most half the claim
    time left so that several attempts still fit before ``takenUntil``; at least ``floor_s`` so a
    claim about to lapse is not hammered.
    """
    backoff = min(cap_s, base_s * 2 ** max(attempt, 0))
    return max(floor_s, min(backoff, seconds_left / 2))


def reclaim_outcome(err: BaseException) -> Outcome:
    """What a failed reclaim means.

    Returns:
        ``"gone"`` for 409 (cancelled, deadline, claim lost) and other 4xx except 401/403 (404:
        the run does not exist); ``"retry"`` for 5xx, connection errors, timeouts and 401/403
        (credentials or scopes: never a cancellation, retried until ``takenUntil``).
    """
    if isinstance(err, RunResolvedElsewhere):
        return "gone"
    status = getattr(err, "status", None)
    if isinstance(err, QueueCallError) and status is not None and 400 <= status < 500:
        return "retry" if status in (401, 403) else "gone"
    return "retry"


def attempt_timeout_s(seconds_left: float, call_timeout_s: float, min_s: float = 5.0) -> float:
    """Total seconds for one reclaim call: the call timeout, cut to the claim time left (≥ min_s).

    A reclaim that lands a little after ``takenUntil`` still succeeds until the claim resolver runs
    (every 5 s upstream), hence the minimum.
    """
    return min(call_timeout_s, max(seconds_left, min_s))


# ------------------------------------------------------------------ the loop
class Reclaimer:
    """Reclaims one run until stopped or until the run is gone.

    Args:
        run: the run's :class:`RunQueue` (its credentials and ``taken_until`` are updated).
        on_gone: called once with ``(reason, message)`` when the run cannot be kept: reasons
            ``"reclaim-conflict"`` (409), ``"run-gone"`` (other 4xx), ``"claim-expired"``
            (``takenUntil`` passed while retrying). Never called after :meth:`stop`.
        margin_s: seconds before ``takenUntil`` to reclaim (``config.reclaim_margin_s``).
        retry_base_s, retry_cap_s: backoff of retries (seconds).

    Attributes:
        reclaims: number of successful reclaims (int).
    """

    def __init__(self, run: RunQueue, on_gone: GoneCallback, *, margin_s: float = 180.0,
                 retry_base_s: float = 0.5, retry_cap_s: float = 30.0) -> None:
        self.run_queue = run
        self.on_gone = on_gone
        self.margin_s = margin_s
        self.retry_base_s = retry_base_s
        self.retry_cap_s = retry_cap_s
        self.reclaims = 0
        self._stopped = False
        self._task: asyncio.Task[None] | None = None

    @property
    def stopped(self) -> bool:
        """True once :meth:`stop` was called."""
        return self._stopped

    def start(self, group: asyncio.TaskGroup | None = None) -> asyncio.Task[None]:
        """Run :meth:`run` in the background (in ``group`` when given) and return the task."""
        if self._task is not None:
            raise RuntimeError("reclaimer already started")
        name = f"reclaim {self.run_queue.task_id}/{self.run_queue.run_id}"
        coro = self.run()
        self._task = group.create_task(coro, name=name) if group else asyncio.create_task(coro, name=name)
        return self._task

    async def stop(self) -> None:
        """Stop reclaiming and wait until the loop has ended; safe to call more than once.

        A reclaim in flight is abandoned (the server may still extend the claim, which is harmless)
        and its answer, a late 409 included, is ignored.

        Raises:
            Exception: whatever made the loop itself fail (a bug), so it surfaces.
        """
        self._stopped = True
        task = self._task
        if task is None or task is asyncio.current_task():
            return
        task.cancel()
        # asyncio.wait never raises the task's CancelledError, and lets ours propagate.
        await asyncio.wait([task])
        if not task.cancelled() and task.exception() is not None:
            raise task.exception()  # type: ignore[misc]

    async def run(self) -> None:
        """Reclaim until stopped or gone. Failures of the loop itself are logged and re-raised."""
        run = self.run_queue
        try:
            while not self._stopped:
                await asyncio.sleep(reclaim_delay_s(run.seconds_left(), self.margin_s))
                if self._stopped or not await self._reclaim_with_retries():
                    return
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("reclaim loop of %s/%s failed", run.task_id, run.run_id)
            raise

    async def _reclaim_with_retries(self) -> bool:
        """One reclaim, retried until ``takenUntil``. Returns False when the run is gone."""
        run = self.run_queue
        attempt = 0
        while True:
            left = run.seconds_left()
            call_started = asyncio.get_running_loop().time()
            try:
                await run.reclaim(timeout_s=attempt_timeout_s(left, run.clients.call_timeout_s))
            except (RunResolvedElsewhere, QueueCallError) as err:
                if self._stopped:
                    return False
                left = run.seconds_left()
                if reclaim_outcome(err) == "gone":
                    reason = "reclaim-conflict" if isinstance(err, RunResolvedElsewhere) else "run-gone"
                    self._gone(reason, f"reclaimTask refused: {err}")
                    return False
                if left <= 0:
                    self._gone("claim-expired", f"claim lapsed while reclaimTask kept failing: {err}")
                    return False
                delay = retry_delay_s(attempt, left, base_s=self.retry_base_s, cap_s=self.retry_cap_s)
                log.warning("reclaim of %s/%s failed (attempt %d, %.1f s of claim left), "
                            "retrying in %.2f s: %s", run.task_id, run.run_id, attempt + 1, left,
                            delay, err)
                await asyncio.sleep(delay)
                attempt += 1
                continue
            self.reclaims += 1
            log_event(log, "task-reclaimed", taskId=run.task_id, runId=run.run_id,
                      takenUntil=run.taken_until.isoformat(), attempts=attempt + 1,
                      durationSecs=round(asyncio.get_running_loop().time() - call_started, 3))
            return True

    def _gone(self, reason: str, message: str) -> None:
        if self._stopped:
            log.debug("ignoring %s after stop: %s", reason, message)
            return
        self._stopped = True
        log.info("run %s/%s is gone (%s): %s", self.run_queue.task_id, self.run_queue.run_id,
                 reason, message)
        self.on_gone(reason, message)
