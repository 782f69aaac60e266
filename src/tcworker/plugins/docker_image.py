"""The docker engine's plugin: from a docker-worker payload to the engine's ``ContainerOptions``.

For each run whose payload has ``image`` (``ParsedTask.engine == "docker"``):

- ``prepare`` checks the scopes docker-worker requires in ``task.scopes`` (each with or without
  a ``:<workerPoolId>`` suffix; a trailing ``*`` in a task scope matches any rest):
  ``docker-worker:capability:privileged``, ``docker-worker:capability:device:<device>``,
  ``docker-worker:feature:allowPtrace``; the worker config gates (``dockerConfig``) are checked
  earlier by :mod:`tcworker.payloads.rules`. A missing scope → ``malformed-payload`` naming it.
  It also picks the image: a name (``"name:tag"`` or ``{type: docker-image, name}``) goes to the
  engine as is (local, else pulled); ``indexed-image`` and ``task-image`` are refused as
  not supported yet (they need a download with the task's credentials, not built yet);
- ``build_sandbox`` removes from the env what the task runner copied from the worker host
  (``PATH``, ``HOME``, ... and ``TASK_WORKDIR``, a host path) unless the payload sets them, so the
  image's own values apply, and sets ``builder.engine_options`` to
  :class:`~tcworker.engines.docker.ContainerOptions` (image, artifact paths to copy out,
  privileged, devices, ``SYS_PTRACE``).

What does not live here: running containers (:mod:`tcworker.engines.docker`), payload shape
and config gates (:mod:`tcworker.payloads`).
"""

from __future__ import annotations

import posixpath
from typing import TYPE_CHECKING

from tcworker.errors import MalformedPayload
from tcworker.plugins.base import Plugin, TaskPlugin
from tcworker.taskenv import BASE_NAMES

if TYPE_CHECKING:
    from tcworker.taskrun import SandboxBuilder, TaskRun

#: Host device path per ``capabilities.devices`` key (docker-worker's device managers).
DEVICE_PATHS = {
    "kvm": "/dev/kvm",
    "hostSharedMemory": "/dev/shm",
    "loopbackVideo": "/dev/video0",
    "loopbackAudio": "/dev/snd",
}
#: Env names the task runner takes from the worker host; a container keeps its image's instead.
HOST_ONLY_ENV = frozenset({"PATH", "TASK_WORKDIR", *BASE_NAMES})


def scope_satisfied(scopes: list[str], wanted: str) -> bool:
    """True when one of ``scopes`` grants ``wanted`` (exact, or a prefix ending in ``*``)."""
    return any(s == wanted or (s.endswith("*") and wanted.startswith(s[:-1])) for s in scopes)


class DockerPlugin(Plugin):
    """Turns docker-worker payloads into container options; sits out for native runs."""

    name = "docker"

    def new_run(self, run: "TaskRun") -> TaskPlugin | None:
        parsed = run.parsed
        if parsed is None or parsed.engine != "docker":
            return None
        return DockerRun(run)


class DockerRun(TaskPlugin):
    """One docker run's scope checks and container options."""

    def __init__(self, run: "TaskRun") -> None:
        super().__init__(run)
        self.image_name = ""

    async def prepare(self) -> None:
        """Check scopes and pick the image.

        Raises:
            MalformedPayload: a missing scope, or an image source this worker cannot fetch yet.
        """
        payload = self.run.parsed.payload
        problems = [f"{path}: task.scopes needs {scope!r} (optionally suffixed with ':{self._pool}')"
                    for path, scope in self._wanted_scopes() if not self._granted(scope)]
        image = payload.image
        if isinstance(image, str):
            self.image_name = image
        elif image.type == "docker-image":
            self.image_name = image.name
        else:
            problems.append(f"payload.image: type {image.type} is not supported by this worker yet")
        if problems:
            raise MalformedPayload("\n".join(problems))

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
        builder.engine_options = ContainerOptions(
            image=self.image_name,
            artifact_paths=artifact_paths,
            privileged=payload.capabilities.privileged,
            devices=tuple(DEVICE_PATHS[name] for name, wanted in devices.items() if wanted and name in DEVICE_PATHS),
            cap_add=("SYS_PTRACE",) if payload.features.allow_ptrace else (),
        )

    # ------------------------------------------------------------------ scopes
    @property
    def _pool(self) -> str:
        return self.run.config.worker_pool_id or "<workerPoolId>"

    def _granted(self, scope: str) -> bool:
        scopes = [s for s in self.run.task.get("scopes") or [] if isinstance(s, str)]
        pool = self.run.config.worker_pool_id
        return scope_satisfied(scopes, scope) or bool(pool) and scope_satisfied(scopes, f"{scope}:{pool}")

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
