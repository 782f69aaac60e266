"""One claimed run in the daemon: :class:`ClaimedRun` ties a claim to a :class:`TaskRun`, and
:class:`QueueOutlet` carries the run's artifacts, log and resolution to the queue.

Per claim: a :class:`~tcworker.queue.client.RunQueue` (task credentials, replaced at each
reclaim), :class:`~tcworker.queue.cancellation.RunWatchers` (reclaimer + status poller, whichever
notices first that the run is gone aborts the task as resolved elsewhere), and an
:class:`~tcworker.queue.upload.ArtifactUploader`. The watchers stop before the report call, so
no reclaim races the resolution (FM-11).

A run found gone *during* the artifact upload of a completed or failed task (FM-12 b) stops the
uploads in flight: no one will use that run's artifacts, and a 500 MB upload would hold the slot.
What finished stays; the log still goes up best-effort. The backing log lives in a folder
``tasksDir/tcw-log-*`` that the worker sweeps at boot after a crash.

What does not live here: the claim loop (:mod:`tcworker.worker`), the stages of a run
(:mod:`tcworker.taskrun`).
"""

from __future__ import annotations

import asyncio
import logging
import shutil
import tempfile
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Sequence

from tcworker.errors import QueueError, RunResolvedElsewhere, TaskFailed, WorkerError
from tcworker.outlet import LogNames, RunOutlet, log_artifacts
from tcworker.resolution import Resolution

#: Prefix of the per-run log folders under ``tasksDir``; the worker sweeps them at boot.
LOG_DIR_PREFIX = "tcw-log-"

if TYPE_CHECKING:
    from tcworker.queue.client import Claim, RunQueue
    from tcworker.worker import Worker

log = logging.getLogger("tcworker.run")

SHUTDOWN_REPORT_TIMEOUT_S = 5.0
REPORT_RETRY_S = (0.5, 1, 2, 4, 8, 15, 30)


class QueueOutlet(RunOutlet):
    """Uploads to and reports through the queue for one run.

    Args:
        run_queue: the run's queue access (current task credentials).
        watchers: its reclaimer and status poller; stopped before the report call.
        uploader: the run's :class:`~tcworker.queue.upload.ArtifactUploader`.
    """

    def __init__(self, run_queue: "RunQueue", watchers, uploader) -> None:
        self.run_queue = run_queue
        self.watchers = watchers
        self.uploader = uploader
        self.results: list = []
        self.reporting = False  # True once report() started: the run's resolution is in hand

    async def publish_artifacts(self, artifacts: Sequence[object]) -> None:
        """Upload; raises ``TaskFailed`` when a required file vanished before its upload (FM-02),
        ``RunResolvedElsewhere`` when the run is found gone while uploading (uploads stopped)."""
        watch = self.watchers.watch
        if watch.is_set():  # gone before the upload started: upload best-effort, to the end
            results = await self.uploader.upload_all(artifacts)
        else:
            results = await self._unless_gone(self.uploader.upload_all(artifacts))
        self.results.extend(results)
        self._check_resolved()
        vanished = [r.name for r in results if r.fails_task and r.status == "replaced-by-error"]
        if vanished:
            raise TaskFailed("required artifact(s) vanished before upload: " + ", ".join(vanished))

    async def publish_log(self, path: Path, names: LogNames, expires: datetime) -> None:
        backing, link = log_artifacts(path, names, expires)
        self.results.extend(await self.uploader.upload_all([backing, link]))
        self._check_resolved()

    async def _unless_gone(self, uploads):
        """Await ``uploads``, or cancel them once the run's watch says it is gone."""
        upload = asyncio.ensure_future(uploads)
        gone = asyncio.ensure_future(self.watchers.watch.wait())
        try:
            await asyncio.wait({upload, gone}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            gone.cancel()
            if not upload.done():
                upload.cancel()
                await asyncio.wait([upload])
        if not upload.cancelled():
            return upload.result()
        gone = self.watchers.watch.cancellation
        reason = gone.reason if gone is not None else "unknown"
        raise RunResolvedElsewhere(f"artifact uploads stopped: the run was resolved elsewhere ({reason})")

    def _check_resolved(self) -> None:
        if self.uploader.run_resolved:
            raise RunResolvedElsewhere("the queue refused an upload: the run is no longer running")

    async def report(self, resolution: Resolution) -> None:
        """Stop the watchers, then report; transient failures are retried until ``takenUntil``.

        Raises:
            RunResolvedElsewhere: the run is gone (409), or the report failed for good: either way
                the queue resolves the run without us (claim-expired, then a retry).
        """
        self.reporting = True
        await self.watchers.stop()
        gone = self.watchers.watch.cancellation
        if gone is not None:
            raise RunResolvedElsewhere(f"{gone.reason}: {gone.message}")
        call = {
            "completed": self.run_queue.report_completed,
            "failed": self.run_queue.report_failed,
        }.get(resolution.state)
        for attempt, delay in enumerate((*REPORT_RETRY_S, None)):
            try:
                if call is not None:
                    await call()
                elif resolution.state == "exception":
                    await self.run_queue.report_exception(resolution.reason)
                return
            except QueueError as err:
                if not getattr(err, "transient", False) or delay is None or self.run_queue.seconds_left() < delay:
                    # Nothing else can resolve this run: its claim lapses and the queue retries
                    # the task (claim-expired), as if the run had been resolved elsewhere.
                    log.error("run %s/%s: %s failed, giving up (the claim will expire): %s",
                              self.run_queue.task_id, self.run_queue.run_id, resolution.report_call, err)
                    raise RunResolvedElsewhere(f"{resolution.report_call} failed: {err}") from err
                log.warning("run %s/%s: %s failed (%s), retrying in %ss", self.run_queue.task_id,
                            self.run_queue.run_id, resolution.report_call, err, delay)
                await asyncio.sleep(delay)


class ClaimedRun:
    """One claim being worked on: the :class:`TaskRun` plus its queue side.

    Args:
        claim: from ``claimWork``.
        worker: the :class:`~tcworker.worker.Worker` (config, engines, plugins, queue).
    """

    def __init__(self, claim: "Claim", *, worker: "Worker") -> None:
        self.claim = claim
        self.worker = worker
        self.task_id = claim.task_id
        self.run_id = claim.run_id
        self.taskrun = None

    def abort(self, error: WorkerError) -> None:
        """Abort the run (worker shutdown); a no-op before the run object exists."""
        if self.taskrun is not None:
            self.taskrun.abort(error)

    async def execute(self) -> Resolution:
        from tcworker.queue.cancellation import RunWatchers
        from tcworker.queue.pulse import watch_run
        from tcworker.queue.upload import ArtifactUploader
        from tcworker.taskrun import TaskRun

        config = self.worker.config
        run_queue = self.worker.queue.run_queue(self.claim)
        watchers = RunWatchers(run_queue, margin_s=config.reclaim_margin_s,
                               poll_interval_s=config.status_poll_interval_s)
        log_dir = Path(tempfile.mkdtemp(prefix=LOG_DIR_PREFIX, dir=config.tasks_dir))
        try:
            self.taskrun = TaskRun(
                task=self.claim.task, task_id=self.task_id, run_id=self.run_id, config=config,
                engines=self.worker.engines, plugins=self.worker.plugins,
                outlet=None, log_path=log_dir / "live_backing.log",
            )
            self.taskrun.queue = run_queue  # plugins reach the run's queue access (mounts: artifacts)
            uploader = ArtifactUploader.for_run(run_queue, config, warn=self._task_log_warn)
            self.taskrun.outlet = QueueOutlet(run_queue, watchers, uploader)
            watchers.start()
            unwatch_pulse = watch_run(getattr(self.worker, "pulse", None), watchers.watch)
            cancel_watch = asyncio.create_task(self._abort_when_gone(watchers))
            try:
                return await self.taskrun.execute()
            except asyncio.CancelledError:
                # cancelled hard (the shutdown grace period ran out): never leave the claim for
                # the queue to expire when one call can still resolve it
                await asyncio.shield(self._report_if_unresolved(self.taskrun.outlet, "worker-shutdown"))
                raise
            except Exception:  # a bug escaped the run: still resolve it, then let the worker log it
                await asyncio.shield(self._report_if_unresolved(self.taskrun.outlet, "internal-error"))
                raise
            finally:
                unwatch_pulse()
                cancel_watch.cancel()
                await watchers.stop()
        finally:
            shutil.rmtree(log_dir, ignore_errors=True)

    async def _report_if_unresolved(self, outlet: QueueOutlet, reason: str) -> None:
        """Best-effort ``reportException(reason)`` for a run that ended without reporting."""
        if outlet.reporting or outlet.watchers.watch.is_set():
            return
        try:
            async with asyncio.timeout(SHUTDOWN_REPORT_TIMEOUT_S):
                await outlet.watchers.stop()
                await outlet.run_queue.report_exception(reason)
            log.warning("run %s/%s: stopped before it could finish; reported exception/%s",
                        self.task_id, self.run_id, reason)
        except (QueueError, RunResolvedElsewhere, TimeoutError) as err:
            log.warning("run %s/%s: stopped before it could finish; %s not reported "
                        "(the claim will expire): %s", self.task_id, self.run_id, reason, err)

    async def _abort_when_gone(self, watchers) -> None:
        gone = await watchers.watch.wait()
        log.info("run %s/%s is gone (%s, seen by %s): aborting", self.task_id, self.run_id,
                 gone.reason, gone.source)
        self.taskrun.abort(RunResolvedElsewhere(f"run resolved elsewhere: {gone.reason} {gone.message}".strip()))

    def _task_log_warn(self, message: str) -> None:
        taskrun = self.taskrun
        if taskrun is not None and not taskrun.log.closed:
            taskrun.log.warn(message)
        else:
            log.warning("run %s/%s: %s", self.task_id, self.run_id, message)
