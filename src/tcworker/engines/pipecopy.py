"""Moving a command's output from its pipe into the task log, on the event loop.

:class:`PipeCopier` watches the read end of the pipe that a command's stdout and stderr share. When
it is readable, it moves up to 16 MiB per wake-up (1 MiB per ``splice``) into the
:class:`~tcworker.logs.TaskLog`, then yields to the loop. No Python buffer holds task output unless
the log echoes to a terminal, so memory stays bounded whatever the task prints.

What does not live here: process handling (``native.py``), log layout (``logs.py``).
"""

from __future__ import annotations

import asyncio
import fcntl
import logging
import os
import struct
import termios

from tcworker.logs import COPY_CHUNK_BYTES, TaskLog

logger = logging.getLogger(__name__)

#: Most bytes moved per event-loop wake-up, so one busy task cannot starve the loop.
BURST_BYTES = 16 * COPY_CHUNK_BYTES


class PipeCopier:
    """Copies a pipe into a task log until end of file. Create it inside the event loop.

    Args:
        fd: read end of the pipe; the copier owns it (sets it non-blocking, closes it).
        log: the destination.

    Attributes:
        error: the OSError that stopped writing into the log, if any; output is then drained
            and dropped so the task never blocks on a full pipe.
    """

    def __init__(self, fd: int, log: TaskLog) -> None:
        self._fd: int | None = fd
        self._log = log
        self._loop = asyncio.get_running_loop()
        self._eof = asyncio.Event()
        self.error: OSError | None = None
        os.set_blocking(fd, False)
        self._loop.add_reader(fd, self._on_readable)

    def _on_readable(self) -> None:
        moved = 0
        while moved < BURST_BYTES and self._fd is not None:
            try:
                n = self._move()
            except BlockingIOError:
                return
            if n == 0:
                self._finish()
                return
            moved += n

    def _move(self) -> int:
        assert self._fd is not None
        if self.error is None:
            try:
                return self._log.copy_from(self._fd)
            except BlockingIOError:
                raise
            except (OSError, ValueError) as err:
                logger.error("task log %s: cannot write task output, dropping it: %s", self._log.path, err)
                self.error = err if isinstance(err, OSError) else OSError(str(err))
        return len(os.read(self._fd, COPY_CHUNK_BYTES))

    def _finish(self) -> None:
        if self._fd is not None:
            self._loop.remove_reader(self._fd)
        self._eof.set()

    async def wait_eof(self, timeout_s: float) -> bool:
        """Wait up to ``timeout_s`` seconds for end of file (every writer closed); True if reached."""
        if not self._eof.is_set():
            try:
                await asyncio.wait_for(self._eof.wait(), timeout_s)
            except TimeoutError:
                return False
        return True

    async def wait_drained(self, timeout_s: float) -> bool:
        """Wait up to ``timeout_s`` seconds until the pipe holds no unread byte (or end of file);
        writers may still be alive. True if drained."""
        deadline = self._loop.time() + timeout_s
        while not self._eof.is_set() and self._fd is not None:
            try:
                pending = struct.unpack("i", fcntl.ioctl(self._fd, termios.FIONREAD, b"\0\0\0\0"))[0]
            except OSError:
                return False
            if pending == 0:
                return True
            if self._loop.time() >= deadline:
                return False
            await asyncio.sleep(0.005)
        return True

    def close(self) -> None:
        """Stop watching and close the pipe (a writer still alive then gets SIGPIPE). Idempotent."""
        if self._fd is None:
            return
        if not self._eof.is_set():
            self._loop.remove_reader(self._fd)
        os.close(self._fd)
        self._fd = None


#: Size asked for task output pipes (fewer wake-ups for chatty tasks).
PIPE_BYTES = 1024 * 1024


def widen_pipe(fd: int) -> None:
    """Grow a pipe to :data:`PIPE_BYTES`; keep the default size if the kernel refuses."""
    try:
        fcntl.fcntl(fd, fcntl.F_SETPIPE_SZ, PIPE_BYTES)
    except OSError as err:
        logger.debug("cannot grow output pipe to %d bytes: %s", PIPE_BYTES, err)
