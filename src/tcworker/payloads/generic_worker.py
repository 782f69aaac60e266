"""Strict pydantic models of generic-worker's native POSIX payload.

Mirrors ``../shared/schemas/peers/generic-worker/insecure_posix.yml`` (:class:`GenericWorkerPayload`)
and ``multiuser_posix.yml`` (:class:`MultiuserGenericWorkerPayload`, which adds
``features.chainOfTrust`` and ``features.runTaskAsCurrentUser``). Deliberate differences from the
schemas are listed in ``tests/payloads/test_contract.py`` (``DIFFERENCES``).

What does not live here: checks that depend on the worker or the task definition (feature gates,
``maxTaskRunTime``, artifact expiry, env names): see :mod:`tcworker.payloads.rules`.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal, Union

from pydantic import Discriminator, Field, StringConstraints, Tag, model_validator

from tcworker.payloads.common import (
    TAG_PREFIX,
    DateTime,
    Sha256Hex,
    SlugId,
    StrictModel,
    Uri,
    unique_list,
)

ArchiveFormat = Literal[
    "7z", "rar", "tar", "tar.br", "tar.bz2", "tar.gz", "tar.lz", "tar.lz4", "tar.mz", "tar.sz",
    "tar.xz", "tar.zst", "tar.zz", "zip",
]
"""Archive formats of directory mounts (``readOnlyDirectory``, ``writableDirectoryCache``)."""
FileFormat = Literal["br", "bz2", "gz", "lz", "lz4", "mz", "sz", "xz", "zst", "zz"]
"""Single-stream compression formats of file mounts."""


# ---------------------------------------------------------------- mount content
class ArtifactContent(StrictModel):
    """Content from an artifact of the latest run of ``taskId`` (which must be a dependency)."""

    task_id: SlugId = Field(alias="taskId")
    artifact: Annotated[str, StringConstraints(max_length=1024)]
    sha256: Sha256Hex | None = None


class IndexedContent(StrictModel):
    """Content from an artifact of the task indexed at ``namespace``."""

    namespace: Annotated[str, StringConstraints(max_length=255)]
    artifact: Annotated[str, StringConstraints(max_length=1024)]


class UrlContent(StrictModel):
    """Content downloaded from ``url`` (checked against ``sha256`` when given)."""

    url: Uri
    sha256: Sha256Hex | None = None


class RawContent(StrictModel):
    """Literal content, up to 65536 characters."""

    raw: Annotated[str, StringConstraints(max_length=65536)]


class Base64Content(StrictModel):
    """Base64-encoded content, up to 65536 characters encoded."""

    base64: Annotated[str, StringConstraints(max_length=65536, pattern=r"^[A-Za-z0-9/+]+[=]{0,2}$")]


def _content_kind(value: Any) -> str | None:
    if not isinstance(value, dict):
        return None
    for key, tag in (("namespace", "indexed"), ("taskId", "artifact"), ("artifact", "artifact"),
                     ("url", "url"), ("raw", "raw"), ("base64", "base64")):
        if key in value:
            return TAG_PREFIX + tag
    return None


Content = Annotated[
    Union[
        Annotated[ArtifactContent, Tag("#artifact")],
        Annotated[IndexedContent, Tag("#indexed")],
        Annotated[UrlContent, Tag("#url")],
        Annotated[RawContent, Tag("#raw")],
        Annotated[Base64Content, Tag("#base64")],
    ],
    Discriminator(
        _content_kind,
        custom_error_type="content_kind",
        custom_error_message="content must be an object with taskId+artifact, namespace+artifact, "
        "url, raw or base64",
    ),
]


# ---------------------------------------------------------------- mounts
class FileMount(StrictModel):
    """``file`` (relative to the task dir, or absolute) gets ``content``, decompressed by ``format``."""

    file: str
    content: Content
    format: FileFormat | None = None


class WritableDirectoryCache(StrictModel):
    """Persistent read/write ``directory`` shared by tasks using ``cacheName`` on this worker."""

    directory: str
    cache_name: str = Field(alias="cacheName")
    content: Content | None = None
    format: ArchiveFormat | None = None

    @model_validator(mode="after")
    def _content_and_format(self) -> "WritableDirectoryCache":
        given = self.model_fields_set
        if ("content" in given) != ("format" in given):
            raise ValueError("content and format must be given together")
        return self


class ReadOnlyDirectory(StrictModel):
    """``directory`` extracted from ``content`` (an archive in ``format``) for every task."""

    directory: str
    content: Content
    format: ArchiveFormat


def _mount_kind(value: Any) -> str | None:
    # generic-worker's own rule (mounts.go): cacheName → cache, else directory, else file.
    if not isinstance(value, dict):
        return None
    if "cacheName" in value:
        return "#writableDirectoryCache"
    if "directory" in value:
        return "#readOnlyDirectory"
    if "file" in value:
        return "#fileMount"
    return None


Mount = Annotated[
    Union[
        Annotated[FileMount, Tag("#fileMount")],
        Annotated[WritableDirectoryCache, Tag("#writableDirectoryCache")],
        Annotated[ReadOnlyDirectory, Tag("#readOnlyDirectory")],
    ],
    Discriminator(
        _mount_kind,
        custom_error_type="mount_kind",
        custom_error_message="a mount must be an object with cacheName+directory (cache), "
        "directory (read-only directory) or file (file mount)",
    ),
]


# ---------------------------------------------------------------- other parts
class Artifact(StrictModel):
    """One entry of ``payload.artifacts``."""

    type: Literal["file", "directory"]
    path: str
    name: str | None = None
    expires: DateTime | None = None
    content_type: str | None = Field(None, alias="contentType")
    content_encoding: Literal["identity", "gzip"] | None = Field(None, alias="contentEncoding")
    optional: bool = False


class Features(StrictModel):
    """``payload.features`` of the insecure engine; defaults are the schema's."""

    taskcluster_proxy: bool = Field(False, alias="taskclusterProxy")
    live_log: bool = Field(True, alias="liveLog")
    backing_log: bool = Field(True, alias="backingLog")
    interactive: bool = False
    loopback_video: bool = Field(False, alias="loopbackVideo")
    loopback_audio: bool = Field(False, alias="loopbackAudio")
    resource_monitor: bool = Field(True, alias="resourceMonitor")


class MultiuserFeatures(Features):
    """``payload.features`` of the multiuser engine: adds chain of trust and run-as-current-user."""

    chain_of_trust: bool = Field(False, alias="chainOfTrust")
    run_task_as_current_user: bool = Field(False, alias="runTaskAsCurrentUser")


class OnExitStatus(StrictModel):
    """Exit codes that make the run ``exception/intermittent-task`` or purge its caches."""

    retry: unique_list(Annotated[int, Field(ge=1)]) = []  # type: ignore[valid-type]
    purge_caches: unique_list(Annotated[int, Field(ge=0)]) = Field(  # type: ignore[valid-type]
        default_factory=list, alias="purgeCaches"
    )


class Logs(StrictModel):
    """Artifact names of the live and the backing log."""

    live: str = "public/logs/live.log"
    backing: str = "public/logs/live_backing.log"


Argv = Annotated[list[str], Field(min_length=1)]


class GenericWorkerPayload(StrictModel):
    """A generic-worker payload for the insecure POSIX engine (``insecure_posix.yml``).

    ``command`` is a list of argv lists, run in order in the task directory; ``max_run_time`` is
    seconds for all commands together.
    """

    command: Annotated[list[Argv], Field(min_length=1)]
    max_run_time: Annotated[int, Field(ge=1)] = Field(alias="maxRunTime")
    env: dict[str, str] = Field(default_factory=dict)
    artifacts: unique_list(Artifact) = Field(default_factory=list)  # type: ignore[valid-type]
    features: Features = Field(default_factory=Features)
    mounts: list[Mount] = Field(default_factory=list)
    os_groups: unique_list(str) = Field(default_factory=list, alias="osGroups")  # type: ignore[valid-type]
    superseder_url: str | None = Field(None, alias="supersederUrl")
    on_exit_status: OnExitStatus = Field(default_factory=OnExitStatus, alias="onExitStatus")
    logs: Logs = Field(default_factory=Logs)
    taskcluster_proxy_interface: Literal["localhost", "docker-bridge"] = Field(
        "localhost", alias="taskclusterProxyInterface"
    )


class MultiuserGenericWorkerPayload(GenericWorkerPayload):
    """A generic-worker payload for the multiuser POSIX engine (``multiuser_posix.yml``)."""

    features: MultiuserFeatures = Field(default_factory=MultiuserFeatures)
