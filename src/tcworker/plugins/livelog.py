"""The live-log feature: :class:`LiveLogPlugin` (the worker's server) and :class:`LiveLogRun` (one run).

While a run is going, ``public/logs/live.log`` (or the payload's live log name) is a ``reference``
artifact to this worker's :class:`~tcworker.livelog.LiveLogServer`, as generic-worker does
(``../shared/reference/peer-workers.md`` section 3.8):

- ``prepare`` (first plugin, so readers see mount downloads and image pulls): register the run's
  :class:`~tcworker.logs.TaskLog` with the server and create the reference artifact in the
  background (it overlaps the rest of the start-up), content type ``text/plain; charset=utf-8``,
  expiry ``min(task.expires, now + maxRunTime + 15 min)`` so it never outlives the task;
- ``stopped``: wait for that createArtifact (it must land before the final link replaces it);
- the outlet (:class:`~tcworker.runclaim.QueueOutlet.publish_log`) then re-creates the same name
  as a ``link`` to the backing log; the queue allows reference → link and a longer expiry
  (``queue-contract.md``, createArtifact idempotence);
- ``dispose``: unregister the token (later requests get 404; attached readers finish at the end).

A failed reference upload is a warning in the task log, never a task failure. Off when the
worker config says ``enableLiveLog: false`` (the plugin is not listed) or the payload says
``features.liveLog: false`` / docker-worker ``features.localLiveLog: false`` (the run sits out).

What does not live here: the HTTP server (:mod:`tcworker.livelog`), uploads
(:mod:`tcworker.queue.upload`), the final link (:mod:`tcworker.runclaim`).
"""

from __future__ import annotations

import asyncio
import logging
from datetime import datetime, timedelta, timezone
from typing import TYPE_CHECKING

from tcworker.plugins.base import Plugin, TaskPlugin

if TYPE_CHECKING:
    from tcworker.engines.base import ExitResult
    from tcworker.livelog import LiveLogServer
    from tcworker.taskrun import TaskRun

log = logging.getLogger(__name__)

#: How long the reference outlives maxRunTime (generic-worker: 15 minutes).
EXPIRY_MARGIN = timedelta(minutes=15)
#: Seconds ``stopped`` waits for the reference createArtifact before giving up on it.
CREATE_WAIT_S = 60.0
CONTENT_TYPE = "text/plain; charset=utf-8"


def reference_expiry(task_expires: datetime, max_run_time_s: float, now: datetime | None = None) -> datetime:
    """``min(task_expires, now + max_run_time_s + 15 min)``, timezone-aware UTC."""
    now = now or datetime.now(timezone.utc)
    return min(task_expires, now + timedelta(seconds=max_run_time_s) + EXPIRY_MARGIN)


class LiveLogPlugin(Plugin):
    """Owns the worker's :class:`~tcworker.livelog.LiveLogServer` (started at boot)."""

    name = "livelog"

    def __init__(self, config) -> None:
        super().__init__(config)
        self.server: LiveLogServer | None = None

    async def boot(self) -> None:
        from tcworker.livelog import LiveLogServer  # aiohttp.web: only when the feature is on

        self.server = LiveLogServer.from_config(self.config)
        await self.server.start()

    async def shutdown(self) -> None:
        if self.server is not None:
            await self.server.stop()

    def new_run(self, run: "TaskRun") -> TaskPlugin | None:
        """A :class:`LiveLogRun`, or ``None`` when the payload turned the live log off or the run
        has no queue uploader (``tcworker exec``)."""
        if self.server is None or run.parsed is None or not run.parsed.features.live_log:
            return None
        if getattr(run.outlet, "uploader", None) is None:
            return None
        return LiveLogRun(run, self.server)


class LiveLogRun(TaskPlugin):
    """One run's live log: its token on the server and the reference artifact's upload."""

    def __init__(self, run: "TaskRun", server: "LiveLogServer") -> None:
        super().__init__(run)
        self.server = server
        self.token: str | None = None
        self.url: str | None = None
        self._create: asyncio.Task | None = None

    async def prepare(self) -> None:
        from tcworker.artifacts import ReferenceArtifact

        entry = self.server.register(self.run.log)
        self.token, self.url = entry.token, entry.url
        parsed = self.run.parsed
        artifact = ReferenceArtifact(
            name=self.run.log_names.live,
            url=entry.url,
            expires=reference_expiry(parsed.expires, parsed.max_run_time_s),
            content_type=CONTENT_TYPE,
        )
        self._create = asyncio.create_task(self._create_reference(artifact),
                                           name=f"live log reference {self.run.task_id}")

    async def stopped(self, result: "ExitResult") -> None:
        await self._settle()

    async def dispose(self) -> None:
        if self._create is not None and not self._create.done():
            self._create.cancel()
        if self.token is not None:
            self.server.unregister(self.token)

    async def _settle(self) -> None:
        """Wait (bounded) for the reference createArtifact, so the final link comes after it."""
        if self._create is None or self._create.done():
            return
        done, _ = await asyncio.wait({self._create}, timeout=CREATE_WAIT_S)
        if not done:
            self._create.cancel()
            self._warn(f"live log: creating {self.run.log_names.live} took over {CREATE_WAIT_S}s; gave up")

    async def _create_reference(self, artifact) -> None:
        result = await self.run.outlet.uploader.upload(artifact)
        if result.status != "uploaded":
            self._warn(f"live log: could not create {artifact.name}: {result.status} {result.message}".rstrip())

    def _warn(self, message: str) -> None:
        if not self.run.log.closed:
            self.run.log.warn(message)
        log.warning("run %s/%s: %s", self.run.task_id, self.run.run_id, message,
                    extra={"task_id": self.run.task_id, "run_id": self.run.run_id})
