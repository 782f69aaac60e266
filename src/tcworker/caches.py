"""Named writable caches that persist between tasks, and disk-space GC before claiming.

Lives here:

- :class:`LockedJson`: a small JSON index read-modify-written under ``flock`` (threads of this
  worker and concurrent ``tcworker exec`` processes share it safely).
- :class:`CacheStore`: the caches under ``cachesDir``. Each entry is a directory
  ``<cachesDir>/c-<hex>`` with a name (``cacheName``). An entry is *idle* exactly when its
  directory sits there; :meth:`CacheStore.acquire` renames it into a task directory (exclusive
  use: a second task asking for the same name gets another entry, or a new empty one) and
  :meth:`CacheStore.release` renames it back, or discards it (aborted run, ``purgeCaches`` exit
  code, purge request). Up to ``capacity`` idle entries per name are kept; sizes are measured at
  release; the index is ``<cachesDir>/caches.json`` (generic-worker's ``directory-caches.json``).
- :class:`PurgeState`: remembers when purge requests were last asked for (``peer-workers.md`` 3.7).
- :func:`ensure_free_space`: before each claim, evict idle downloads then idle caches, least
  recently used first, until ``requiredDiskSpaceMegabytes`` are free (``peer-workers.md`` 3.6).

What does not live here: when to keep or discard (the mounts plugin,
:mod:`tcworker.plugins.mounts`), the download cache (:mod:`tcworker.downloads`), the HTTP call
for purge requests. Everything here blocks (renames, ``rmtree``): call it from a thread.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import logging
import os
import re
import secrets
import shutil
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Iterator

from tcworker.fsutil import remove_tree, walk

if TYPE_CHECKING:
    from tcworker.config import WorkerConfig

log = logging.getLogger(__name__)

INDEX_NAME = "caches.json"
_ENTRY_RE = re.compile(r"^c-[0-9a-f]{20}$")
_TRASH_PREFIX = ".trash-"
MIB = 1024 * 1024


class CacheError(Exception):
    """A cache could not be mounted or unmounted (the message names the cache and the path)."""


# ------------------------------------------------------------------ shared JSON index
class LockedJson:
    """A JSON object in ``path``, edited under an exclusive ``flock`` on ``path + ".lock"``.

    Each :meth:`edit` opens its own lock descriptor, so threads of one process exclude each other
    as processes do. Writes are atomic (temp file + rename).
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self._thread_lock = threading.Lock()

    @contextlib.contextmanager
    def edit(self) -> Iterator[dict]:
        """``with index.edit() as data:`` — ``data`` is saved when the block ends without error."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self._thread_lock, open(str(self.path) + ".lock", "a+b") as lock:
            fcntl.flock(lock.fileno(), fcntl.LOCK_EX)
            data = self._load()
            yield data
            tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")
            tmp.write_text(json.dumps(data, indent=1, sort_keys=True), encoding="utf-8")
            os.replace(tmp, self.path)

    def read(self) -> dict:
        """A snapshot of the data (no lock: the file is replaced atomically)."""
        return self._load()

    def _load(self) -> dict:
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return {}
        except ValueError:
            log.warning("%s is not valid JSON: starting a new index", self.path)
            return {}
        return data if isinstance(data, dict) else {}


def tree_size_bytes(path: Path) -> int:
    """Bytes used by the files under ``path`` (links not followed; 0 when missing)."""
    total = 0
    for root, _dirs, files in walk(os.fspath(path)):
        for name in files:
            with contextlib.suppress(OSError):
                total += os.lstat(os.path.join(root, name)).st_size
    return total


def _owner() -> list:
    import psutil

    return [os.getpid(), psutil.Process().create_time()]


def _owner_alive(owner: list | None) -> bool:
    import psutil

    if not owner:
        return False
    try:
        return psutil.Process(owner[0]).create_time() == owner[1]
    except psutil.Error:
        return False


# ------------------------------------------------------------------ caches
@dataclass
class CacheEntry:
    """One cache directory. Times are epoch seconds; ``owner`` is ``[pid, start time]`` in use."""

    id: str
    name: str
    created: float
    last_used: float
    size_bytes: int = 0
    hits: int = 0
    owner: list | None = None
    discard: bool = False


@dataclass(frozen=True)
class CacheLease:
    """A cache mounted into a task: ``path`` is where it lives now; ``fresh`` is a new empty cache."""

    entry_id: str
    name: str
    path: Path
    fresh: bool


class CacheStore:
    """Writable caches under ``caches_dir``.

    Args:
        caches_dir: ``config.caches_dir`` (created when missing).
        capacity: idle entries kept per cache name (the worker's ``capacity``).
    """

    def __init__(self, caches_dir: str | os.PathLike[str], *, capacity: int = 1) -> None:
        self.dir = Path(caches_dir).absolute()
        self.capacity = max(1, capacity)
        self.index = LockedJson(self.dir / INDEX_NAME)

    def _entry_dir(self, entry_id: str) -> Path:
        return self.dir / entry_id

    def entries(self) -> list[CacheEntry]:
        """Every known entry (idle or in use), oldest first."""
        return sorted((CacheEntry(**raw) for raw in self.index.read().values()), key=lambda e: e.created)

    def idle(self) -> list[CacheEntry]:
        """Idle entries (their directory is in ``caches_dir``), least recently used first."""
        idle = [e for e in self.entries() if e.owner is None and self._entry_dir(e.id).is_dir()]
        return sorted(idle, key=lambda e: e.last_used)

    def acquire(self, name: str, target: Path) -> CacheLease:
        """Move an idle ``name`` cache (most recently used first) to ``target``, or make a new one.

        Args:
            name: the ``cacheName``.
            target: where the task sees it; must not exist (or be an empty directory).

        Raises:
            CacheError: ``target`` is in the way, or the move failed.
        """
        target.parent.mkdir(parents=True, exist_ok=True)
        with self.index.edit() as data:
            for raw in sorted(data.values(), key=lambda r: -r["last_used"]):
                entry = CacheEntry(**raw)
                if entry.name != name or entry.owner is not None or entry.discard:
                    continue
                if not self._move(self._entry_dir(entry.id), target, name):
                    continue  # its directory vanished: forget it
                entry.owner, entry.hits, entry.last_used = _owner(), entry.hits + 1, time.time()
                data[entry.id] = asdict(entry)
                return CacheLease(entry.id, name, target, fresh=False)
            entry = CacheEntry(id="c-" + secrets.token_hex(10), name=name, created=time.time(),
                               last_used=time.time(), owner=_owner())
            try:
                target.mkdir(exist_ok=True)
            except OSError as err:
                raise CacheError(f"cache {name!r}: cannot create {target}: {err.strerror}") from None
            data[entry.id] = asdict(entry)
            return CacheLease(entry.id, name, target, fresh=True)

    def _move(self, src: Path, dst: Path, name: str) -> bool:
        try:
            os.rename(src, dst)
        except FileNotFoundError:
            return False
        except OSError as err:
            if err.errno == errno.EXDEV:  # another filesystem: copy (slow, but correct)
                shutil.move(str(src), str(dst))
                return True
            raise CacheError(f"cache {name!r}: cannot move it to {dst}: {err.strerror}") from None
        return True

    def release(self, lease: CacheLease, *, keep: bool) -> bool:
        """Move the cache back (``keep``), or discard it. A purged entry is discarded anyway.

        Returns:
            True when the cache was kept.
        """
        size = tree_size_bytes(lease.path) if keep and lease.path.is_dir() else 0
        trash: list[Path] = []
        kept = False
        with self.index.edit() as data:
            raw = data.get(lease.entry_id)
            if raw is not None and keep and not raw.get("discard") and lease.path.is_dir():
                self._move(lease.path, self._entry_dir(lease.entry_id), lease.name)
                raw.update(owner=None, last_used=time.time(), size_bytes=size)
                kept = True
                trash += self._trim(data, lease.name)
            else:
                data.pop(lease.entry_id, None)
        if not kept:
            trash.append(lease.path)
        for path in trash:
            remove_tree(path)
        return kept

    def _trim(self, data: dict, name: str) -> list[Path]:
        """Beyond ``capacity`` idle entries of ``name``: move the least recently used to trash."""
        idle = sorted((r for r in data.values() if r["name"] == name and r["owner"] is None),
                      key=lambda r: -r["last_used"])
        return [self._to_trash(data, raw["id"]) for raw in idle[self.capacity:]]

    def _to_trash(self, data: dict, entry_id: str) -> Path:
        data.pop(entry_id, None)
        trash = self.dir / (_TRASH_PREFIX + entry_id)
        with contextlib.suppress(FileNotFoundError):
            os.rename(self._entry_dir(entry_id), trash)
        return trash

    def evict(self, entry_id: str) -> int:
        """Delete one idle entry; returns the bytes it held (0 if in use or gone)."""
        with self.index.edit() as data:
            raw = data.get(entry_id)
            if raw is None or raw["owner"] is not None:
                return 0
            trash = self._to_trash(data, entry_id)
        remove_tree(trash)
        return int(raw.get("size_bytes", 0))

    def purge(self, name: str, before: float) -> int:
        """Drop ``name`` caches created before ``before`` (epoch s); in-use ones at release.

        Returns:
            how many entries were dropped or marked.
        """
        trash: list[Path] = []
        count = 0
        with self.index.edit() as data:
            for raw in list(data.values()):
                if raw["name"] != name or raw["created"] >= before:
                    continue
                count += 1
                if raw["owner"] is None:
                    trash.append(self._to_trash(data, raw["id"]))
                else:
                    raw["discard"] = True
        for path in trash:
            remove_tree(path)
        return count

    def sweep(self) -> None:
        """Worker start: forget entries whose directory vanished (their task crashed) and remove
        trash and stray ``c-*`` directories the index does not know."""
        with self.index.edit() as data:
            for raw in list(data.values()):
                in_use = raw["owner"] is not None and _owner_alive(raw["owner"])
                if not in_use and not self._entry_dir(raw["id"]).is_dir():
                    data.pop(raw["id"])
                elif not in_use and raw["owner"] is not None:
                    raw["owner"] = None  # the process that held it is gone; the dir is back
            known = set(data)
        for path in self.dir.iterdir():
            stray = _ENTRY_RE.match(path.name) and path.name not in known
            if stray or path.name.startswith(_TRASH_PREFIX):
                log.info("caches: removing leftover %s", path)
                remove_tree(path)


class PurgeState:
    """When purge requests were last fetched, for ``purgeRequests``' ``since`` (5 min overlap)."""

    OVERLAP_S = 300.0

    def __init__(self) -> None:
        self.last_query: float | None = None
        self.enabled = True

    def since(self) -> float | None:
        """Epoch seconds for the ``since`` query (``None`` on the first call)."""
        return None if self.last_query is None else self.last_query - self.OVERLAP_S


# ------------------------------------------------------------------ disk-space GC
def _free_bytes(config: "WorkerConfig") -> int:
    """Least free space among the filesystems of tasksDir, cachesDir and downloadsDir."""
    free = []
    for raw in (config.tasks_dir, config.caches_dir, config.downloads_dir):
        path = Path(raw).absolute()
        while not path.exists() and path != path.parent:
            path = path.parent
        free.append(shutil.disk_usage(path).free)
    return min(free)


def ensure_free_space(config: "WorkerConfig", *, free_bytes: Callable[[], int] | None = None) -> bool:
    """Before claiming: evict idle downloads, then idle caches (least recently used first) until
    ``requiredDiskSpaceMegabytes`` are free. Logs what it evicted, and why it will not claim.

    Args:
        config: uses ``required_disk_space_megabytes``, ``tasks_dir``, ``caches_dir``,
            ``downloads_dir``, ``capacity``.
        free_bytes: measures free bytes (default: the least free of the three directories'
            filesystems); tests pass their own.

    Returns:
        True when enough space is free (claiming may go on).
    """
    from tcworker.downloads import DownloadStore

    measure = free_bytes or (lambda: _free_bytes(config))
    required = config.required_disk_space_megabytes * MIB
    if measure() >= required:
        return True
    downloads = DownloadStore(config.downloads_dir)
    for item in downloads.idle():
        freed = downloads.evict(item.sha256)
        log.info("disk space: evicted download %s (%d bytes, %s)", item.sha256[:12], freed, item.keys)
        if measure() >= required:
            return True
    caches = CacheStore(config.caches_dir, capacity=config.capacity)
    for entry in caches.idle():
        freed = caches.evict(entry.id)
        log.info("disk space: evicted cache %r (%s, %d bytes, last used %s)", entry.name, entry.id,
                 freed, time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(entry.last_used)))
        if measure() >= required:
            return True
    log.debug("disk space: %d MB free, requiredDiskSpaceMegabytes is %d, and no idle cache or "
                "download is left to evict", measure() // MIB, config.required_disk_space_megabytes)
    return False


def cache_fate(run, result, *, started: bool) -> tuple[bool, str]:
    """Whether a run's writable caches are kept, and why not (FM-13; native and docker alike).

    Args:
        run: the :class:`~tcworker.taskrun.TaskRun` (``aborted``, ``parsed.purge_cache_exit_codes``).
        result: its :class:`~tcworker.engines.base.ExitResult`, or ``None`` when it never finished.
        started: the task's commands had started.

    Returns:
        ``(keep, why)``: discarded when the run was aborted (cancel, worker shutdown), hit
        maxRunTime, or exited with a code in ``onExitStatus.purgeCaches``; else kept.
    """
    if result is None:
        return not started, "the task was interrupted"
    if run.aborted or result.aborted:
        return False, "the run was aborted"
    if result.timed_out:
        return False, "the task exceeded its maxRunTime"
    if result.exit_code is not None and result.exit_code in run.parsed.purge_cache_exit_codes:
        return False, f"exit code {result.exit_code} is listed in onExitStatus.purgeCaches"
    return True, ""
