"""Mount content: fetching it (URL, artifact, indexed artifact) into a download cache kept by sha256.

Lives here:

- :class:`DownloadStore`: files ``<downloadsDir>/<sha256>`` plus the index
  ``<downloadsDir>/downloads.json`` (content key → sha256, size, times). Keys follow
  generic-worker: ``urlcontent:<url>``, ``artifact:<taskId>:<name>``. Before reuse an entry is
  verified (its sha256 when the mount gives one, else its size); a missing or corrupt file is
  fetched again, never fatal.
- :class:`RetryPolicy` and :func:`url_fetcher`: HTTP GET with aiohttp, the body read inside the
  retry; 4xx → :class:`~tcworker.errors.TaskFailed`, 5xx/connection errors/timeouts still failing
  after the retries → :class:`~tcworker.errors.ResourceUnavailable`.
- :func:`artifact_fetcher`: the latest run's artifact through the Queue (the official client's
  download helper, so object, s3 and reference artifacts all work), with the credentials given.
- :class:`ContentFetcher`: one run's way to turn a mount's ``content`` into an open file.

A sha256 given in the payload that does not match → ``TaskFailed`` (and the download is dropped).

What does not live here: unpacking (:mod:`tcworker.archives`), where content is mounted
(:mod:`tcworker.plugins.mounts`).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import io
import logging
import os
import secrets
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Awaitable, BinaryIO, Callable

from tcworker.caches import LockedJson
from tcworker.errors import MalformedPayload, ResourceUnavailable, TaskFailed

log = logging.getLogger(__name__)

INDEX_NAME = "downloads.json"
HASH_CHUNK = 1024 * 1024


@dataclass(frozen=True)
class StoredFile:
    """One file of the download store; ``keys`` are the content keys that point at it."""

    sha256: str
    size_bytes: int
    last_used: float
    keys: tuple[str, ...]


class Sink:
    """Where a fetcher writes: a temp file in the store, hashed as it is written."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.file = open(path, "w+b")
        self.hash = hashlib.sha256()
        self.size = 0

    def reset(self) -> None:
        """Start over (a retry)."""
        self.file.seek(0)
        self.file.truncate()
        self.hash = hashlib.sha256()
        self.size = 0

    async def write(self, chunk: bytes) -> None:
        self.file.write(chunk)
        self.hash.update(chunk)
        self.size += len(chunk)


Fetcher = Callable[[Sink], Awaitable[None]]


def file_sha256(path: Path) -> str:
    """Hex sha256 of a file (blocking)."""
    digest = hashlib.sha256()
    with open(path, "rb") as src:
        while chunk := src.read(HASH_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


class DownloadStore:
    """The download cache in ``downloads_dir`` (created when missing)."""

    def __init__(self, downloads_dir: str | os.PathLike[str]) -> None:
        self.dir = Path(downloads_dir).absolute()
        self.index = LockedJson(self.dir / INDEX_NAME)
        self._locks: dict[str, asyncio.Lock] = {}

    def idle(self) -> list[StoredFile]:
        """Stored files, least recently used first."""
        by_sha: dict[str, StoredFile] = {}
        for key, raw in self.index.read().items():
            old = by_sha.get(raw["sha256"])
            keys = (old.keys if old else ()) + (key,)
            last = max(raw["last_used"], old.last_used if old else 0.0)
            by_sha[raw["sha256"]] = StoredFile(raw["sha256"], raw["size_bytes"], last, keys)
        return sorted(by_sha.values(), key=lambda f: f.last_used)

    def evict(self, sha256: str) -> int:
        """Delete a stored file and every key pointing at it; returns the bytes freed.

        A mount reading it keeps its open file (POSIX unlink semantics).
        """
        with self.index.edit() as data:
            for key in [k for k, raw in data.items() if raw["sha256"] == sha256]:
                del data[key]
            path = self.dir / sha256
            size = path.stat().st_size if path.exists() else 0
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
        return size

    def sweep(self) -> None:
        """Worker start: remove partial downloads of a crashed worker and forget missing files."""
        if not self.dir.is_dir():
            return
        for part in self.dir.glob(".part-*"):
            part.unlink(missing_ok=True)
        with self.index.edit() as data:
            for key in [k for k, raw in data.items() if not (self.dir / raw["sha256"]).is_file()]:
                del data[key]

    async def open(self, key: str, fetcher: Fetcher, *, sha256: str | None, label: str,
                   warn: Callable[[str], None]) -> BinaryIO:
        """An open binary file with the content of ``key``, fetched unless a verified copy exists.

        Args:
            key: content key (``urlcontent:<url>``, ``artifact:<taskId>:<name>``).
            fetcher: writes the content into a :class:`Sink` (and resets it on retries).
            sha256: expected hex digest, or None (the observed one is then logged).
            label: names the content in messages (``url https://...``).
            warn: writes a warning line to the task log.

        Raises:
            TaskFailed: sha256 mismatch, or what the fetcher raises for missing content.
            ResourceUnavailable: the fetcher gave up on transient errors.
        """
        lock = self._locks.setdefault(key, asyncio.Lock())
        async with lock:
            cached = await asyncio.to_thread(self._reuse, key, sha256, warn, label)
            if cached is not None:
                return cached
            return await self._download(key, fetcher, sha256=sha256, label=label, warn=warn)

    def _reuse(self, key: str, sha256: str | None, warn: Callable[[str], None], label: str) -> BinaryIO | None:
        raw = self.index.read().get(key)
        if raw is None:
            return None
        path = self.dir / raw["sha256"]
        try:
            handle = open(path, "rb")
        except FileNotFoundError:
            warn(f"{label}: cached download {raw['sha256'][:12]} is missing; downloading again")
            return None
        size = os.fstat(handle.fileno()).st_size
        ok = size == raw["size_bytes"]
        if ok and sha256 is not None:
            ok = file_sha256(path) == raw["sha256"]
        if not ok:
            handle.close()
            warn(f"{label}: cached download {raw['sha256'][:12]} is corrupt; downloading again")
            self.evict(raw["sha256"])
            return None
        if sha256 is not None and raw["sha256"] != sha256:
            handle.close()
            raise TaskFailed(f"{label}: sha256 mismatch: expected {sha256}, got {raw['sha256']}")
        with self.index.edit() as data:
            if key in data:
                data[key]["last_used"] = time.time()
        return handle

    async def _download(self, key: str, fetcher: Fetcher, *, sha256: str | None, label: str,
                        warn: Callable[[str], None]) -> BinaryIO:
        self.dir.mkdir(parents=True, exist_ok=True)
        sink = Sink(self.dir / f".part-{secrets.token_hex(8)}")
        try:
            await fetcher(sink)
            sink.file.flush()
            observed = sink.hash.hexdigest()
            if sha256 is not None and observed != sha256:
                raise TaskFailed(f"{label}: sha256 mismatch: expected {sha256}, got {observed}")
            if sha256 is None:
                warn(f"{label}: no sha256 given; downloaded content has sha256 {observed}")
            final = self.dir / observed
            os.replace(sink.path, final)
        finally:
            sink.file.close()
            with contextlib.suppress(FileNotFoundError):
                sink.path.unlink()
        with self.index.edit() as data:
            now = time.time()
            data[key] = {"sha256": observed, "size_bytes": sink.size, "created": now, "last_used": now}
        return open(final, "rb")


# ------------------------------------------------------------------ fetchers
@dataclass(frozen=True)
class RetryPolicy:
    """``attempts`` tries in all, waiting ``first_delay_s`` then doubling (capped at 30 s)."""

    attempts: int = 5
    first_delay_s: float = 0.5
    sock_read_timeout_s: float = 60.0

    def delays(self):
        delay = self.first_delay_s
        for _ in range(self.attempts - 1):
            yield delay
            delay = min(30.0, delay * 2)


def url_fetcher(url: str, retry: RetryPolicy) -> Fetcher:
    """A fetcher that GETs ``url`` with retries (see the module docstring for the outcomes)."""
    import aiohttp

    async def fetch(sink: Sink) -> None:
        timeout = aiohttp.ClientTimeout(total=None, sock_connect=30, sock_read=retry.sock_read_timeout_s)
        last = "no attempt"
        async with aiohttp.ClientSession(timeout=timeout, auto_decompress=False) as session:
            for delay in (*retry.delays(), None):
                sink.reset()
                try:
                    async with session.get(url) as resp:
                        if 400 <= resp.status < 500:
                            raise TaskFailed(f"url {url}: HTTP {resp.status} {resp.reason}")
                        if resp.status < 400:
                            async for chunk in resp.content.iter_chunked(HASH_CHUNK):
                                await sink.write(chunk)
                            return
                        last = f"HTTP {resp.status} {resp.reason}"
                except (aiohttp.InvalidURL, aiohttp.NonHttpUrlClientError) as err:
                    raise TaskFailed(f"url {url}: cannot be fetched: {err}") from None
                except (aiohttp.ClientError, TimeoutError, ConnectionError) as err:
                    last = f"{type(err).__name__}: {err}"
                if delay is not None:
                    await asyncio.sleep(delay)
        raise ResourceUnavailable(f"url {url}: still failing after {retry.attempts} attempts ({last})")

    return fetch


def artifact_fetcher(queue: Any, task_id: str, name: str, retry: RetryPolicy) -> Fetcher:
    """A fetcher for artifact ``name`` of the latest run of ``task_id`` through ``queue``
    (a ``taskcluster.aio.Queue`` with the run's credentials, or anonymous)."""
    from taskcluster.aio import download
    from taskcluster.exceptions import TaskclusterArtifactError

    from tcworker.queue.client import is_transient, status_of

    async def fetch(sink: Sink) -> None:
        async def writer_factory():
            sink.reset()
            return sink

        label = f"artifact {name} of task {task_id}"
        try:
            await download.downloadArtifact(taskId=task_id, name=name, queueService=queue,
                                            maxRetries=retry.attempts - 1, writerFactory=writer_factory)
        except TaskclusterArtifactError as err:
            raise TaskFailed(f"{label} is an error artifact: {err}") from None
        except asyncio.CancelledError:
            raise
        except Exception as err:  # the helper raises client, aiohttp and hash errors alike
            status = status_of(err)
            where = f"HTTP {status}" if status else type(err).__name__
            if is_transient(err):
                raise ResourceUnavailable(f"{label}: still failing after retries ({where})") from None
            raise TaskFailed(f"{label}: cannot be downloaded ({where}: {str(err).splitlines()[0] if str(err) else ''})") from None

    return fetch


class ContentFetcher:
    """Turns a mount's ``content`` into an open binary file, for one run.

    Args:
        store: the worker's :class:`DownloadStore`.
        retry: retries of URL and artifact downloads.
        queue: ``taskcluster.aio.Queue`` for artifact content (task credentials), or None.
        index: ``taskcluster.aio.Index`` for indexed content, or None.
        warn: task-log warning writer.
    """

    def __init__(self, store: DownloadStore, *, retry: RetryPolicy, queue: Any = None, index: Any = None,
                 warn: Callable[[str], None] = log.warning) -> None:
        self.store, self.retry, self.queue, self.index, self.warn = store, retry, queue, index, warn

    async def open(self, content: Any) -> BinaryIO:
        """Raises TaskFailed, ResourceUnavailable, MalformedPayload (no queue configured)."""
        from tcworker.payloads import generic_worker as gw

        if isinstance(content, gw.RawContent):
            return io.BytesIO(content.raw.encode("utf-8"))
        if isinstance(content, gw.Base64Content):
            return io.BytesIO(base64.b64decode(content.base64))
        if isinstance(content, gw.UrlContent):
            return await self.store.open(f"urlcontent:{content.url}", url_fetcher(content.url, self.retry),
                                         sha256=content.sha256, label=f"url {content.url}", warn=self.warn)
        if self.queue is None:
            raise MalformedPayload("artifact and indexed mount content need a Queue: configure rootURL")
        if isinstance(content, gw.IndexedContent):
            task_id = await self._find_task(content.namespace)
            return await self._artifact(task_id, content.artifact, None)
        return await self._artifact(content.task_id, content.artifact, content.sha256)

    async def _artifact(self, task_id: str, name: str, sha256: str | None) -> BinaryIO:
        if not name.startswith("public/"):
            await self._authorize(task_id, name)
        return await self.store.open(f"artifact:{task_id}:{name}",
                                     artifact_fetcher(self.queue, task_id, name, self.retry),
                                     sha256=sha256, label=f"artifact {name} of task {task_id}", warn=self.warn)

    async def _authorize(self, task_id: str, name: str) -> None:
        """A cached copy of a non-public artifact is only for runs whose credentials may read it:
        ask the queue (``latestArtifact`` checks ``queue:get-artifact:<name>``) before any reuse."""
        from tcworker.queue.client import is_transient, status_of

        label = f"artifact {name} of task {task_id}"
        try:
            await asyncio.wait_for(self.queue.latestArtifact(task_id, name), timeout=120)
        except asyncio.CancelledError:
            raise
        except Exception as err:  # client and aiohttp errors, classified below
            status = status_of(err)
            if is_transient(err):
                raise ResourceUnavailable(f"{label}: still failing after retries ({status or err})") from None
            raise TaskFailed(f"{label}: cannot be downloaded (HTTP {status}: {str(err).splitlines()[0]})") from None

    async def _find_task(self, namespace: str) -> str:
        from tcworker.queue.client import is_transient, status_of

        try:
            answer = await asyncio.wait_for(self.index.findTask(namespace), timeout=120)
        except asyncio.CancelledError:
            raise
        except Exception as err:  # client and aiohttp errors, classified below
            status = status_of(err)
            if is_transient(err):
                raise ResourceUnavailable(f"index namespace {namespace}: lookup failed ({status or err})") from None
            raise TaskFailed(f"index namespace {namespace}: no task found (HTTP {status})") from None
        return answer["taskId"]
