"""Would the task's own user be able to read this file? The check :func:`tcworker.artifacts.collect`
makes in the multiuser engine, so that a task cannot publish worker-only files.

generic-worker copies each artifact to a temporary file *as the task user*
(``peer-workers.md`` 3.14), so a symlink or hard link to a file only the worker can read gives an
error artifact, never its contents. We read as the worker but ask the same question the kernel
would: the file's mode bits grant read to the task user (owner, group — its primary and
supplementary groups — or other), and every directory on the file's real path grants it search.
The worker checks the file it has already opened (``fstat``), so the answer is about those bytes.

Known limit: POSIX ACLs are not read. A worker never gives its own files ACLs, so the mode bits
decide for them; a file whose ACL would grant the task user more than its mode is refused
(the safe side).

What does not live here: containment in the task directory and file types
(:mod:`tcworker.artifacts`), creating task users (:mod:`tcworker.engines.taskuser`).
"""

from __future__ import annotations

import os
import pwd
from dataclasses import dataclass, field

READ, SEARCH = 4, 1


@dataclass
class Reader:
    """A user the worker reads artifacts on behalf of.

    Attributes:
        uid: the task user's uid.
        gids: its primary and supplementary gids.
    """

    uid: int
    gids: frozenset[int]
    _searchable: dict[str, bool] = field(default_factory=dict, repr=False)

    def may(self, st: os.stat_result, bit: int) -> bool:
        """True when the mode bits in ``st`` grant ``bit`` (:data:`READ`, :data:`SEARCH`) to this user."""
        if self.uid == 0:
            return True
        if st.st_uid == self.uid:
            return bool(st.st_mode & (bit << 6))
        if st.st_gid in self.gids:
            return bool(st.st_mode & (bit << 3))
        return bool(st.st_mode & bit)

    def can_read(self, path: str, st: os.stat_result) -> bool:
        """True when this user may read the file ``st`` whose real (link-free) path is ``path``."""
        if not self.may(st, READ):
            return False
        parent = os.path.dirname(path)
        while True:
            if not self._can_search(parent):
                return False
            up = os.path.dirname(parent)
            if up == parent:
                return True
            parent = up

    def _can_search(self, directory: str) -> bool:
        known = self._searchable.get(directory)
        if known is None:
            try:
                known = self.may(os.stat(directory), SEARCH)
            except OSError:
                known = False
            self._searchable[directory] = known
        return known


def task_reader(task_dir: os.PathLike[str] | str) -> Reader | None:
    """The user artifacts of ``task_dir`` are read for: its owner, when that is not the worker.

    The multiuser engine gives each run's task directory to the run's user; in every other case
    (the worker's own user runs the task) this is None and no extra check is made.
    """
    try:
        st = os.stat(task_dir)
    except OSError:
        return None
    if st.st_uid == os.geteuid():
        return None
    try:
        entry = pwd.getpwuid(st.st_uid)
        gids = frozenset(os.getgrouplist(entry.pw_name, entry.pw_gid))
    except KeyError:  # user already gone: its primary group is all we know
        gids = frozenset({st.st_gid})
    return Reader(st.st_uid, gids)
