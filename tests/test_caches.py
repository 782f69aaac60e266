"""Writable caches (tcworker.caches.CacheStore) and the disk-space GC (ensure_free_space).

Store-level: reuse, exclusive use at capacity 2, discard, purge (idle and in use), sweep after a
crash, the persisted index. GC: idle downloads go first, then idle caches, least recently used
first; in-use caches are never evicted; still short → False. Free space is measured through a
small "filesystem" of a given size (``free_bytes``), so the threshold is honest but CI-sized.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from tcworker.caches import CacheStore, ensure_free_space, tree_size_bytes
from tcworker.config import WorkerConfig
from tcworker.downloads import DownloadStore

MIB = 1024 * 1024


def test_given_a_kept_cache_when_acquired_again_then_same_content_and_index_persisted(tmp_path: Path):
    store = CacheStore(tmp_path / "caches")
    lease = store.acquire("c1", tmp_path / "task1" / "c")
    assert lease.fresh
    (lease.path / "state").write_text("one")
    assert store.release(lease, keep=True)
    assert not lease.path.exists()

    again = CacheStore(tmp_path / "caches").acquire("c1", tmp_path / "task2" / "deep" / "c")
    assert not again.fresh and again.entry_id == lease.entry_id
    assert (again.path / "state").read_text() == "one"
    index = json.loads((tmp_path / "caches" / "caches.json").read_text())
    assert index[lease.entry_id]["name"] == "c1" and index[lease.entry_id]["hits"] == 1
    assert index[lease.entry_id]["size_bytes"] == 3  # measured at release


def test_given_capacity_2_when_two_tasks_use_one_name_then_each_gets_its_own_copy(tmp_path: Path):
    store = CacheStore(tmp_path / "caches", capacity=2)
    a = store.acquire("shared", tmp_path / "t1" / "c")
    b = store.acquire("shared", tmp_path / "t2" / "c")
    assert a.entry_id != b.entry_id and a.fresh and b.fresh
    (a.path / "who").write_text("a")
    (b.path / "who").write_text("b")
    store.release(a, keep=True)
    store.release(b, keep=True)
    assert len(store.idle()) == 2

    # both copies are reused, never the same one twice at once
    c = store.acquire("shared", tmp_path / "t3" / "c")
    d = store.acquire("shared", tmp_path / "t4" / "c")
    assert {c.entry_id, d.entry_id} == {a.entry_id, b.entry_id}
    assert {(c.path / "who").read_text(), (d.path / "who").read_text()} == {"a", "b"}
    e = store.acquire("shared", tmp_path / "t5" / "c")
    assert e.fresh and not any(e.path.iterdir())
    for lease in (c, d, e):
        store.release(lease, keep=True)
    assert len(store.idle()) == 2  # trimmed to capacity, least recently used dropped


def test_given_a_discarded_cache_when_acquired_again_then_it_is_new_and_empty(tmp_path: Path):
    store = CacheStore(tmp_path / "caches")
    lease = store.acquire("c1", tmp_path / "t1" / "c")
    (lease.path / "index.lock").write_text("partial")
    assert not store.release(lease, keep=False)
    assert not lease.path.exists()
    again = store.acquire("c1", tmp_path / "t2" / "c")
    assert again.fresh and list(again.path.iterdir()) == []


def test_given_purge_requests_then_idle_caches_go_now_and_in_use_ones_at_release(tmp_path: Path):
    store = CacheStore(tmp_path / "caches", capacity=2)
    idle = store.acquire("p", tmp_path / "t1" / "c")
    store.release(idle, keep=True)
    busy = store.acquire("p", tmp_path / "t2" / "c")  # reuses the idle one
    other = store.acquire("other", tmp_path / "t3" / "c")
    store.release(other, keep=True)
    assert store.purge("p", before=time.time() + 1) == 1
    assert not store.release(busy, keep=True)  # marked: discarded though the task asked to keep
    assert [e.name for e in store.entries()] == ["other"]
    assert store.purge("other", before=0) == 0  # created after "before": kept


def test_given_a_crashed_worker_when_swept_then_vanished_and_stray_entries_are_dropped(tmp_path: Path):
    store = CacheStore(tmp_path / "caches")
    kept = store.acquire("kept", tmp_path / "t1" / "c")
    store.release(kept, keep=True)
    lost = store.acquire("lost", tmp_path / "t2" / "c")
    index = json.loads((tmp_path / "caches" / "caches.json").read_text())
    index[lost.entry_id]["owner"] = [999999, 1.0]  # its worker process is gone, its task dir too
    (tmp_path / "caches" / "caches.json").write_text(json.dumps(index))
    stray = tmp_path / "caches" / ("c-" + "0" * 20)
    stray.mkdir()
    store.sweep()
    assert [e.name for e in store.entries()] == ["kept"]
    assert not stray.exists()
    assert (tmp_path / "caches" / kept.entry_id).is_dir()


def test_given_a_cache_target_in_the_way_then_cache_error_names_the_cache(tmp_path: Path):
    from tcworker.caches import CacheError

    store = CacheStore(tmp_path / "caches")
    store.release(store.acquire("c1", tmp_path / "t1" / "c"), keep=True)
    target = tmp_path / "t2" / "c"
    target.mkdir(parents=True)
    (target / "file").write_text("in the way")
    try:
        store.acquire("c1", target)
    except CacheError as err:
        assert "c1" in str(err)
    else:
        raise AssertionError("expected CacheError")


# ------------------------------------------------------------------ disk-space GC
def gc_config(tmp_path: Path, required_mb: int) -> WorkerConfig:
    return WorkerConfig.from_mapping({
        "tasksDir": str(tmp_path / "tasks"), "cachesDir": str(tmp_path / "caches"),
        "downloadsDir": str(tmp_path / "downloads"), "requiredDiskSpaceMegabytes": required_mb,
    }, environ={})


def small_disk(tmp_path: Path, size_bytes: int):
    """Free bytes of a pretend filesystem of ``size_bytes`` holding tasks, caches and downloads."""
    return lambda: size_bytes - sum(tree_size_bytes(tmp_path / d) for d in ("tasks", "caches", "downloads"))


def fill_download(store: DownloadStore, key: str, size: int, last_used: float) -> str:
    import hashlib
    import os

    data = os.urandom(size)
    sha = hashlib.sha256(data).hexdigest()
    store.dir.mkdir(parents=True, exist_ok=True)
    (store.dir / sha).write_bytes(data)
    with store.index.edit() as index:
        index[key] = {"sha256": sha, "size_bytes": size, "created": last_used, "last_used": last_used}
    return sha


def fill_cache(store: CacheStore, name: str, size: int, tmp_path: Path, keep_in_use: bool = False):
    lease = store.acquire(name, tmp_path / "tasks" / name)
    (lease.path / "blob").write_bytes(b"\0" * size)
    if not keep_in_use:
        store.release(lease, keep=True)
    return lease


def test_given_enough_free_space_then_nothing_is_evicted(tmp_path: Path):
    config = gc_config(tmp_path, required_mb=1)
    downloads = DownloadStore(config.downloads_dir)
    fill_download(downloads, "urlcontent:a", MIB, time.time())
    assert ensure_free_space(config, free_bytes=small_disk(tmp_path, 10 * MIB))
    assert len(downloads.idle()) == 1


def test_given_short_space_then_downloads_go_first_then_caches_least_recently_used(tmp_path: Path, caplog):
    config = gc_config(tmp_path, required_mb=4)
    downloads = DownloadStore(config.downloads_dir)
    caches = CacheStore(config.caches_dir)
    old_dl = fill_download(downloads, "urlcontent:old", MIB, 100.0)
    new_dl = fill_download(downloads, "urlcontent:new", MIB, 200.0)
    fill_cache(caches, "older", MIB, tmp_path)
    fill_cache(caches, "newer", MIB, tmp_path)
    busy = fill_cache(caches, "busy", MIB, tmp_path, keep_in_use=True)
    disk = small_disk(tmp_path, 6 * MIB + 65536)  # 5 MiB (+ indexes) used, 1 free, 4 required

    caplog.set_level("INFO", logger="tcworker.caches")
    assert ensure_free_space(config, free_bytes=disk)
    assert disk() >= 4 * MIB
    assert downloads.idle() == []
    assert [e.name for e in caches.idle()] == ["newer"]
    evicted = [r.getMessage() for r in caplog.records if "evicted" in r.getMessage()]
    assert [old_dl[:12] in evicted[0], new_dl[:12] in evicted[1], "'older'" in evicted[2]] == [True] * 3
    assert (busy.path / "blob").exists()  # in use: never evicted


def test_given_space_still_short_after_evicting_everything_then_false(tmp_path: Path):
    config = gc_config(tmp_path, required_mb=8)
    caches = CacheStore(config.caches_dir)
    busy = fill_cache(caches, "busy", 2 * MIB, tmp_path, keep_in_use=True)
    fill_cache(caches, "idle", MIB, tmp_path)
    assert not ensure_free_space(config, free_bytes=small_disk(tmp_path, 6 * MIB))
    assert caches.idle() == []
    assert (busy.path / "blob").exists()
