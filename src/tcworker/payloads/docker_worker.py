"""Strict pydantic model of docker-worker payloads, as generic-worker's D2G accepts them today.

Mirrors ``../shared/schemas/peers/docker-worker/d2g-current/payload.yml``. Legacy properties that
docker-worker once had and today's schema rejects (``graphs``, ``features.dind``,
``features.dockerSave``, ...) are refused with a message naming them (:data:`LEGACY_PROPERTIES`).
Differences from the schemas are listed in ``tests/payloads/test_contract.py``.

What does not live here: worker-level checks (capability gates, ``maxTaskRunTime``, artifact
expiry): :mod:`tcworker.payloads.rules`; running the container: :mod:`tcworker.engines.docker`.
"""

from __future__ import annotations

import posixpath
from typing import Annotated, Any, Literal, Union

from pydantic import Discriminator, Field, Tag

from tcworker.payloads.common import DateTime, StrictModel

LEGACY_PROPERTIES = {
    "graphs": "task-graph-scheduler era property, removed from docker-worker",
    "features.dind": "docker-in-docker was removed from docker-worker payloads (2025-09)",
    "features.dockerSave": "dockerSave was removed from docker-worker payloads (2025-09)",
    "features.relengAPIProxy": "relengAPIProxy was removed from docker-worker",
    "features.balrogVPNProxy": "balrogVPNProxy was removed from docker-worker",
    "features.balrogStageVPNProxy": "balrogStageVPNProxy was removed from docker-worker",
    "reboot": "reboot was removed from docker-worker",
}
"""Payload keys (relative to ``payload``) that old docker-worker releases accepted, with why not now."""


class NamedImage(StrictModel):
    """``{type: docker-image, name}``: an image by name, like a plain string."""

    type: Literal["docker-image"]
    name: str


class IndexedImage(StrictModel):
    """``{type: indexed-image, namespace, path}``: an image tarball artifact found in the Index."""

    type: Literal["indexed-image"]
    namespace: str
    path: str


class TaskImage(StrictModel):
    """``{type: task-image, taskId, path}``: an image tarball artifact of another task."""

    type: Literal["task-image"]
    task_id: str = Field(alias="taskId")
    path: str


def _image_kind(value: Any) -> str | None:
    if isinstance(value, str):
        return "#name"
    if isinstance(value, dict):
        return {"docker-image": "#docker-image", "indexed-image": "#indexed-image",
                "task-image": "#task-image"}.get(value.get("type"))  # type: ignore[arg-type]
    return None


Image = Annotated[
    Union[
        Annotated[str, Tag("#name")],
        Annotated[NamedImage, Tag("#docker-image")],
        Annotated[IndexedImage, Tag("#indexed-image")],
        Annotated[TaskImage, Tag("#task-image")],
    ],
    Discriminator(
        _image_kind,
        custom_error_type="image_kind",
        custom_error_message="image must be a string or an object with type docker-image, "
        "indexed-image or task-image",
    ),
]


class Devices(StrictModel):
    """``capabilities.devices``: host devices for the container."""

    loopback_video: bool = Field(False, alias="loopbackVideo")
    loopback_audio: bool = Field(False, alias="loopbackAudio")
    host_shared_memory: bool = Field(False, alias="hostSharedMemory")
    kvm: bool = False


class Capabilities(StrictModel):
    """``capabilities``: privileged mode, seccomp, devices."""

    privileged: bool = False
    disable_seccomp: bool = Field(False, alias="disableSeccomp")
    devices: Devices = Field(default_factory=Devices)


class OnExitStatus(StrictModel):
    """Exit codes that make the run ``exception/intermittent-task`` or purge its caches."""

    retry: list[int] = Field(default_factory=list)
    purge_caches: list[int] = Field(default_factory=list, alias="purgeCaches")


class DockerArtifact(StrictModel):
    """One value of ``payload.artifacts`` (the key is the artifact name)."""

    type: Literal["file", "directory", "volume"]
    path: str
    expires: DateTime | None = None


class DockerFeatures(StrictModel):
    """``payload.features``; defaults are the schema's."""

    local_live_log: bool = Field(True, alias="localLiveLog")
    bulk_log: bool = Field(True, alias="bulkLog")
    taskcluster_proxy: bool = Field(False, alias="taskclusterProxy")
    artifacts: bool = True
    interactive: bool = False
    allow_ptrace: bool = Field(False, alias="allowPtrace")
    chain_of_trust: bool = Field(False, alias="chainOfTrust")


class DockerWorkerPayload(StrictModel):
    """A docker-worker payload (``d2g-current/payload.yml``).

    ``command`` is the container's argv (empty: the image's default command); ``max_run_time`` is
    seconds; ``cache`` maps cache names to mount points inside the container.
    """

    image: Image
    max_run_time: Annotated[int, Field(ge=1)] = Field(alias="maxRunTime")
    log: str = "public/logs/live.log"
    cache: dict[str, str] = Field(default_factory=dict)
    capabilities: Capabilities = Field(default_factory=Capabilities)
    command: list[str] = Field(default_factory=list)
    env: dict[str, str] = Field(default_factory=dict)
    on_exit_status: OnExitStatus = Field(default_factory=OnExitStatus, alias="onExitStatus")
    artifacts: dict[str, DockerArtifact] = Field(default_factory=dict)
    superseder_url: str | None = Field(None, alias="supersederUrl")
    features: DockerFeatures = Field(default_factory=DockerFeatures)

    @property
    def backing_log_name(self) -> str:
        """``log`` with ``_backing`` before the extension of its last path component.

        ``public/logs/live.log`` → ``public/logs/live_backing.log``;
        ``apple/banana.log.txt`` → ``apple/banana.log_backing.txt``.
        """
        return backing_log_name(self.log)


def backing_log_name(live: str) -> str:
    """docker-worker's backing log name for live log name ``live`` (see the schema's ``log``).

    Follows D2G's Go code: the extension is the suffix from the last dot of the last component.
    """
    head, tail = posixpath.split(live)
    dot = tail.rfind(".")
    stem, ext = (tail[:dot], tail[dot:]) if dot >= 0 else (tail, "")
    return f"{head}/{stem}_backing{ext}" if head else f"{stem}_backing{ext}"
