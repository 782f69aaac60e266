"""The plugin base: :class:`Plugin` (one per worker) and :class:`TaskPlugin` (one per run).

Hooks of a run, in this order (``../shared/design/ARCHITECTURE.md``, "One run"):

=================  ==================  ===========================================================
hook               order               errors
=================  ==================  ===========================================================
``prepare``        configured order    end the run (``MalformedPayload``, ``TaskFailed``, ...)
``build_sandbox``  configured order    end the run
``started``        configured order    end the run (the sandbox is aborted)
``stopped``        configured order    end the run (artifacts are still collected and uploaded)
``uploaded``       configured order    end the run; completed/failed runs only, after the payload
                                       artifacts are up, before the log closes and the report
``finished``       reverse order       logged, never change the resolution
``dispose``        reverse order       logged, never change the resolution; always runs
=================  ==================  ===========================================================

Every hook does nothing by default, as dramatiq's middleware does. A hook of a plugin whose
``prepare`` never ran (an earlier plugin failed) is not called, except ``dispose``, which runs
for every task plugin that was created.

What does not live here: the concrete features (one module each in this package) and the order in
which a run calls the hooks (:mod:`tcworker.taskrun`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, ClassVar, Sequence

if TYPE_CHECKING:
    from tcworker.artifact_results import UploadResult
    from tcworker.config import WorkerConfig
    from tcworker.engines.base import ExitResult
    from tcworker.resolution import Resolution
    from tcworker.taskrun import SandboxBuilder, TaskRun


class TaskPlugin:
    """One plugin's state for one run. Subclass and override the hooks you need.

    Attributes:
        reserved_artifacts: artifact names this feature publishes itself; task artifacts
            declared under them are skipped with a warning (generic-worker's ``ReservedArtifacts``).
    """

    reserved_artifacts: ClassVar[tuple[str, ...]] = ()

    def __init__(self, run: "TaskRun") -> None:
        self.run = run

    async def prepare(self) -> None:
        """Before the sandbox exists: check scopes and payload parts, fetch what the run needs."""

    async def build_sandbox(self, builder: "SandboxBuilder") -> None:
        """Add environment variables, mounts and commands to the sandbox being built."""

    async def started(self) -> None:
        """The task's commands have started."""

    async def stopped(self, result: "ExitResult") -> None:
        """The task's commands have ended (normally, by failure, or aborted)."""

    async def uploaded(self, results: "Sequence[UploadResult] | None") -> Sequence[object]:
        """The payload artifacts are published (chain of trust certifies them here).

        Args:
            results: the outlet's :class:`~tcworker.artifact_results.UploadResult` list so far
                (sha256 of each uploaded data artifact); None when the outlet uploads nothing
                before the end (``tcworker exec``: hash ``run.artifacts`` instead).

        Returns:
            more artifacts (``tcworker.artifacts.DataArtifact``...) for the task runner to publish
            now; their upload failures count as the payload artifacts' do.
        """
        return ()

    async def finished(self, resolution: "Resolution") -> None:
        """The run is resolved (reported, or resolved elsewhere); artifacts are up."""

    async def dispose(self) -> None:
        """Release everything the run held. Always called; must be idempotent."""


class Plugin:
    """A worker-wide feature. :meth:`new_run` returns its per-run state, or ``None`` to sit out.

    Attributes:
        name: short name used in logs and in the ``plugins`` order.
        provides: payload features this plugin implements (``taskclusterProxy``,
            ``chainOfTrust``, ``mounts``, ``cache``); a run asking for one that no plugin
            provides resolves ``malformed-payload``.
    """

    name: ClassVar[str] = "plugin"
    provides: ClassVar[frozenset[str]] = frozenset()

    def __init__(self, config: "WorkerConfig") -> None:
        self.config = config

    async def boot(self) -> None:
        """Worker start-up: check what the feature needs, sweep leftovers of a crashed worker."""

    async def shutdown(self) -> None:
        """Worker stop: release worker-wide resources."""

    def new_run(self, run: "TaskRun") -> TaskPlugin | None:
        """Per-run state for ``run``, or ``None`` when the run does not use this feature."""
        return None
