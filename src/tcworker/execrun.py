"""``tcworker exec``: run one task definition locally, exactly as the worker would, no queue.

The run goes through the same :class:`~tcworker.taskrun.TaskRun` as the daemon; only the outlet
differs: :class:`FolderOutlet` writes artifacts and the log into a folder (``--out``) instead of
uploading them, and prints the resolution instead of reporting it.

What does not live here: argument parsing (:mod:`tcworker.cli`), the run itself.
"""

from __future__ import annotations

import asyncio
import os
import re
import signal
import sys
import tempfile
import threading
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Sequence

from tcworker.config import WorkerConfig
from tcworker.errors import MalformedPayload, WorkerShutdown
from tcworker.outlet import LogNames, RunOutlet, log_artifacts
from tcworker.resolution import Resolution


TASK_ID_PATTERN = re.compile(r"[A-Za-z0-9_-]{1,64}")  # slugid characters: a folder name, never a path


@dataclass(frozen=True)
class ExecOptions:
    """Options of ``tcworker exec`` (see ``tcworker exec --help``)."""

    task_file: Path
    out_dir: Path | None = None
    engine: str | None = None
    task_id: str | None = None
    env: dict[str, str] = field(default_factory=dict)
    keep_task_dir: bool = False


class FolderOutlet(RunOutlet):
    """Writes a run's artifacts and log into ``out_dir``; remembers the resolution."""

    def __init__(self, out_dir: Path) -> None:
        self.out_dir = out_dir
        self.artifacts: list = []
        self.resolution: Resolution | None = None
        self.manifest: list[dict] = []

    async def publish_artifacts(self, artifacts: Sequence[object]) -> None:
        self.artifacts.extend(artifacts)  # payload artifacts, then the plugins' (chain of trust)

    async def publish_log(self, path: Path, names: LogNames, expires: datetime) -> None:
        from tcworker.artifacts import write_to_folder

        backing, _ = log_artifacts(path, names, expires)
        manifest = await asyncio.to_thread(
            write_to_folder, [*self.artifacts, backing], self.out_dir, links={names.live: names.backing},
            moves=frozenset({names.backing}),
        )
        self.manifest = manifest["artifacts"]

    async def report(self, resolution: Resolution) -> None:
        self.resolution = resolution


def exec_task(options: ExecOptions, config: WorkerConfig) -> int:
    """Run ``options.task_file`` and return the exit status (0 completed, 1 failed, 2 exception)."""
    try:
        task_id, task = load_task_file(options.task_file, task_id=options.task_id)
    except MalformedPayload as err:
        print(f"tcworker exec: {err}", file=sys.stderr)
        return 2
    if options.env:
        task["payload"].setdefault("env", {})
        if isinstance(task["payload"]["env"], dict):
            task["payload"]["env"].update(options.env)
    if options.engine == "native" and "image" in task["payload"]:
        print("tcworker exec: --engine native given for a docker-worker payload (it has 'image')", file=sys.stderr)
        return 2
    out_dir = options.out_dir or Path("tcworker-out") / task_id
    return asyncio.run(_exec(task, task_id, out_dir, options, config))


async def _exec(task: dict, task_id: str, out_dir: Path, options: ExecOptions, config: WorkerConfig) -> int:
    from tcworker.engines.registry import make_engines
    from tcworker.taskrun import TaskRun

    out_dir.mkdir(parents=True, exist_ok=True)
    from tcworker.plugins.registry import make_plugins

    engines = make_engines(config, only=options.engine, sweep=False)  # a worker may share tasksDir
    plugins = make_plugins(config, mode="exec")
    for plugin in plugins:
        await plugin.boot()
    outlet = FolderOutlet(out_dir)
    scratch_parent = out_dir / ".tcworker"   # the log is renamed into the folder, not copied
    scratch_parent.mkdir(exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="scratch-", dir=scratch_parent) as scratch:
        run = TaskRun(
            task=task,
            task_id=task_id,
            run_id=0,
            config=config,
            engines=engines,
            plugins=plugins,
            outlet=outlet,
            log_path=Path(scratch) / "live_backing.log",
            echo=sys.stdout.buffer,
            keep_task_dir=options.keep_task_dir,
        )
        loop = asyncio.get_running_loop()
        handled = []
        if threading.current_thread() is threading.main_thread():  # signals reach the main thread only
            for signum in (signal.SIGINT, signal.SIGTERM):
                # stop the task as the worker would (TERM, grace, KILL), still write the log: exit 2
                loop.add_signal_handler(signum, run.abort, WorkerShutdown(
                    f"tcworker exec interrupted by {signal.Signals(signum).name}"))
                handled.append(signum)
        try:
            resolution = await run.execute()
        finally:
            for signum in handled:
                loop.remove_signal_handler(signum)
        for plugin in plugins:
            await plugin.shutdown()
    _print_summary(resolution, outlet, out_dir)
    return resolution.exit_code


def load_task_file(path: Path, *, task_id: str | None = None) -> tuple[str, dict]:
    """Read a YAML/JSON task definition (or a bare payload) and fill in the missing fields.

    Returns:
        ``(taskId, task definition)``; the id is ``task_id``, else the file's ``taskId``, else a
        new slugid.

    Raises:
        MalformedPayload: the file cannot be read or parsed, or is not a mapping.
    """
    import slugid

    from tcworker.payloads.taskdef import complete_task_definition
    from tcworker.payloads.validate_file import load_document

    try:
        raw = load_document(path)
    except OSError as err:
        raise MalformedPayload(f"cannot read {path}: {err.strerror}") from None
    except ValueError as err:
        raise MalformedPayload(f"cannot parse {path}: {err}") from None
    if not isinstance(raw, dict):
        raise MalformedPayload(f"{path}: expected a mapping (a task definition or a payload)")
    if "payload" not in raw:
        raw = {"payload": raw}
    task_id = task_id or raw.pop("taskId", None) or slugid.nice()
    raw.pop("runId", None)
    if not isinstance(task_id, str) or not TASK_ID_PATTERN.fullmatch(task_id):
        # it names the output folder: a slugid, never a path
        raise MalformedPayload(f"taskId: {task_id!r} is not a task id (1 to 64 of A-Z a-z 0-9 _ -)")
    return task_id, complete_task_definition(raw, task_id=task_id)


def _print_summary(resolution: Resolution, outlet: FolderOutlet, out_dir: Path) -> None:
    sys.stdout.flush()
    state = resolution.state or "unresolved"
    reason = f" ({resolution.reason})" if resolution.state == "exception" else ""
    lines = [f"", f"tcworker exec: {state}{reason}"]
    if resolution.message and resolution.state != "completed":
        lines.append(f"  {resolution.message}")
    data = [a for a in outlet.manifest if a.get("storageType") != "error"]
    errors = [a for a in outlet.manifest if a.get("storageType") == "error"]
    lines.append(f"  artifacts: {len(data)} written to {out_dir}{os.sep}")
    for entry in errors:
        lines.append(f"  error artifact {entry['name']}: {entry.get('reason')}: {entry.get('message')}")
    print("\n".join(lines), file=sys.stderr)
