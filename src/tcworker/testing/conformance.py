"""The engine conformance suite: cases every engine must pass, whatever it runs commands in.

Use it by subclassing :class:`EngineConformance` in a test module and providing an
``engine_factory`` fixture: a callable taking a :class:`~tcworker.config.WorkerConfig` and
returning an (unbooted) :class:`~tcworker.engines.base.Engine`::

    class TestNativeConformance(EngineConformance):
        @pytest.fixture
        def engine_factory(self):
            return NativeEngine

Commands use only ``sh``, ``printf``, ``echo``, ``sleep``, ``setsid``, ``head``, ``cat``, ``env``
and ``trap``, so a busybox container can run them too. Each sandbox gets a unique marker variable
in its environment; "nothing survives" means no live (non-zombie) host process carries it, which
holds for host processes and container processes alike. Every wait is on an event (log output,
run completion), never a fixed sleep; wall-clock checks are only the handed cases' own bounds.

Override ``conformance_config`` to change the config (defaults: short grace and drain).
Handed cases (``../shared/cases/failure-modes.md``): FM-08, FM-09, FM-16, FM-17.
"""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from tcworker.config import WorkerConfig
from tcworker.engines.base import Engine, ExitResult, Sandbox, SandboxSpec
from tcworker.logs import TaskLog

MARKER_VAR = "TCW_CONFORMANCE_MARKER"
PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
#: Seconds within which every "wait for" in the suite must be satisfied (a hang fails, not blocks).
WAIT_S = 30.0


def survivors(marker: str) -> list[int]:
    """PIDs of live (non-zombie) processes whose environment holds ``MARKER_VAR=marker``."""
    needle = f"{MARKER_VAR}={marker}\0".encode()
    found = []
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/environ", "rb") as f:
                if needle not in f.read():
                    continue
            with open(f"/proc/{name}/stat", "rb") as f:
                state = f.read().rsplit(b")", 1)[1].split()[0]
        except (FileNotFoundError, ProcessLookupError, PermissionError):
            continue
        if state != b"Z":
            found.append(int(name))
    return found


@dataclass
class Harness:
    """One sandbox under test, with its log and marker."""

    sandbox: Sandbox
    log: TaskLog
    marker: str

    def env(self, extra: dict[str, str] | None = None) -> dict[str, str]:
        """The environment given to commands: PATH, the marker, and ``extra``."""
        return {"PATH": PATH, MARKER_VAR: self.marker, **(extra or {})}

    async def run(self, *commands: tuple[str, ...], env: dict[str, str] | None = None,
                  max_run_time_s: float | None = None) -> ExitResult:
        """Run commands (argv tuples) to the end."""
        spec = SandboxSpec(commands=tuple(commands), env=self.env(env), max_run_time_s=max_run_time_s)
        return await asyncio.wait_for(self.sandbox.run(spec), WAIT_S + 600)

    def start(self, *commands: tuple[str, ...], **kwargs: object) -> asyncio.Task[ExitResult]:
        """Run commands in the background; returns the task."""
        return asyncio.ensure_future(self.run(*commands, **kwargs))  # type: ignore[arg-type]

    def output(self) -> bytes:
        """The task log's bytes so far."""
        return self.log.path.read_bytes()

    async def wait_for_output(self, needle: bytes) -> None:
        """Return once ``needle`` is in the log (fails after :data:`WAIT_S`)."""
        async def scan() -> None:
            seen = b""
            async for chunk in self.log.follow():
                seen = seen[-len(needle):] + chunk
                if needle in seen:
                    return
            raise AssertionError(f"log closed before {needle!r} appeared")
        await asyncio.wait_for(scan(), WAIT_S)

    def survivors(self) -> list[int]:
        """Live processes started by this sandbox."""
        return survivors(self.marker)


def sh(script: str) -> tuple[str, ...]:
    """argv running ``script`` with ``sh -c``."""
    return ("sh", "-c", script)


class EngineConformance:
    """Cases every engine must pass. Subclass it and define the ``engine_factory`` fixture.

    ``streams_interleave``: False for engines whose stdout and stderr travel separately (docker
    without a TTY): each stream must keep its order, their interleaving is not checked.
    """

    streams_interleave = True

    @pytest.fixture
    def conformance_config(self, tmp_path: Path) -> WorkerConfig:
        """Config for the engine under test: tasks under ``tmp_path``, short grace and drain."""
        return WorkerConfig.from_mapping(
            {"tasksDir": str(tmp_path / "tasks"), "killGracePeriodSecs": 0.5, "outputDrainSecs": 0.5}
        )

    @pytest.fixture
    async def engine(self, engine_factory: Callable[[WorkerConfig], Engine],
                     conformance_config: WorkerConfig) -> Engine:
        engine = engine_factory(conformance_config)
        await engine.boot()
        return engine

    @pytest.fixture
    async def harness(self, engine: Engine, tmp_path: Path) -> AsyncIterator[Harness]:
        log = TaskLog(tmp_path / "live_backing.log")
        sandbox = await engine.create_sandbox("Tcw_Conformance-Ab12", 0, log)
        h = Harness(sandbox, log, uuid.uuid4().hex)
        try:
            yield h
        finally:
            await sandbox.dispose()
            log.close()
            assert h.survivors() == [], "processes survived dispose()"

    # ------------------------------------------------------------------ exit status
    async def test_exit_code_zero_succeeds(self, harness: Harness) -> None:
        result = await harness.run(sh("exit 0"))
        assert result.succeeded and result.exit_code == 0 and result.failed_command is None

    async def test_exit_codes_are_kept(self, harness: Harness) -> None:
        result = await harness.run(sh("exit 3"))
        assert (result.exit_code, result.failed_command, result.succeeded) == (3, 0, False)
        assert result.start_error is None and result.signal is None and not result.aborted

    async def test_command_that_cannot_start_is_a_start_error_not_an_exit_code(self, harness: Harness) -> None:
        result = await harness.run(("/nonexistent/tcw-no-such-program", "arg"))
        assert result.start_error and result.exit_code is None and not result.succeeded
        assert result.failed_command == 0
        assert b"[taskcluster:error] " in harness.output()

    async def test_command_is_echoed_shell_escaped(self, harness: Harness) -> None:
        await harness.run(("printf", "%s\\n", "two words", "it's"))
        assert b"Executing command 0: printf '%s\\n' 'two words' 'it'\"'\"'s'\n" in harness.output()
        assert b"two words\nit's\n" in harness.output()

    # ------------------------------------------------------------------ environment
    async def test_env_values_are_byte_exact(self, harness: Harness) -> None:
        values = {"Q": "a b;&|\"'$HOME`x`", "E": "", "NL": "l1\nl2", "U": "ünï©ødé"}
        result = await harness.run(sh('printf "<%s>" "$Q" "$E" "$NL" "$U"'), env=values)
        assert result.succeeded
        expected = "".join(f"<{v}>" for v in values.values()).encode()
        assert expected in harness.output()

    async def test_env_odd_names_reach_the_process(self, harness: Harness) -> None:
        result = await harness.run(("env",), env={"1X": "one", "A B": "space", "a;b": "semi"})
        assert result.succeeded
        out = harness.output()
        assert b"\n1X=one\n" in out and b"\nA B=space\n" in out and b"\na;b=semi\n" in out

    async def test_env_is_the_given_one_only(self, harness: Harness, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.setenv("TCW_WORKER_SECRET", "must-not-leak")
        await harness.run(("env",))
        assert b"must-not-leak" not in harness.output()

    # ------------------------------------------------------------------ output
    async def test_stdout_and_stderr_reach_the_log_in_order(self, harness: Harness) -> None:
        script = "for i in 1 2 3 4 5 6; do echo out$i; echo err$i >&2; done"
        await harness.run(sh(script))
        lines = [f"out{i}\nerr{i}\n" for i in range(1, 7)]
        if self.streams_interleave:
            assert "".join(lines).encode() in harness.output()
        else:
            out = harness.output()
            for stream in ("out", "err"):
                places = [out.find(f"\n{stream}{i}\n".encode()) for i in range(1, 7)]
                assert -1 not in places and places == sorted(places), (stream, places)

    async def test_large_binary_output_on_both_streams_without_deadlock(self, harness: Harness) -> None:
        size = 8 * 1024 * 1024
        result = await harness.run(sh(f"head -c {size} /dev/urandom > blob; cat blob; cat blob >&2; echo end"))
        assert result.succeeded
        blob = (await harness.sandbox.artifact_root() / "blob").read_bytes()
        assert len(blob) == size
        if self.streams_interleave:
            assert blob + blob + b"end\n" in harness.output()
        else:  # the copies may overlap where one stream ends and the other begins
            out = harness.output()
            half = size // 2
            assert len(out) >= 2 * size + 4 and blob[:half] in out and blob[-half:] in out

    async def test_huge_output_is_copied_completely(self, harness: Harness) -> None:
        size = 64 * 1024 * 1024
        before = harness.log.size_bytes
        result = await harness.run(("head", "-c", str(size), "/dev/zero"))
        assert result.succeeded
        assert harness.log.size_bytes - before >= size

    async def test_fm16_non_utf8_and_split_multibyte_output_keeps_the_bytes(self, harness: Harness) -> None:
        await harness.run(sh("printf 'ok\\n\\377\\376 caf\\351\\n'; echo after"))
        assert b"ok\n\xff\xfe caf\xe9\nafter\n" in harness.output()
        assert b"b'" not in harness.output()

    async def test_fm16_split_multibyte_character_stays_whole(self, harness: Harness) -> None:
        await harness.run(sh("printf 'a\\342\\202'; sleep 0.1; printf '\\254\\n'"))
        assert "a€\n".encode() in harness.output()

    # ------------------------------------------------------------------ process trees
    async def test_fm17_background_child_holding_stdout_is_drained_then_killed(self, harness: Harness) -> None:
        result = await harness.run(sh("(sleep 8; echo bg) & echo fg"))
        assert result.succeeded
        assert result.duration_s < 5, "the drain after the main process must be bounded"
        assert b"\nfg\n" in harness.output() and b"\nbg\n" not in harness.output()
        assert harness.survivors() == []

    async def test_fm08_processes_outliving_the_task_redirected(self, harness: Harness) -> None:
        script = "nohup sleep 600 >/dev/null 2>&1 & setsid sleep 600 </dev/null >/dev/null 2>&1 & echo done"
        result = await harness.run(sh(script))
        assert result.succeeded and result.duration_s < 60
        assert b"done\n" in harness.output()
        assert harness.survivors() == []

    async def test_fm08_processes_outliving_the_task_holding_output(self, harness: Harness) -> None:
        result = await harness.run(sh("nohup sleep 600 & setsid sleep 600 & echo done"))
        assert result.succeeded and result.duration_s < 60
        assert harness.survivors() == []

    async def test_abort_kills_the_whole_tree_including_setsid_children(self, harness: Harness) -> None:
        run = harness.start(sh("sleep 600 & setsid sleep 600 & setsid sh -c 'sleep 600 & wait' & echo ready; wait"))
        await harness.wait_for_output(b"ready\n")
        await harness.sandbox.abort("conformance: abort")
        assert harness.survivors() == [], "abort() returns once the tree is gone"
        result = await run
        assert result.aborted and not result.succeeded and result.failed_command == 0
        assert b"conformance: abort" in harness.output()

    async def test_fm09_term_ignoring_task_is_killed_after_the_grace(self, harness: Harness) -> None:
        run = harness.start(sh("trap '' TERM; echo ready; sleep 600"))
        await harness.wait_for_output(b"ready\n")
        await harness.sandbox.abort("conformance: TERM ignored")
        result = await run
        assert result.aborted and result.signal == 9
        assert harness.survivors() == []

    async def test_fm09_child_in_own_session_ignoring_term_is_killed(self, harness: Harness) -> None:
        run = harness.start(sh("setsid sh -c \"trap '' TERM; echo ready; sleep 600\" & wait"))
        await harness.wait_for_output(b"ready\n")
        await harness.sandbox.abort("conformance: child ignores TERM")
        assert (await run).aborted
        assert harness.survivors() == []

    async def test_fm09_max_run_time_terminates_a_term_ignoring_task(self, harness: Harness) -> None:
        result = await harness.run(sh("trap '' TERM; setsid sh -c \"trap '' TERM; sleep 600\" & sleep 600"),
                                   max_run_time_s=1)
        assert result.timed_out and not result.aborted and not result.succeeded
        assert b"max run time exceeded" in harness.output()
        assert harness.survivors() == []

    async def test_term_handling_task_stops_on_sigterm(self, harness: Harness) -> None:
        run = harness.start(sh("trap 'echo got-term; exit 7' TERM; echo ready; while :; do sleep 0.05; done"))
        await harness.wait_for_output(b"ready\n")
        await harness.sandbox.abort("conformance: polite stop")
        result = await run
        assert result.aborted and result.exit_code == 7
        assert b"got-term\n" in harness.output()

    async def test_cancelled_run_kills_the_tree_and_propagates(self, harness: Harness) -> None:
        run = harness.start(sh("setsid sleep 600 & echo ready; sleep 600"))
        await harness.wait_for_output(b"ready\n")
        run.cancel()
        with pytest.raises(asyncio.CancelledError):
            await run
        assert harness.survivors() == []

    # ------------------------------------------------------------------ life cycle
    async def test_artifacts_are_readable_after_the_run(self, harness: Harness) -> None:
        await harness.run(sh("mkdir -p out/sub && printf hello > out/a.txt && printf x > out/sub/b"))
        root = await harness.sandbox.artifact_root()
        assert (root / "out" / "a.txt").read_bytes() == b"hello"
        assert (root / "out" / "sub" / "b").read_bytes() == b"x"

    async def test_abort_before_run_starts_nothing(self, harness: Harness) -> None:
        await harness.sandbox.abort("conformance: early")
        await harness.sandbox.abort("conformance: early again")
        result = await harness.run(sh("echo must-not-run"))
        assert result.aborted and not result.succeeded
        assert b"must-not-run\n" not in harness.output()

    async def test_abort_after_run_is_harmless(self, harness: Harness) -> None:
        result = await harness.run(sh("exit 0"))
        await harness.sandbox.abort("conformance: late")
        assert result.succeeded

    async def test_dispose_is_idempotent_and_removes_the_task_dir(self, harness: Harness) -> None:
        await harness.run(sh("printf x > file"))
        await harness.sandbox.dispose()
        await harness.sandbox.dispose()
        assert not harness.sandbox.task_dir.exists()

    async def test_dispose_keep_leaves_the_task_dir(self, harness: Harness) -> None:
        await harness.run(sh("printf kept > file"))
        await harness.sandbox.dispose(keep=True)
        assert (harness.sandbox.task_dir / "file").read_bytes() == b"kept"

    async def test_dispose_during_a_run_stops_it(self, harness: Harness) -> None:
        run = harness.start(sh("setsid sleep 600 & echo ready; sleep 600"))
        await harness.wait_for_output(b"ready\n")
        await harness.sandbox.dispose()
        assert (await run).aborted
        assert harness.survivors() == []
