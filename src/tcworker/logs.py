"""The task log: one backing file per run, written by the worker and the task, read live.

Layout follows generic-worker (``../shared/reference/peer-workers.md`` section 3.10):

- worker messages: ``[taskcluster 2026-08-21T10:00:00.000Z] message`` (UTC, milliseconds),
  warnings ``[taskcluster:warn <same timestamp>] ``, errors ``[taskcluster:error] `` (log parsers
  such as Treeherder key on it). A multi-line message is prefixed on every line.
- task output: the raw bytes, never decoded (non-UTF-8 bytes and split characters survive).

Design: the file is the single source of truth. Writers append at a tracked offset; engines move
task output from a pipe into the file with :meth:`TaskLog.copy_from` (``splice(2)``: the bytes never
enter Python), so memory stays bounded whatever the task prints. Readers call :meth:`follow`, which
replays the file from an offset and then follows it until the log is closed; each reader has its own
file descriptor and position, so any number of readers can attach and a slow one never slows the
task. All methods are meant to be called from the event loop's thread.

What does not live here: the live-log HTTP server and the log artifacts (uploads).
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import AsyncIterator
from datetime import datetime, timezone
from pathlib import Path
from typing import BinaryIO

logger = logging.getLogger(__name__)

#: Bytes per read when a reader replays or follows the file.
FOLLOW_CHUNK_BYTES = 256 * 1024
#: Seconds a caught-up reader waits after new data arrives, so it reads in batches.
FOLLOW_COALESCE_S = 0.02
#: Bytes moved per :meth:`TaskLog.copy_from` call by default.
COPY_CHUNK_BYTES = 1024 * 1024


def timestamp(now: datetime | None = None) -> str:
    """RFC 3339 UTC with milliseconds, as generic-worker writes it: ``2026-08-21T10:00:00.000Z``."""
    now = now or datetime.now(timezone.utc)
    now = now.astimezone(timezone.utc)
    return now.strftime("%Y-%m-%dT%H:%M:%S.") + f"{now.microsecond // 1000:03d}Z"


def format_message(prefix: str, msg: str) -> bytes:
    """Prefix every line of ``msg`` with ``prefix`` and end it with a newline (UTF-8 bytes)."""
    lines = msg.split("\n") if msg else [""]
    text = "".join(f"{prefix}{line}\n" for line in lines)
    return text.encode("utf-8", errors="backslashreplace")


class TaskLog:
    """Backing file of one run's log, with live readers.

    Args:
        path: the backing file; created if missing, appended to if present.
        echo: optional binary stream that receives a copy of every byte (``tcworker exec`` passes
            the terminal). A failing echo is dropped with a logged warning; the log goes on.

    Raises:
        OSError: the file cannot be created.
    """

    def __init__(self, path: Path | str, *, echo: BinaryIO | None = None) -> None:
        self.path = Path(path)
        self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        self._size = os.fstat(self._fd).st_size
        self._echo = echo
        self._closed = False
        self._ends_with_newline: bool | None = self._size == 0 or None
        self._waiters: set[tuple[asyncio.AbstractEventLoop, asyncio.Event]] = set()

    # ------------------------------------------------------------------ state
    @property
    def size_bytes(self) -> int:
        """Bytes written so far (the file's length)."""
        return self._size

    @property
    def closed(self) -> bool:
        """True once :meth:`close` was called; readers then end at the end of the file."""
        return self._closed

    @property
    def echoing(self) -> bool:
        """True while an echo stream receives a copy of the log."""
        return self._echo is not None

    # ------------------------------------------------------------------ writers
    def info(self, msg: str) -> None:
        """Write a worker message: ``[taskcluster <timestamp>] msg`` per line."""
        self._message(f"[taskcluster {timestamp()}] ", msg)

    def warn(self, msg: str) -> None:
        """Write a warning: ``[taskcluster:warn <timestamp>] msg`` per line."""
        self._message(f"[taskcluster:warn {timestamp()}] ", msg)

    def error(self, msg: str) -> None:
        """Write an error: ``[taskcluster:error] msg`` per line (no timestamp, as generic-worker)."""
        self._message("[taskcluster:error] ", msg)

    def write(self, data: bytes) -> None:
        """Append raw task bytes as they are.

        Raises:
            ValueError: the log is closed.
            OSError: the file cannot be written (for example the disk is full).
        """
        if not data:
            return
        self._check_open()
        view = memoryview(data)
        while view:
            written = os.pwrite(self._fd, view, self._size)
            self._size += written
            view = view[written:]
        self._ends_with_newline = data.endswith(b"\n")
        self._echo_bytes(data)
        self._notify()

    def copy_from(self, fd: int, limit: int = COPY_CHUNK_BYTES) -> int:
        """Move up to ``limit`` bytes from the readable end of a pipe into the log.

        Uses ``splice(2)`` (kernel to kernel, no Python buffer); an echo stream with a file
        descriptor then gets the same bytes from the file with ``sendfile(2)``, also in the
        kernel. Meant for a non-blocking pipe watched by the event loop.

        Returns:
            bytes moved; 0 means end of file (every writer closed the pipe).

        Raises:
            BlockingIOError: the pipe is empty for now.
            ValueError: the log is closed.
            OSError: reading the pipe or writing the file failed.
        """
        self._check_open()
        start = self._size
        moved = os.splice(fd, self._fd, limit, offset_dst=start, flags=os.SPLICE_F_NONBLOCK)
        if moved:
            self._size += moved
            self._ends_with_newline = None
            self._echo_range(start, moved)
            self._notify()
        return moved

    def close(self) -> None:
        """Close the file; readers finish once they reach its end. Idempotent."""
        if self._closed:
            return
        self._closed = True
        os.close(self._fd)
        self._notify()
        if self._echo is not None:
            self._flush_echo()

    # ------------------------------------------------------------------ readers
    async def follow(self, offset: int = 0) -> AsyncIterator[bytes]:
        """Yield the log's bytes from ``offset``, then new bytes as they come, until closed.

        Chunks are at most :data:`FOLLOW_CHUNK_BYTES`; memory per reader is one chunk. Once caught
        up, a reader wakes at most every :data:`FOLLOW_COALESCE_S` seconds while the log grows. A reader
        that stops iterating holds nothing up. Closing the iterator (``aclose``) releases its file.

        Raises:
            OSError: the backing file cannot be opened.
        """
        event = asyncio.Event()
        waiter = (asyncio.get_running_loop(), event)
        fd = os.open(self.path, os.O_RDONLY | os.O_CLOEXEC)
        self._waiters.add(waiter)
        try:
            while True:
                event.clear()
                closed = self._closed  # read before the data, so nothing written later is lost
                chunk = os.pread(fd, FOLLOW_CHUNK_BYTES, offset)
                if chunk:
                    offset += len(chunk)
                    yield chunk
                elif closed:
                    return
                else:
                    await event.wait()
                    if not self._closed:  # let small writes pile up: fewer wake-ups per reader
                        await asyncio.sleep(FOLLOW_COALESCE_S)
        finally:
            self._waiters.discard(waiter)
            os.close(fd)

    # ------------------------------------------------------------------ internals
    def _check_open(self) -> None:
        if self._closed:
            raise ValueError(f"task log {self.path} is closed")

    def _message(self, prefix: str, msg: str) -> None:
        self._check_open()
        if self._ends_with_newline is None:
            self._ends_with_newline = os.pread(self._fd, 1, self._size - 1) == b"\n"
        data = format_message(prefix, msg)
        # A worker line never glues onto a task line that did not end with a newline.
        self.write(data if self._ends_with_newline else b"\n" + data)

    def _notify(self) -> None:
        if not self._waiters:
            return
        try:
            current = asyncio.get_running_loop()
        except RuntimeError:
            current = None
        for loop, event in list(self._waiters):
            if loop is current:
                event.set()
            elif not loop.is_closed():
                loop.call_soon_threadsafe(event.set)

    def _echo_bytes(self, data: bytes) -> None:
        if self._echo is None:
            return
        try:
            self._echo.write(data)
            self._echo.flush()
        except (OSError, ValueError) as err:
            logger.warning("task log %s: echo stream failed, no longer echoing: %s", self.path, err)
            self._echo = None

    def _echo_range(self, offset: int, count: int) -> None:
        """Copy ``count`` bytes of the file at ``offset`` to the echo stream."""
        if self._echo is None:
            return
        try:
            out = self._echo.fileno()
        except (OSError, ValueError):  # an in-memory stream: through Python
            self._echo_bytes(os.pread(self._fd, count, offset))
            return
        try:
            while count > 0:
                sent = os.sendfile(out, self._fd, offset, count)
                if sent == 0:
                    break
                offset, count = offset + sent, count - sent
        except BlockingIOError:  # a non-blocking terminal: finish through Python
            self._echo_bytes(os.pread(self._fd, count, offset))
        except OSError as err:
            logger.warning("task log %s: echo stream failed, no longer echoing: %s", self.path, err)
            self._echo = None

    def _flush_echo(self) -> None:
        try:
            self._echo.flush()  # type: ignore[union-attr]
        except (OSError, ValueError) as err:
            logger.warning("task log %s: echo stream failed on close: %s", self.path, err)
