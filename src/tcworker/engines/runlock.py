"""Which task directories belong to a live run: an exclusive ``flock`` on the directory itself.

Every native run holds ``flock(LOCK_EX)`` on an ``O_DIRECTORY`` descriptor of its task directory
from creation until the directory is gone. A boot sweep (a restarted worker, a second worker or
``tcworker exec`` sharing the tasks directory) removes only directories whose lock it can take, and
their cgroups and task users likewise. The kernel drops the lock when its holder dies, so a crashed
run's leftovers are swept and a live run's are not. Locking the directory (not a file inside)
means a task cannot delete its own lock.

What does not live here: what a sweep removes and how (``native.py``, ``proctree.py``,
``taskuser.py``).
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path


def lock_run_dir(path: Path) -> int:
    """Lock a freshly made task directory for the run's whole life. Returns the descriptor to
    close when the directory is gone.

    Raises:
        OSError: the directory cannot be opened or is already locked (``BlockingIOError``).
    """
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BaseException:
        os.close(fd)
        raise
    return fd


def claim_leftover(path: Path) -> int | None:
    """Take the lock of a directory no live run holds: the descriptor (close it after removing the
    directory), or None when a live run holds it or the directory is gone or unreadable."""
    try:
        return lock_run_dir(path)
    except OSError:
        return None


def is_live(path: Path) -> bool:
    """True when a live run (another process, or another descriptor here) holds ``path``'s lock."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    except OSError:
        return False
    finally:
        os.close(fd)
    return False
