"""The live-log HTTP server: :class:`LiveLogServer`, one per worker, serving every running task log.

``GET /log/<token>`` replays a run's :class:`~tcworker.logs.TaskLog` from its first byte, then
follows it until the log is closed, as generic-worker's ``livelog`` does
(``../shared/reference/peer-workers.md`` section 3.8). The token is unguessable
(``secrets.token_urlsafe``), one per run; an unknown token, or the token of a run that was
unregistered (disposed), answers 404.

Why a slow reader never slows the task: the task writes into the backing file; each reader has
its own file descriptor and position (:meth:`TaskLog.follow`), so the file is the only buffer.
Memory per reader is bounded: one follow chunk plus the transport's write buffer (aiohttp waits
for it to drain). A reader whose socket takes longer than ``write_timeout_s`` to accept one chunk
is cut off (connection aborted), so stalled readers do not hold file descriptors for ever.

Where the server listens and how readers reach it (``config``):

- ``liveLogPort`` (0: any free port) on ``0.0.0.0`` when ``publicIP`` is set, else on 127.0.0.1;
- URL base ``liveLogPublicURL`` when set (a tunnel or proxy in front), else
  ``http://<publicIP or 127.0.0.1>:<port>``.

What does not live here: the task log itself (:mod:`tcworker.logs`) and the ``reference`` / ``link``
artifacts that point readers here (:mod:`tcworker.plugins.livelog`).
"""

from __future__ import annotations

import asyncio
import logging
import secrets
from dataclasses import dataclass
from typing import TYPE_CHECKING

from aiohttp import web

if TYPE_CHECKING:
    from tcworker.config import WorkerConfig
    from tcworker.logs import TaskLog

log = logging.getLogger(__name__)

#: Seconds one chunk may take to enter a reader's socket buffer before the reader is cut off.
WRITE_TIMEOUT_S = 30.0
#: Readers served at once by one server (each holds an open file); more get 503.
MAX_READERS = 256


@dataclass(frozen=True)
class LiveLogEntry:
    """One registered log: ``token`` (URL-safe, 32 chars) and ``url`` (what readers GET)."""

    token: str
    url: str


class LiveLogServer:
    """Serves registered task logs over HTTP, replay then follow.

    Args:
        host: address to bind (``127.0.0.1``; ``0.0.0.0`` to be reachable from outside).
        port: TCP port; 0 picks a free one (see :attr:`port` once started).
        public_url: base URL readers use (no trailing ``/log``); empty: ``http://<public_host>:<port>``.
        public_host: host name or IP for the default URL base.
        write_timeout_s: seconds one chunk may wait for a slow reader before it is cut off.
        max_readers: concurrent readers; further requests get 503.
    """

    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        public_url: str = "",
        public_host: str = "127.0.0.1",
        write_timeout_s: float = WRITE_TIMEOUT_S,
        max_readers: int = MAX_READERS,
    ) -> None:
        self.host = host
        self.port = port
        self.write_timeout_s = write_timeout_s
        self.max_readers = max_readers
        self._public_url = public_url.rstrip("/")
        self._public_host = public_host
        self._logs: dict[str, TaskLog] = {}
        self._readers: set[asyncio.Task] = set()
        self._runner: web.AppRunner | None = None

    @classmethod
    def from_config(cls, config: "WorkerConfig", **kwargs) -> "LiveLogServer":
        """Build from ``liveLogPort``, ``liveLogPublicURL`` and ``publicIP`` (module docstring)."""
        return cls(
            host="0.0.0.0" if config.public_ip else "127.0.0.1",
            port=config.live_log_port,
            public_url=config.live_log_public_url,
            public_host=config.public_ip or "127.0.0.1",
            **kwargs,
        )

    # ------------------------------------------------------------------ life cycle
    async def start(self) -> None:
        """Bind and serve. Raises ``OSError`` when the port cannot be bound."""
        app = web.Application()
        app.router.add_get("/log/{token}", self._serve)
        runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await runner.setup()
        site = web.TCPSite(runner, self.host, self.port)
        try:
            await site.start()
        except OSError:
            await runner.cleanup()
            raise
        self._runner = runner
        self.port = runner.addresses[0][1]
        log.info("live log server listening on %s:%d, public URL base %s", self.host, self.port,
                 self.url_base, extra={"event": "livelog-listening", "port": self.port})

    async def stop(self) -> None:
        """Cut off every reader and close the listening socket. Idempotent."""
        runner, self._runner = self._runner, None
        if runner is None:
            return
        for task in list(self._readers):
            task.cancel()
        if self._readers:
            await asyncio.wait(list(self._readers), timeout=5.0)
        self._logs.clear()
        await runner.cleanup()

    # ------------------------------------------------------------------ registration
    @property
    def url_base(self) -> str:
        """``liveLogPublicURL``, or ``http://<publicIP or 127.0.0.1>:<port>``."""
        return self._public_url or f"http://{self._public_host}:{self.port}"

    @property
    def reader_count(self) -> int:
        """Readers being served right now."""
        return len(self._readers)

    def register(self, task_log: "TaskLog") -> LiveLogEntry:
        """Serve ``task_log`` under a new unguessable token; returns the token and its URL."""
        token = secrets.token_urlsafe(24)
        self._logs[token] = task_log
        return LiveLogEntry(token=token, url=f"{self.url_base}/log/{token}")

    def unregister(self, token: str) -> None:
        """New requests for ``token`` get 404; readers already attached finish at the log's end."""
        self._logs.pop(token, None)

    # ------------------------------------------------------------------ serving
    async def _serve(self, request: web.Request) -> web.StreamResponse:
        task_log = self._logs.get(request.match_info["token"])
        if task_log is None:
            raise web.HTTPNotFound(text="no such live log (unknown token, or the task has finished)\n")
        if len(self._readers) >= self.max_readers:
            raise web.HTTPServiceUnavailable(text="too many live log readers\n")
        resp = web.StreamResponse(headers={
            "Cache-Control": "no-cache",
            "Access-Control-Allow-Origin": "*",  # the Taskcluster UI reads live logs from the browser
            "X-Content-Type-Options": "nosniff",
        })
        resp.content_type = "text/plain"
        resp.charset = "utf-8"
        await resp.prepare(request)
        if request.method == "HEAD":
            return resp
        me = asyncio.current_task()
        self._readers.add(me)  # type: ignore[arg-type]
        try:
            if await self._stream(task_log, request, resp):
                await resp.write_eof()
        except ConnectionError as err:  # the reader went away: nothing to do
            log.debug("live log reader %s left: %s", request.remote, err)
        finally:
            self._readers.discard(me)  # type: ignore[arg-type]
        return resp

    async def _stream(self, task_log: "TaskLog", request: web.Request, resp: web.StreamResponse) -> bool:
        """Copy the log to ``resp``; False when the reader was cut off for being too slow."""
        follower = task_log.follow(0)
        try:
            async for chunk in follower:
                try:
                    async with asyncio.timeout(self.write_timeout_s):
                        await resp.write(chunk)
                except TimeoutError:
                    log.info("live log reader %s cut off: one chunk waited more than %ss",
                             request.remote, self.write_timeout_s)
                    if request.transport is not None:
                        request.transport.abort()
                    return False
        finally:
            await follower.aclose()
        return True
