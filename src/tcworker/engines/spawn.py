"""Starting one command of the native engine off the event loop, and waiting for it with a pidfd.

:func:`start_command` runs ``subprocess.Popen`` in a small thread pool of its own, so the event
loop (other runs' output, API calls, heartbeats) never waits for a child to ``exec``. How the
child joins the run's cgroup:

- through the ``/bin/sh`` exec wrapper of :mod:`.execwrap` when it allows (cgroup, no task user,
  nothing the shell could change): no ``preexec_fn``, so CPython uses ``vfork``; if the wrapper
  could not ``exec`` the command, :meth:`ChildProcess.exec_failed` says so after the exit and the
  engine starts it again the exact way;
- otherwise with a ``preexec_fn`` (cgroup join, then the task user's ids), which makes CPython
  ``fork`` the whole worker (a few ms of worker CPU per command for a ~60 MB worker).

Either way argv and env bytes are as given, ``argv[0]`` is looked up in the task env's PATH as
Popen does, and a command that cannot start raises in the parent (``OSError``/``SubprocessError``),
never an exit code.

:class:`ChildProcess` waits for the exit through a pidfd registered with the event loop, so no
thread per command is parked in ``waitpid`` (asyncio's default child watcher in Python 3.11
starts one per process). Without pidfd support (Linux < 5.3) a pool thread waits instead.

What does not live here: the process tree (:mod:`.proctree`), output copying (:mod:`.pipecopy`),
the command policy (:mod:`.native`).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import os
import subprocess
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

from tcworker.engines.execwrap import ExecWrapper
from tcworker.engines.proctree import ProcessTree
from tcworker.engines.taskuser import TaskUser

logger = logging.getLogger(__name__)

#: Spawns get their own threads: long blocking work in the default pool (hashing artifacts,
#: removing task directories) never delays a command's start.
_SPAWN_POOL = concurrent.futures.ThreadPoolExecutor(max_workers=2, thread_name_prefix="tcw-spawn")


class ChildProcess:
    """A started command: ``pid``, ``returncode`` (None while running; < 0: killed by a signal)."""

    def __init__(self, popen: subprocess.Popen, status: Path | None = None) -> None:
        self._popen = popen
        self.pid = popen.pid
        self._status = status
        self._exited: asyncio.Future[int] | None = None

    def exec_failed(self) -> bool:
        """After the exit: True if the exec wrapper could not ``exec`` the command (nothing ran).

        Always False for a command started without the wrapper. Removes the wrapper's marker.
        """
        if self._status is None or self._popen.returncode is None:
            return False
        try:
            self._status.unlink()
        except FileNotFoundError:
            return False
        return True

    @property
    def returncode(self) -> int | None:
        return self._popen.returncode

    async def wait(self) -> int:
        """Wait for the exit, reap the process and return its returncode. Safe to call again."""
        if self._popen.returncode is not None:
            return self._popen.returncode
        if self._exited is None:
            self._exited = self._watch()
        return await asyncio.shield(self._exited)

    def kill(self) -> None:
        """SIGKILL the process unless it was already reaped."""
        if self._popen.returncode is None:
            self._popen.kill()  # not reaped yet, so the PID cannot have been reused

    def _watch(self) -> asyncio.Future[int]:
        loop = asyncio.get_running_loop()
        try:
            pidfd = os.pidfd_open(self.pid)
        except OSError as err:  # no pidfd (old kernel, seccomp): a pool thread waits instead
            logger.debug("pidfd_open(%d): %s; waiting in a thread", self.pid, err)
            return asyncio.ensure_future(asyncio.to_thread(self._popen.wait))
        exited: asyncio.Future[int] = loop.create_future()

        def on_readable() -> None:
            code = self._popen.poll()  # readable: exited, so this reaps at once
            if code is None:
                return
            loop.remove_reader(pidfd)
            os.close(pidfd)
            if not exited.done():
                exited.set_result(code)

        loop.add_reader(pidfd, on_readable)
        return exited


async def start_command(
    argv: Sequence[str],
    env: Mapping[str, str],
    *,
    cwd: Path,
    output_fd: int,
    tree: ProcessTree,
    user: TaskUser | None = None,
    wrapper: ExecWrapper | None = None,
) -> ChildProcess:
    """Start one command of a run in its own session inside ``tree``, as ``user`` if given.

    Args:
        argv, env: the command and its whole environment, encoded to UTF-8 bytes (surrogates
            kept), ``argv[0]`` looked up in ``env``'s PATH like ``subprocess`` does.
        cwd: working directory.
        output_fd: stdin is ``/dev/null``; stdout and stderr both go to this fd, which the caller
            keeps and closes.
        tree: the run's process tree: a cgroup is joined before ``exec``.
        user: drop to this task user before ``exec`` (multiuser mode).
        wrapper: join the cgroup through this exec wrapper when :meth:`ExecWrapper.plan` allows
            (only without ``user``); then check :meth:`ChildProcess.exec_failed` after the exit
            and, if True, start again without a wrapper to learn why.

    Raises:
        OSError, ValueError, subprocess.SubprocessError: the command could not be started (what
            ``subprocess.Popen`` raises: missing executable, bad cwd, a failing ``preexec``...).

    If the caller is cancelled meanwhile, the spawn is waited for, the process (if any) is
    SIGKILLed and reaped, then CancelledError propagates.
    """
    args = [_utf8(arg) for arg in argv]
    env_bytes = {_utf8(name): _utf8(value) for name, value in env.items()}
    procs = tree.procs_path if user is None and wrapper is not None else None
    preexec = _preexec(tree, user)

    def start() -> ChildProcess:
        planned = wrapper.plan(args, env_bytes, cwd, procs) if wrapper is not None and procs is not None else None
        if planned is not None:
            return ChildProcess(_popen(planned[0], env_bytes, cwd, output_fd, None), planned[1])
        return ChildProcess(_popen(args, env_bytes, cwd, output_fd, preexec))

    started = asyncio.get_running_loop().run_in_executor(_SPAWN_POOL, start)
    try:
        return await asyncio.shield(started)
    except asyncio.CancelledError:
        await _kill_late_start(started)
        raise


def _popen(
    argv: Sequence[bytes], env: Mapping[bytes, bytes], cwd: Path, output_fd: int, preexec: Callable[[], None] | None
) -> subprocess.Popen:
    return subprocess.Popen(
        argv, stdin=subprocess.DEVNULL, stdout=output_fd, stderr=output_fd, cwd=cwd, env=env,
        start_new_session=True, preexec_fn=preexec,
    )


def _preexec(tree: ProcessTree, user: TaskUser | None) -> Callable[[], None] | None:
    """Child-side setup: join the cgroup (needs root), then become the task user."""
    join = tree.preexec()
    if user is None:
        return join

    def preexec() -> None:
        if join is not None:
            join()
        user.drop_privileges()

    return preexec


def _utf8(text: str) -> bytes:
    """Bytes for argv and env: UTF-8 whatever the worker's locale (byte-exact, no shell)."""
    return text.encode("utf-8", errors="surrogateescape")


async def _kill_late_start(started: asyncio.Future[ChildProcess]) -> None:
    """After a cancellation: wait for the spawn to finish, then kill and reap what it started."""
    while not started.done():
        try:
            await asyncio.shield(started)
        except asyncio.CancelledError:
            continue  # cancelled again: still wait, the process must not be left behind
        except (OSError, ValueError, subprocess.SubprocessError):
            return  # it never started
    if started.cancelled() or started.exception() is not None:
        return
    child = started.result()
    child.kill()
    await child.wait()
