"""File-tree helpers that survive task-made trees of any depth: removal and walking.

``shutil.rmtree`` and ``os.walk`` recurse in Python 3.11, so a task that makes a directory a few
thousand levels deep turns them into ``RecursionError``. Everything here is iterative:

- :func:`remove_tree`: ``rm -rf --one-file-system`` (GNU rm walks with fts, never follows links,
  and does not descend into other mounts), never raises;
- :func:`walk`: an explicit-stack ``os.walk`` (top-down, links to directories listed but never
  entered).

What does not live here: which trees to remove or walk (callers), artifact rules (``artifacts.py``).
"""

from __future__ import annotations

import logging
import os
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

logger = logging.getLogger(__name__)


def remove_tree(path: str | os.PathLike[str]) -> bool:
    """Remove ``path`` and everything under it, whatever its depth. Blocking; never raises.

    A missing ``path`` counts as removed. Links are removed, never followed; directories on
    another file system (mounts) are left alone.

    Returns:
        True when ``path`` is gone; False (after logging a warning) otherwise.
    """
    try:
        done = subprocess.run(
            ["rm", "-rf", "--one-file-system", "--", os.fspath(path)],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, check=False,
        )
    except OSError as err:
        logger.warning("cannot remove %s: rm did not start: %s", path, err)
        return False
    if done.returncode != 0 or os.path.lexists(path):
        message = done.stderr.decode(errors="replace").strip().splitlines()
        logger.warning("cannot remove %s completely: %s", path, message[0] if message else f"rm exit {done.returncode}")
        return False
    return True


def walk(
    top: str, onerror: Callable[[OSError], None] | None = None
) -> Iterator[tuple[str, list[str], list[str]]]:
    """``os.walk(top, topdown=True, followlinks=False)`` without recursion.

    Yields ``(dirpath, dirnames, filenames)``; ``dirnames`` includes links to directories, which
    are not entered. Directories that cannot be listed go to ``onerror`` (OSError with
    ``filename``) and are skipped. Pruning ``dirnames`` in the caller is not supported.
    """
    stack = [top]
    while stack:
        dirpath = stack.pop()
        dirnames: list[str] = []
        filenames: list[str] = []
        enter: list[str] = []
        try:
            with os.scandir(dirpath) as entries:
                for entry in entries:
                    try:
                        is_dir = entry.is_dir()
                    except OSError:
                        is_dir = False
                    (dirnames if is_dir else filenames).append(entry.name)
                    if is_dir and not entry.is_symlink():
                        enter.append(entry.path)
        except OSError as err:
            if onerror is not None:
                onerror(err)
            continue
        yield dirpath, dirnames, filenames
        stack.extend(reversed(enter))


def subdirs_bottom_up(top: str | os.PathLike[str]) -> list[Path]:
    """Every directory under ``top`` and ``top`` itself, children before their parents."""
    return [Path(d) for d, _, _ in reversed(list(walk(os.fspath(top))))]


def make_dirs(path: str | os.PathLike[str]) -> None:
    """``mkdir -p`` without recursion (``Path.mkdir(parents=True)`` recurses per level).

    Raises:
        OSError: a level cannot be made, or exists and is not a directory.
    """
    missing = []
    current = Path(path)
    while not current.is_dir():
        missing.append(current)
        if current.parent == current:
            break
        current = current.parent
    for level in reversed(missing):
        try:
            level.mkdir()
        except FileExistsError:
            if not level.is_dir():
                raise
