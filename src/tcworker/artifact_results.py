"""What artifact uploads report: :class:`UploadResult` per artifact, :class:`ArtifactUploadFailed`.

The task run reads them to decide the resolution (``fails_task``, ``failed``, ``run-resolved``);
the chain-of-trust feature reads ``sha256`` of every uploaded data artifact.

Not here: the uploads themselves (:mod:`tcworker.queue.upload`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from tcworker.errors import ResourceUnavailable

UploadStatus = Literal["uploaded", "replaced-by-error", "run-resolved", "skipped", "failed"]


@dataclass(frozen=True)
class UploadResult:
    """What became of one artifact.

    Attributes:
        name: artifact name.
        storage_type: ``object``, ``s3``, ``error``, ``link`` or ``reference`` (``error`` when a
            vanished file was replaced by an error artifact).
        status: ``uploaded``; ``replaced-by-error`` (the file vanished: an error artifact was
            published instead); ``run-resolved`` (409, the run is no longer running); ``skipped``
            (could not be published, logged); ``failed`` (permanent or retries exhausted).
        sha256: hex digest of the bytes read from disk (before any gzip), data artifacts only.
        size_bytes: bytes read from disk, data artifacts only.
        content_type, content_encoding: as stored (``identity`` for object artifacts).
        fails_task: this artifact makes the task fail (a required file missing).
        message: why, for anything but ``uploaded``; names the HTTP status when there was one.
        http_status: the status of the failing call, if any.
    """

    name: str
    storage_type: str
    status: UploadStatus
    sha256: str | None = None
    size_bytes: int | None = None
    content_type: str | None = None
    content_encoding: str | None = None
    fails_task: bool = False
    message: str = ""
    http_status: int | None = None


class ArtifactUploadFailed(ResourceUnavailable):
    """Some artifacts could not be uploaded → ``exception/resource-unavailable``.

    Attributes:
        failures: the ``failed`` results (each names the artifact and HTTP status).
        results: every result, failures included.
    """

    def __init__(self, failures: list[UploadResult], results: list[UploadResult]) -> None:
        super().__init__(
            "artifact upload failed: " + "; ".join(f"{r.name!r}: {r.message}" for r in failures)
        )
        self.failures = failures
        self.results = results
