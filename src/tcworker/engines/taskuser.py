"""Per-run OS users of the multiuser native engine (``runTasksAsCurrentUser: false``).

generic-worker's multiuser engine (``../shared/reference/peer-workers.md`` 3.11) gives each task a
fresh OS user and deletes it afterwards; so do we:

- :func:`create_task_user` runs ``useradd`` for a name ``tcw_<task id>_<run id>_<random>`` (at most
  20 characters, :data:`USER_PREFIX`), home = the run's task directory (made 0700 and owned by the
  user), its own primary group, a locked password.
- :meth:`TaskUser.drop_privileges` is called in the child between ``fork`` and ``exec`` (after the
  cgroup join, which needs root): supplementary groups, gid, uid, all three ids of each.
- :meth:`TaskUser.kill_processes` SIGKILLs every process whose real, effective or saved uid is the
  user's, repeatedly until none is left (zombies do not count): not only the run's process tree.
- :meth:`TaskUser.remove` kills again, removes files the user left in world-writable places
  (``/tmp``, ``/var/tmp``, ``/dev/shm``: a later user may get the same uid), and runs
  ``userdel`` (``-r`` unless the task directory is kept).
- :func:`sweep_task_users` (engine boot) removes leftover users carrying the prefix whose home lies
  in this worker's tasks directory or no longer exists, and their processes.

``useradd``/``userdel`` cost about 30 ms each (``bench/multiuser.py``). They lock ``/etc/passwd``;
concurrent calls from another worker on the host are retried.

What does not live here: when these run (:mod:`tcworker.engines.native`), scope checks of
``osGroups`` (:mod:`tcworker.scopes`), the artifact readability check (:mod:`tcworker.artifacts`).
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import grp
import logging
import os
import pwd
import itertools
import re
import secrets
import shutil
import stat
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import psutil

from tcworker.errors import ConfigError
from tcworker.fsutil import remove_tree, walk

logger = logging.getLogger(__name__)

USER_PREFIX = "tcw_"
MAX_NAME_CHARS = 20
#: Places any user may write: files a task user leaves there are removed with the user.
SHARED_WRITABLE = ("/tmp", "/var/tmp", "/dev/shm")
_LOCKED_EXIT_CODES = {1, 10}  # useradd/userdel/usermod: cannot lock or update passwd/group files
_RETRIES = 40
_RETRY_S = 0.05
_KILL_ROUNDS = 200


class TaskUserError(OSError):
    """A user command failed (``useradd``, ``usermod``, ``userdel``); the message has its stderr."""


_NAME_SEQUENCE = itertools.count(secrets.randbelow(0x10000))


def task_user_name(task_id: str, run_id: int) -> str:
    """``tcw_<first 6 of the task id, lowercase alnum>_<run id>_<4 random>``, at most 20 chars.

    The last part comes from a per-process sequence with a random start: names never repeat
    within one worker (65536 runs apart), even when two task ids share their lowercase prefix,
    and two workers on one host are unlikely to meet (``useradd`` refuses a name in use).
    """
    safe = re.sub(r"[^a-z0-9]", "", task_id.lower())[:6] or "task"
    tail = f"_{run_id}_{next(_NAME_SEQUENCE) % 0x10000:04x}"
    return (USER_PREFIX + safe)[: MAX_NAME_CHARS - len(tail)] + tail


@dataclass
class TaskUser:
    """One run's OS user.

    Attributes:
        name: login name (``tcw_...``).
        uid, gid: numeric ids; ``gid`` is the user's own primary group.
        home: the run's task directory.
        groups: supplementary gids the commands get (``osGroups``, after :meth:`add_groups`).
    """

    name: str
    uid: int
    gid: int
    home: Path
    groups: tuple[int, ...] = field(default=())
    removed: bool = False

    @property
    def env(self) -> dict[str, str]:
        """The clean base environment of the user's commands (generic-worker multiuser, 1.7)."""
        return {
            "PATH": "/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin",
            "HOME": str(self.home),
            "USER": self.name,
            "LOGNAME": self.name,
        }

    def drop_privileges(self) -> None:
        """Become the user (groups, gid, uid). Runs in the child, between fork and exec."""
        os.setgroups(list(self.groups))
        os.setresgid(self.gid, self.gid, self.gid)
        os.setresuid(self.uid, self.uid, self.uid)

    async def add_groups(self, names: tuple[str, ...]) -> None:
        """Make the user a member of the OS groups ``names`` (``usermod -a -G``).

        Raises:
            KeyError: a group does not exist on this machine.
            TaskUserError: ``usermod`` failed.
        """
        if not names:
            return
        gids = tuple(grp.getgrnam(name).gr_gid for name in names)
        await _run_user_command("usermod", "-a", "-G", ",".join(names), self.name)
        self.groups = tuple(sorted({*self.groups, *gids}))

    async def kill_processes(self) -> int:
        """SIGKILL every process of the uid until none is left; returns how many were signalled."""
        return await asyncio.to_thread(kill_uid_processes, self.uid)

    async def remove(self, *, keep_home: bool) -> None:
        """Kill the user's processes, remove its files in shared places, delete the user.

        Idempotent. The home (task directory) is removed too unless ``keep_home``.

        Raises:
            TaskUserError: ``userdel`` failed.
        """
        if self.removed:
            return
        await self.kill_processes()
        await asyncio.to_thread(remove_files_of, self.uid, SHARED_WRITABLE)
        args = ("-f", self.name) if keep_home else ("-f", "-r", self.name)
        await _run_user_command("userdel", *args, ok_codes=(0, 6, 12))  # 6: gone; 12: no home
        self.removed = True


async def create_task_user(task_id: str, run_id: int, home: Path) -> TaskUser:
    """Create a fresh user whose home is ``home`` (which must exist), chown it, mode 0700.

    Raises:
        TaskUserError: ``useradd`` failed.
    """
    shell = "/bin/bash" if os.path.exists("/bin/bash") else "/bin/sh"
    for _ in range(5):
        name = task_user_name(task_id, run_id)
        # -M: the home exists already; -U: own group; -l: keep lastlog/faillog small.
        code, err = await _try_user_command("useradd", "-M", "-U", "-l", "-d", str(home), "-s", shell, name)
        if code == 9:  # name taken (a concurrent run with the same prefix): draw another
            continue
        if code != 0:
            raise TaskUserError(f"useradd {name}: exit code {code}: {err}")
        entry = pwd.getpwnam(name)
        user = TaskUser(name, entry.pw_uid, entry.pw_gid, home)
        try:
            os.chown(home, user.uid, user.gid)
            os.chmod(home, 0o700)
        except OSError:
            await user.remove(keep_home=True)
            raise
        return user
    raise TaskUserError(f"useradd: no free user name for task {task_id} run {run_id}")


async def prepare_multiuser(tasks_dir: Path, keep: Callable[[Path], bool] | None = None) -> list[str]:
    """Engine boot in multiuser mode: check root and tools, make ``tasks_dir`` 0711 and
    worker-owned (task users enter their own directory but list nothing), check that task users
    can reach it, sweep leftover task users. Returns what :func:`sweep_task_users` removed.

    Raises:
        ConfigError: not root, ``useradd``/``usermod``/``userdel`` missing, ``tasks_dir`` cannot be
            made 0711 or an ancestor lacks ``o+x``.
    """
    if os.geteuid() != 0:
        raise ConfigError("runTasksAsCurrentUser: false needs a worker running as root")
    missing = [tool for tool in ("useradd", "usermod", "userdel") if shutil.which(tool) is None]
    if missing:
        raise ConfigError(f"runTasksAsCurrentUser: false needs {', '.join(missing)}")
    try:
        os.chown(tasks_dir, os.geteuid(), os.getegid())
        os.chmod(tasks_dir, 0o711)
    except OSError as err:
        raise ConfigError(f"tasksDir {tasks_dir}: cannot make it 0711: {err.strerror}") from None
    for parent in tasks_dir.parents:
        mode = os.stat(parent).st_mode
        if not mode & stat.S_IXOTH:
            raise ConfigError(f"tasksDir {tasks_dir}: task users cannot reach it, {parent} is mode "
                              f"{stat.S_IMODE(mode):04o} (needs o+x)")
    return await sweep_task_users(tasks_dir, keep)


def group_exists(name: str) -> bool:
    """True when the OS group ``name`` exists."""
    try:
        grp.getgrnam(name)
    except KeyError:
        return False
    return True


async def sweep_task_users(tasks_dir: Path, keep: Callable[[Path], bool] | None = None) -> list[str]:
    """Remove leftover task users of this tasks directory (prefix, home inside it or gone), except
    those whose home ``keep`` says a live run holds.

    Returns:
        the names removed.
    """
    removed = []
    for entry in pwd.getpwall():
        if not entry.pw_name.startswith(USER_PREFIX):
            continue
        home = Path(entry.pw_dir)
        if home.parent != tasks_dir and home.exists():
            continue  # another worker's (running) task user on this host
        if keep is not None and keep(home):
            continue  # a live run of this tasks directory (another worker or exec)
        user = TaskUser(entry.pw_name, entry.pw_uid, entry.pw_gid, home)
        await user.remove(keep_home=home.parent != tasks_dir)
        removed.append(entry.pw_name)
    return removed


def chown_tree(path: Path, uid: int, gid: int) -> None:
    """``chown -R`` without following links (``lchown`` on links). Blocking.

    Used for caches: given to a run's user when moved into its task directory, and given back to
    the worker when moved out ("ownership reset for the next user").
    """
    os.chown(path, uid, gid, follow_symlinks=False)
    if not stat.S_ISDIR(os.lstat(path).st_mode):
        return
    for dirpath, dirnames, filenames in walk(os.fspath(path)):
        for name in dirnames + filenames:
            with contextlib.suppress(FileNotFoundError):
                os.chown(os.path.join(dirpath, name), uid, gid, follow_symlinks=False)


def give_to_user(task_dir: Path, target: Path, owner: tuple[int, int]) -> None:
    """Hand a mount at ``target`` inside ``task_dir`` to the run's user: the directories created
    on the way to it and the whole ``target`` tree (links are never followed). Blocking.

    Raises:
        ValueError: ``target`` is not inside ``task_dir``.
        OSError: a directory on the way is a link (a cache's content could plant one): chowning
            through it would give away a file outside the task.
    """
    relative = Path(os.path.normpath(target)).relative_to(os.path.normpath(task_dir))
    step = Path(task_dir)
    for part in relative.parts[:-1]:
        step = step / part
        if os.path.islink(step):
            raise OSError(errno.ELOOP, f"{step} is a link; not giving it to the task user")
        os.chown(step, *owner, follow_symlinks=False)
    chown_tree(Path(task_dir) / relative, *owner)


def kill_uid_processes(uid: int) -> int:
    """SIGKILL every live process whose real, effective or saved uid is ``uid``, until none.

    psutil checks each process's start time before signalling, so a reused PID is never hit.
    Nothing is reaped here (the engine reaps its own children). Blocking (call it in a thread). Returns how many signals were sent.

    Raises:
        TaskUserError: processes still alive after many rounds (a process that cannot be killed).
    """
    sent = 0
    for _ in range(_KILL_ROUNDS):
        found = _uid_processes(uid)
        if not found:
            return sent
        for proc in found:
            try:
                proc.kill()
                sent += 1
            except psutil.NoSuchProcess:
                continue
        time.sleep(0.005)  # not psutil.wait_procs: it would reap our own children behind asyncio
    raise TaskUserError(f"processes of uid {uid} still alive after SIGKILL: {[p.pid for p in _uid_processes(uid)]}")


def _uid_processes(uid: int) -> list[psutil.Process]:
    found = []
    for proc in psutil.process_iter():
        try:
            if uid in proc.uids() and proc.status() != psutil.STATUS_ZOMBIE:
                found.append(proc)
        except psutil.NoSuchProcess:
            continue
    return found


def remove_files_of(uid: int, roots: tuple[str, ...]) -> list[str]:
    """Remove what ``uid`` owns in the world-writable trees ``roots``; returns the removed paths.

    Only entries owned by ``uid`` and world-writable directories are looked at: a user can create
    files nowhere else there, so the walk stays short whatever else ``/tmp`` holds. Links are
    never followed. Blocking.
    """
    removed: list[str] = []
    for root in roots:
        _remove_owned(root, uid, removed, depth=0)
    return removed


def _remove_owned(directory: str, uid: int, removed: list[str], depth: int) -> None:
    if depth > 16:
        return
    try:
        entries = list(os.scandir(directory))
    except OSError:
        return
    for entry in entries:
        try:
            st = entry.stat(follow_symlinks=False)
        except OSError:
            continue
        if st.st_uid == uid:
            if stat.S_ISDIR(st.st_mode):
                remove_tree(entry.path)
            else:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(entry.path)
            removed.append(entry.path)
        elif stat.S_ISDIR(st.st_mode) and st.st_mode & stat.S_IWOTH:
            _remove_owned(entry.path, uid, removed, depth + 1)


async def _run_user_command(*argv: str, ok_codes: tuple[int, ...] = (0,)) -> None:
    code, err = await _try_user_command(*argv)
    if code not in ok_codes:
        raise TaskUserError(f"{' '.join(argv)}: exit code {code}: {err}")


async def _try_user_command(*argv: str) -> tuple[int, str]:
    """Run a shadow-utils command, retrying while another process holds the passwd lock."""
    deadline = time.monotonic() + _RETRIES * _RETRY_S * 4
    while True:
        proc = await asyncio.create_subprocess_exec(
            *argv, stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.PIPE,
        )
        _, err = await proc.communicate()
        text = err.decode(errors="replace").strip()
        code = proc.returncode if proc.returncode is not None else -1
        locked = code in _LOCKED_EXIT_CODES and "lock" in text.lower()
        if not locked or time.monotonic() >= deadline:
            return code, text
        await asyncio.sleep(_RETRY_S)
