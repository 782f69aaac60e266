"""Task-made directory trees deeper than Python's recursion limit: removal (exec, engine boot
sweep, caches), directory artifacts, and the iterative helpers of :mod:`tcworker.fsutil`.

What does not live here: ordinary removal and artifact rules (``test_native.py``,
``tests/test_artifacts.py``).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tcworker.caches import CacheStore, tree_size_bytes
from tcworker.config import WorkerConfig
from tcworker.engines.native import TASK_DIR_PREFIX, NativeEngine
from tcworker.fsutil import remove_tree, walk

DEPTH = 1500  # beyond sys.getrecursionlimit() (1000): shutil.rmtree / os.walk raise RecursionError
DEEP_SH = f"p=d; for i in $(seq 1 {DEPTH}); do p=$p/a; done; mkdir -p $p && touch $p/leaf"


@pytest.fixture(autouse=True)
def _remove_deep_trees(tmp_path: Path):
    """pytest's own tmp_path cleanup recurses: remove what these tests made here ourselves."""
    yield
    for entry in tmp_path.iterdir():
        remove_tree(entry)


def make_deep(root: Path) -> Path:
    subprocess.run(["/bin/sh", "-c", DEEP_SH], cwd=root, check=True)
    return root / "d"


def test_remove_tree_removes_a_deep_tree_and_a_missing_path(tmp_path: Path) -> None:
    deep = make_deep(tmp_path)
    assert remove_tree(deep)
    assert not deep.exists()
    assert remove_tree(tmp_path / "missing")


def test_remove_tree_does_not_follow_links(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "keep").write_text("x")
    tree = tmp_path / "tree"
    tree.mkdir()
    (tree / "link").symlink_to(outside)
    assert remove_tree(tree)
    assert (outside / "keep").read_text() == "x"


def test_walk_reaches_the_bottom_of_a_deep_tree_like_os_walk(tmp_path: Path) -> None:
    deep = make_deep(tmp_path)
    (tmp_path / "d" / "f").write_text("x")
    (tmp_path / "d" / "lnk").symlink_to(tmp_path / "d" / "a")
    found = list(walk(str(deep)))
    assert len(found) == DEPTH + 1
    top = found[0]
    assert top[0] == str(deep) and sorted(top[1]) == ["a", "lnk"] and top[2] == ["f"]
    assert found[-1][2] == ["leaf"]


async def test_boot_sweep_removes_a_deep_leftover(tmp_path: Path) -> None:
    config = WorkerConfig.from_mapping({"tasksDir": str(tmp_path / "tasks")})
    tasks = tmp_path / "tasks"
    leftover = tasks / f"{TASK_DIR_PREFIX}old-0-x"
    leftover.mkdir(parents=True)
    make_deep(leftover)
    await NativeEngine(config).boot()  # must not raise RecursionError
    assert not leftover.exists()


def test_exec_with_a_deep_tree_and_a_directory_artifact(tmp_path: Path) -> None:
    tasks = tmp_path / "tasks"
    (tmp_path / "worker.yml").write_text(json.dumps({"tasksDir": str(tasks)}))
    task = {"payload": {"maxRunTime": 120, "command": [["/bin/sh", "-c", DEEP_SH]],
                        "artifacts": [{"type": "directory", "path": "d", "name": "public/d"}]}}
    (tmp_path / "task.json").write_text(json.dumps(task))
    env = {k: v for k, v in os.environ.items() if not k.startswith("TASKCLUSTER_")}
    done = subprocess.run([sys.executable, "-m", "tcworker", "exec", "task.json", "--config", "worker.yml",
                           "--out", "out"], cwd=tmp_path, capture_output=True, timeout=180, env=env)
    assert done.returncode == 0, done.stderr.decode()[-2000:]
    assert "RecursionError" not in done.stderr.decode()
    leaf = "public/d/" + "/".join(["a"] * DEPTH) + "/leaf"
    names = [a["name"] for a in json.loads((tmp_path / "out" / ".tcworker" / "artifacts.json").read_text())["artifacts"]]
    assert leaf in names
    assert not any(p.name.startswith(TASK_DIR_PREFIX) for p in tasks.iterdir())


def test_cache_size_of_a_deep_tree(tmp_path: Path) -> None:
    deep = make_deep(tmp_path)
    (deep / "f").write_bytes(b"12345")
    assert tree_size_bytes(deep) == 5


def test_a_deep_writable_cache_is_measured_evicted_and_discarded(tmp_path: Path) -> None:
    store = CacheStore(tmp_path / "caches")
    kept = store.acquire("deep", tmp_path / "t1" / "c")
    make_deep(kept.path)
    assert store.release(kept, keep=True)  # measured (tree_size_bytes) without RecursionError
    store.evict(kept.entry_id)
    assert not (tmp_path / "caches" / kept.entry_id).exists()
    dropped = store.acquire("deep", tmp_path / "t2" / "c")
    make_deep(dropped.path)
    assert not store.release(dropped, keep=False)
    assert not dropped.path.exists()
