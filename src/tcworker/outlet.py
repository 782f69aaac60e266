"""Where a run's results go: :class:`RunOutlet`, with the queue (daemon) and a folder (exec)
as its two implementations. This module holds the interface only.

The task runner decides the order (upload then report, or report then upload, see
:mod:`tcworker.resolution`); an outlet only carries things out.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Sequence

if TYPE_CHECKING:
    from tcworker.resolution import Resolution


@dataclass(frozen=True)
class LogNames:
    """Artifact names of the task log: ``live`` (reference, then link) and ``backing`` (data)."""

    live: str = "public/logs/live.log"
    backing: str = "public/logs/live_backing.log"


LOG_CONTENT_TYPE = "text/plain; charset=utf-8"


def log_artifacts(path: Path, names: LogNames, expires: datetime) -> tuple:
    """The task log as artifacts: ``(backing data artifact, live link to it)``, both expiring with
    the task (generic-worker: ``text/plain; charset=utf-8``, gzip in ``s3`` mode)."""
    from tcworker.artifacts import DataArtifact, LinkArtifact

    backing = DataArtifact(name=names.backing, path=path, size_bytes=path.stat().st_size,
                           content_type=LOG_CONTENT_TYPE, content_encoding="gzip", expires=expires)
    link = LinkArtifact(name=names.live, target=names.backing, expires=expires, content_type=LOG_CONTENT_TYPE)
    return backing, link


class RunOutlet(ABC):
    """The destination of one run's artifacts, log and resolution.

    Attributes:
        results: ``UploadResult`` of everything published so far, for outlets that upload as
            they go (the queue's); None for those that write only at the end (exec's folder).
    """

    results: list | None = None

    @abstractmethod
    async def publish_artifacts(self, artifacts: Sequence[object]) -> None:
        """Publish collected artifacts (``tcworker.artifacts`` data and error artifacts).

        Raises:
            ResourceUnavailable: an artifact could not be published after retries (names it).
            RunResolvedElsewhere: the queue no longer accepts uploads for this run.
        """

    @abstractmethod
    async def publish_log(self, path: Path, names: LogNames, expires: datetime) -> None:
        """Publish the closed task log as ``names.backing`` and ``names.live`` as a link to it.

        Raises:
            ResourceUnavailable, RunResolvedElsewhere: as :meth:`publish_artifacts`.
        """

    @abstractmethod
    async def report(self, resolution: "Resolution") -> None:
        """Make the one report call (nothing when ``resolution.state`` is ``None``).

        Raises:
            RunResolvedElsewhere: the queue refused the report with 409.
        """
