"""Blocking Docker plumbing for :mod:`tcworker.engines.docker`, run off the event loop.

- :func:`in_thread`: run a blocking call in its own daemon thread (calls that block for the whole
  run, such as ``container.wait`` and the output stream, must not take the default executor's few
  workers, which every other ``asyncio.to_thread`` call of the worker shares);
- :func:`pump_output`: copy a container's attach stream into a pipe (the event loop moves it into
  the task log with :class:`~tcworker.engines.pipecopy.PipeCopier`, so the pipe's capacity is the
  only buffer and a slow log slows the container, never the worker's memory);
- :func:`copy_out`: ``get_archive`` of one container path, extracted under a host directory with
  tarfile's ``data`` filter (no absolute names, no links leaving the destination, no devices, no
  setuid bits): a link that points outside is skipped with a warning, never followed;
- :func:`sweep`: remove containers, networks and volumes carrying a label (crash leftovers).

What does not live here: the run's life cycle (``docker.py``), image sources (``docker_images.py``).
"""

from __future__ import annotations

import asyncio
import logging
import os
import posixpath
import tarfile
import threading
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any, TypeVar

logger = logging.getLogger(__name__)

T = TypeVar("T")

#: Capacity asked for the output pipe.
#: Bytes per chunk read from ``get_archive``.
ARCHIVE_CHUNK_BYTES = 1024 * 1024


def in_thread(fn: Callable[..., T], *args: Any, name: str = "tcw-docker") -> asyncio.Future[T]:
    """Run ``fn(*args)`` in a new daemon thread; the future resolves on the calling loop.

    Cancelling the future does not stop the thread: the caller must make the call return (for
    example by killing the container it waits for).
    """
    loop = asyncio.get_running_loop()
    future: asyncio.Future[T] = loop.create_future()

    def settle(ok: bool, value: Any) -> None:
        if future.done():
            return
        if ok:
            future.set_result(value)
        else:
            future.set_exception(value)

    def target() -> None:
        try:
            result = fn(*args)
        except BaseException as err:  # handed to the awaiting coroutine, never lost
            loop.call_soon_threadsafe(settle, False, err)
        else:
            loop.call_soon_threadsafe(settle, True, result)

    threading.Thread(target=target, name=name, daemon=True).start()
    return future


def pump_output(stream: Iterable[bytes], write_fd: int) -> int:
    """Write every chunk of ``stream`` to ``write_fd`` (blocking), then close it.

    Returns:
        bytes written. A reader that went away (``EPIPE``) ends the copy quietly.
    """
    total = 0
    try:
        for chunk in stream:
            view = memoryview(chunk)
            while view:
                written = os.write(write_fd, view)
                total += written
                view = view[written:]
    except BrokenPipeError:
        logger.debug("output pipe closed by the reader after %d bytes", total)
    finally:
        os.close(write_fd)
        close = getattr(stream, "close", None)
        if close is not None:
            close()
    return total


class _ChunkReader:
    """A read-only file over an iterator of byte chunks (for tarfile's stream mode)."""

    def __init__(self, chunks: Iterator[bytes]) -> None:
        self._chunks = chunks
        self._buffer = b""

    def read(self, size: int = -1) -> bytes:
        while size < 0 or len(self._buffer) < size:
            try:
                self._buffer += next(self._chunks)
            except StopIteration:
                break
        if size < 0:
            data, self._buffer = self._buffer, b""
        else:
            data, self._buffer = self._buffer[:size], self._buffer[size:]
        return data


def copy_out(container: Any, container_path: str, dest_root: Path, warn: Callable[[str], None]) -> bool:
    """Copy ``container_path`` (absolute) out of ``container`` to ``dest_root/<container_path>``.

    Returns:
        False when the path does not exist in the container, True otherwise.

    Raises:
        docker.errors.APIError: the daemon failed for another reason.
        OSError: the host side could not be written.
    """
    import docker.errors

    path = posixpath.normpath(container_path)
    # The archive's top entry is the path's last component ("." for the contents of "/").
    source, parent = (path, dest_root / posixpath.dirname(path).lstrip("/")) if path != "/" else ("/.", dest_root)
    try:
        chunks, _stat = container.get_archive(source, chunk_size=ARCHIVE_CHUNK_BYTES)
    except docker.errors.NotFound:
        return False
    parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(fileobj=_ChunkReader(iter(chunks)), mode="r|") as archive:  # type: ignore[call-overload]
        for member in archive:
            try:
                archive.extract(member, parent, filter="data")
            except tarfile.FilterError as err:
                warn(f"not copying {posixpath.join(posixpath.dirname(path), member.name)} out of the "
                     f"container: {err}")
    return True


def sweep(client: Any, labels: dict[str, str]) -> list[str]:
    """Remove every container, network and volume carrying all ``labels``; returns their names.

    Containers go first (forced, with their anonymous volumes), so the networks and volumes they
    held are free to remove.
    """
    filters = {"label": [f"{key}={value}" for key, value in labels.items()]}
    removed: list[str] = []
    for container in client.containers.list(all=True, filters=filters):
        _remove(lambda: container.remove(force=True, v=True), f"container {container.name}", removed)
    for network in client.networks.list(filters=filters):
        _remove(network.remove, f"network {network.name}", removed)
    for volume in client.volumes.list(filters=filters):
        _remove(lambda: volume.remove(force=True), f"volume {volume.name}", removed)
    return removed


def _remove(action: Callable[[], object], what: str, removed: list[str]) -> None:
    import docker.errors

    try:
        action()
    except docker.errors.NotFound:
        return
    except docker.errors.APIError as err:
        logger.warning("cannot remove leftover %s: %s", what, err)
        return
    removed.append(what)


# ----------------------------------------------------------------------------- small daemon helpers


def daemon_errors() -> tuple[type[BaseException], ...]:
    import docker.errors
    import requests

    return (docker.errors.DockerException, requests.exceptions.RequestException)


def explain(err: BaseException) -> str:
    explanation = getattr(err, "explanation", None)
    return str(explanation or err)


def kill(container: Any, signal: str) -> None:
    import docker.errors

    try:
        container.kill(signal=signal)
    except docker.errors.NotFound:
        return
    except docker.errors.APIError as err:
        if err.status_code != 409:  # 409: not running any more
            raise


def remove_container(container: Any) -> None:
    import docker.errors

    try:
        container.remove(force=True, v=True)
    except docker.errors.NotFound:
        return
    except docker.errors.APIError as err:
        logger.warning("cannot remove container %s: %s", container.name, err)


def log_late_failure(job: asyncio.Future) -> None:
    if not job.cancelled() and job.exception() is not None:
        logger.info("image fetch after an abort failed: %s", job.exception())


