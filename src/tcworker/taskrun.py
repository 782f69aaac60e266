"""One claimed run, stage by stage: :class:`TaskRun`.

``claimed → prepare → build sandbox → running → stopped → upload → resolve → dispose``

The same pipeline serves ``tcworker exec`` (outlet: a folder) and ``tcworker run`` (outlet: the
queue). :meth:`TaskRun.execute` turns every exception into a :class:`~tcworker.resolution.Resolution`
and never lets one escape, except ``asyncio.CancelledError``, after cleaning up.

What does not live here: the mapping of errors to queue calls (:mod:`tcworker.resolution`), the
engines, the claim loop and reclaiming (:mod:`tcworker.worker`, :mod:`tcworker.queue`).
"""

from __future__ import annotations

import asyncio
import logging
import os
import platform
import time
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, BinaryIO, Mapping, Sequence

from tcworker import __version__
from tcworker.config import WorkerConfig
from tcworker.engines.base import Engine, ExitResult, Sandbox, SandboxSpec
from tcworker.errors import (
    IntermittentTask,
    InternalError,
    MalformedPayload,
    ResourceUnavailable,
    RunResolvedElsewhere,
    TaskError,
    TaskFailed,
    TaskException,
    WorkerError,
)
from tcworker.logs import TaskLog
from tcworker.outlet import LogNames, RunOutlet
from tcworker.plugins.base import Plugin, TaskPlugin
from tcworker.resolution import Resolution, after_upload, first_error, resolve
from tcworker.runchecks import check_before_run, check_log_names
from tcworker.taskenv import reserved_env, task_env

log = logging.getLogger(__name__)


@dataclass
class SandboxBuilder:
    """What plugins may change before the sandbox starts: the environment and the commands."""

    commands: tuple[tuple[str, ...], ...]
    env: dict[str, str] = field(default_factory=dict)
    max_run_time_s: float | None = None
    engine_options: Any = None  # engine-specific, set by the engine's plugin (docker: ContainerOptions)
    os_groups: tuple[str, ...] = ()  # native osGroups, scope-checked in prepare

    def spec(self) -> SandboxSpec:
        return SandboxSpec(commands=self.commands, env=dict(self.env), max_run_time_s=self.max_run_time_s,
                           engine_options=self.engine_options, os_groups=self.os_groups)


class TaskRun:
    """One run of one task.

    Args:
        task: the task definition (as ``queue.task`` returns it).
        task_id, run_id: the run being executed.
        config: the worker config.
        engines: engines by name (``native``, ``docker``); the payload's shape picks one.
        outlet: where artifacts, the log and the resolution go.
        log_path: file for the backing log (its parent must exist).
        plugins: worker plugins, in configured order.
        echo: a binary stream that also receives the log (``tcworker exec`` prints it).
        keep_task_dir: leave the task directory in place after the run.
        worker_env: the worker's environment, from which the task's base environment is taken.
    """

    def __init__(
        self,
        *,
        task: Mapping,
        task_id: str,
        run_id: int,
        config: WorkerConfig,
        engines: Mapping[str, Engine],
        outlet: RunOutlet,
        log_path: Path,
        plugins: Sequence[Plugin] = (),
        echo: BinaryIO | None = None,
        keep_task_dir: bool = False,
        worker_env: Mapping[str, str] | None = None,
    ) -> None:
        self.task = task
        self.task_id = task_id
        self.run_id = run_id
        self.config = config
        self.engines = engines
        self.outlet = outlet
        self.plugins = plugins
        self.keep_task_dir = keep_task_dir
        self.worker_env = os.environ if worker_env is None else worker_env
        self.log = TaskLog(log_path, echo=echo)
        self.parsed = None  # tcworker.payloads.ParsedTask once prepare succeeded
        self.sandbox: Sandbox | None = None
        self.result: ExitResult | None = None
        self.log_names = LogNames()
        self.artifacts: list = []
        self.task_plugins: list[TaskPlugin] = []
        # tcworker run: the run's RunQueue (task credentials; on_credentials after each reclaim),
        # set by runclaim.ClaimedRun; None under tcworker exec. Plugins read it (proxy).
        self.queue = None
        self.expanded_scopes: list[str] | None = None  # task.scopes with assume: expanded (tcworker.scopes)
        self._prepared: list[TaskPlugin] = []
        self._abort_error: WorkerError | None = None
        self._aborted = asyncio.Event()
        self._started_at = time.monotonic()

    # ------------------------------------------------------------------ public
    def abort(self, error: WorkerError) -> None:
        """Stop the run as soon as possible with ``error`` as its outcome (first call wins).

        Args:
            error: ``RunResolvedElsewhere`` (cancel, deadline, claim expiry), ``WorkerShutdown``,
                or a ``TaskFailed`` such as maxRunTime.
        """
        if self._abort_error is None:
            self._abort_error = error
            self._aborted.set()

    @property
    def aborted(self) -> bool:
        """True once :meth:`abort` was called (caches of aborted runs are discarded)."""
        return self._abort_error is not None

    async def execute(self) -> Resolution:
        """Run every stage and return the resolution that was (or was not) reported."""
        error: BaseException | None = None
        try:
            try:
                self._write_header()
                await self._prepare()
                await self._run_sandbox()
                error = self._outcome(self.result)
            except (TaskError, RunResolvedElsewhere) as err:
                error = err
            except asyncio.CancelledError:
                raise
            except Exception as err:  # a bug: resolve internal-error, never crash the worker
                log.exception("run %s/%s: unexpected error", self.task_id, self.run_id)
                error = err
            error = first_error(error, self._abort_error)
            self._write_footer()
            try:
                resolution = await self._publish_and_report(error)
            except asyncio.CancelledError:
                raise
            except Exception as err:  # a bug while uploading or reporting: still resolve the run
                log.exception("run %s/%s: unexpected error after the task ran", self.task_id, self.run_id)
                resolution = await self._resolve_after_bug(err)
            await self._call_finished(resolution)
            return resolution
        finally:
            await asyncio.shield(self._dispose())

    # ------------------------------------------------------------------ stages
    def _write_header(self) -> None:
        worker = f"{self.config.worker_group}/{self.config.worker_id}".strip("/") or platform.node()
        self.log.info(f"Worker: {worker} (pool {self.config.worker_pool_id or 'local'})")
        self.log.info(f"tcworker {__version__} on Python {platform.python_version()} ({platform.system()})")
        self.log.info(f"Task ID: {self.task_id}")
        self.log.info(f"Run ID: {self.run_id}")

    async def _prepare(self) -> None:
        from tcworker.payloads import parse_task  # pydantic models: imported when first needed

        self.parsed = parse_task(dict(self.task), self.config)
        check_log_names(self.parsed)
        self.log_names = LogNames(self.parsed.log_names.live, self.parsed.log_names.backing)
        self.log.info(f"Engine: {self.parsed.engine}")
        await check_before_run(self.parsed, self.task, self.config, self.plugins, run=self)
        self.task_plugins = [tp for tp in (p.new_run(self) for p in self.plugins) if tp is not None]
        for task_plugin in self.task_plugins:
            self._check_abort()
            await task_plugin.prepare()
            self._prepared.append(task_plugin)

    async def _run_sandbox(self) -> None:
        engine = self.engines.get(self.parsed.engine)
        if engine is None:
            raise MalformedPayload(f"payload: engine {self.parsed.engine!r} is not enabled on this worker")
        self._check_abort()
        self.sandbox = await engine.create_sandbox(self.task_id, self.run_id, self.log)
        builder = SandboxBuilder(
            commands=self.parsed.commands, env=self._task_env(), max_run_time_s=self.parsed.max_run_time_s,
            os_groups=tuple(getattr(self.parsed.payload, "os_groups", None) or ()),
        )
        for task_plugin in self._prepared:
            await task_plugin.build_sandbox(builder)
        self._check_abort()
        self.log.info("=== Task Starting ===")
        self._started_at = time.monotonic()
        run = asyncio.ensure_future(self.sandbox.run(builder.spec()))
        try:
            for task_plugin in self._prepared:
                await task_plugin.started()
            await self._wait_run(run)
        finally:
            if not run.done():
                # interrupted (a plugin failed, or the run is cancelled hard): no grace period,
                # a cancelled Sandbox.run kills and reaps the whole tree at once
                run.cancel()
                await asyncio.wait([run])
        self.result = run.result()
        for task_plugin in self._prepared:
            await task_plugin.stopped(self.result)

    async def _wait_run(self, run: asyncio.Future) -> None:
        """Until the commands end (the engine enforces maxRunTime) or :meth:`abort` is called."""
        aborted = asyncio.ensure_future(self._aborted.wait())
        try:
            await asyncio.wait({run, aborted}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            aborted.cancel()
        if run.done():
            return
        self.log.error(f"aborting task: {self._abort_error}")
        await self.sandbox.abort(str(self._abort_error))
        await run

    def _outcome(self, result: ExitResult | None) -> TaskError | None:
        if self._abort_error is not None or result is None:
            return None
        if result.timed_out:
            return TaskFailed(f"task aborted - max run time exceeded ({self.parsed.max_run_time_s}s)")
        if result.start_error is not None:
            return TaskFailed(f"command {result.failed_command} could not be started: {result.start_error}")
        if result.succeeded:
            return None
        code = result.exit_code
        if code is not None and code in self.parsed.retry_exit_codes:
            return IntermittentTask(f"command exited with code {code}, listed in onExitStatus.retry")
        if code is None:
            return TaskFailed(f"command {result.failed_command} was killed by signal {result.signal}")
        return TaskFailed(f"command {result.failed_command} exited with code {code}")

    def _write_footer(self) -> None:
        self.log.info("=== Task Finished ===")
        self.log.info(f"Task Duration: {time.monotonic() - self._started_at:.3f}s")

    # ------------------------------------------------------------------ upload and report
    async def _publish_and_report(self, error: BaseException | None) -> Resolution:
        try:
            self.artifacts = await self._collect()
        except (OSError, RecursionError, ValueError) as err:
            # the declared artifacts cannot be read: never report a run without them as
            # completed or failed; the queue retries an internal-error
            self._log_error(f"cannot collect artifacts: {type(err).__name__}: {err}")
            self.artifacts = []
            if not isinstance(error, (TaskException, RunResolvedElsewhere)):
                error = InternalError(f"cannot collect artifacts: {type(err).__name__}: {err}")
        resolution = resolve(error)
        if resolution.upload_first:
            # the queue refuses uploads after reportCompleted/reportFailed: upload first
            error = after_upload(error, await self._publish_artifacts())
            if resolve(error).upload_first:  # plugins' artifacts certify the payload's (CoT)
                error = first_error(error, await self._call_uploaded())
            resolution = resolve(error)
            if resolution.upload_first:
                self._close_log(resolution)
                resolution = resolve(after_upload(error, await self._publish_log()))
                return await self._report(resolution)
            artifacts_done = True
        else:
            artifacts_done = False
        # exceptions: report first (the queue schedules the retry at once), then upload best-effort
        self._close_log(resolution)
        resolution = await self._report(resolution)
        if not artifacts_done:
            await self._publish_artifacts()
        await self._publish_log()
        return resolution

    async def _collect(self) -> list:
        if self.sandbox is None or self.parsed is None:
            return []
        from tcworker.artifacts import collect

        if not self.parsed.features.upload_artifacts:
            return []
        reserved = (self.log_names.live, self.log_names.backing,
                    *(name for plugin in self._prepared for name in plugin.reserved_artifacts))
        root = await self.sandbox.artifact_root()
        specs = self.parsed.artifact_specs
        if self.parsed.engine == "docker":  # container paths, copied out under the root
            specs = [replace(spec, path=spec.path.lstrip("/")) for spec in specs]
        return await asyncio.to_thread(
            collect, specs, root, task_dir=root if self.parsed.engine == "docker" else self.sandbox.task_dir,
            reserved=reserved, warn=self.log.warn,
        )

    async def _call_uploaded(self) -> WorkerError | None:
        """Plugins' ``uploaded`` hooks (configured order), then publish what they returned."""
        extra: list = []
        for task_plugin in self._prepared:
            try:
                extra.extend(await task_plugin.uploaded(self.outlet.results))
            except (TaskError, RunResolvedElsewhere) as err:
                self._log_error(str(err))
                return err
            except asyncio.CancelledError:
                raise
            except Exception as err:  # a plugin's bug or I/O error: internal-error, never a crash
                log.exception("run %s/%s: plugin %s: uploaded hook failed", self.task_id, self.run_id,
                              type(task_plugin).__name__)
                return InternalError(f"plugin {type(task_plugin).__name__}: {err}")
        if not extra:
            return None
        self.artifacts = [*self.artifacts, *extra]
        return await self._publish_artifacts(extra)

    async def _publish_artifacts(self, artifacts: Sequence | None = None) -> TaskError | RunResolvedElsewhere | None:
        """Upload ``artifacts`` (default: the collected ones); returns the error that changes the
        outcome, if any."""
        artifacts = self.artifacts if artifacts is None else artifacts
        missing = [a for a in artifacts if getattr(a, "fails_task", False)]
        try:
            async with asyncio.timeout(self.config.upload_budget_s):
                await self.outlet.publish_artifacts(artifacts)
        except (TaskFailed, ResourceUnavailable, RunResolvedElsewhere) as err:
            self._log_error(str(err))
            return err
        except TimeoutError:
            return ResourceUnavailable(f"artifact upload took longer than {self.config.upload_budget_s}s")
        for artifact in missing:
            self._log_error(f"artifact {artifact.name}: {artifact.reason}: {artifact.message}")
        if missing:
            return TaskFailed(f"{len(missing)} required artifact(s) missing or unreadable: "
                              + ", ".join(a.name for a in missing))
        return None

    async def _publish_log(self) -> WorkerError | None:
        expires = _parse_time(self.task.get("expires")) or datetime.now(timezone.utc) + timedelta(days=365)
        try:
            async with asyncio.timeout(self.config.upload_budget_s):
                await self.outlet.publish_log(self.log.path, self.log_names, expires)
        except (ResourceUnavailable, RunResolvedElsewhere) as err:
            log.warning("run %s/%s: log upload failed: %s", self.task_id, self.run_id, err)
            return err
        except TimeoutError:
            return ResourceUnavailable("task log upload timed out")
        return None

    async def _report(self, resolution: Resolution) -> Resolution:
        """Make the report call; returns the resolution that holds (``state=None`` when refused)."""
        try:
            await self.outlet.report(resolution)
        except RunResolvedElsewhere as err:
            log.info("run %s/%s: report refused, run resolved elsewhere: %s", self.task_id, self.run_id, err)
            return resolve(err)
        return resolution

    async def _resolve_after_bug(self, err: Exception) -> Resolution:
        """Report ``exception/internal-error`` unless a report was already made."""
        resolution = resolve(err)
        if not self.log.closed:
            self._close_log(resolution)
        if getattr(self.outlet, "reporting", False):
            return resolution
        return await self._report(resolution)

    def _close_log(self, resolution: Resolution) -> None:
        if resolution.message:
            self.log.error(resolution.message)
        state = resolution.state or "not reported (resolved elsewhere)"
        reason = f"/{resolution.reason}" if resolution.state == "exception" else ""
        self.log.info(f"Resolution: {state}{reason}")
        self.log.close()

    # ------------------------------------------------------------------ end of the run
    async def _call_finished(self, resolution: Resolution) -> None:
        for task_plugin in reversed(self._prepared):
            try:
                await task_plugin.finished(resolution)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("plugin %s: finished hook failed", type(task_plugin).__name__)

    async def _dispose(self) -> None:
        for task_plugin in reversed(self.task_plugins):
            try:
                await task_plugin.dispose()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("plugin %s: dispose hook failed", type(task_plugin).__name__)
        if self.sandbox is not None:
            try:
                await self.sandbox.dispose(keep=self.keep_task_dir)
            except OSError:
                log.exception("run %s/%s: sandbox cleanup failed", self.task_id, self.run_id)
        if not self.log.closed:
            self.log.close()

    # ------------------------------------------------------------------ helpers
    def _log_error(self, message: str) -> None:
        """To the task log while it is open, else to the worker's log."""
        if self.log.closed:
            log.warning("run %s/%s: %s", self.task_id, self.run_id, message)
        else:
            self.log.error(message)

    def _check_abort(self) -> None:
        if self._abort_error is not None:
            raise self._abort_error

    def _task_env(self) -> dict[str, str]:
        reserved = reserved_env(
            task=self.task,
            task_id=self.task_id,
            run_id=self.run_id,
            task_dir=str(self.sandbox.task_dir),
            config=self.config,
        )
        # multiuser: the task user's clean base (HOME, USER, LOGNAME, PATH), not the worker's
        base = self.sandbox.user_env if self.sandbox.user_env is not None else self.worker_env
        return task_env(worker_env=base, payload_env=self.parsed.env, reserved=reserved)


def _parse_time(value: object) -> datetime | None:
    if not isinstance(value, str):
        return None
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
