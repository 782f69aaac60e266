"""Fixtures for end-to-end tests: the real ``tcworker run`` process against an in-process emulator.

Lives here:

- ``emulator``: an async factory of started :class:`QueueEmulator` objects (``long_poll_s`` 0.5 s
  unless given; schema validation on when the schemas exist; stopped, and strict-checked, at
  teardown). ``emu.changes`` (a :class:`Changes`) wakes waiters on every queue call, every state
  event and every worker log line.
- ``worker_process``: an async factory ``await worker_process(emu, **config_keys)`` →
  :class:`WorkerProcess`: writes a worker config (JSON, generic-worker keys) into ``tmp_path``,
  starts ``python -m tcworker run --config FILE``, collects its stderr (the worker's log), and at
  teardown stops it (SIGTERM, then SIGKILL) if the test did not.
- ``run_tasks``: ``await run_tasks(emu, payloads, **config_keys)`` creates one task per payload,
  runs one worker with ``numberOfTasksToRun`` set to their number, waits for its exit (0), and
  returns ``(task_ids, worker)``.
- helpers: :func:`task_log` (the backing log text), :func:`download` (through the official
  client), :func:`native_payload`.

Does not live here: the emulator (``tcworker.testing.queue``), the tests.
"""

from __future__ import annotations

import asyncio
import gzip
import json
import os
import re
import signal
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
import pytest_asyncio
import taskcluster.aio
from taskcluster.aio.download import downloadArtifactToBuf

from tcworker.testing.queue import QueueEmulator

POOL = "proj-test/python-worker"
WORKER_GROUP = "e2e-group"
WORKER_ID = "e2e-worker"
WAIT_S = 60.0  # generous: two cores shared with other engineers' tests


class Changes:
    """Something changed (a call, a state event, a log line): wake whoever waits for a condition."""

    def __init__(self) -> None:
        self._event = asyncio.Event()

    def notify(self, *_args: object) -> None:
        self._event.set()

    async def until(self, predicate: Callable[[], object], timeout_s: float = WAIT_S, what: str = "") -> object:
        """Return ``predicate()`` once truthy; ``pytest.fail`` after ``timeout_s`` seconds."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        while True:
            self._event.clear()
            value = predicate()
            if value:
                return value
            left = deadline - loop.time()
            if left <= 0:
                pytest.fail(f"timed out after {timeout_s}s waiting for {what or predicate}")
            try:
                # a call's final status is set without a notification: re-check now and then
                await asyncio.wait_for(self._event.wait(), timeout=min(left, 0.2))
            except TimeoutError:
                pass


class _NotifyingList(list):
    def __init__(self, changes: Changes) -> None:
        super().__init__()
        self.changes = changes

    def append(self, item: object) -> None:
        super().append(item)
        self.changes.notify()


async def start_emulator(**kwargs) -> QueueEmulator:
    """A started QueueEmulator (``long_poll_s`` 0.5 unless given) with ``.changes`` wired up."""
    kwargs.setdefault("long_poll_s", 0.5)
    emu = QueueEmulator(**kwargs)
    emu.changes = Changes()
    emu.calls = _NotifyingList(emu.changes)
    emu.state.listeners.append(emu.changes.notify)
    await emu.start()
    return emu


@pytest_asyncio.fixture
async def emulator():
    """``await emulator(**kwargs)`` → a started QueueEmulator with ``.changes``."""
    started: list[QueueEmulator] = []

    async def make(**kwargs) -> QueueEmulator:
        started.append(await start_emulator(**kwargs))
        return started[-1]

    yield make
    for emu in started:
        await emu.__aexit__(None, None, None)


class WorkerProcess:
    """One ``tcworker run`` process.

    Attributes:
        config: the config keys written to ``config_path`` (dict).
        lines: the worker's log lines so far (stderr, list of str).
        returncode: the exit code once exited, else None.
    """

    def __init__(self, emu: QueueEmulator, config: dict, config_path: Path) -> None:
        self.emu = emu
        self.config = config
        self.config_path = config_path
        self.lines: list[str] = []
        self.proc: asyncio.subprocess.Process | None = None
        self._reader: asyncio.Task | None = None

    async def start(self, *extra_args: str, cwd: Path | None = None) -> "WorkerProcess":
        env = {k: v for k, v in os.environ.items() if not k.startswith("TASKCLUSTER_")}
        self.proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "tcworker", "run", "--config", str(self.config_path), *extra_args,
            stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.PIPE, env=env, cwd=cwd,
        )
        self._reader = asyncio.create_task(self._read_stderr())
        return self

    async def _read_stderr(self) -> None:
        assert self.proc is not None and self.proc.stderr is not None
        async for raw in self.proc.stderr:
            self.lines.append(raw.decode(errors="replace").rstrip("\n"))
            self.emu.changes.notify()

    @property
    def returncode(self) -> int | None:
        return None if self.proc is None else self.proc.returncode

    @property
    def log_text(self) -> str:
        return "\n".join(self.lines)

    def matching(self, pattern: str) -> list[str]:
        """Log lines matching the regex ``pattern``."""
        return [line for line in self.lines if re.search(pattern, line)]

    async def wait_for_line(self, pattern: str, timeout_s: float = WAIT_S) -> str:
        """The first log line matching ``pattern`` (waits for it)."""
        found = await self.emu.changes.until(lambda: self.matching(pattern), timeout_s, f"log line {pattern!r}")
        return found[0]

    def send_signal(self, sig: int = signal.SIGTERM) -> None:
        assert self.proc is not None
        self.proc.send_signal(sig)

    async def wait(self, timeout_s: float = WAIT_S) -> int:
        """Wait for the exit and the end of its log; returns the exit code."""
        assert self.proc is not None
        try:
            await asyncio.wait_for(self.proc.wait(), timeout_s)
        except TimeoutError:
            pytest.fail(f"worker did not exit within {timeout_s}s; its log:\n{self.log_text}")
        if self._reader is not None:
            await self._reader
        return self.proc.returncode

    async def stop(self) -> None:
        """SIGTERM, then SIGKILL after 30 s; safe when it already exited."""
        if self.proc is None or self.proc.returncode is not None:
            if self._reader is not None:
                await self._reader
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            await asyncio.wait_for(self.proc.wait(), 30)
        except TimeoutError:
            self.proc.kill()
            await self.proc.wait()
        if self._reader is not None:
            await self._reader


def base_config(emu: QueueEmulator, tmp_path: Path, **keys) -> dict:
    """A worker config for ``emu`` (worker credentials only), task dirs under ``tmp_path``."""
    creds = emu.worker_credentials(POOL, WORKER_GROUP, WORKER_ID)
    config = {
        "rootURL": emu.root_url, "clientId": creds["clientId"], "accessToken": creds["accessToken"],
        "provisionerId": POOL.split("/")[0], "workerType": POOL.split("/")[1],
        "workerGroup": WORKER_GROUP, "workerId": WORKER_ID,
        "tasksDir": str(tmp_path / "tasks"), "requiredDiskSpaceMegabytes": 1,
        "killGracePeriodSecs": 1, "outputDrainSecs": 0.2, "shutdownGracePeriodSecs": 10,
        "engines": ["native"],
    }
    config.update(keys)
    return config


class WorkerFactory:
    """Writes configs into ``folder`` and starts workers; :meth:`stop_all` at the end."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.workers: list[WorkerProcess] = []

    async def __call__(self, emu: QueueEmulator, *, start: bool = True, args: tuple[str, ...] = (),
                       config: dict | None = None, **keys) -> WorkerProcess:
        """``await factory(emu, **config_keys)`` → a started :class:`WorkerProcess`."""
        doc = config if config is not None else base_config(emu, self.folder, **keys)
        path = self.folder / f"worker-{len(self.workers)}.json"
        path.write_text(json.dumps(doc))
        worker = WorkerProcess(emu, doc, path)
        self.workers.append(worker)
        if start:
            await worker.start(*args)
        return worker

    async def run_tasks(self, emu: QueueEmulator, payloads: list[dict], *,
                        task_overrides: dict | list[dict] | None = None, **keys) -> tuple[list[str], WorkerProcess]:
        """Create one task per payload (``task_overrides``: one dict for all, or one per task),
        run one worker with ``numberOfTasksToRun`` = their number; it must exit 0."""
        if not isinstance(task_overrides, list):
            task_overrides = [task_overrides or {}] * len(payloads)
        ids = [await emu.create_task(payload=p, **o) for p, o in zip(payloads, task_overrides)]
        keys.setdefault("numberOfTasksToRun", len(ids))
        worker = await self(emu, **keys)
        code = await worker.wait()
        assert code == 0, worker.log_text
        return ids, worker

    async def stop_all(self) -> None:
        for worker in self.workers:
            await worker.stop()


@pytest_asyncio.fixture
async def worker_process(tmp_path):
    """``await worker_process(emu, start=True, args=(), config=None, **config_keys)`` →
    :class:`WorkerProcess` (config keys added to :func:`base_config`, or ``config`` as is)."""
    factory = WorkerFactory(tmp_path)
    yield factory
    await factory.stop_all()


@pytest.fixture
def run_tasks(worker_process):
    """``await run_tasks(emu, payloads, task_overrides=None, **config_keys)`` → ``(task_ids, worker)``;
    the worker ran exactly those tasks and exited 0."""
    return worker_process.run_tasks


def native_payload(script: str, *, max_run_time: int = 60, artifacts: list | None = None, **extra) -> dict:
    """A generic-worker payload running ``sh -c script``."""
    payload = {"command": [["/bin/sh", "-c", script]], "maxRunTime": max_run_time}
    if artifacts is not None:
        payload["artifacts"] = artifacts
    payload.update(extra)
    return payload


def task_log(emu: QueueEmulator, task_id: str, run_id: int = 0) -> str:
    """The uploaded backing log of a run, decoded (gzip undone when it was stored gzipped)."""
    blob = emu.artifact_blob(task_id, run_id, "public/logs/live_backing.log")
    assert blob.data is not None, "backing log never uploaded"
    data = gzip.decompress(blob.data) if blob.content_encoding == "gzip" else blob.data
    return data.decode(errors="replace")


async def download(emu: QueueEmulator, task_id: str, name: str, run_id: int = 0) -> bytes:
    """Download an artifact through the official client's helper (anonymous, public names)."""
    async with taskcluster.aio.createSession() as session:
        queue = taskcluster.aio.Queue(emu.client_options({}, maxRetries=0), session=session)
        data, _ = await downloadArtifactToBuf(taskId=task_id, runId=run_id, name=name, queueService=queue)
    return bytes(data)


def resolutions(emu: QueueEmulator, task_id: str) -> list[tuple[str, str | None]]:
    """``[(state, reasonResolved), ...]`` of every run of a task."""
    return [(run.state, run.reason_resolved) for run in emu.runs(task_id)]


def report_calls(emu: QueueEmulator, task_id: str) -> list[str]:
    """The api names of every report* call made for a task."""
    return [c.api_name for c in emu.calls
            if c.api_name in ("reportCompleted", "reportFailed", "reportException")
            and c.params.get("taskId") == task_id]
