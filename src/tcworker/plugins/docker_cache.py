"""The ``cache`` feature of docker-worker payloads: :class:`DockerCaches`, one run's caches.

``payload.cache`` maps cache names to mount paths in the container (``peer-workers.md`` section
5). Each cache is a directory of the worker's :class:`~tcworker.caches.CacheStore` (the same
store, index and rules as native ``writableDirectoryCache`` mounts, so a cache name means the
same cache for both payload kinds, as under D2G), bind-mounted into the container:

- ``check``: each name needs ``docker-worker:cache:<name>`` or
  ``docker-worker:cache:<name>:<workerPoolId>`` in ``task.scopes`` (``assume:`` expanded by the
  caller); otherwise ``malformed-payload`` listing required and given scopes. Mount paths must be absolute and not
  ``/``. Under ``tcworker run``, purge requests of the pool are fetched first (the mounts
  feature's polling, :meth:`~tcworker.plugins.mounts.MountsPlugin.poll_purge_requests`);
- ``mount``: acquire each cache (exclusive use: a second running task asking for the same name
  gets another entry, or a new empty one) into the sandbox's cache folder, outside the folder
  that mirrors the container for artifacts;
- ``decide``: discard the caches when the run was aborted (cancel, worker shutdown), hit
  ``maxRunTime``, or exited with a code in ``onExitStatus.purgeCaches`` (the rule of
  :mod:`tcworker.plugins.mounts`); keep them otherwise;
- ``release``: after the container stopped, move kept caches back into the store, delete the
  others. Purged entries are discarded at release.

What does not live here: the store (:mod:`tcworker.caches`), the container
(:mod:`tcworker.engines.docker`), the plugin hooks (:mod:`tcworker.plugins.docker_image`).
"""

from __future__ import annotations

import asyncio
import logging
import posixpath
from pathlib import Path
from typing import TYPE_CHECKING

from tcworker.caches import CacheError, CacheLease, cache_fate
from tcworker.errors import TaskFailed
from tcworker.scopes import given_lines, satisfies, task_scopes

if TYPE_CHECKING:
    from tcworker.engines.base import ExitResult
    from tcworker.plugins.mounts import MountsPlugin
    from tcworker.taskrun import TaskRun

log = logging.getLogger(__name__)


def cache_scope_problem(task: dict, names: list[str], worker_pool_id: str,
                        held: list[str] | None = None) -> str | None:
    """The ``malformed-payload`` message when ``task.scopes`` miss a cache scope, else None.

    Args:
        task: the task definition (``scopes``: list of strings, may be missing).
        names: the cache names of ``payload.cache``.
        worker_pool_id: ``<provisionerId>/<workerType>``; the suffixed form is accepted too.
        held: the expanded scopes (:func:`tcworker.scopes.held_scopes`); None → ``task.scopes``.
    """
    given = task_scopes(task) if held is None else list(held)
    required = [f"docker-worker:cache:{name}" for name in sorted(names)]
    missing = [s for s in required
               if not satisfies(given, s) and not (worker_pool_id and satisfies(given, f"{s}:{worker_pool_id}"))]
    if not missing:
        return None
    suffix = f":{worker_pool_id}" if worker_pool_id else ":<workerPoolId>"
    lines = ["payload.cache: task.scopes do not satisfy the scopes it requires",
             f"Required scopes (each also granted with the suffix '{suffix}'):"]
    lines += [f"  {s}" for s in required]
    lines += given_lines(task, held)
    lines.append("Missing: " + ", ".join(missing))
    return "\n".join(lines)


class DockerCaches:
    """The caches of one docker run (created by the docker plugin when ``payload.cache`` is set).

    Args:
        host: the worker's cache store and purge-request polling (a private
            :class:`~tcworker.plugins.mounts.MountsPlugin` of the docker plugin).
        run: the run; uses ``parsed.payload.cache``, ``task``, ``config``, ``queue``, ``log``,
            ``aborted``, ``parsed.purge_cache_exit_codes``.
    """

    def __init__(self, host: "MountsPlugin", run: "TaskRun") -> None:
        self.host = host
        self.run = run
        self.paths: dict[str, str] = dict(run.parsed.payload.cache)
        self.leases: list[tuple[CacheLease, str]] = []
        self.started = False
        self.keep: bool | None = None

    def problems(self, held: list[str] | None = None) -> list[str]:
        """Payload problems (missing scopes, bad mount paths), one line each; ``held``: the
        expanded scopes (None → the literal ``task.scopes``)."""
        problems = []
        if problem := cache_scope_problem(dict(self.run.task), list(self.paths), self.run.config.worker_pool_id,
                                          held):
            problems.append(problem)
        for name, path in self.paths.items():
            if not posixpath.isabs(path) or posixpath.normpath(path) == "/":
                problems.append(f"payload.cache.{name}: {path!r} must be an absolute path below /")
        return problems

    async def poll_purge_requests(self) -> None:
        """Under ``tcworker run``: apply the pool's purge requests before the caches are taken."""
        queue = getattr(self.run, "queue", None)
        if queue is not None:
            await self.host.poll_purge_requests(queue.clients, queue.worker.credentials, self.run.log.warn)

    async def mount(self, host_dir: Path) -> tuple[tuple[str, str], ...]:
        """Acquire every cache under ``host_dir`` → ``((host path, container path), ...)``.

        Raises:
            TaskFailed: a cache could not be moved into place (names the cache).
        """
        binds = []
        for index, (name, path) in enumerate(sorted(self.paths.items())):
            target = host_dir / str(index)
            try:
                lease = await asyncio.to_thread(self.host.caches.acquire, name, target)
            except (CacheError, OSError) as err:
                raise TaskFailed(f"payload.cache.{name}: {err}") from None
            self.leases.append((lease, path))
            self.run.log.info(f"cache {name!r}: {'new' if lease.fresh else 'reused'}, mounted at {path}")
            binds.append((str(target), posixpath.normpath(path)))
        return tuple(binds)

    def decide(self, result: "ExitResult | None") -> None:
        """Keep or discard the caches after the run; logs why they are discarded."""
        self.keep, why = self._fate(result)
        if self.leases and not self.keep:
            names = ", ".join(repr(lease.name) for lease, _ in self.leases)
            self.run.log.warn(f"discarding cache(s) {names}: {why}")

    def _fate(self, result: "ExitResult | None") -> tuple[bool, str]:
        return cache_fate(self.run, result, started=self.started)

    async def release(self) -> None:
        """Move kept caches back into the store, delete the others. Idempotent; call only once the
        container has stopped (a running container would keep writing into a released cache)."""
        keep = self.keep if self.keep is not None else self._fate(self.run.result)[0]
        leases, self.leases = self.leases, []
        for lease, _path in leases:
            try:
                kept = await asyncio.to_thread(self.host.caches.release, lease, keep=keep)
            except (CacheError, OSError):
                log.exception("cache %r: release failed", lease.name)
                continue
            log.info("cache %r (%s) %s", lease.name, lease.entry_id, "kept" if kept else "discarded")
