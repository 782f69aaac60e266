"""The engine interface: :class:`Engine` makes :class:`Sandbox` es, a sandbox runs one task run.

An engine is long-lived (one per kind per worker); a sandbox lives for one run::

    engine = NativeEngine(config)
    await engine.boot()                                  # once: check usable, sweep leftovers
    sandbox = await engine.create_sandbox(task_id, run_id, log)
    try:
        result = await sandbox.run(SandboxSpec(commands=..., env=...))
        root = await sandbox.artifact_root()             # collect artifacts from here
    finally:
        await sandbox.dispose(keep=False)

``abort(reason)`` may come from any other coroutine at any time (cancellation, maxRunTime, worker
shutdown). Every engine must pass the conformance suite in :mod:`tcworker.testing.conformance`.

What does not live here: payload parsing, environment building, artifact upload, resolution.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Mapping

if TYPE_CHECKING:
    from tcworker.logs import TaskLog


@dataclass(frozen=True)
class SandboxSpec:
    """What a sandbox runs.

    Attributes:
        commands: argv per command, from ``task.payload.command`` (native: run in order in the
            task directory, stopping at the first failure; docker: the container's command).
        env: the complete environment of the commands (the task runner builds it); names and
            values reach the process byte-exact (UTF-8), never through a shell.
        max_run_time_s: wall-clock budget in seconds for all commands together (``maxRunTime``),
            or None for no limit. When exceeded the tree is terminated like :meth:`Sandbox.abort`
            and the result has ``timed_out=True``.
        os_groups: OS group names the commands also run in (native ``osGroups``, scope-checked);
            only engines with a user per run (native multiuser) add them; others ignore them.
        engine_options: engine-specific settings built by the engine's plugin (docker:
            :class:`tcworker.engines.docker.ContainerOptions`); None for the engine's defaults.

    A single empty argv, ``((),)``, means "the sandbox's default command" (docker: the image's);
    it is accepted only with ``engine_options`` (an engine with a default command sets them).

    Raises:
        ValueError: no command, an empty argv (except as above), or a non-positive
            ``max_run_time_s``.
    """

    commands: tuple[tuple[str, ...], ...]
    env: Mapping[str, str]
    max_run_time_s: float | None = None
    engine_options: Any = None
    os_groups: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if not self.commands:
            raise ValueError("SandboxSpec.commands must hold at least one command")
        default_command = self.commands == ((),) and self.engine_options is not None
        if not default_command and any(len(argv) == 0 for argv in self.commands):
            raise ValueError("every command in SandboxSpec.commands needs at least one argument")
        if self.max_run_time_s is not None and self.max_run_time_s <= 0:
            raise ValueError(f"max_run_time_s must be positive, got {self.max_run_time_s}")


@dataclass(frozen=True)
class ExitResult:
    """How :meth:`Sandbox.run` ended.

    Attributes:
        exit_code: exit status of the last command run; None if it never started or was killed by
            a signal.
        failed_command: index into ``SandboxSpec.commands`` of the command that failed, could not
            start, timed out or was aborted; None when every command succeeded.
        start_error: why that command could not be started (no such file, not executable...): the
            task failed, and this is never an exit code.
        signal: number of the signal that killed the last command, if any.
        aborted: :meth:`Sandbox.abort` was called during the run (or before it).
        timed_out: ``max_run_time_s`` was exceeded (→ task failed, reason in the log).
        duration_s: wall-clock seconds of the whole run, as float.
    """

    exit_code: int | None = None
    failed_command: int | None = None
    start_error: str | None = None
    signal: int | None = None
    aborted: bool = False
    timed_out: bool = False
    duration_s: float = 0.0

    @property
    def succeeded(self) -> bool:
        """Every command ran and exited 0, with no abort and no timeout."""
        return (
            self.exit_code == 0
            and self.failed_command is None
            and self.start_error is None
            and not self.aborted
            and not self.timed_out
        )


class Sandbox(ABC):
    """One run's isolated place to execute commands.

    Attributes:
        task_dir: host directory of the task (native: the commands' working directory).
        owner: ``(uid, gid)`` the commands run as when the engine gives each run its own OS user
            (native multiuser); None when they run as the worker's user. Whatever a plugin puts
            into the task (mounts, caches) must belong to it (``chown -R``).
        user_env: the base environment of that user (``PATH``, ``HOME``, ``USER``, ``LOGNAME``),
            taken instead of the worker's own; None: the worker's.
    """

    task_dir: Path
    owner: tuple[int, int] | None = None
    user_env: Mapping[str, str] | None = None

    @abstractmethod
    async def run(self, spec: SandboxSpec) -> ExitResult:
        """Run the commands, writing ``Executing command i: ...``, their output and an exit block
        to the task log. Kills and reaps everything the commands started before returning.

        Cancellation-safe: on ``CancelledError`` the process tree is killed and reaped, then the
        cancellation propagates. Call it at most once per sandbox.

        Raises:
            RuntimeError: called a second time, or after :meth:`dispose`.
            OSError: the task log could not be written.
        """

    @abstractmethod
    async def abort(self, reason: str) -> None:
        """Stop the run: SIGTERM to the whole tree, a grace period, then SIGKILL.

        ``run()`` then returns with ``aborted=True``. Returns once the tree is gone. Idempotent;
        fine before ``run()`` (which then starts nothing) and after it (no effect).

        Args:
            reason: one line for the task log, for example ``"task cancelled"``.
        """

    @abstractmethod
    async def artifact_root(self) -> Path:
        """Directory that relative artifact paths resolve against (native: ``task_dir``).

        Readable after ``run()`` returned, until :meth:`dispose`.
        """

    @abstractmethod
    async def dispose(self, keep: bool = False) -> None:
        """Kill leftovers and free the sandbox's resources; remove the task dir unless ``keep``.

        Idempotent; safe whether or not ``run()`` was called or finished.
        """


class Engine(ABC):
    """A kind of sandbox (native processes, docker containers); one instance per worker.

    Attributes:
        name: the engine's name as used in config and payload routing (``"native"``, ``"docker"``).
    """

    name: ClassVar[str]

    @abstractmethod
    async def boot(self) -> None:
        """Check the engine is usable here and sweep leftovers carrying tcworker's prefix.

        Raises:
            ConfigError: the engine cannot work on this machine with this config.
        """

    @abstractmethod
    async def create_sandbox(self, task_id: str, run_id: int, log: "TaskLog") -> Sandbox:
        """Make a fresh sandbox for one run.

        Args:
            task_id: the task's slugid.
            run_id: the run number (0-based).
            log: the run's task log; the sandbox writes command echoes, output and exit blocks.

        Raises:
            OSError: the task directory could not be created.
        """
