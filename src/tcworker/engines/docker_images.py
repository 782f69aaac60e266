"""Getting a task's image into the local daemon: by name (local, else pulled) or from a tarball.

Blocking functions, called through a thread by :mod:`tcworker.engines.docker`. Each returns the
reference to create the container from, or raises :class:`ImageError` whose message goes to the
task log (docker-worker resolves an image that cannot be had as ``failed``).

Tarballs (``.tar``, ``.tar.zst``, ``.tar.lz4``) are streamed into ``docker load`` and decompressed
on the way, so a large image never sits uncompressed on disk twice.

What does not live here: finding tarballs in the Index or another task's artifacts
(:mod:`tcworker.plugins.docker_image`), image garbage collection.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

#: Bytes per read when streaming a tarball into ``docker load``.
LOAD_CHUNK_BYTES = 1024 * 1024


class ImageError(Exception):
    """The image cannot be made available (not found, pull refused, bad tarball)."""


def ensure_named(client: Any, name: str) -> str:
    """``name`` when the daemon has it, else pull it (``:latest`` when no tag or digest is given).

    Raises:
        ImageError: the pull failed (registry unreachable, unknown image, no access).
    """
    import docker.errors
    from docker.utils import parse_repository_tag

    try:
        client.images.get(name)
        return name
    except docker.errors.ImageNotFound:
        pass
    except docker.errors.APIError as err:
        raise ImageError(f"image {name}: {err.explanation or err}") from None
    repository, tag = parse_repository_tag(name)
    try:
        client.images.pull(repository, tag=tag or "latest")
    except docker.errors.APIError as err:
        raise ImageError(f"image {name} is not on this worker and could not be pulled: "
                         f"{err.explanation or err}") from None
    return name if tag or "@" in name else f"{name}:latest"


def load_tarball(client: Any, path: Path) -> str:
    """``docker load`` the image tarball at ``path``; returns the loaded image's id or first tag.

    Raises:
        ImageError: unknown compression, unreadable file, or the daemon refused the archive.
    """
    import docker.errors

    try:
        chunks = _decompressed(path)
        loaded = _loaded_reference(client.api.load_image(chunks))
    except (OSError, ValueError) as err:
        raise ImageError(f"image tarball {path.name}: {err}") from None
    except docker.errors.APIError as err:
        raise ImageError(f"image tarball {path.name}: docker load failed: {err.explanation or err}") from None
    if loaded is None:
        raise ImageError(f"image tarball {path.name}: docker load reported no image")
    return loaded


def _decompressed(path: Path) -> Iterator[bytes]:
    name = path.name
    if name.endswith(".tar.zst"):
        import zstandard

        def gen() -> Iterator[bytes]:
            with path.open("rb") as raw, zstandard.ZstdDecompressor().stream_reader(raw) as reader:
                while chunk := reader.read(LOAD_CHUNK_BYTES):
                    yield chunk
    elif name.endswith(".tar.lz4"):
        import lz4.frame

        def gen() -> Iterator[bytes]:
            with lz4.frame.open(path, "rb") as reader:
                while chunk := reader.read(LOAD_CHUNK_BYTES):
                    yield chunk
    elif name.endswith(".tar"):
        def gen() -> Iterator[bytes]:
            with path.open("rb") as reader:
                while chunk := reader.read(LOAD_CHUNK_BYTES):
                    yield chunk
    else:
        raise ValueError("an image must be a .tar, .tar.zst or .tar.lz4 file")
    path.stat()  # a missing file fails here, before the daemon is asked
    return gen()


def _loaded_reference(messages: Any) -> str | None:
    """The first ``Loaded image: X`` / ``Loaded image ID: sha256:...`` of ``docker load``'s answer."""
    for message in messages:
        if isinstance(message, (bytes, str)):
            try:
                message = json.loads(message)
            except ValueError:
                continue
        if not isinstance(message, dict):
            continue
        if message.get("errorDetail") or message.get("error"):
            raise ImageError(f"docker load failed: {message.get('error') or message['errorDetail']}")
        stream = str(message.get("stream", "")).strip()
        for prefix in ("Loaded image: ", "Loaded image ID: "):
            if stream.startswith(prefix):
                return stream[len(prefix):].strip()
    return None
