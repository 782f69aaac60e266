"""The native engine's exec wrapper (cgroup join through ``/bin/sh`` so that CPython can vfork):
when it is taken, that it keeps env and argv exact and joins the cgroup, and that every command
that cannot start is still a start failure (never exit code 126/127)."""

from __future__ import annotations

import os
import shutil
import uuid
from pathlib import Path

import pytest

from tcworker.config import WorkerConfig
from tcworker.engines import execwrap
from tcworker.engines.execwrap import ExecWrapper
from tcworker.engines.native import NativeEngine
from tcworker.logs import TaskLog
from tcworker.testing.conformance import Harness, sh

HOST = execwrap.elf_machine(Path("/proc/self/exe").read_bytes()[:64])
DASH = os.path.realpath("/bin/sh").endswith("dash")


@pytest.fixture
async def engine(tmp_path: Path) -> NativeEngine:
    config = WorkerConfig.from_mapping({"tasksDir": str(tmp_path / "tasks"), "killGracePeriodSecs": 0.5,
                                        "outputDrainSecs": 0.5})
    engine = NativeEngine(config)
    await engine.boot()
    if engine.uses_cgroup and DASH:
        assert engine._wrapper is not None, "dash and cgroup v2: the probe must accept the wrapper"
    return engine


@pytest.fixture
async def harness(engine: NativeEngine, tmp_path: Path):
    h = await _harness(engine, tmp_path)
    yield h
    await h.sandbox.dispose()
    h.log.close()


async def _harness(engine: NativeEngine, tmp_path: Path) -> Harness:
    log = TaskLog(tmp_path / f"log-{uuid.uuid4().hex}")
    return Harness(await engine.create_sandbox("fQaBcDeFgHiJkLmNoPqRsT", 0, log), log, uuid.uuid4().hex)


def plan(argv: list[bytes], env: dict[bytes, bytes], cwd: Path = Path("/")) -> list[bytes] | None:
    planned = ExecWrapper(HOST).plan(argv, env, cwd, Path("/cg/cgroup.procs"))
    return None if planned is None else planned[0]


def test_plan_takes_the_wrapper_only_when_nothing_can_differ(tmp_path: Path) -> None:
    env = {b"PATH": b"/usr/bin:/bin", b"HOME": b"/h"}
    assert plan([b"true", b"x"], env)[-2:] == [b"true", b"x"]
    assert plan([b"true"], {**env, b"PWD": b"/p"})[5:] == [b"/p", b"true"]
    assert plan([b"true"], {b"HOME": b"/h"}) is None  # no PATH: Popen and dash search different defaults
    assert plan([b"true"], {**env, b"PATH": b"/usr/bin%x:/bin"}) is None
    assert plan([b"true"], {**env, b"A-B": b"1"}) is None  # dash drops non-identifiers
    assert plan([b"true"], {**env, b"IFS": b":"}) is None  # dash resets it
    assert plan([b"no-such-command-here"], env) is None  # Popen reports why
    script = tmp_path / "noshebang"
    script.write_text("echo hi\n")
    script.chmod(0o755)
    assert plan([str(script).encode()], env) is None  # ENOEXEC: dash would run it as a script
    script.write_text("#!/no/such/interpreter\n")
    assert plan([str(script).encode()], env) is None
    script.write_text("#!/bin/sh -e\necho hi\n")
    assert plan([b"./noshebang"], env, tmp_path) is not None  # relative to the task directory


def test_plan_checks_the_elf_interpreter(tmp_path: Path) -> None:
    binary = tmp_path / "true"
    shutil.copy("/bin/true", binary)
    env = {b"PATH": b"/usr/bin:/bin"}
    interp = execwrap._elf_interpreter(open(binary, "rb"), binary.read_bytes()[:256])
    if not interp:
        pytest.skip("/bin/true is static here: no ELF interpreter to break")
    assert plan([str(binary).encode()], env) is not None
    binary.write_bytes(binary.read_bytes().replace(interp, interp[:-1] + b"X"))
    assert plan([str(binary).encode()], env) is None


async def test_env_and_argv_are_exact_through_the_wrapper(engine: NativeEngine, tmp_path: Path) -> None:
    for extra in ({}, {"PWD": "/not/the/task/dir", "OLDPWD": "/o", "TERM": "dumb"}):
        h = await _harness(engine, tmp_path)
        try:
            env = h.env({"V": "a b\n\tc=d \u00e9", "EMPTY": "", **extra})
            assert plan([b"env"], {k.encode(): v.encode() for k, v in env.items()}) is not None
            result = await h.run(("printf", "%s|", "a b", "", "\u00e9"), ("env", "-0"), env=extra | {"V": env["V"], "EMPTY": ""})
            assert result.exit_code == 0
            out = h.output()
            assert "a b||\u00e9|".encode() in out
            body = out[out.index(b"\n", out.index(b"Executing command 1")) + 1:out.rindex(b"\0") + 1]
            seen = dict(item.split(b"=", 1) for item in body.split(b"\0") if item)
            assert seen == {k.encode(): v.encode() for k, v in env.items()}
        finally:
            await h.sandbox.dispose()
            h.log.close()


async def test_the_command_is_in_the_runs_cgroup(harness: Harness) -> None:
    result = await harness.run(("cat", "/proc/self/cgroup"))
    assert result.exit_code == 0
    if harness.sandbox._tree.procs_path is not None:
        assert harness.sandbox._tree.path.name.encode() in harness.output()


async def test_an_exec_failure_inside_the_wrapper_is_a_start_error(
    harness: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(ExecWrapper, "_runnable", lambda self, exe, env, cwd: True)  # as if a race
    result = await harness.run(("/nonexistent/cmd",), sh("echo never"))
    assert result.start_error == "/nonexistent/cmd: No such file or directory"
    assert result.exit_code is None and result.failed_command == 0
    assert b"Exit Code: none (command did not start)" in harness.output()
    assert not list(harness.sandbox.task_dir.glob(".tcw-exec-failed-*"))


async def test_files_the_kernel_cannot_exec_are_start_errors(harness: Harness) -> None:
    task_dir = harness.sandbox.task_dir
    (task_dir / "noshebang").write_text("echo ran-as-a-script\n")
    (task_dir / "noshebang").chmod(0o755)
    result = await harness.run((str(task_dir / "noshebang"),))
    assert result.start_error and result.start_error.endswith("Exec format error")
    assert b"ran-as-a-script\n" not in harness.output()


async def test_a_script_without_its_interpreter_is_a_start_error(harness: Harness) -> None:
    script = harness.sandbox.task_dir / "badinterp"
    script.write_text("#!/no/such/interpreter\necho ran\n")
    script.chmod(0o755)
    result = await harness.run(("./badinterp",))
    assert result.start_error == "./badinterp: No such file or directory"
