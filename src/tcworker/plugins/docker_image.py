"""The docker engine's plugin: from a docker-worker payload to the engine's ``ContainerOptions``.

For each run whose payload has ``image`` (``ParsedTask.engine == "docker"``):

- ``prepare`` checks the scopes docker-worker requires in ``task.scopes`` (each with or without
  a ``:<workerPoolId>`` suffix; a trailing ``*`` in a task scope matches any rest; ``assume:``
  scopes expanded through the Auth service, :func:`tcworker.scopes.held_scopes`):
  ``docker-worker:capability:privileged``, ``docker-worker:capability:device:<device>``,
  ``docker-worker:feature:allowPtrace``; the worker config gates (``dockerConfig``) are checked
  earlier by :mod:`tcworker.payloads.rules`. A missing scope → ``malformed-payload`` naming it.
  It also picks the image: a name (``"name:tag"`` or ``{type: docker-image, name}``) goes to the
  engine as is (local, else pulled); ``indexed-image`` and ``task-image`` tarballs are
  downloaded with the task's credentials through the download cache and handed to the engine;
  ``payload.cache`` (the ``cache`` feature, :mod:`tcworker.plugins.docker_cache`): its scopes and
  paths are checked with the rest, then purge requests are applied;
- ``build_sandbox`` removes from the env what the task runner copied from the worker host
  (``PATH``, ``HOME``, ... and ``TASK_WORKDIR``, a host path) unless the payload sets them, so the
  image's own values apply, takes the caches (bind mounts), and sets ``builder.engine_options``
  to :class:`~tcworker.engines.docker.ContainerOptions` (image, artifact paths to copy out,
  caches, privileged, devices, ``SYS_PTRACE``);
- ``stopped`` decides the caches' fate, ``dispose`` releases them (the container has stopped).

What does not live here: running containers (:mod:`tcworker.engines.docker`), payload shape
and config gates (:mod:`tcworker.payloads`).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import posixpath
import shutil
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tcworker.errors import MalformedPayload
from tcworker.plugins.base import Plugin, TaskPlugin
from tcworker.scopes import held_scopes, satisfies
from tcworker.taskenv import BASE_NAMES

if TYPE_CHECKING:
    from tcworker.config import WorkerConfig
    from tcworker.engines.base import ExitResult
    from tcworker.plugins.docker_cache import DockerCaches
    from tcworker.taskrun import SandboxBuilder, TaskRun

#: Host device path per ``capabilities.devices`` key (docker-worker's device managers).
DEVICE_PATHS = {
    "kvm": "/dev/kvm",
    "hostSharedMemory": "/dev/shm",
    "loopbackVideo": "/dev/video0",
    "loopbackAudio": "/dev/snd",
}
#: Image tarball names ``docker load`` accepts here.
IMAGE_SUFFIXES = (".tar", ".tar.zst", ".tar.lz4")
#: Env names the task runner takes from the worker host; a container keeps its image's instead.
HOST_ONLY_ENV = frozenset({"PATH", "TASK_WORKDIR", *BASE_NAMES})


class DockerPlugin(Plugin):
    """Turns docker-worker payloads into container options; sits out for native runs.

    Provides ``cache`` (docker caches; the native ``mounts`` feature is the mounts plugin's).
    The cache store and the purge-request polling are those of the mounts feature
    (:class:`~tcworker.plugins.mounts.MountsPlugin`, a private instance on the same folders).
    """

    name = "docker"
    provides = frozenset({"cache"})

    def __init__(self, config: "WorkerConfig") -> None:
        from tcworker.plugins.mounts import MountsPlugin

        super().__init__(config)
        self.cache_host = MountsPlugin(config, mode="run")

    async def boot(self) -> None:
        """Forget caches a crashed worker held (their folder is gone); ``cachesDir`` is created
        by the first cache taken, not here."""
        caches = self.cache_host.caches
        if await asyncio.to_thread(caches.dir.is_dir):
            await asyncio.to_thread(caches.sweep)

    def new_run(self, run: "TaskRun") -> TaskPlugin | None:
        parsed = run.parsed
        if parsed is None or parsed.engine != "docker":
            return None
        return DockerRun(self, run)


class DockerRun(TaskPlugin):
    """One docker run's scope checks, caches and container options."""

    def __init__(self, plugin: DockerPlugin, run: "TaskRun") -> None:
        super().__init__(run)
        self.image_name = ""
        self.image_tarball: Path | None = None
        self.caches: DockerCaches | None = None
        self._tmp: Path | None = None
        if run.parsed.payload.cache:
            from tcworker.plugins.docker_cache import DockerCaches

            self.caches = DockerCaches(plugin.cache_host, run)

    async def prepare(self) -> None:
        """Check scopes and pick the image.

        Raises:
            MalformedPayload: a missing scope, or an image source this worker cannot fetch yet.
        """
        payload = self.run.parsed.payload
        wanted = self._wanted_scopes()
        held = await held_scopes(self.run) if wanted or self.caches is not None else []
        problems = [f"{path}: task.scopes needs {scope!r} (optionally suffixed with ':{self._pool}')"
                    for path, scope in wanted if not self._granted(held, scope)]
        image = payload.image
        if isinstance(image, str):
            self.image_name = image
        elif image.type == "docker-image":
            self.image_name = image.name
        elif not image.path.endswith(IMAGE_SUFFIXES):
            problems.append(f"payload.image.path: {image.path!r} must end with " + ", ".join(IMAGE_SUFFIXES))
        if self.caches is not None:
            problems += self.caches.problems(held)
        if problems:
            raise MalformedPayload("\n".join(problems))
        if self.caches is not None:
            await self.caches.poll_purge_requests()
        if not isinstance(image, str) and image.type != "docker-image":
            self.image_tarball = await self._download(image)

    async def build_sandbox(self, builder: "SandboxBuilder") -> None:
        from tcworker.engines.docker import ContainerOptions

        parsed = self.run.parsed
        payload = parsed.payload
        for name in HOST_ONLY_ENV - set(parsed.env):
            builder.env.pop(name, None)
        devices = payload.capabilities.devices.model_dump(by_alias=True)
        artifact_paths = tuple(
            posixpath.normpath("/" + spec.path.lstrip("/")) for spec in parsed.artifact_specs
        ) if parsed.features.upload_artifacts else ()
        volumes = await self.caches.mount(self.run.sandbox.cache_dir) if self.caches is not None else ()
        builder.engine_options = ContainerOptions(
            image=self.image_name,
            image_tarball=self.image_tarball,
            artifact_paths=artifact_paths,
            volumes=volumes,
            privileged=payload.capabilities.privileged,
            devices=tuple(DEVICE_PATHS[name] for name, wanted in devices.items() if wanted and name in DEVICE_PATHS),
            cap_add=("SYS_PTRACE",) if payload.features.allow_ptrace else (),
        )

    async def _download(self, image: Any) -> Path:
        """The image tarball of a ``task-image``/``indexed-image``, through the download cache.

        Uses the run's task credentials (``tcworker run``), else ``rootURL`` and the config's
        credentials (``tcworker exec``). Raises TaskFailed (4xx, no such task) or
        ResourceUnavailable (5xx after retries); MalformedPayload when no Queue is configured.
        """
        from tcworker.downloads import ContentFetcher, DownloadStore, RetryPolicy
        from tcworker.payloads import generic_worker as gw

        if image.type == "task-image":
            content: Any = gw.ArtifactContent.model_validate({"taskId": image.task_id, "artifact": image.path})
        else:
            content = gw.IndexedContent.model_validate({"namespace": image.namespace, "artifact": image.path})
        config = self.run.config
        run_queue = getattr(self.run, "queue", None)
        async with contextlib.AsyncExitStack() as stack:
            if run_queue is not None:
                queue, index = run_queue.queue_client(), run_queue.clients.index(run_queue.credentials)
            elif config.root_url:
                from tcworker.queue.client import ClientFactory

                clients = await stack.enter_async_context(ClientFactory.open(config.root_url))
                credentials = config.credentials if config.client_id else None
                queue, index = clients.queue(credentials), clients.index(credentials)
            else:
                raise MalformedPayload(f"payload.image: {image.type} needs a Queue: set rootURL in the config")
            fetcher = ContentFetcher(DownloadStore(config.downloads_dir), retry=RetryPolicy(), queue=queue,
                                     index=index, warn=self.run.log.warn)
            self.run.log.info(f"Downloading image {image.path} ({image.type})")
            with await fetcher.open(content) as stored:
                stored_path = Path(stored.name)
        # docker load picks the decompressor from the name: link the cached file under one
        named = Path(tempfile.mkdtemp(prefix="tcw-image-")) / posixpath.basename(image.path)
        os.symlink(stored_path, named)
        self._tmp = named.parent
        return named

    async def started(self) -> None:
        if self.caches is not None:
            self.caches.started = True

    async def stopped(self, result: "ExitResult") -> None:
        if self.caches is not None:
            self.caches.decide(result)

    async def dispose(self) -> None:
        if self.caches is not None:
            await self.caches.release()
        if self._tmp is not None:
            shutil.rmtree(self._tmp, ignore_errors=True)
            self._tmp = None

    # ------------------------------------------------------------------ scopes
    @property
    def _pool(self) -> str:
        return self.run.config.worker_pool_id or "<workerPoolId>"

    def _granted(self, scopes: list[str], scope: str) -> bool:
        pool = self.run.config.worker_pool_id
        return satisfies(scopes, scope) or bool(pool) and satisfies(scopes, f"{scope}:{pool}")

    def _wanted_scopes(self) -> list[tuple[str, str]]:
        payload = self.run.parsed.payload
        wanted = []
        if payload.capabilities.privileged:
            wanted.append(("payload.capabilities.privileged", "docker-worker:capability:privileged"))
        for name, asked in payload.capabilities.devices.model_dump(by_alias=True).items():
            if asked:
                wanted.append((f"payload.capabilities.devices.{name}", f"docker-worker:capability:device:{name}"))
        if payload.features.allow_ptrace:
            wanted.append(("payload.features.allowPtrace", "docker-worker:feature:allowPtrace"))
        return wanted
