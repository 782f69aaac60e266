"""Running one real-task case: through ``tcworker exec`` (no ``queue`` need) or ``tcworker run``.

:func:`run_exec_case` runs the rendered task with the real CLI in a subprocess and reads the
output folder. :func:`run_queue_case` starts an in-process
:class:`~tcworker.testing.queue.QueueEmulator`, a real ``tcworker run`` process claiming from it,
creates the prereqs one by one (each checked once resolved), then the task, and downloads the
artifacts the expectation names through the official client. Both give :class:`TaskResult`.
:data:`CASE_ROLES` gives the emulator the roles a case's ``assume:`` scopes need.

What does not live here: the needs set (:mod:`needs`), the checks (:mod:`expect`), the file server.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from tcworker.testing.cases import Case

CASE_ROLES: dict[str, dict[str, list[str]]] = {
    "dw-taskcluster-decision": {
        "repo:github.com/taskcluster/taskcluster:branch:main": [
            "docker-worker:cache:taskcluster-level-1-checkouts-sparse-v2"],
    },
}
"""Roles the emulator gets before a case runs (case id → role id → scopes). They stand in for the
deployment's roles: real decision tasks hold only ``assume:repo:...`` and get their cache scopes
from a role the deployment defines (the worker expands it through ``auth.expandScopes``)."""

EXEC_TIMEOUT_S = 180.0
TASK_TIMEOUT_S = 180.0
WORKER_STOP_S = 60.0
SAFE_NAME = re.compile(r"[A-Za-z0-9!@/:.+|_-]+")
"""Names the object download helper handles; others go through getArtifact."""
_SUMMARY = re.compile(r"^tcworker exec: (completed|failed|exception)(?: \(([^)]*)\))?$", re.M)


@dataclass
class Artifact:
    """One artifact of a run as the tests see it: ``content`` is None unless downloaded."""

    name: str
    storage_type: str
    content_type: str | None = None
    content: bytes | None = None


@dataclass
class TaskResult:
    """What a task did: ``runs`` as ``(state, reasonResolved)`` in order; artifacts of the last run."""

    task_id: str
    runs: list[tuple[str, str]]
    artifacts: dict[str, Artifact] = field(default_factory=dict)
    log_name: str = "public/logs/live_backing.log"
    diagnostics: str = ""

    @property
    def log(self) -> bytes | None:
        """The backing log of the last run, or None when it is missing."""
        entry = self.artifacts.get(self.log_name)
        return entry.content if entry else None


def backing_log_name(task: dict[str, Any]) -> str:
    """The backing log's artifact name: ``payload.logs.backing``, docker ``log`` + ``_backing``."""
    payload = task.get("payload") if isinstance(task.get("payload"), dict) else {}
    if "image" in payload:
        live = payload.get("log") or "public/logs/live.log"
        stem, dot, ext = live.rpartition(".")
        return f"{stem}_backing.{ext}" if dot else f"{live}_backing"
    logs = payload.get("logs") if isinstance(payload.get("logs"), dict) else {}
    return logs.get("backing") or "public/logs/live_backing.log"


def subprocess_env(work: Path) -> dict[str, str]:
    """The environment of the tcworker processes: ours without Taskcluster credentials."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("TASKCLUSTER_")}
    env["HOME"] = str(work)
    return env


# ---------------------------------------------------------------------------------------- exec
def run_exec_case(case: Case, task_id: str, work: Path) -> TaskResult:
    """Run the rendered ``case.task`` as ``task_id`` with ``tcworker exec`` in ``work``."""
    task_file = work / "task.json"
    task_file.write_text(json.dumps(case.task))
    out = work / "out"
    extra: list[str] = []
    if "chain-of-trust" in case.needs:  # a signing key of the case's own, as for tcworker run
        from tcworker.cot import write_new_keypair

        write_new_keypair(work / "cot.key")
        (work / "exec-config.json").write_text(json.dumps({"ed25519SigningKeyLocation": str(work / "cot.key")}))
        extra = ["--config", str(work / "exec-config.json")]
    proc = subprocess.run(
        [sys.executable, "-m", "tcworker", "exec", str(task_file), "--out", str(out), "--task-id", task_id, *extra],
        cwd=work, env=subprocess_env(work), capture_output=True, timeout=EXEC_TIMEOUT_S,
    )
    stderr = proc.stderr.decode(errors="replace")
    diagnostics = f"exit {proc.returncode}\n--- stderr\n{stderr[-4000:]}"
    found = _SUMMARY.findall(stderr)
    if not found:
        return TaskResult(task_id, [], diagnostics=diagnostics)
    state, reason = found[-1]
    result = TaskResult(task_id, [(state, reason or state)], log_name=backing_log_name(case.task),
                        diagnostics=diagnostics)
    manifest = json.loads((out / ".tcworker" / "artifacts.json").read_text())
    for entry in manifest["artifacts"]:
        name = entry["name"]
        art = Artifact(name, entry["storageType"], entry.get("contentType"))
        if art.storage_type != "error":
            art.content = (out / name).read_bytes()
        result.artifacts[name] = art
    return result


# --------------------------------------------------------------------------------------- queue
Check = Callable[[str, TaskResult], None]


async def run_queue_case(case: Case, task_ids: dict[str, str], task_id: str, work: Path,
                         check_prereq: Check) -> TaskResult:
    """Run the prereqs then the task of a rendered case on one ``tcworker run`` process.

    Args:
        case: rendered with ``task_ids`` and ``task_id``.
        task_ids: prereq label → taskId. task_id: the main task's id.
        work: the test's temp dir (config, task dirs, worker output).
        check_prereq: called with ``(label, result)`` once each prereq resolved; raises to stop.
    """
    from tcworker.testing.queue import QueueEmulator

    async with QueueEmulator(long_poll_s=0.5, validate_schemas=None) as emu:
        for role_id, scopes in CASE_ROLES.get(case.id, {}).items():
            emu.add_role(role_id, scopes)
        config_path = _write_worker_config(emu, case, work)
        worker_out = (work / "worker.log").open("wb")
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "tcworker", "run", "--config", str(config_path),
            cwd=work, env=subprocess_env(work), stdout=worker_out, stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        try:
            for prereq in case.prereqs:
                label = str(prereq["label"])
                result = await _run_task(emu, task_ids[label], prereq["task"], prereq.get("expect", {}), proc)
                result.diagnostics = _worker_tail(work)
                check_prereq(label, result)
            result = await _run_task(emu, task_id, case.task, case.expect, proc)
        finally:
            code = await _stop_worker(proc)
            worker_out.close()
        result.diagnostics = f"worker exit {code}\n--- worker output\n{_worker_tail(work)}"
        return result


def _write_worker_config(emu: Any, case: Case, work: Path) -> Path:
    creds = emu.worker_credentials("proj-test/python-worker", "case-group", "case-worker")
    config = {
        "rootURL": emu.root_url, "clientId": creds["clientId"], "accessToken": creds["accessToken"],
        "provisionerId": "proj-test", "workerType": "python-worker",
        "workerGroup": "case-group", "workerId": "case-worker",
        "tasksDir": str(work / "tasks"), "cachesDir": str(work / "caches"),
        "downloadsDir": str(work / "downloads"), "requiredDiskSpaceMegabytes": 0,
        "statusPollIntervalSecs": 1.0,
    }
    if "chain-of-trust" in case.needs:  # a signing key of the case's own
        from tcworker.cot import write_new_keypair

        write_new_keypair(work / "cot.key")
        config["ed25519SigningKeyLocation"] = str(work / "cot.key")
    config.update(case.worker_config)
    path = work / "worker-config.json"
    path.write_text(json.dumps(config, indent=2))
    return path


async def _run_task(emu: Any, task_id: str, task: dict, expect: dict, proc: Any) -> TaskResult:
    """Create the task, wait until it is resolved for good and its last log is up, download."""
    log_name = backing_log_name(task)
    changed = asyncio.Event()
    listener = lambda *_: changed.set()  # noqa: E731 - the emulator's listener signature
    emu.state.listeners.append(listener)
    try:
        await emu.create_task(task_id=task_id, task_def=task)
        await _until(lambda: _settled(emu, task_id, log_name), changed, proc,
                     f"task {task_id} to resolve with its log {log_name} uploaded")
    finally:
        emu.state.listeners.remove(listener)
    runs = emu.runs(task_id)
    result = TaskResult(task_id, [(r.state, r.reason_resolved) for r in runs], log_name=log_name)
    wanted = set(expect.get("artifacts") or {}) | {log_name}
    result.artifacts = await _download(emu, task_id, runs[-1], wanted)
    return result


def _settled(emu: Any, task_id: str, log_name: str) -> bool:
    if emu.task_state(task_id) not in ("completed", "failed", "exception"):
        return False
    run = emu.runs(task_id)[-1]
    log = run.artifacts.get(log_name)
    return log is not None and (log.present or log.storage_type == "error")


async def _until(ready: Callable[[], bool], changed: asyncio.Event, proc: Any, what: str) -> None:
    """Wait for ``ready()``: woken by emulator events, re-checked every 100 ms (uploads finish
    without an event); fails when the worker exits or after :data:`TASK_TIMEOUT_S`."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + TASK_TIMEOUT_S
    while not ready():
        if proc.returncode is not None:
            raise AssertionError(f"tcworker run exited ({proc.returncode}) while waiting for {what}")
        if loop.time() > deadline:
            raise AssertionError(f"timed out after {TASK_TIMEOUT_S:.0f}s waiting for {what}")
        changed.clear()
        try:
            await asyncio.wait_for(changed.wait(), 0.1)
        except TimeoutError:
            pass


async def _download(emu: Any, task_id: str, run: Any, names: set[str]) -> dict[str, Artifact]:
    """Every artifact of ``run`` (storage type), with content and type for ``names``."""
    import taskcluster.aio

    out: dict[str, Artifact] = {}
    async with taskcluster.aio.createSession() as session:
        queue = taskcluster.aio.Queue(emu.client_options(maxRetries=0), session=session)
        listing = await _list_artifacts(queue, task_id, run.run_id)
        for entry in listing:
            art = Artifact(entry["name"], entry["storageType"], entry.get("contentType"))
            if art.name in names and art.storage_type not in ("error", "reference"):
                art.content, served = await _fetch(queue, session, task_id, run.run_id, art.name)
                # the helper gives the bare media type (aiohttp drops parameters): keep the full
                # listed one unless the served one disagrees
                if served.split(";")[0].strip() != (art.content_type or "").split(";")[0].strip():
                    art.content_type = served
            out[art.name] = art
    return out


async def _list_artifacts(queue: Any, task_id: str, run_id: int) -> list[dict]:
    entries: list[dict] = []
    query: dict[str, str] = {}
    while True:
        page = await queue.listArtifacts(task_id, str(run_id), query=query)
        entries.extend(page["artifacts"])
        if not page.get("continuationToken"):
            return entries
        query = {"continuationToken": page["continuationToken"]}


async def _fetch(queue: Any, session: Any, task_id: str, run_id: int, name: str) -> tuple[bytes, str]:
    """Content (Content-Encoding undone) and served Content-Type of one artifact."""
    from taskcluster.aio.download import downloadArtifactToBuf

    if SAFE_NAME.fullmatch(name):
        buf, content_type = await downloadArtifactToBuf(
            taskId=task_id, runId=str(run_id), name=name, queueService=queue, maxRetries=0)
        return bytes(buf), content_type
    reply = await queue.getArtifact(task_id, str(run_id), name)   # the 303's body: {storageType, url}
    async with session.get(reply["url"]) as resp:   # storage URL; aiohttp undoes Content-Encoding
        resp.raise_for_status()
        return await resp.read(), resp.headers.get("Content-Type", "")


def _worker_tail(work: Path, size: int = 6000) -> str:
    path = work / "worker.log"
    return path.read_bytes()[-size:].decode(errors="replace") if path.exists() else ""


async def _stop_worker(proc: Any) -> int:
    """SIGTERM (drain), then SIGKILL the worker's session if it has not exited in time."""
    if proc.returncode is None:
        proc.send_signal(signal.SIGTERM)
        try:
            await asyncio.wait_for(proc.wait(), WORKER_STOP_S)
        except TimeoutError:
            os.killpg(proc.pid, signal.SIGKILL)
            await proc.wait()
    return proc.returncode

