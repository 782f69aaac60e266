"""Start-up lock-down of the worker's own files, so that task users cannot read them.

In the multiuser engine (``runTasksAsCurrentUser: false``) tasks run as other users on the same
host. As generic-worker does (``peer-workers.md`` 3.11: "config file and signing key are made
unreadable to task users"), :func:`lock_down` makes these worker-owned and private before the
first claim:

==========================================  ======  ==========================================
what                                        mode    why
==========================================  ======  ==========================================
the config file                             0600    worker credentials (``accessToken``)
``ed25519SigningKeyLocation``               0600    the Chain of Trust signing key
``cachesDir``, ``downloadsDir``             0700    cache index and cached content of others
files directly in those two                 0600    (caches are moved into a task, then back)
``tasksDir``                                0711    task users enter their own dir, list nothing
every entry of ``tasksDir``                 go-rwx  other runs' task dirs, run log folders
==========================================  ======  ==========================================

Paths that do not exist are skipped (they are created private later: ``mkdtemp`` is 0700).
Symlinks inside ``tasksDir`` are never followed. Start-up refuses only when a change fails.

What does not live here: per-run users and task directories (:mod:`tcworker.engines.taskuser`).
"""

from __future__ import annotations

import logging
import os
import stat
from pathlib import Path

from tcworker.config import WorkerConfig
from tcworker.errors import ConfigError

log = logging.getLogger(__name__)


def lock_down(config: WorkerConfig, config_path: str | os.PathLike[str] | None) -> list[str]:
    """Make the worker's secrets and other runs' files private (see the module docstring).

    Args:
        config: the worker config (``tasksDir``, ``cachesDir``, ``downloadsDir``, signing key).
        config_path: the config file, or None when the config came from elsewhere.

    Returns:
        one line per path whose owner or mode was changed (for the worker's log).

    Raises:
        ConfigError: a path could not be locked down → the worker does not start.
    """
    changed: list[str] = []
    files = [config_path, config.ed25519_signing_key_location or None]
    for path in files:
        if path:
            _secure(Path(path), 0o600, changed)
    for directory in (config.caches_dir, config.downloads_dir):
        root = Path(directory)
        if _secure(root, 0o700, changed):
            for entry in root.iterdir():
                if stat.S_ISREG(entry.lstat().st_mode):
                    _secure(entry, 0o600, changed)
    tasks = Path(config.tasks_dir)
    if _secure(tasks, 0o711, changed):
        for entry in tasks.iterdir():
            _private(entry, changed)
    for line in changed:
        log.info("lock-down: %s", line)
    return changed


def _secure(path: Path, mode: int, changed: list[str]) -> bool:
    """Owner = the worker, mode = ``mode``; False when ``path`` does not exist."""
    try:
        st = os.stat(path)
        uid, gid = os.geteuid(), os.getegid()
        if (st.st_uid, st.st_gid) != (uid, gid):
            os.chown(path, uid, gid)
            changed.append(f"{path}: owner {st.st_uid}:{st.st_gid} -> {uid}:{gid}")
        if stat.S_IMODE(st.st_mode) != mode:
            os.chmod(path, mode)
            changed.append(f"{path}: mode {stat.S_IMODE(st.st_mode):04o} -> {mode:04o}")
    except FileNotFoundError:
        return False
    except OSError as err:
        raise ConfigError(f"cannot lock down {path}: {err.strerror}") from None
    return True


def _private(path: Path, changed: list[str]) -> None:
    """Drop group and other permissions of an entry of ``tasksDir`` (links are left alone)."""
    try:
        st = os.lstat(path)
        if stat.S_ISLNK(st.st_mode) or not stat.S_IMODE(st.st_mode) & 0o077:
            return
        os.chmod(path, stat.S_IMODE(st.st_mode) & ~0o077)
        changed.append(f"{path}: mode {stat.S_IMODE(st.st_mode):04o} -> {stat.S_IMODE(st.st_mode) & ~0o077:04o}")
    except FileNotFoundError:
        return
    except OSError as err:
        raise ConfigError(f"cannot lock down {path}: {err.strerror}") from None
