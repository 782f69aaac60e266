"""The worker's watchdog (config ``watchdogSecs``): :class:`Watchdog`.

A worker that stops claiming is worse than one that exits: a supervisor (worker-runner, systemd,
a cloud instance group) restarts an exited worker, nobody restarts a wedged one. Every queue call
has a timeout (:mod:`tcworker.queue.client`), so a hung call cannot wedge the claim loop; the
watchdog covers what is left: a bug that stops the loop, or an event loop blocked by a
synchronous call.

Two clocks, both in monotonic seconds:

- *claim progress*: the claim loop calls :meth:`Watchdog.progress` whenever claimWork is answered
  (any HTTP answer: a queue outage is met with backoff, not restarts), and
  :meth:`Watchdog.paused` while it has no reason to claim (every slot busy, low disk, draining).
- *loop heartbeat*: a coroutine (:meth:`Watchdog.heartbeat`) ticks every second; a blocked event
  loop stops it.

A thread checks both. When either is older than ``limit_s`` it logs why and calls ``on_fire(why)``
inside the event loop (the worker drains with exit code 69); if the process is still alive
``exit_after_s`` later (the loop is blocked, or draining hangs) it ends the process with
``os._exit(69)``: the next worker's boot sweeps what this one leaves.

Does not live here: the claim loop and draining (:mod:`tcworker.worker`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import threading
import time
from collections.abc import Callable, Iterator

log = logging.getLogger("tcworker.watchdog")

EXIT_CODE = 69  # generic-worker's INTERNAL_ERROR: a supervisor restarts the worker


class Watchdog:
    """Fires when the claim loop or the event loop makes no progress for ``limit_s`` seconds.

    Args:
        limit_s: seconds without progress before firing (> 0).
        on_fire: called once, in the event loop, with the reason (str).
        exit_after_s: seconds after firing before the process is ended with ``os._exit(69)``.
        check_every_s: how often the thread looks (default ``min(1, limit_s / 4)``).

    Attributes:
        fired: the reason once fired (str), else None.
    """

    def __init__(self, limit_s: float, on_fire: Callable[[str], None], *, exit_after_s: float,
                 check_every_s: float | None = None) -> None:
        self.limit_s = limit_s
        self.on_fire = on_fire
        self.exit_after_s = exit_after_s
        self.check_every_s = check_every_s or min(1.0, limit_s / 4)
        self.fired: str | None = None
        self._progress_at = time.monotonic()
        self._beat_at = time.monotonic()
        self._pauses = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    # ------------------------------------------------------------------ fed by the worker
    def progress(self) -> None:
        """claimWork was answered."""
        self._progress_at = time.monotonic()

    @contextlib.contextmanager
    def paused(self) -> Iterator[None]:
        """While inside, claim progress is not expected (slots busy, low disk)."""
        self._pauses += 1
        try:
            yield
        finally:
            self._pauses -= 1
            self._progress_at = time.monotonic()

    async def heartbeat(self) -> None:
        """Tick every second until cancelled (run it as a task in the watched event loop)."""
        while True:
            self._beat_at = time.monotonic()
            await asyncio.sleep(min(1.0, self.limit_s / 4))

    # ------------------------------------------------------------------ the thread
    def start(self) -> None:
        """Start the checking thread (call from inside the event loop)."""
        self._loop = asyncio.get_running_loop()
        self._progress_at = self._beat_at = time.monotonic()
        self._thread = threading.Thread(target=self._watch, name="tcworker-watchdog", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop the thread (the worker is stopping on its own)."""
        self._stop.set()

    def stalled_for(self, now: float | None = None) -> str | None:
        """Why the watchdog would fire now, or None. Pure apart from reading the two clocks."""
        now = time.monotonic() if now is None else now
        if now - self._beat_at > self.limit_s:
            return f"the event loop has been blocked for {now - self._beat_at:.0f}s"
        if self._pauses == 0 and now - self._progress_at > self.limit_s:
            return f"no claimWork answered for {now - self._progress_at:.0f}s"
        return None

    def _watch(self) -> None:
        while not self._stop.wait(self.check_every_s):
            why = self.stalled_for()
            if why is None:
                continue
            self.fired = why
            log.error("watchdog (watchdogSecs %g): %s; exiting with code %d so that a supervisor "
                      "restarts the worker", self.limit_s, why, EXIT_CODE)
            assert self._loop is not None
            try:
                self._loop.call_soon_threadsafe(self.on_fire, why)
            except RuntimeError:  # the loop is closed: nothing left to drain
                pass
            if not self._stop.wait(self.exit_after_s):
                log.error("watchdog: still running %gs later; exiting now", self.exit_after_s)
                logging.shutdown()
                os._exit(EXIT_CODE)
            return
