"""The ``mounts`` feature of native (generic-worker) payloads: :class:`MountsPlugin`.

Per run (``../shared/reference/peer-workers.md`` 1.5, 3.6, 3.7):

- ``prepare``: refuse what cannot work before anything runs (``malformed-payload``): missing
  ``generic-worker:cache:<cacheName>`` scopes (the message lists required and given scopes),
  formats this worker cannot unpack, relative paths escaping the task directory, artifact content
  without a Queue. (Artifact content from a task outside ``task.dependencies`` is refused by
  :mod:`tcworker.payloads.rules`.) Then, in the daemon, ask the Purge-Cache service for purge
  requests when the task mounts a cache, and download every content that is not a cache's.
- ``build_sandbox``: mount in payload order: caches are moved into the task directory (a new
  cache with ``content`` is unpacked first), read-only directories unpacked, file mounts written
  (decompressed by ``format``). Errors name the mount and resolve ``failed``.
- ``stopped``: decide the caches' fate: discarded when the run was aborted (cancel, worker
  shutdown), hit ``maxRunTime``, or exited with a code in ``onExitStatus.purgeCaches`` (FM-13);
  kept otherwise (an intermittent-task retry included).
- ``dispose``: move kept caches back, delete the others, close downloads.

What does not live here: the cache store and disk GC (:mod:`tcworker.caches`), downloads
(:mod:`tcworker.downloads`), unpacking (:mod:`tcworker.archives`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import posixpath
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO

from tcworker.caches import CacheError, CacheLease, CacheStore, PurgeState, cache_fate
from tcworker.downloads import ContentFetcher, DownloadStore, RetryPolicy
from tcworker.errors import MalformedPayload, TaskError, TaskFailed
from tcworker.plugins.base import Plugin, TaskPlugin

if TYPE_CHECKING:
    from tcworker.config import WorkerConfig
    from tcworker.engines.base import ExitResult
    from tcworker.taskrun import SandboxBuilder, TaskRun

log = logging.getLogger(__name__)


class MountsPlugin(Plugin):
    """Mounts, writable caches and the download cache, for the whole worker.

    Args:
        config: uses ``caches_dir``, ``downloads_dir``, ``capacity``, ``root_url``,
            ``worker_pool_id`` and the worker credentials.
        mode: ``"run"`` (daemon: sweeps caches at boot, polls purge requests) or ``"exec"``.
    """

    name = "mounts"
    provides = frozenset({"mounts"})

    def __init__(self, config: "WorkerConfig", *, mode: str = "run") -> None:
        super().__init__(config)
        self.mode = mode
        self.caches = CacheStore(config.caches_dir, capacity=config.capacity)
        self.downloads = DownloadStore(config.downloads_dir)
        self.retry = RetryPolicy()
        self.purge = PurgeState()

    async def boot(self) -> None:
        self.caches.dir.mkdir(parents=True, exist_ok=True)
        if self.mode == "run":
            await asyncio.to_thread(self.caches.sweep)
            await asyncio.to_thread(self.downloads.sweep)

    def new_run(self, run: "TaskRun") -> TaskPlugin | None:
        mounts = getattr(run.parsed.payload, "mounts", None)
        return MountsRun(self, run, list(mounts)) if mounts else None

    async def poll_purge_requests(self, clients: Any, credentials: dict | None, warn) -> None:
        """Ask ``purgeRequests`` for this pool and drop the caches created before each request.

        A 403 turns polling off for good (one log line); other failures keep the caches.
        """
        from tcworker.queue.client import QueueCallError, parse_time

        pool = self.config.worker_pool_id
        if not self.purge.enabled or not pool:
            return
        since = self.purge.since()
        query = {} if since is None else {"since": _iso(since)}
        wall = time.time()
        try:
            answer = await clients.call(clients.purge_cache(credentials).purgeRequests, pool,
                                        query=query, timeout_s=30)
        except QueueCallError as err:
            if err.status == 403:
                self.purge.enabled = False
                log.warning("purge-cache: not allowed to read purge requests of %s (403): polling off", pool)
            else:
                log.warning("purge-cache: purgeRequests failed (%s): keeping caches", err)
            return
        self.purge.last_query = wall
        for request in answer.get("requests", []):
            before = parse_time(request["before"]).timestamp()
            dropped = await asyncio.to_thread(self.caches.purge, request["cacheName"], before)
            if dropped:
                warn(f"purge request for cache {request['cacheName']!r} (before {request['before']}): "
                     f"{dropped} cache(s) dropped")


def _iso(epoch: float) -> str:
    import datetime as dt

    return dt.datetime.fromtimestamp(epoch, dt.timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _describe(index: int, mount: Any) -> str:
    from tcworker.payloads import generic_worker as gw

    content = getattr(mount, "content", None)
    source = ""
    if content is not None:
        source = {
            gw.UrlContent: lambda c: f"url {c.url}",
            gw.ArtifactContent: lambda c: f"artifact {c.artifact} of task {c.task_id}",
            gw.IndexedContent: lambda c: f"artifact {c.artifact} of index {c.namespace}",
            gw.RawContent: lambda c: "raw content",
            gw.Base64Content: lambda c: "base64 content",
        }[type(content)](content)
        source = f" from {source}" + (f" ({mount.format})" if mount.format else "")
    if isinstance(mount, gw.WritableDirectoryCache):
        return f"mounts[{index}] writable cache {mount.cache_name!r} at {mount.directory}{source}"
    if isinstance(mount, gw.ReadOnlyDirectory):
        return f"mounts[{index}] read-only directory {mount.directory}{source}"
    return f"mounts[{index}] file {mount.file}{source}"


class MountsRun(TaskPlugin):
    """The mounts of one run; holds its downloads and cache leases until ``dispose``."""

    def __init__(self, plugin: MountsPlugin, run: "TaskRun", mounts: list) -> None:
        super().__init__(run)
        self.plugin = plugin
        self.mounts = mounts
        self.files: dict[int, BinaryIO] = {}
        self.leases: list[CacheLease] = []
        self.fetcher: ContentFetcher | None = None
        self.started_task = False
        self.keep: bool | None = None
        self._stack = contextlib.AsyncExitStack()

    # ------------------------------------------------------------------ prepare
    async def prepare(self) -> None:
        from tcworker.payloads import generic_worker as gw

        held = None
        if any(isinstance(m, gw.WritableDirectoryCache) for m in self.mounts):
            from tcworker.scopes import held_scopes

            held = await held_scopes(self.run)
        self._check_payload(held)
        self.fetcher = await self._make_fetcher()
        caches = [m for m in self.mounts if isinstance(m, gw.WritableDirectoryCache)]
        queue = getattr(self.run, "queue", None)
        if caches and self.plugin.mode == "run" and queue is not None:
            await self.plugin.poll_purge_requests(queue.clients, queue.worker.credentials, self.run.log.warn)
        for index, mount in enumerate(self.mounts):
            if not isinstance(mount, gw.WritableDirectoryCache):
                self.files[index] = await self._fetch(index, mount)

    def _check_payload(self, held: list[str] | None) -> None:
        """``held``: the task's expanded scopes (:func:`tcworker.scopes.held_scopes`)."""
        from tcworker.archives import format_problem
        from tcworker.payloads import generic_worker as gw
        from tcworker.scopes import satisfies, task_scopes

        problems = []
        given = task_scopes(self.run.task)
        held = given if held is None else held
        required = sorted({f"generic-worker:cache:{m.cache_name}" for m in self.mounts
                           if isinstance(m, gw.WritableDirectoryCache)})
        missing = [s for s in required if not satisfies(held, s)]
        if missing:
            expanded = f" (expanded: {held})" if sorted(held) != sorted(given) else ""
            problems.append("task.scopes: the task mounts writable caches and needs the scopes "
                            f"{required}; it has {given}{expanded} (missing {missing})")
        for index, mount in enumerate(self.mounts):
            path = getattr(mount, "directory", None) or mount.file
            if not posixpath.isabs(path) and posixpath.normpath(path).split("/")[0] == "..":
                problems.append(f"payload.mounts[{index}]: {path!r} is outside the task directory")
            if mount.format and (problem := format_problem(mount.format)):
                problems.append(f"payload.mounts[{index}].format: {problem}")
        if problems:
            raise MalformedPayload("\n".join(problems))

    async def _make_fetcher(self) -> ContentFetcher:
        from tcworker.payloads import generic_worker as gw

        queue = index = None
        needs_queue = any(isinstance(getattr(m, "content", None), (gw.ArtifactContent, gw.IndexedContent))
                          for m in self.mounts)
        run_queue = getattr(self.run, "queue", None)
        if run_queue is not None:
            queue = run_queue.queue_client()
            index = run_queue.clients.index(run_queue.credentials)
        elif needs_queue and self.plugin.config.root_url:
            from tcworker.queue.client import ClientFactory

            config = self.plugin.config
            clients = await self._stack.enter_async_context(ClientFactory.open(config.root_url))
            credentials = config.credentials if config.client_id else None
            queue, index = clients.queue(credentials), clients.index(credentials)
        elif needs_queue:
            raise MalformedPayload("payload.mounts: artifact and indexed content need a Queue: "
                                   "set rootURL in the config given to tcworker exec")
        return ContentFetcher(self.plugin.downloads, retry=self.plugin.retry, queue=queue, index=index,
                              warn=self.run.log.warn)

    async def _fetch(self, index: int, mount: Any) -> BinaryIO:
        try:
            return await self.fetcher.open(mount.content)
        except TaskError as err:
            raise type(err)(f"{_describe(index, mount)}: {err}") from None

    # ------------------------------------------------------------------ mount
    async def build_sandbox(self, builder: "SandboxBuilder") -> None:
        from tcworker.archives import ArchiveError

        task_dir = self.run.sandbox.task_dir
        for index, mount in enumerate(self.mounts):
            what = _describe(index, mount)
            self.run.log.info(f"Mounting {what}")
            try:
                await self._mount(index, mount, task_dir)
            except (ArchiveError, CacheError) as err:
                raise TaskFailed(f"{what}: {err}") from None
            except OSError as err:
                raise TaskFailed(f"{what}: {err.strerror or err}: {err.filename or ''}".rstrip(": ")) from None
            except TaskError as err:
                raise type(err)(f"{what}: {err}") from None

    async def _mount(self, index: int, mount: Any, task_dir: Path) -> None:
        from tcworker import archives
        from tcworker.payloads import generic_worker as gw

        if isinstance(mount, gw.WritableDirectoryCache):
            target = task_dir / mount.directory
            lease = await asyncio.to_thread(self.plugin.caches.acquire, mount.cache_name, target)
            self.leases.append(lease)
            self.run.log.info(f"cache {mount.cache_name!r}: {'new' if lease.fresh else 'reused'}")
            if lease.fresh and mount.content is not None:
                source = await self.fetcher.open(mount.content)
                self._stack.callback(source.close)
                await asyncio.to_thread(archives.extract, source, target, mount.format)
        elif isinstance(mount, gw.ReadOnlyDirectory):
            target = task_dir / mount.directory
            await asyncio.to_thread(archives.extract, self.files[index], target, mount.format)
        else:
            target = task_dir / mount.file
            await asyncio.to_thread(target.parent.mkdir, parents=True, exist_ok=True)
            await asyncio.to_thread(archives.decompress, self.files[index], target, mount.format)
        if self.run.sandbox.owner is not None:  # multiuser: the mount belongs to the run's user
            from tcworker.engines.taskuser import give_to_user

            await asyncio.to_thread(give_to_user, task_dir, target, self.run.sandbox.owner)

    # ------------------------------------------------------------------ the end
    async def started(self) -> None:
        self.started_task = True

    async def stopped(self, result: "ExitResult") -> None:
        self.keep, why = self._cache_fate(result)
        if self.leases and not self.keep:
            names = ", ".join(repr(lease.name) for lease in self.leases)
            self.run.log.warn(f"discarding cache(s) {names}: {why}")

    def _cache_fate(self, result: "ExitResult | None") -> tuple[bool, str]:
        return cache_fate(self.run, result, started=self.started_task)

    async def dispose(self) -> None:
        keep = self.keep if self.keep is not None else self._cache_fate(self.run.result)[0]
        leases, self.leases = self.leases, []
        for lease in leases:
            try:
                if keep and self.run.sandbox is not None and self.run.sandbox.owner is not None:
                    from tcworker.engines.taskuser import chown_tree  # back to the worker for the next user

                    await asyncio.to_thread(chown_tree, lease.path, os.geteuid(), os.getegid())
                kept = await asyncio.to_thread(self.plugin.caches.release, lease, keep=keep)
            except (CacheError, OSError):
                log.exception("cache %r: release failed", lease.name)
                continue
            log.info("cache %r (%s) %s", lease.name, lease.entry_id, "kept" if kept else "discarded")
        files, self.files = self.files, {}
        for handle in files.values():
            handle.close()
        await self._stack.aclose()
