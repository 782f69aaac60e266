"""Native-engine behaviour beyond the conformance suite: command sequences, task directories, boot
sweeps, the exit block, echo, and the session-based fallback used where cgroup v2 is missing."""

from __future__ import annotations

import asyncio
import io
import re
import subprocess
import uuid
from pathlib import Path

import pytest

from tcworker.config import WorkerConfig
from tcworker.engines.base import ExitResult, SandboxSpec
from tcworker.engines.native import TASK_DIR_PREFIX, NativeEngine
from tcworker.engines.outcome import go_duration
from tcworker.engines.proctree import CgroupTree, cgroup_prefix
from tcworker.logs import TaskLog
from tcworker.testing.conformance import MARKER_VAR, PATH, Harness, sh, survivors


@pytest.fixture
def config(tmp_path: Path) -> WorkerConfig:
    return WorkerConfig.from_mapping(
        {"tasksDir": str(tmp_path / "tasks"), "killGracePeriodSecs": 0.5, "outputDrainSecs": 0.5}
    )


async def make_harness(engine: NativeEngine, tmp_path: Path, echo: io.BytesIO | None = None) -> Harness:
    await engine.boot()
    log = TaskLog(tmp_path / f"log-{uuid.uuid4().hex}", echo=echo)
    return Harness(await engine.create_sandbox("fQaBcDeFgHiJkLmNoPqRsT", 3, log), log, uuid.uuid4().hex)


@pytest.fixture
async def harness(config: WorkerConfig, tmp_path: Path):
    h = await make_harness(NativeEngine(config), tmp_path)
    yield h
    await h.sandbox.dispose()
    h.log.close()


async def test_commands_run_in_order_and_stop_at_the_first_failure(harness: Harness) -> None:
    result = await harness.run(sh("echo first"), sh("echo second; exit 4"), sh("echo third"))
    assert (result.exit_code, result.failed_command) == (4, 1)
    out = harness.output()
    assert b"first\n" in out and b"second\n" in out and b"third" not in out.replace(b"echo third", b"")
    assert b"Executing command 2" not in out


async def test_a_start_error_stops_the_sequence(harness: Harness) -> None:
    result = await harness.run(sh("true"), ("/nonexistent/x",), sh("echo never"))
    assert result.failed_command == 1 and result.start_error == "/nonexistent/x: No such file or directory"
    assert b"Exit Code: none (command did not start)" in harness.output()


async def test_exit_block_has_generic_workers_layout(harness: Harness) -> None:
    await harness.run(sh("exit 0"), sh("kill -KILL $$"))
    text = harness.output().decode()
    ts = r"\[taskcluster \d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z\] "
    for field in ("   Exit Code: 0", "   Wall Time: ", "      Result: SUCCEEDED",
                  "   Exit Code: -1 \\(killed by SIGKILL\\)", "      Result: FAILED"):
        assert re.search(ts + field, text), field


async def test_commands_run_in_the_task_dir_and_the_dir_is_ours(harness: Harness, config: WorkerConfig) -> None:
    await harness.run(("pwd",))
    task_dir = harness.sandbox.task_dir
    assert task_dir.parent == Path(config.tasks_dir).absolute()
    assert task_dir.name.startswith(f"{TASK_DIR_PREFIX}fQaBcDeFgHiJkLmNoPqRsT-3-")
    assert f"\n{task_dir}\n".encode() in harness.output()


async def test_signal_death_is_reported_as_signal_not_exit_code(harness: Harness) -> None:
    result = await harness.run(sh("kill -TERM $$"))
    assert result.exit_code is None and result.signal == 15 and result.failed_command == 0


async def test_echo_receives_the_same_bytes_as_the_file(config: WorkerConfig, tmp_path: Path) -> None:
    echo = io.BytesIO()
    h = await make_harness(NativeEngine(config), tmp_path, echo=echo)
    await h.run(sh("printf 'x\\377y\\n'; echo err >&2"))
    await h.sandbox.dispose()
    h.log.close()
    assert echo.getvalue() == h.output() and b"x\xffy\nerr\n" in echo.getvalue()


async def test_a_reader_following_the_log_sees_output_live(harness: Harness) -> None:
    run = harness.start(sh("echo ready; sleep 600"))
    await harness.wait_for_output(b"ready\n")  # the command is still running
    assert not run.done()
    await harness.sandbox.abort("test over")
    assert (await run).aborted


async def test_run_twice_is_refused(harness: Harness) -> None:
    await harness.run(sh("true"))
    with pytest.raises(RuntimeError):
        await harness.run(sh("true"))


def test_spec_rejects_empty_commands() -> None:
    with pytest.raises(ValueError):
        SandboxSpec(commands=(), env={})
    with pytest.raises(ValueError):
        SandboxSpec(commands=((),), env={})
    with pytest.raises(ValueError):
        SandboxSpec(commands=(("true",),), env={}, max_run_time_s=0)


def test_exit_result_succeeded_needs_exit_zero_and_no_abort() -> None:
    assert ExitResult(exit_code=0).succeeded
    assert not ExitResult(exit_code=0, aborted=True).succeeded
    assert not ExitResult(exit_code=None, start_error="x", failed_command=0).succeeded


def test_go_duration() -> None:
    assert [go_duration(s) for s in (0, 5e-7, 0.0123, 1.5, 125.25, 3725)] == [
        "0s", "0.5µs", "12.3ms", "1.5s", "2m5.25s", "1h2m5s"]


def test_survivors_sees_marked_processes_and_ignores_others() -> None:
    marker = uuid.uuid4().hex
    proc = subprocess.Popen(["sleep", "600"], env={"PATH": PATH, MARKER_VAR: marker})
    try:
        assert survivors(marker) == [proc.pid]
        assert survivors(uuid.uuid4().hex) == []
    finally:
        proc.kill()
        proc.wait()
    assert survivors(marker) == []


async def test_boot_sweeps_leftover_dirs_and_cgroups(config: WorkerConfig, tmp_path: Path) -> None:
    engine = NativeEngine(config, use_cgroup=True)
    await engine.boot()
    tasks_dir = Path(config.tasks_dir).absolute()
    (tasks_dir / f"{TASK_DIR_PREFIX}old-0-x").mkdir()
    (tasks_dir / "not-ours").mkdir()
    base = engine._cgroup_base
    assert base is not None
    leftover = CgroupTree(base / (cgroup_prefix(tasks_dir) + "tcw-task-old-0-x"))
    marker = uuid.uuid4().hex
    proc = subprocess.Popen(["sleep", "600"], env={MARKER_VAR: marker, "PATH": PATH},
                            preexec_fn=leftover.preexec(), start_new_session=True)
    await NativeEngine(config, use_cgroup=True).boot()  # a restarted worker
    assert proc.wait(timeout=10) == -9
    assert not leftover.path.exists()
    assert sorted(p.name for p in tasks_dir.iterdir()) == ["not-ours"]


# -------------------------------------------------------------------- fallback without cgroup v2
@pytest.fixture
async def fallback(config: WorkerConfig, tmp_path: Path):
    engine = NativeEngine(config, use_cgroup=False)
    h = await make_harness(engine, tmp_path)
    assert not engine.uses_cgroup
    yield h
    await h.sandbox.dispose()
    h.log.close()


async def test_fallback_keeps_exit_codes_and_output(fallback: Harness) -> None:
    result = await fallback.run(sh("echo out; echo err >&2; exit 5"))
    assert result.exit_code == 5 and b"out\nerr\n" in fallback.output()


async def test_fallback_abort_kills_the_tree_with_a_setsid_child_of_a_live_parent(fallback: Harness) -> None:
    run = fallback.start(sh("sleep 600 & setsid sh -c \"trap '' TERM; sleep 600\" & echo ready; wait"))
    await fallback.wait_for_output(b"ready\n")
    await asyncio.wait_for(fallback.sandbox.abort("fallback abort"), 30)
    assert (await run).aborted
    assert fallback.survivors() == []


async def test_fallback_fm17_bounded_drain(fallback: Harness) -> None:
    result = await fallback.run(sh("(sleep 8; echo bg) & echo fg"))
    assert result.duration_s < 5 and fallback.survivors() == []


async def test_fallback_fm08_nohup_child_is_killed(fallback: Harness) -> None:
    result = await fallback.run(sh("nohup sleep 600 & echo done"))
    assert result.succeeded and fallback.survivors() == []


async def test_concurrent_runs_are_independent(config: WorkerConfig, tmp_path: Path) -> None:
    engine = NativeEngine(config)
    first, second = await make_harness(engine, tmp_path), await make_harness(engine, tmp_path)
    try:
        runs = [h.start(sh("setsid sleep 600 & echo ready; sleep 600")) for h in (first, second)]
        for h in (first, second):
            await h.wait_for_output(b"ready\n")
        await first.sandbox.abort("only the first")
        assert (await runs[0]).aborted and first.survivors() == []
        assert not runs[1].done() and second.survivors() != []
        await second.sandbox.abort("now the second")
        assert (await runs[1]).aborted and second.survivors() == []
    finally:
        for h in (first, second):
            await h.sandbox.dispose()
            h.log.close()


async def test_max_run_time_spans_all_commands(harness: Harness) -> None:
    result = await harness.run(sh("sleep 0.3"), sh("sleep 0.3"), sh("sleep 600"), sh("echo never"),
                               max_run_time_s=1)
    assert result.timed_out and result.failed_command == 2
    assert b"\nnever\n" not in harness.output()
