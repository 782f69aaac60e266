"""What the docker engine takes from its plugin and puts on what it creates.

:class:`ContainerOptions` (``SandboxSpec.engine_options`` of docker runs, built by
:mod:`tcworker.plugins.docker_image`), the labels on every container and network
(:data:`LABEL`, :data:`OWNER_LABEL`, :data:`TASK_LABEL`, :data:`TASKS_DIR_LABEL`) and
:func:`owner_label`. Re-exported by :mod:`tcworker.engines.docker`.

What does not live here: running containers (:mod:`.docker`).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path

from tcworker.config import WorkerConfig

LABEL = "tcworker"
OWNER_LABEL = "tcworker.owner"
TASK_LABEL = "tcworker.task"
#: The absolute ``tasksDir`` of the worker that created an object (what :data:`OWNER_LABEL` hashes).
TASKS_DIR_LABEL = "tcworker.tasks-dir"


@dataclass(frozen=True)
class ContainerOptions:
    """What the docker engine needs beyond the command and env (``SandboxSpec.engine_options``).

    Attributes:
        image: image name (``name[:tag]`` or ``name@digest``); ignored when ``image_tarball`` is set.
        image_tarball: local ``.tar``/``.tar.zst``/``.tar.lz4`` to ``docker load`` instead.
        artifact_paths: absolute container paths to copy out after the run; None: the whole
            container filesystem (for direct engine use, as in the conformance suite).
        volumes: named volume or absolute host directory → mount path in the container (caches
            are host directories of :class:`~tcworker.caches.CacheStore`, bind-mounted).
        privileged: ``--privileged`` (the plugin checked scopes and config).
        devices: host device paths to pass through (``/dev/kvm``).
        cap_add: capabilities to add (``SYS_PTRACE`` for ``allowPtrace``).
        labels: extra labels for the container.
    """

    image: str = ""
    image_tarball: Path | None = None
    artifact_paths: tuple[str, ...] | None = None
    volumes: tuple[tuple[str, str], ...] = ()
    privileged: bool = False
    devices: tuple[str, ...] = ()
    cap_add: tuple[str, ...] = ()
    labels: dict[str, str] = field(default_factory=dict)


def owner_label(config: WorkerConfig) -> str:
    """This worker's value of :data:`OWNER_LABEL`: a short hash of its absolute ``tasksDir``."""
    return hashlib.sha256(str(Path(config.tasks_dir).absolute()).encode()).hexdigest()[:16]
