"""Boot sweeps that share a tasks directory with live runs (another worker, ``tcworker exec``):
a live run's directory and cgroup are left alone, a dead run's are removed, and exec never sweeps.

What does not live here: the plain leftover sweep (``test_native.py``), deep trees
(``test_deep_trees.py``).
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from tcworker.config import WorkerConfig
from tcworker.engines.base import SandboxSpec
from tcworker.engines.native import TASK_DIR_PREFIX, NativeEngine
from tcworker.engines.proctree import cgroup_prefix
from tcworker.engines.registry import make_engines
from tcworker.logs import TaskLog
from tcworker.testing.conformance import PATH


@pytest.fixture
def config(tmp_path: Path) -> WorkerConfig:
    return WorkerConfig.from_mapping(
        {"tasksDir": str(tmp_path / "tasks"), "killGracePeriodSecs": 0.5, "outputDrainSecs": 0.5}
    )


async def test_a_second_engine_boot_leaves_a_live_run_alone(config: WorkerConfig, tmp_path: Path) -> None:
    first = NativeEngine(config)
    await first.boot()
    log = TaskLog(tmp_path / "log-first")
    sandbox = await first.create_sandbox("fQaBcDeFgHiJkLmNoPqRsT", 0, log)
    tasks_dir = Path(config.tasks_dir).absolute()
    dead = tasks_dir / f"{TASK_DIR_PREFIX}dead-0-x"  # no lock held: a crashed run's
    dead.mkdir()
    ready = sandbox.task_dir / "ready"
    spec = SandboxSpec(commands=(("/bin/sh", "-c", "touch ready; sleep 600"),), env={"PATH": PATH},
                       max_run_time_s=60)
    run = asyncio.ensure_future(sandbox.run(spec))
    try:
        while not ready.exists():
            await asyncio.sleep(0.05)
        second = NativeEngine(config)  # another worker (or an old exec) on the same tasks dir
        await second.boot()
        assert not dead.exists()
        assert sandbox.task_dir.is_dir()
        assert not run.done()
        if first.uses_cgroup:
            cgroup = first._cgroup_base / (cgroup_prefix(tasks_dir) + sandbox.task_dir.name)
            assert cgroup.is_dir()
        other = await second.create_sandbox("fQaBcDeFgHiJkLmNoPqRsT", 1, TaskLog(tmp_path / "log-second"))
        result = await other.run(SandboxSpec(commands=(("/bin/true",),), env={"PATH": PATH}, max_run_time_s=60))
        assert result.succeeded
        await other.dispose()
        assert not run.done() and sandbox.task_dir.is_dir()
    finally:
        await sandbox.abort("test over")
        await run
        await sandbox.dispose()
        log.close()
    assert not sandbox.task_dir.exists()
    await NativeEngine(config).boot()  # the lock went with the run: nothing left to keep
    assert [p for p in tasks_dir.iterdir()] == []


async def test_exec_engines_do_not_sweep(config: WorkerConfig) -> None:
    tasks_dir = Path(config.tasks_dir).absolute()
    leftover = tasks_dir / f"{TASK_DIR_PREFIX}someone-0-{uuid.uuid4().hex[:6]}"
    leftover.mkdir(parents=True)
    await make_engines(config, only="native", sweep=False)["native"].boot()
    assert leftover.is_dir()
    await make_engines(config, only="native")["native"].boot()
    assert not leftover.exists()


def test_two_execs_in_one_tasks_dir_do_not_kill_each_other(tmp_path: Path) -> None:
    tasks = tmp_path / "tasks"
    (tmp_path / "worker.yml").write_text(json.dumps({"tasksDir": str(tasks)}))
    first = {"payload": {"maxRunTime": 120, "command": [[
        "/bin/sh", "-c", "touch ../first-ready; while [ ! -e ../second-done ]; do sleep 0.05; done; echo first-ok"]]}}
    second = {"payload": {"maxRunTime": 120, "command": [["/bin/sh", "-c", "echo second-ok"]]}}
    (tmp_path / "first.json").write_text(json.dumps(first))
    (tmp_path / "second.json").write_text(json.dumps(second))
    env = {k: v for k, v in os.environ.items() if not k.startswith("TASKCLUSTER_")}

    def argv(name: str) -> list[str]:
        return [sys.executable, "-m", "tcworker", "exec", f"{name}.json", "--config", "worker.yml", "--out", name]

    proc = subprocess.Popen(argv("first"), cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 60
        while not (tasks / "first-ready").exists():
            assert proc.poll() is None and time.monotonic() < deadline, proc.stderr.read().decode()
            time.sleep(0.05)
        done = subprocess.run(argv("second"), cwd=tmp_path, env=env, capture_output=True, timeout=120)
        assert done.returncode == 0, done.stderr.decode()
        (tasks / "second-done").touch()
        _, err = proc.communicate(timeout=60)
        assert proc.returncode == 0, err.decode()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert b"first-ok" in (tmp_path / "first" / "public/logs/live_backing.log").read_bytes()
