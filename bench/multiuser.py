"""Bench: per-task cost of the multiuser native engine's OS user (creation and removal).

Usage (as root): ``.venv/bin/python bench/multiuser.py [--runs 100] [--dir DIR]``

Measures, each as the median (and p90) over ``--runs`` runs:

- ``create user``: :func:`~tcworker.engines.taskuser.create_task_user` (``useradd``, chown, chmod);
- ``remove user``: :meth:`TaskUser.remove` (uid-wide kill scan, ``/tmp`` sweep, ``userdel -r``);
- ``run as current user`` / ``run as task user``: a whole sandbox (create, run ``true``, dispose)
  through :class:`~tcworker.engines.native.NativeEngine` in each mode; their difference is what
  the multiuser mode adds to a task.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

from tcworker.config import WorkerConfig
from tcworker.engines.base import SandboxSpec
from tcworker.engines.native import NativeEngine
from tcworker.engines.taskuser import create_task_user
from tcworker.logs import TaskLog

ENV = {"PATH": "/usr/local/bin:/usr/bin:/bin"}


def summary(name: str, samples: list[float]) -> str:
    ordered = sorted(samples)
    p90 = ordered[int(len(ordered) * 0.9) - 1]
    return f"| {name} | {statistics.median(samples) * 1000:.1f} | {p90 * 1000:.1f} | {len(samples)} |"


async def user_cycle(parent: Path, runs: int) -> tuple[list[float], list[float]]:
    created, removed = [], []
    for i in range(runs):
        home = parent / f"home-{i}"
        home.mkdir()
        start = time.perf_counter()
        user = await create_task_user("BenchTaskIdAbCdEfGhIjKl", i % 50, home)
        created.append(time.perf_counter() - start)
        start = time.perf_counter()
        await user.remove(keep_home=False)
        removed.append(time.perf_counter() - start)
        shutil.rmtree(home, ignore_errors=True)
    return created, removed


async def sandbox_cycle(parent: Path, runs: int, multiuser: bool) -> list[float]:
    config = WorkerConfig.from_mapping({"tasksDir": str(parent / ("mu" if multiuser else "cu")),
                                        "runTasksAsCurrentUser": not multiuser}, environ={})
    engine = NativeEngine(config)
    await engine.boot()
    samples = []
    for i in range(runs):
        log = TaskLog(parent / f"log-{multiuser}-{i}")
        start = time.perf_counter()
        sandbox = await engine.create_sandbox("BenchTaskIdAbCdEfGhIjKl", 0, log)
        result = await sandbox.run(SandboxSpec(commands=(("true",),), env=ENV))
        await sandbox.dispose()
        samples.append(time.perf_counter() - start)
        log.close()
        os.unlink(log.path)
        assert result.succeeded, result
    return samples


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=100)
    parser.add_argument("--dir", default="/tmp", help="parent of the bench's 0711 work folder")
    args = parser.parse_args()
    if os.geteuid() != 0:
        sys.exit("bench/multiuser.py needs root (useradd)")
    parent = Path(tempfile.mkdtemp(prefix="tcw-bench-mu-", dir=args.dir))
    parent.chmod(0o711)
    try:
        created, removed = await user_cycle(parent, args.runs)
        current = await sandbox_cycle(parent, args.runs, multiuser=False)
        task_user = await sandbox_cycle(parent, args.runs, multiuser=True)
    finally:
        shutil.rmtree(parent, ignore_errors=True)
    print("| step | median (ms) | p90 (ms) | runs |")
    print("|---|---|---|---|")
    for name, samples in (("create user", created), ("remove user", removed),
                          ("run `true` as current user (create+run+dispose)", current),
                          ("run `true` as task user (create+run+dispose)", task_user)):
        print(summary(name, samples))
    added = statistics.median(task_user) - statistics.median(current)
    print(f"\nmultiuser adds {added * 1000:.1f} ms per task (median difference)")


if __name__ == "__main__":
    asyncio.run(main())
