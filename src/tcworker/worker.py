"""The worker daemon: :class:`Worker`, its life cycle and its claim loop; :func:`run_worker`.

``booting → working → draining → stopped``

- booting: check the config, create the task directory, sweep the run log folders a crashed
  worker left there (``tcw-log-*``), boot every engine (which sweeps the rest: task directories
  ``tcw-task-*`` and the processes of their cgroups).
- working: claim while ``running < capacity`` and free disk allows, with claimWork's long poll (no
  sleep loop); back off with jitter when claimWork fails.
- draining: stop claiming; let running tasks finish within the grace period, then abort what is
  left as ``exception/worker-shutdown`` and upload their logs best-effort. A second signal aborts
  at once.
- stopped: the exit code says why (generic-worker's codes, ``peer-workers.md`` section 2.5).

With ``watchdogSecs`` set, a :class:`~tcworker.watchdog.Watchdog` exits 69 when the claim loop
makes no progress that long (no claimWork answered while a slot is free) or the event loop is
blocked. Every queue call has a timeout (``queueCallTimeoutSecs``; claimWork 20 s more for its
long poll), so a hung call alone never wedges the loop.

The worker's own log has one line per event of a run, with fields (JSON keys with
``logFormat: json``): ``task-claimed`` (``taskId``, ``runId``) and ``task-resolved`` (``taskId``,
``runId``, ``resolution``: ``completed``, ``failed``, ``exception/<reason>`` or
``resolved-elsewhere``, ``durationSecs``: claim to end of the run, seconds).

What does not live here: one run's stages (:mod:`tcworker.taskrun`), queue calls, reclaiming and
cancellation (:mod:`tcworker.queue`).
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import logging
import random
import shutil
import signal
import time
from pathlib import Path

from tcworker.config import WorkerConfig
from tcworker.errors import ConfigError, QueueError, WorkerShutdown
from tcworker.logsetup import IdleReporter, log_event
from tcworker.runclaim import LOG_DIR_PREFIX

log = logging.getLogger("tcworker.worker")

CLAIM_LONG_POLL_S = 20.0  # claimWork waits up to this long for work upstream, on top of the call timeout


class ExitCode(enum.IntEnum):
    """Process exit codes, as generic-worker's ``usage.go``."""

    TASKS_COMPLETE = 0
    CANNOT_LOAD_CONFIG = 64
    IDLE_TIMEOUT = 68
    INTERNAL_ERROR = 69
    SIGINT = 71
    WORKER_SHUTDOWN = 72
    INVALID_CONFIG = 73


class State(enum.Enum):
    BOOTING = "booting"
    WORKING = "working"
    DRAINING = "draining"
    STOPPED = "stopped"


class Worker:
    """Claims tasks from the queue and runs up to ``config.capacity`` of them at once.

    Args:
        config: the worker config (``require_for_run`` is checked at boot).
        engines: engines by name; default from :func:`tcworker.engines.registry.make_engines`.
        plugins: worker plugins in configured order.
        config_path: the config file, locked down at boot in multiuser mode (:mod:`tcworker.lockdown`).
    """

    def __init__(self, config: WorkerConfig, *, engines=None, plugins=(), config_path=None) -> None:
        self.config = config
        self.config_path = config_path
        self.engines = engines
        self.plugins = list(plugins)
        self.state = State.BOOTING
        self.exit_code = ExitCode.TASKS_COMPLETE
        self.runs: dict[asyncio.Task, object] = {}
        self.claimed_count = 0
        self.resolved_count = 0
        self._slot_freed = asyncio.Event()
        self._stop_requested = asyncio.Event()
        self._abort_now = asyncio.Event()
        self._claim_task: asyncio.Task | None = None
        self._last_busy = time.monotonic()
        self._idle = IdleReporter(log)  # why no claims: no-work / low-disk / draining, <= 1/min
        self.queue = None  # tcworker.queue.client.WorkerQueue once working
        self.pulse = None  # tcworker.queue.pulse.PulseListener while working, when pulseURL is set
        self.finish_tasks = False  # draining waits for every run (graceful-termination finish-tasks)
        self.watchdog = None  # tcworker.watchdog.Watchdog while working, when watchdogSecs is set

    # ------------------------------------------------------------------ control
    def request_stop(self, why: str, exit_code: ExitCode = ExitCode.WORKER_SHUTDOWN) -> None:
        """Start draining (first call), or abort running tasks at once (second call)."""
        if self._stop_requested.is_set():
            log.warning("%s again: aborting running tasks now", why)
            self._abort_now.set()
            return
        log.info("%s: draining (no more claims)", why)
        self.exit_code = exit_code
        self._stop_requested.set()
        if self._claim_task is not None:
            self._claim_task.cancel()

    # ------------------------------------------------------------------ life cycle
    async def run(self) -> int:
        """Boot, work until told to stop (or a limit is reached), drain, and return the exit code."""
        from tcworker.queue.client import ClientFactory, WorkerQueue
        from tcworker.queue.pulse import pulse_listener

        await self._boot()
        async with ClientFactory.open(self.config.root_url, call_timeout_s=self.config.queue_call_timeout_s) as clients, \
                pulse_listener(self.config) as self.pulse:
            self.queue = WorkerQueue.from_config(clients, self.config)
            self.state = State.WORKING
            heartbeat = self._start_watchdog()
            self._claim_task = asyncio.create_task(self._claim_loop(), name="claim-loop")
            try:
                try:
                    await self._claim_task
                except asyncio.CancelledError:
                    if not self._stop_requested.is_set():
                        raise
                self.state = State.DRAINING
                with self._claim_paused():  # the heartbeat still watches the event loop
                    await self._drain()
            finally:
                if heartbeat is not None:
                    heartbeat.cancel()
                    self.watchdog.stop()
        await self._shutdown_plugins()
        self.state = State.STOPPED
        log.info("stopped: %d task(s) claimed, exit code %d", self.claimed_count, self.exit_code)
        return int(self.exit_code)

    async def _boot(self) -> None:
        self.config.require_for_run()
        tasks_dir = Path(self.config.tasks_dir)
        try:
            tasks_dir.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise ConfigError(f"tasksDir {tasks_dir}: cannot create it: {err.strerror}") from None
        if not self.config.run_tasks_as_current_user:  # task users must not read our secrets
            from tcworker.lockdown import lock_down

            await asyncio.to_thread(lock_down, self.config, self.config_path)
        for leftover in sorted(tasks_dir.glob(LOG_DIR_PREFIX + "*")):
            log.info("removing leftover run log folder %s", leftover)
            await asyncio.to_thread(shutil.rmtree, leftover, ignore_errors=True)
        if self.engines is None:
            from tcworker.engines.registry import make_engines

            self.engines = make_engines(self.config)
        for name, engine in self.engines.items():
            await engine.boot()
            log.info("engine %s ready", name)
        if not self.plugins:
            from tcworker.plugins.registry import make_plugins

            self.plugins = make_plugins(self.config, mode="run")
        for plugin in self.plugins:
            await plugin.boot()

    def _start_watchdog(self) -> asyncio.Task | None:
        """With ``watchdogSecs``: start the watchdog thread; returns its heartbeat task."""
        if not self.config.watchdog_s:
            return None
        from tcworker.watchdog import Watchdog

        self.watchdog = Watchdog(self.config.watchdog_s, self._watchdog_fired,
                                 exit_after_s=self.config.shutdown_grace_period_s + 10)
        self.watchdog.start()
        return asyncio.create_task(self.watchdog.heartbeat(), name="watchdog-heartbeat")

    def _watchdog_fired(self, why: str) -> None:
        self.request_stop(f"watchdog: {why}", ExitCode.INTERNAL_ERROR)

    def _claim_paused(self):
        """Context: no claim progress is expected inside (watchdog)."""
        return self.watchdog.paused() if self.watchdog is not None else contextlib.nullcontext()

    async def _claim_loop(self) -> None:
        failures = 0
        while not self._stop_requested.is_set():
            if self._limit_reached():
                log.info("numberOfTasksToRun (%d) claimed: no more claims", self.config.number_of_tasks_to_run)
                self.request_stop("task limit reached", ExitCode.TASKS_COMPLETE)
                return
            free = self.config.capacity - len(self.runs)
            if free <= 0:
                self._slot_freed.clear()
                with self._claim_paused():
                    await self._slot_freed.wait()
                continue
            if self._idle_timed_out():
                self.request_stop(f"idle for {self.config.idle_timeout_secs}s", ExitCode.IDLE_TIMEOUT)
                return
            if not self._disk_ok():
                with self._claim_paused():
                    await self._pause(10.0)
                continue
            want = free
            if self.config.number_of_tasks_to_run:
                want = min(want, self.config.number_of_tasks_to_run - self.claimed_count)
            try:
                claims = await self.queue.claim_work(
                    min(want, 32), timeout_s=self.config.queue_call_timeout_s + CLAIM_LONG_POLL_S)
            except QueueError as err:
                failures += 1
                delay = min(60.0, 0.5 * 2 ** min(failures, 7)) * random.uniform(0.5, 1.0)
                log.warning("claimWork failed (%s); retrying in %.1fs", err, delay)
                # answered (an HTTP status): the queue is down, we are not wedged (watchdog)
                answered = getattr(err, "status", None) is not None
                with self._claim_paused() if answered else contextlib.nullcontext():
                    await self._pause(delay)
                continue
            failures = 0
            if self.watchdog is not None:
                self.watchdog.progress()
            for claim in claims:
                self._start_run(claim)
            if claims:
                self._idle.busy()
            elif not self.runs:
                self._idle.report("no-work")

    def _limit_reached(self) -> bool:
        limit = self.config.number_of_tasks_to_run
        return bool(limit) and self.claimed_count >= limit

    def _idle_timed_out(self) -> bool:
        idle = self.config.idle_timeout_secs
        return bool(idle) and not self.runs and time.monotonic() - self._last_busy >= idle

    def _disk_ok(self) -> bool:
        from tcworker.caches import ensure_free_space  # evicts idle downloads and caches, LRU first

        if ensure_free_space(self.config):
            return True
        free_mb = shutil.disk_usage(self.config.tasks_dir).free // (1024 * 1024)
        self._idle.report("low-disk", freeMB=free_mb, requiredMB=self.config.required_disk_space_megabytes,
                          tasksDir=self.config.tasks_dir)
        return False

    async def _pause(self, seconds: float) -> None:
        try:
            await asyncio.wait_for(self._stop_requested.wait(), timeout=seconds)
        except TimeoutError:
            pass

    # ------------------------------------------------------------------ runs
    def _start_run(self, claim) -> None:
        from tcworker.runclaim import ClaimedRun

        self.claimed_count += 1
        run = ClaimedRun(claim, worker=self)
        task = asyncio.create_task(self._run_guarded(run), name=f"run {claim.task_id}/{claim.run_id}")
        self.runs[task] = run
        self._last_busy = time.monotonic()

    async def _run_guarded(self, run) -> None:
        started = time.monotonic()
        log_event(log, "task-claimed", taskId=run.task_id, runId=run.run_id)
        try:
            resolution = await run.execute()
            if resolution.state is None:
                outcome = "resolved-elsewhere"
            elif resolution.state == "exception":
                outcome = f"exception/{resolution.reason}"
            else:
                outcome = resolution.state
            log_event(log, "task-resolved", taskId=run.task_id, runId=run.run_id, resolution=outcome,
                      durationSecs=round(time.monotonic() - started, 3))
        except asyncio.CancelledError:
            raise
        except Exception:  # a run's top level turns everything into a resolution; this is a bug
            log.exception("run %s/%s crashed", run.task_id, run.run_id)
        finally:
            self.runs.pop(asyncio.current_task(), None)
            self.resolved_count += 1
            self._last_busy = time.monotonic()
            self._slot_freed.set()

    async def _shutdown_plugins(self) -> None:
        for plugin in reversed(self.plugins):  # the live log server, among others
            try:
                await plugin.shutdown()
            except Exception:  # one plugin's failure must not keep the others up
                log.exception("plugin %s: shutdown failed", plugin.name)

    async def _drain(self) -> None:
        self._idle.report("draining", running=len(self.runs))
        if not self.runs:
            return
        log.info("waiting for %d running task(s)", len(self.runs))
        if self.finish_tasks or self.exit_code in (ExitCode.TASKS_COMPLETE, ExitCode.IDLE_TIMEOUT):
            await self._wait_runs(None)  # a limit was reached: nothing is in a hurry
        else:
            await self._wait_runs(self.config.shutdown_grace_period_s * 2 / 3)
        if not self.runs:
            return
        for run in list(self.runs.values()):
            run.abort(WorkerShutdown("worker is shutting down"))
        # the last third of the grace period is for reporting and uploading the logs; after a
        # second signal only the engines' kill grace (then runs are cancelled: killed at once,
        # still reported as worker-shutdown)
        budget_s = max(1.0, self.config.shutdown_grace_period_s / 3)
        if self._abort_now.is_set():
            budget_s = min(budget_s, self.config.kill_grace_period_s + 5.0)
        _, pending = await asyncio.wait(list(self.runs), timeout=budget_s)
        for task in pending:
            task.cancel()
        if pending:
            await asyncio.wait(pending)

    async def _wait_runs(self, timeout_s: float | None) -> None:
        """Until every run ended, ``timeout_s`` passed, or a second signal asked to abort now."""
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        abort_now = asyncio.ensure_future(self._abort_now.wait())
        try:
            while self.runs and not abort_now.done():
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    return
                await asyncio.wait([*self.runs, abort_now], timeout=remaining,
                                   return_when=asyncio.FIRST_COMPLETED)
        finally:
            abort_now.cancel()


def run_worker(config: WorkerConfig, *, with_worker_runner: bool = False, config_path=None) -> int:
    """``tcworker run``: run the worker until it stops; returns the process exit code."""
    if with_worker_runner:  # worker-runner protocol on stdin/stdout (issue 11)
        from tcworker.runner import run_with_worker_runner

        return run_with_worker_runner(config, config_path=config_path)
    from tcworker.logsetup import setup_logging

    setup_logging(config)
    try:
        config.require_for_run()
    except ConfigError as err:
        log.error("%s", err)
        return int(ExitCode.INVALID_CONFIG)
    return asyncio.run(_main(config, config_path))


async def _main(config: WorkerConfig, config_path=None) -> int:
    worker = Worker(config, config_path=config_path)
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, worker.request_stop, "SIGTERM", ExitCode.WORKER_SHUTDOWN)
    loop.add_signal_handler(signal.SIGINT, worker.request_stop, "SIGINT", ExitCode.SIGINT)
    try:
        return await worker.run()
    except ConfigError as err:
        log.error("%s", err)
        return int(ExitCode.INVALID_CONFIG)
