"""Background processes of one command serve the next (generic-worker, peer-workers.md 1.2), and
nothing survives the run: success, a failing command, an abort.

What does not live here: the bounded drain and survivors of the last command (the conformance
suite, FM-08/FM-17 in ``tests/test_exec.py``).
"""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path

import pytest

from tcworker.config import WorkerConfig
from tcworker.engines.base import SandboxSpec
from tcworker.engines.native import NativeEngine
from tcworker.logs import TaskLog
from tcworker.testing.conformance import MARKER_VAR, PATH, survivors


@pytest.fixture(params=["cgroup", "session"])
async def run_in(request, tmp_path: Path):
    config = WorkerConfig.from_mapping(
        {"tasksDir": str(tmp_path / "tasks"), "killGracePeriodSecs": 0.5, "outputDrainSecs": 0.5}
    )
    engine = NativeEngine(config, use_cgroup=None if request.param == "cgroup" else False)
    await engine.boot()
    marker = uuid.uuid4().hex
    made = []

    async def run(*commands: str):
        log = TaskLog(tmp_path / f"log-{uuid.uuid4().hex}")
        sandbox = await engine.create_sandbox("fQaBcDeFgHiJkLmNoPqRsT", len(made), log)
        made.append((sandbox, log))
        spec = SandboxSpec(commands=tuple(("/bin/sh", "-c", c) for c in commands),
                           env={"PATH": PATH, MARKER_VAR: marker}, max_run_time_s=60)
        return sandbox, await sandbox.run(spec), log

    run.marker = marker
    yield run
    for sandbox, log in made:
        await sandbox.dispose()
        log.close()
    assert survivors(marker) == []


async def test_a_background_process_of_one_command_serves_the_next(run_in) -> None:
    _, result, log = await run_in(
        "(sleep 30; echo never) & echo $! > bg.pid; echo started",
        "kill -0 $(cat bg.pid) && echo still-alive",
    )
    assert result.succeeded, log.path.read_text()
    text = log.path.read_text()
    assert "\nstarted\n" in text and "\nstill-alive\n" in text and "\nnever\n" not in text
    assert survivors(run_in.marker) == []  # nothing outlives the run


async def test_background_output_reaches_the_log_while_the_next_command_runs(run_in) -> None:
    _, result, log = await run_in(
        "(sleep 0.3; echo from-background; sleep 30) & true",
        "sleep 1; echo next",
    )
    assert result.succeeded
    text = log.path.read_text()
    assert text.index("Executing command 1") < text.index("\nfrom-background\n") < text.index("\nnext\n")
    assert survivors(run_in.marker) == []


async def test_a_failing_command_ends_the_run_and_its_background(run_in) -> None:
    _, result, log = await run_in("sleep 30 & exit 3", "echo not-run")
    assert not result.succeeded
    assert "not-run" not in log.path.read_text()
    assert survivors(run_in.marker) == []


async def test_cancelling_between_commands_kills_the_background(run_in) -> None:
    task = asyncio.ensure_future(run_in("sleep 30 & true", "sleep 30"))
    for _ in range(200):  # both sleeps running: the first's background survived command 0
        if len(survivors(run_in.marker)) >= 2:
            break
        await asyncio.sleep(0.05)
    assert len(survivors(run_in.marker)) >= 2 and not task.done()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert survivors(run_in.marker) == []
