"""The bodies of artifact uploads: createArtifact request JSON and the bytes read from disk.

Lives here: :func:`create_request` (the ``post-artifact-request`` for every storage type),
:func:`format_expires`, :class:`BodyReader` (reads exactly N bytes of a file in chunks and hashes
them, in the reader shape ``taskcluster.aio.upload`` expects), :func:`gzip_to_temp` and
:func:`sha256_of` (blocking: run them in a thread).

What does not live here: the calls and their retries (:mod:`tcworker.queue.upload`).
"""

from __future__ import annotations

import gzip
import hashlib
import tempfile
from datetime import datetime, timezone
from typing import Any, AsyncIterator, BinaryIO

from tcworker.artifacts import (
    Artifact,
    ArtifactGone,
    DataArtifact,
    ErrorArtifact,
    LinkArtifact,
)

CHUNK_BYTES = 64 * 1024
ERROR_MESSAGE_MAX = 4096  # the queue's limit on an error artifact's message


def format_expires(when: datetime) -> str:
    """``YYYY-MM-DDTHH:MM:SS.mmmZ`` (the queue's own format) from an aware or UTC-naive datetime."""
    if when.tzinfo is not None:
        when = when.astimezone(timezone.utc)
    return when.strftime("%Y-%m-%dT%H:%M:%S.") + f"{when.microsecond // 1000:03d}Z"


def create_request(artifact: Artifact, *, storage_type: str | None = None, size_bytes: int | None = None) -> dict[str, Any]:
    """The createArtifact body for ``artifact``.

    Args:
        storage_type: ``object`` or ``s3`` for a data artifact (ignored for the others).
        size_bytes: the data artifact's size, sent as the informational ``contentLength``. Omit it
            for gzip-encoded s3 bodies: the PUT then carries the compressed length, and a store
            that signs the declared length would refuse it.
    """
    expires = format_expires(artifact.expires)
    if isinstance(artifact, DataArtifact):
        body: dict[str, Any] = {"storageType": storage_type or "object", "contentType": artifact.content_type,
                                "expires": expires}
        if size_bytes is not None:
            body["contentLength"] = size_bytes
        return body
    if isinstance(artifact, ErrorArtifact):
        return {"storageType": "error", "expires": expires, "reason": artifact.reason,
                "message": artifact.message[:ERROR_MESSAGE_MAX]}
    if isinstance(artifact, LinkArtifact):
        body = {"storageType": "link", "expires": expires, "artifact": artifact.target}
        if artifact.content_type:
            body["contentType"] = artifact.content_type
        return body
    return {"storageType": "reference", "expires": expires, "url": artifact.url,
            "contentType": artifact.content_type}


class BodyReader:
    """Reads exactly ``size_bytes`` of ``source`` (from where it is) in chunks, hashing them.

    ``await read(max_size)`` returns 1..max_size bytes, ``b""`` at the end (the
    ``taskcluster.aio.upload`` reader shape); :meth:`chunks` iterates for an aiohttp body.

    Attributes:
        complete: every byte was read.

    Raises:
        ArtifactGone: from ``read``, when the file ends early (it shrank after it was opened).
    """

    def __init__(self, source: BinaryIO, size_bytes: int) -> None:
        self._source = source
        self._remaining = size_bytes
        self._sha256 = hashlib.sha256()
        self.complete = size_bytes == 0

    async def read(self, max_size: int) -> bytes:
        if self._remaining <= 0:
            return b""
        chunk = self._source.read(min(max_size, self._remaining))
        if not chunk:
            raise ArtifactGone(f"file shrank while uploading ({self._remaining} bytes missing)")
        self._remaining -= len(chunk)
        self._sha256.update(chunk)
        self.complete = self._remaining == 0
        return chunk

    async def chunks(self) -> AsyncIterator[bytes]:
        """The remaining bytes in :data:`CHUNK_BYTES` pieces."""
        while chunk := await self.read(CHUNK_BYTES):
            yield chunk

    def hexdigest(self) -> str:
        """sha256 (hex) of the bytes read so far."""
        return self._sha256.hexdigest()


def sha256_of(source: BinaryIO, size_bytes: int) -> str:
    """sha256 (hex) of the first ``size_bytes`` of ``source`` (blocking; seeks to 0 first)."""
    source.seek(0)
    digest = hashlib.sha256()
    remaining = size_bytes
    while remaining > 0 and (chunk := source.read(min(1 << 20, remaining))):
        digest.update(chunk)
        remaining -= len(chunk)
    return digest.hexdigest()


def gzip_to_temp(source: BinaryIO, size_bytes: int) -> tuple[BinaryIO, int, str]:
    """Gzip exactly ``size_bytes`` of ``source`` into an anonymous temp file (blocking).

    The gzip header carries no name and mtime 0, so equal inputs give equal bodies.

    Returns:
        ``(temp file at offset 0 (the caller closes it), compressed size, sha256 of the input)``.

    Raises:
        ArtifactGone: the file shrank while it was read.
    """
    out = tempfile.TemporaryFile()
    digest = hashlib.sha256()
    remaining = size_bytes
    try:
        with gzip.GzipFile(fileobj=out, mode="wb", compresslevel=6, mtime=0, filename="") as zipped:
            while remaining > 0:
                chunk = source.read(min(1 << 20, remaining))
                if not chunk:
                    raise ArtifactGone(f"file shrank while compressing ({remaining} bytes missing)")
                digest.update(chunk)
                zipped.write(chunk)
                remaining -= len(chunk)
    except BaseException:
        out.close()
        raise
    compressed = out.tell()
    out.seek(0)
    return out, compressed, digest.hexdigest()  # type: ignore[return-value]
