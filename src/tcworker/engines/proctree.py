"""Process trees of one run: start processes inside one, signal them all, kill them all, wait.

Two kinds, chosen by :func:`find_cgroup_base` at engine boot:

- :class:`CgroupTree` (preferred): a cgroup v2 per run. Each command's process writes ``0`` into
  the cgroup's ``cgroup.procs`` between ``fork`` and ``exec``, so nothing it starts can escape,
  ``setsid``/``nohup`` children included. ``cgroup.kill`` SIGKILLs the whole tree at once without
  PIDs (so no PID-reuse race), and ``cgroup.events`` says when it is empty (zombies do not count).
  On the CI machines cgroups are v1 plus a controller-less v2 hierarchy where this works
  (``../shared/reference/machine.md``).
- :class:`SessionTree` (fallback): the command's session and process group, plus every descendant
  seen while it ran (``track()``), signalled through psutil (which checks process start times, so a
  reused PID is never hit). A process that both leaves the session and is orphaned between two
  scans escapes; the log says the fallback is in use.

What does not live here: when to signal (the engine's policy), output handling.
"""

from __future__ import annotations

import asyncio
import errno
import hashlib
import logging
import os
import signal
import subprocess
import time
from abc import ABC, abstractmethod
from collections.abc import Callable
from pathlib import Path

import psutil

from tcworker.fsutil import subdirs_bottom_up

logger = logging.getLogger(__name__)

CGROUP_PARENT = "tcworker"
_POLL_S = 0.005


class ProcessTree(ABC):
    """Every process a run started, for signalling and killing."""

    #: True when :meth:`track` must be called periodically while commands run.
    needs_tracking = False

    @abstractmethod
    def preexec(self) -> Callable[[], None] | None:
        """Function for ``subprocess`` ``preexec_fn`` (runs in the child before exec), or None."""

    @property
    def procs_path(self) -> Path | None:
        """``cgroup.procs`` to join the tree by writing ``0`` to it (None: no cgroup, or closed)."""
        return None

    def started(self, pid: int) -> None:
        """Record the main process of a command that has just started."""

    def track(self) -> None:
        """Note the tree's current members (fallback only)."""

    @abstractmethod
    def pids(self) -> list[int]:
        """PIDs of live (non-zombie) members, for messages and signals."""

    @abstractmethod
    def signal_all(self, sig: int) -> None:
        """Send ``sig`` to every member (missing processes are ignored)."""

    @abstractmethod
    def kill_all(self) -> None:
        """SIGKILL every member at once."""

    @abstractmethod
    def is_empty(self) -> bool:
        """No live member is left (zombies do not count)."""

    def cpu_times(self) -> tuple[float, float] | None:
        """(user, system) CPU seconds used by the tree so far, or None if unknown."""
        return None

    async def wait_empty(self, timeout_s: float) -> bool:
        """Wait up to ``timeout_s`` seconds for the tree to be empty; True if it is."""
        deadline = time.monotonic() + timeout_s
        while not self.is_empty():
            if time.monotonic() >= deadline:
                return False
            await asyncio.sleep(_POLL_S)
        return True

    async def kill_and_wait(self, timeout_s: float = 10.0) -> bool:
        """SIGKILL everything, then wait until gone (bounded); True if the tree is empty."""
        if self.is_empty():  # the usual case once a command exited: no cgroup.kill write
            return True
        deadline = time.monotonic() + timeout_s
        while True:
            self.kill_all()
            if await self.wait_empty(min(0.5, max(0.0, deadline - time.monotonic()))):
                return True
            if time.monotonic() >= deadline:
                logger.warning("process tree not empty after SIGKILL: %s", self.pids())
                return False

    async def close(self) -> None:
        """Kill what is left and release the tree's resources. Idempotent."""
        await self.kill_and_wait()


# ---------------------------------------------------------------------- cgroup v2
def find_cgroup_base() -> Path | None:
    """Directory under which per-run cgroups v2 with ``cgroup.kill`` can be made, or None.

    It is ``<v2 mount>/<this process's v2 cgroup>/tcworker``, created if missing.
    """
    mount = _cgroup2_mount()
    if mount is None:
        return None
    own = "/"
    try:
        for line in Path("/proc/self/cgroup").read_text().splitlines():
            if line.startswith("0::"):
                own = line[3:]
    except OSError:
        return None
    base = mount / own.lstrip("/") / CGROUP_PARENT
    probe = base / f"probe-{os.getpid()}"
    try:
        probe.mkdir(parents=True, exist_ok=True)
        try:
            usable = (probe / "cgroup.kill").exists() and _can_join(probe)
        finally:
            probe.rmdir()
    except (OSError, subprocess.SubprocessError) as err:
        logger.info("cgroup v2 at %s not usable: %s", base, err)
        return None
    return base if usable else None


def _can_join(group: Path) -> bool:
    """Start one short process inside ``group`` the way commands are started."""
    tree = CgroupTree(group, create=False)
    try:
        subprocess.run(["true"], preexec_fn=tree.preexec(), check=True, stdin=subprocess.DEVNULL)
    finally:
        tree.release()
    return True


def _cgroup2_mount() -> Path | None:
    try:
        mounts = Path("/proc/self/mounts").read_text().splitlines()
    except OSError:
        return None
    for line in mounts:
        fields = line.split()
        if len(fields) >= 3 and fields[2] == "cgroup2":
            return Path(fields[1])
    return None


def cgroup_prefix(tasks_dir: Path) -> str:
    """Name prefix of the cgroups belonging to one tasks directory (so sweeps stay in their lane)."""
    return "tcw-" + hashlib.sha256(str(tasks_dir).encode()).hexdigest()[:10] + "-"


async def sweep_cgroups(base: Path, prefix: str, keep: Callable[[str], bool] | None = None) -> list[str]:
    """Kill and remove every cgroup under ``base`` whose name starts with ``prefix``, except
    those for which ``keep(name without prefix)`` is true (a live run's).

    Returns:
        names of the cgroups removed.
    """
    removed = []
    for path in sorted(base.glob(prefix + "*")):
        if keep is not None and keep(path.name[len(prefix):]):
            continue
        tree = CgroupTree(path, create=False)
        await tree.close()
        removed.append(path.name)
    return removed


class CgroupTree(ProcessTree):
    """A run's cgroup v2 at ``path``.

    Raises:
        OSError: the cgroup cannot be created or opened.
    """

    def __init__(self, path: Path, *, create: bool = True) -> None:
        self.path = path
        if create:
            path.mkdir()
        self._procs_fd: int | None = os.open(path / "cgroup.procs", os.O_WRONLY | os.O_CLOEXEC)

    def preexec(self) -> Callable[[], None]:
        fd = self._procs_fd
        if fd is None:
            raise RuntimeError(f"cgroup {self.path} is closed")

        def join_cgroup() -> None:  # in the child, between fork and exec: "0" means "myself"
            os.write(fd, b"0")

        return join_cgroup

    @property
    def procs_path(self) -> Path | None:
        return None if self._procs_fd is None else self.path / "cgroup.procs"

    def _groups(self) -> list[Path]:
        return subdirs_bottom_up(self.path)

    def pids(self) -> list[int]:
        found = []
        for group in self._groups():
            try:
                found += [int(p) for p in (group / "cgroup.procs").read_text().split()]
            except FileNotFoundError:
                continue
        return found

    def signal_all(self, sig: int) -> None:
        for pid in self.pids():  # members are alive right now: no reuse window worth a pidfd
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                continue

    def kill_all(self) -> None:
        try:
            (self.path / "cgroup.kill").write_text("1")
        except FileNotFoundError:
            return

    def is_empty(self) -> bool:
        try:
            return "populated 0" in (self.path / "cgroup.events").read_text()
        except FileNotFoundError:
            return True

    def cpu_times(self) -> tuple[float, float] | None:
        try:
            stat = dict(line.split() for line in (self.path / "cpu.stat").read_text().splitlines())
            return int(stat["user_usec"]) / 1e6, int(stat["system_usec"]) / 1e6
        except (OSError, KeyError, ValueError):
            return None

    def release(self) -> None:
        """Close the ``cgroup.procs`` handle: no more processes can be started inside. Idempotent."""
        if self._procs_fd is not None:
            os.close(self._procs_fd)
            self._procs_fd = None

    async def close(self) -> None:
        self.release()
        if not self.path.exists():
            return
        await self.kill_and_wait()
        for _ in range(200):
            try:
                for group in self._groups():
                    group.rmdir()
                return
            except FileNotFoundError:
                continue
            except OSError as err:
                if err.errno != errno.EBUSY:
                    raise
                await asyncio.sleep(_POLL_S)
        logger.warning("could not remove cgroup %s: still busy", self.path)


# ---------------------------------------------------------------------- fallback
class SessionTree(ProcessTree):
    """Fallback without cgroup v2: sessions, process groups and tracked descendants."""

    needs_tracking = True

    def __init__(self) -> None:
        self._sessions: set[int] = set()
        self._known: dict[int, psutil.Process] = {}

    def preexec(self) -> None:
        return None

    def started(self, pid: int) -> None:
        self._sessions.add(pid)  # started with start_new_session: sid == pgid == pid
        self.track()

    def track(self) -> None:
        for proc in self._scan():
            self._known.setdefault(proc.pid, proc)
            try:
                self._sessions.add(os.getsid(proc.pid))
            except ProcessLookupError:
                continue

    def _scan(self) -> list[psutil.Process]:
        found: dict[int, psutil.Process] = {}
        for proc in list(self._known.values()):
            if _alive(proc):
                found[proc.pid] = proc
                for child in _children(proc):
                    found.setdefault(child.pid, child)
        for proc in psutil.process_iter():
            if proc.pid in found:
                continue
            try:
                if os.getsid(proc.pid) in self._sessions or os.getpgid(proc.pid) in self._sessions:
                    found[proc.pid] = proc
            except ProcessLookupError:
                continue
        return [p for p in found.values() if _alive(p)]

    def pids(self) -> list[int]:
        return [p.pid for p in self._scan()]

    def signal_all(self, sig: int) -> None:
        self.track()
        for proc in self._scan():
            try:
                proc.send_signal(sig)
            except psutil.NoSuchProcess:
                continue

    def kill_all(self) -> None:
        self.signal_all(signal.SIGKILL)

    def is_empty(self) -> bool:
        return not self._scan()


def _alive(proc: psutil.Process) -> bool:
    try:
        return proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def _children(proc: psutil.Process) -> list[psutil.Process]:
    try:
        return proc.children(recursive=True)
    except psutil.NoSuchProcess:
        return []
