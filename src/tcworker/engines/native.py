"""The native engine: a task's commands run as host processes in a fresh task directory.

Per run (see ``../shared/reference/peer-workers.md`` 1.2, 3.4, 3.11 for generic-worker's rules):

- a directory ``<tasksDir>/tcw-task-<taskId>-<runId>-<random>``, removed by ``dispose`` unless
  kept (``boot`` sweeps ``tcw-task-*`` leftovers of a crash);
- commands run one after another with cwd = task dir, the given env exactly (no shell), stdin from
  ``/dev/null``, each in its own session, stopping at the first that fails or cannot start;
- stdout and stderr of every process of the run share one pipe (so they interleave as written, and
  a background process keeps reaching the log while later commands run); the event loop moves the bytes
  into the task log with ``splice(2)`` in chunks of up to 1 MiB (:meth:`TaskLog.copy_from`);
- commands start off the event loop (:mod:`.spawn`); with a cgroup and no task user they join it
  through a ``/bin/sh`` exec wrapper when that cannot change what runs (:mod:`.execwrap`), so
  CPython can ``vfork`` instead of ``fork``ing the whole worker;
- every process lives in a :mod:`per-run process tree <tcworker.engines.proctree>` (cgroup v2).
  When a command succeeds and another follows, its background processes keep running (a server
  started by one command may serve the next, as in generic-worker); the output it wrote before
  exiting is in the log before its exit block. When the run ends (last command done, a command
  failed), the output gets ``output_drain_s`` to reach end of file (a background child holding
  stdout cannot hold the run), then the whole tree is SIGKILLed and waited for. Abort and
  ``maxRunTime``: SIGTERM to the tree, ``kill_grace_period_s``, SIGKILL.

Multiuser mode (config ``runTasksAsCurrentUser: false``, needs root; generic-worker's multiuser
engine, ``peer-workers.md`` 3.11): each run gets a fresh OS user (:mod:`.taskuser`) owning its
task directory (0700, under a tasks directory made 0711), every command runs as that user
(cgroup join first, then groups/gid/uid dropped in the child), ``osGroups`` make it a member of
those groups for the run, and when the commands end every process of that uid is killed, not only
the tree. ``dispose`` deletes the user (and its home unless kept); ``boot`` sweeps leftover users.
The sandbox's ``owner`` and ``user_env`` say who the task is.

What does not live here: building the env (the task runner), payload parsing, artifacts, scope
checks (the task runner), locking down the worker's own files (:mod:`tcworker.lockdown`).
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import os
import re
import secrets
import shlex
import signal
import subprocess
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path

from tcworker.config import WorkerConfig
from tcworker.engines.base import Engine, ExitResult, Sandbox, SandboxSpec
from tcworker.engines.execwrap import ExecWrapper
from tcworker.engines.execwrap import probe as probe_exec_wrapper
from tcworker.engines.outcome import CommandOutcome, cpu_delta, exit_block, start_error_message
from tcworker.engines.pipecopy import PipeCopier, widen_pipe
from tcworker.engines.proctree import (
    CgroupTree,
    ProcessTree,
    SessionTree,
    cgroup_prefix,
    find_cgroup_base,
    sweep_cgroups,
)
from tcworker.engines.runlock import claim_leftover, is_live, lock_run_dir
from tcworker.engines.spawn import ChildProcess, start_command
from tcworker.engines.taskuser import TaskUser, create_task_user, group_exists, prepare_multiuser
from tcworker.errors import ConfigError, MalformedPayload
from tcworker.fsutil import remove_tree
from tcworker.logs import TaskLog

logger = logging.getLogger(__name__)

TASK_DIR_PREFIX = "tcw-task-"
_TRACK_INTERVAL_S = 0.2
#: Capacity asked for the output pipe (the default ``/proc/sys/fs/pipe-max-size``).


class NativeEngine(Engine):
    """Runs commands as processes on the host.

    Args:
        config: uses ``tasks_dir``, ``kill_grace_period_s``, ``output_drain_s``.
        use_cgroup: True requires a usable cgroup v2 (boot raises otherwise), False forces the
            session-based fallback, None (default) picks cgroup v2 when usable.
        sweep: boot removes leftovers of dead runs (False for ``tcworker exec``: another worker
            may own the tasks directory). Live runs' are never touched (:mod:`.runlock`).

    Attributes:
        multiuser: each run as its own OS user (``not config.run_tasks_as_current_user``).
    """

    name = "native"

    def __init__(self, config: WorkerConfig, *, use_cgroup: bool | None = None, sweep: bool = True) -> None:
        self.config = config
        self.tasks_dir = Path(config.tasks_dir).absolute()
        self.multiuser = not config.run_tasks_as_current_user
        self._user_lock = asyncio.Lock()  # one useradd at a time: they contend for /etc/passwd
        self._use_cgroup = use_cgroup
        self._cgroup_base: Path | None = None
        self._wrapper: ExecWrapper | None = None
        self._booted = False
        self._sweep = sweep

    @property
    def uses_cgroup(self) -> bool:
        """True when runs get a cgroup v2 (known after :meth:`boot`)."""
        return self._cgroup_base is not None

    async def boot(self) -> None:
        """Create ``tasks_dir``, find cgroup v2 support, sweep ``tcw-task-*`` dirs and cgroups.

        Runs once: later calls return at once (a second sweep would hit this engine's own runs).

        Multiuser: also checks root, makes ``tasks_dir`` 0711 and worker-owned, checks that task
        users can reach it, and sweeps leftover task users (:func:`.taskuser.sweep_task_users`).

        Raises:
            ConfigError: ``use_cgroup=True`` but no usable cgroup v2; ``tasks_dir`` not creatable;
                multiuser without root, without ``useradd``, or with an unreachable ``tasks_dir``.
        """
        if self._booted:
            return
        try:
            self.tasks_dir.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise ConfigError(f"tasksDir {self.tasks_dir}: {err.strerror}") from None
        if self._use_cgroup is not False:
            self._cgroup_base = await asyncio.to_thread(find_cgroup_base)
            if self._cgroup_base is None and self._use_cgroup:
                raise ConfigError("native engine: no writable cgroup v2 with cgroup.kill")
        claimed: dict[str, int] = {}  # leftover dirs no live run holds, locked by us until removed
        if self._sweep:
            for leftover in sorted(self.tasks_dir.glob(TASK_DIR_PREFIX + "*")):
                fd = claim_leftover(leftover)
                if fd is None:
                    logger.info("native engine: %s belongs to a live run: left alone", leftover)
                else:
                    claimed[leftover.name] = fd
        try:
            await self._boot_sweep(claimed)
        finally:
            for fd in claimed.values():
                os.close(fd)
        self._booted = True

    async def _boot_sweep(self, claimed: dict[str, int]) -> None:
        """cgroups, task users and the ``claimed`` dirs of dead runs; never a live run's."""
        def live(name: str) -> bool:
            return name not in claimed and (not self._sweep or is_live(self.tasks_dir / name))

        if self._cgroup_base is None:
            logger.warning("native engine: no cgroup v2; processes that leave the session may survive")
        else:
            if self._sweep:
                swept = await sweep_cgroups(self._cgroup_base, cgroup_prefix(self.tasks_dir), keep=live)
                if swept:
                    logger.info("native engine: removed leftover cgroups %s", swept)
            if not self.multiuser:
                self._wrapper = await self._probe_wrapper(self._cgroup_base)
        if self.multiuser:
            swept = await prepare_multiuser(self.tasks_dir, keep=lambda home: not self._sweep or live(home.name))
            if swept:
                logger.info("native engine: removed leftover task users %s", swept)
        for name in claimed:
            logger.info("native engine: removing leftover task directory %s", self.tasks_dir / name)
            await asyncio.to_thread(remove_tree, self.tasks_dir / name)  # logs, never raises: boot goes on

    async def _probe_wrapper(self, base: Path) -> ExecWrapper | None:
        """The exec wrapper (:mod:`.execwrap`) if the shell passes the probe, in a scratch cgroup."""
        try:
            tree = CgroupTree(base / f"{cgroup_prefix(self.tasks_dir)}probe-{secrets.token_hex(4)}")
        except OSError as err:
            logger.info("native engine: no exec wrapper (%s); commands start without vfork", err)
            return None
        try:
            return await asyncio.to_thread(probe_exec_wrapper, tree.path / "cgroup.procs")
        finally:
            await tree.close()

    async def create_sandbox(self, task_id: str, run_id: int, log: TaskLog) -> NativeSandbox:
        """A fresh task directory and process tree for one run (boots the engine if needed).

        Multiuser: also a fresh OS user owning the directory.

        Raises:
            OSError: the directory, cgroup or user could not be made (``TaskUserError``).
        """
        if not self._booted:
            await self.boot()
        safe_id = re.sub(r"[^A-Za-z0-9_-]", "_", task_id)[:22]
        task_dir = Path(tempfile.mkdtemp(prefix=f"{TASK_DIR_PREFIX}{safe_id}-{run_id}-", dir=self.tasks_dir))
        lock_fd = lock_run_dir(task_dir)  # a fresh dir: nobody else holds it
        user: TaskUser | None = None
        try:
            if self.multiuser:
                async with self._user_lock:
                    user = await create_task_user(task_id, run_id, task_dir)
            tree: ProcessTree
            if self._cgroup_base is not None:
                tree = CgroupTree(self._cgroup_base / (cgroup_prefix(self.tasks_dir) + task_dir.name))
            else:
                tree = SessionTree()
        except BaseException:
            if user is not None:
                await asyncio.shield(user.remove(keep_home=False))
            remove_tree(task_dir)
            os.close(lock_fd)
            raise
        wrapper = self._wrapper if user is None else None
        return NativeSandbox(task_dir, log, tree, self.config, user=user, wrapper=wrapper, lock_fd=lock_fd)


class NativeSandbox(Sandbox):
    """One run of the native engine. Built by :meth:`NativeEngine.create_sandbox`."""

    def __init__(
        self, task_dir: Path, log: TaskLog, tree: ProcessTree, config: WorkerConfig, *, user: TaskUser | None = None,
        wrapper: ExecWrapper | None = None, lock_fd: int | None = None,
    ) -> None:
        self.task_dir = task_dir
        self._lock_fd = lock_fd  # held until the dir is gone (:mod:`.runlock`)
        self.log = log
        self._tree = tree
        self.user = user
        if user is not None:
            self.owner = (user.uid, user.gid)
            self.user_env = user.env
        self._grace_s = config.kill_grace_period_s
        self._drain_s = config.output_drain_s
        self._abort_reason: str | None = None
        self._abort_requested = asyncio.Event()
        self._stopped = asyncio.Event()  # set when no command runs any more
        self._stopped.set()
        self._ran = False
        self._disposed = False
        self._wrapper = wrapper
        self._copy_error: OSError | None = None
        self._out_fd: int | None = None  # the worker's copy of the run's output pipe (write end)
        self._copier: PipeCopier | None = None

    # ------------------------------------------------------------------ interface
    async def run(self, spec: SandboxSpec) -> ExitResult:
        if self._ran or self._disposed:
            raise RuntimeError("NativeSandbox.run() may be called once, before dispose()")
        self._ran = True
        started = time.monotonic()
        deadline = started + spec.max_run_time_s if spec.max_run_time_s else None
        outcome = CommandOutcome(index=None)
        self._stopped.clear()
        read_fd, self._out_fd = os.pipe2(os.O_CLOEXEC)  # one pipe for the run: background output too
        widen_pipe(self._out_fd)
        self._copier = PipeCopier(read_fd, self.log)
        try:
            await self._join_os_groups(spec.os_groups)
            for index, argv in enumerate(spec.commands):
                if self._abort_reason is not None:
                    self.log.warn(f"Not running command {index}: aborted ({self._abort_reason})")
                    outcome = CommandOutcome(index=index, aborted=True)
                    break
                if deadline is not None and time.monotonic() >= deadline:
                    self.log.warn(f"Not running command {index}: max run time exceeded")
                    outcome = CommandOutcome(index=index, timed_out=True)
                    break
                last = index == len(spec.commands) - 1
                outcome = await self._run_command(index, argv, spec.env, deadline, last)
                if not outcome.succeeded:
                    break
        finally:
            try:
                self._close_output()
                await asyncio.shield(self._end_output())  # usually a no-op: the tree is already empty
                if self.user is not None:  # not only the tree: every process of the task's uid
                    await asyncio.shield(self.user.kill_processes())
            finally:
                self._stopped.set()
        return outcome.result(aborted=self._abort_reason is not None, duration_s=time.monotonic() - started)

    async def abort(self, reason: str) -> None:
        if self._abort_reason is None:
            self._abort_reason = reason
            self._abort_requested.set()
            if self._ran and not self._stopped.is_set():
                # the run loop escalates (TERM, grace, KILL); signalling here as well means an
                # abort never depends on the loop noticing the event first
                self._tree.signal_all(signal.SIGTERM)
                asyncio.get_running_loop().call_later(self._grace_s, self._kill_if_running)
        await self._stopped.wait()

    def _kill_if_running(self) -> None:
        if not self._stopped.is_set():
            self._tree.kill_all()

    async def artifact_root(self) -> Path:
        return self.task_dir

    async def dispose(self, keep: bool = False) -> None:
        if self._disposed:
            return
        self._disposed = True
        self._abort_reason = self._abort_reason or "sandbox disposed"
        self._abort_requested.set()
        await self._stopped.wait()
        try:
            await self._tree.close()
            if self.user is not None:
                await self.user.remove(keep_home=keep)
        finally:
            try:
                if not keep:
                    await asyncio.to_thread(remove_tree, self.task_dir)
            finally:
                if self._lock_fd is not None:
                    os.close(self._lock_fd)
                    self._lock_fd = None

    # ------------------------------------------------------------------ multiuser
    async def _join_os_groups(self, names: tuple[str, ...]) -> None:
        """Make the task user a member of ``osGroups`` (scopes were checked by the task runner).

        Raises:
            MalformedPayload: a group does not exist on this worker.
        """
        if self.user is None or not names:
            return
        try:
            await self.user.add_groups(names)
        except KeyError:
            unknown = [name for name in names if not group_exists(name)]
            raise MalformedPayload(f"payload.osGroups: no such OS group on this worker: {', '.join(unknown)}") from None
        self.log.info(f"Task user {self.user.name} joined OS groups {', '.join(names)}")

    # ------------------------------------------------------------------ one command
    def _close_output(self) -> None:
        """Close the worker's copy of the run's output pipe, so end of file can come. Idempotent."""
        if self._out_fd is not None:
            os.close(self._out_fd)
            self._out_fd = None

    async def _end_output(self) -> None:
        """The run is over: every process is dead, take what is left in the pipe and close it."""
        if self._copier is None:
            return
        await self._tree.kill_and_wait()
        await self._copier.wait_eof(1.0)
        self._copier.close()
        self._copy_error = self._copy_error or self._copier.error

    async def _run_command(
        self, index: int, argv: tuple[str, ...], env: Mapping[str, str], deadline: float | None, last: bool
    ) -> CommandOutcome:
        self.log.info(f"Executing command {index}: {shlex.join(argv)}")
        started = time.monotonic()
        cpu_before = self._tree.cpu_times()
        outcome = await self._attempt(index, argv, env, deadline, self._wrapper, last)
        if outcome is None:  # the exec wrapper could not exec it: start it the exact way to learn why
            outcome = await self._attempt(index, argv, env, deadline, None, last)
        cpu_s = None if outcome.start_error else cpu_delta(cpu_before, self._tree.cpu_times())
        outcome = dataclasses.replace(outcome, duration_s=time.monotonic() - started, cpu_s=cpu_s)
        self.log.info(exit_block(outcome))
        if self._copy_error is not None:
            raise self._copy_error
        return outcome

    async def _attempt(
        self, index: int, argv: tuple[str, ...], env: Mapping[str, str], deadline: float | None,
        wrapper: ExecWrapper | None, last: bool,
    ) -> CommandOutcome | None:
        """Start and run one command; None when ``wrapper`` failed to exec it (nothing ran).

        A command that succeeds and is not ``last`` leaves its other processes running (peer-workers
        1.2: a server started by one command may serve the next); any other end stops the run's
        whole tree.
        """
        assert self._out_fd is not None and self._copier is not None
        copier = self._copier
        try:
            proc = await start_command(argv, env, cwd=self.task_dir, output_fd=self._out_fd, tree=self._tree,
                                       user=self.user, wrapper=wrapper)
        except (OSError, ValueError, subprocess.SubprocessError) as err:
            message = start_error_message(argv, err)
            self.log.error(f"Could not start command {index}: {message}")
            return CommandOutcome(index=index, start_error=message)
        self._tree.started(proc.pid)
        try:
            ended_by = await self._wait(proc, deadline)
            if proc.exec_failed() and ended_by == "exit":
                await proc.wait()
                return None
            if ended_by == "exit" and proc.returncode == 0 and not last:
                await copier.wait_drained(self._drain_s)  # its output before its exit block
            else:
                self._close_output()
                await self._stop_tree(proc, copier, ended_by)
        except BaseException:
            self._close_output()
            self._tree.kill_all()  # at once, even if the shielded wait below is cancelled again
            await asyncio.shield(self._reap(proc, copier))
            raise
        self._copy_error = copier.error
        return CommandOutcome.from_process(index, proc.returncode, ended_by, 0.0, None)

    async def _wait(self, proc: ChildProcess, deadline: float | None) -> str:
        """Wait for the main process to exit, an abort, or the deadline: "exit"|"abort"|"timeout"."""
        exited = asyncio.ensure_future(proc.wait())
        aborted = asyncio.ensure_future(self._abort_requested.wait())
        try:
            while True:
                timeout = None if deadline is None else max(0.0, deadline - time.monotonic())
                if self._tree.needs_tracking:
                    timeout = _TRACK_INTERVAL_S if timeout is None else min(timeout, _TRACK_INTERVAL_S)
                await asyncio.wait({exited, aborted}, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
                if exited.done():
                    return "exit"
                if aborted.done():
                    return "abort"
                if deadline is not None and time.monotonic() >= deadline:
                    return "timeout"
                self._tree.track()
        finally:
            exited.cancel()
            aborted.cancel()

    async def _stop_tree(self, proc: ChildProcess, copier: PipeCopier, ended_by: str) -> None:
        """Bring the tree down: drain then SIGKILL after a normal exit; TERM, grace, KILL otherwise."""
        if ended_by == "exit":
            if not await copier.wait_eof(self._drain_s):
                self.log.warn(
                    f"output still open {self._drain_s:g}s after the command exited: "
                    "killing its remaining processes"
                )
        else:
            why = "max run time exceeded" if ended_by == "timeout" else self._abort_reason
            self.log.warn(f"Aborting command: {why}; SIGTERM to all its processes, SIGKILL after {self._grace_s:g}s")
            self._tree.signal_all(signal.SIGTERM)
            if not await self._tree.wait_empty(self._grace_s):
                self.log.warn(f"processes still running after {self._grace_s:g}s: SIGKILL")
        await self._reap(proc, copier)

    async def _reap(self, proc: ChildProcess, copier: PipeCopier) -> None:
        """SIGKILL whatever is left, wait for the tree and the main process, take the last output."""
        await self._tree.kill_and_wait()
        await proc.wait()
        await copier.wait_eof(1.0)  # writers are dead: only what is still in the pipe is left
