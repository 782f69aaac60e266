"""Chaos runs against the queue emulator: a mix of tasks with known outcomes, and the invariants a
worker must keep however many faults the queue injects (``tests/chaos/``, ``bench/chaos.py``).

Lives here:

- :func:`make_mix` → :class:`ChaosTask` list: quick, slow, chatty, artifact-heavy (bodies of at
  least 8 KiB, so they reach storage), failing (with an artifact), retrying (``onExitStatus.retry``
  on run 0, success later). Each knows its expected final state and the sha256 of every artifact
  it declares.
- :func:`wait_resolved`: until every task reached a final state (no retry pending).
- :func:`check_invariants`: what must hold against the emulator's state, as a list of violations.
  Allowed besides the expected outcome: earlier runs ended ``claim-expired`` (a lost claimWork
  answer, a reclaim that failed or answered an injected 409, or a crash) or ``intermittent-task``
  (retrying tasks), each followed by a retry; a final ``exception/resource-unavailable`` when a
  response to one of the run's ``object`` createArtifact calls was lost (queue-contract 2.2: the
  artifact cannot be finished).
- :func:`leftovers`: task directories, run log folders and task processes still present.
- :func:`worker_config`: config keys for a chaos worker.

Does not live here: fault injection (``tcworker.testing.queue.faults``), starting workers
(``tests/e2e/conftest.py``, ``bench/chaos.py``).
"""

from __future__ import annotations

import asyncio
import hashlib
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import psutil

from .queue import QueueEmulator

KINDS = ("quick", "slow", "chatty", "artifacts", "failing", "retrying")
FINAL_STATES = ("completed", "failed", "exception")
ARTIFACT_BYTES = 20_000  # >= 8 KiB: uploaded through storage, not dataInline
BACKING_LOG = "public/logs/live_backing.log"


@dataclass
class ChaosTask:
    """One task of the mix.

    Attributes:
        kind: one of :data:`KINDS`.
        tag: unique marker (also the artifacts' content).
        payload: generic-worker payload.
        expected: final state its definition implies (``completed`` or ``failed``).
        artifacts: declared artifact name → sha256 hex of its content.
        task_id: set once created.
    """

    kind: str
    tag: str
    payload: dict
    expected: str
    artifacts: dict[str, str] = field(default_factory=dict)
    task_id: str = ""


def _filler(tag: str, size: int = ARTIFACT_BYTES) -> tuple[str, str]:
    """Shell writing ``size`` bytes of ``yes tag`` to stdout, and their sha256."""
    line = (tag + "\n").encode()
    data = (line * (size // len(line) + 1))[:size]
    return f"yes '{tag}' | head -c {size}", hashlib.sha256(data).hexdigest()


def make_task(kind: str, index: int, *, slow_s: float = 3.0) -> ChaosTask:
    """The ``index``-th task of ``kind`` (see the module docstring)."""
    tag = f"chaos-{kind}-{index}"
    artifacts: dict[str, str] = {}
    declared: list[dict] = []
    extra: dict = {}
    expected = "completed"
    if kind == "quick":
        script = f"echo {tag}"
    elif kind == "slow":
        script = f"echo {tag}; sleep {slow_s}; echo done"
    elif kind == "chatty":
        script = f"echo {tag}; seq 1 100000; seq 1 3000 | while read n; do echo line $n; done"
    elif kind == "artifacts":
        parts = ["mkdir -p out"]
        for name, path in (("public/one.bin", "one.bin"), ("public/out/a.txt", "out/a.txt"),
                           ("public/out/b.txt", "out/b.txt")):
            shell, digest = _filler(f"{tag}-{path}")
            parts.append(f"{shell} > {path}")
            artifacts[name] = digest
        script = "; ".join(parts)
        declared = [{"type": "file", "path": "one.bin", "name": "public/one.bin"},
                    {"type": "directory", "path": "out", "name": "public/out"}]
    elif kind == "failing":
        shell, digest = _filler(f"{tag}-fail.txt")
        script = f"{shell} > fail.txt; echo failing; exit 1"
        artifacts["public/fail.txt"] = digest
        declared = [{"type": "file", "path": "fail.txt", "name": "public/fail.txt"}]
        expected = "failed"
    elif kind == "retrying":
        script = f'echo {tag} run $RUN_ID; if [ "$RUN_ID" = 0 ]; then exit 3; fi'
        extra = {"onExitStatus": {"retry": [3]}}
    else:
        raise ValueError(f"unknown chaos task kind {kind!r}")
    payload = {"command": [["/bin/sh", "-c", script]], "maxRunTime": 120, **extra}
    if declared:
        payload["artifacts"] = declared
    return ChaosTask(kind, tag, payload, expected, artifacts)


def make_mix(count: int, *, slow_s: float = 3.0) -> list[ChaosTask]:
    """``count`` tasks, the kinds in turn."""
    return [make_task(KINDS[i % len(KINDS)], i, slow_s=slow_s) for i in range(count)]


async def create_tasks(emu: QueueEmulator, tasks: list[ChaosTask], *, retries: int = 20) -> list[str]:
    """Create every task (``retries`` automatic retries each); sets and returns their task ids."""
    for task in tasks:
        task.task_id = await emu.create_task(payload=task.payload, retries=retries)
    return [t.task_id for t in tasks]


async def wait_resolved(emu: QueueEmulator, task_ids: list[str], timeout_s: float) -> list[str]:
    """Wait until every task is in a final state; returns the ids still unresolved at the timeout."""
    changed = asyncio.Event()
    emu.state.listeners.append(lambda *_: changed.set())
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while True:
        changed.clear()
        left = [t for t in task_ids if emu.task_state(t) not in FINAL_STATES]
        if not left or loop.time() >= deadline:
            return left
        try:  # claim expiry resolves without a call: look again now and then
            await asyncio.wait_for(changed.wait(), timeout=min(1.0, deadline - loop.time()))
        except TimeoutError:
            pass


def lost_object_create(emu: QueueEmulator, task_id: str, run_id: int) -> bool:
    """True when a response to an ``object`` createArtifact of this run was lost (fault after)."""
    for call in emu.calls:
        if (call.api_name == "createArtifact" and call.fault_when == "after"
                and call.params.get("taskId") == task_id and call.params.get("runId") == str(run_id)
                and isinstance(call.request_body, dict) and call.request_body.get("storageType") == "object"):
            return True
    return False


def check_invariants(emu: QueueEmulator, tasks: list[ChaosTask]) -> list[str]:
    """Every violation of the chaos invariants (module docstring), one line each; [] when all hold."""
    problems: list[str] = []
    for task in tasks:
        runs = emu.runs(task.task_id)
        where = f"{task.tag} ({task.task_id})"
        if not runs or runs[-1].state not in FINAL_STATES:
            problems.append(f"{where}: not resolved: {[(r.state, r.reason_resolved) for r in runs]}")
            continue
        for run in runs[:-1]:
            allowed = {"claim-expired"} | ({"intermittent-task"} if task.kind == "retrying" else set())
            if run.state != "exception" or run.reason_resolved not in allowed:
                problems.append(f"{where}: run {run.run_id} ended {run.state}/{run.reason_resolved}, "
                                f"then was retried")
        final = runs[-1]
        if final.state != task.expected:
            legit = (final.state == "exception" and final.reason_resolved == "resource-unavailable"
                     and lost_object_create(emu, task.task_id, final.run_id))
            if not legit:
                problems.append(f"{where}: final run {final.run_id} is {final.state}/"
                                f"{final.reason_resolved}, expected {task.expected}")
            continue
        problems += _artifact_problems(emu, task, final.run_id, where)
    return problems


def _artifact_problems(emu: QueueEmulator, task: ChaosTask, run_id: int, where: str) -> list[str]:
    problems = []
    for name, digest in {**task.artifacts, BACKING_LOG: None}.items():
        artifact = emu.runs(task.task_id)[run_id].artifacts.get(name)
        if artifact is None or not artifact.present:
            problems.append(f"{where}: run {run_id}: artifact {name} missing")
            continue
        if digest is None:
            continue
        data = emu.artifact_blob(task.task_id, run_id, name).data
        if data is None or hashlib.sha256(data).hexdigest() != digest:
            problems.append(f"{where}: run {run_id}: artifact {name} has the wrong content "
                            f"({0 if data is None else len(data)} bytes)")
    return problems


def leftovers(tasks_dir: Path, task_ids: list[str]) -> list[str]:
    """Task directories and run log folders under ``tasks_dir``, and live (non-zombie) processes
    whose environment names one of ``task_ids``."""
    found = [f"directory {p}" for p in sorted(Path(tasks_dir).glob("tcw-*"))]
    wanted = set(task_ids)
    for proc in psutil.process_iter(["pid", "status", "cmdline"]):
        try:
            if proc.info["status"] == psutil.STATUS_ZOMBIE:
                continue
            if proc.environ().get("TASK_ID") in wanted:
                found.append(f"process {proc.info['pid']} {proc.info['cmdline']}")
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            continue
    return found


def outcome_counts(emu: QueueEmulator, task_ids: list[str]) -> Counter[str]:
    """``state/reason`` of every run of these tasks, counted."""
    counts: Counter[str] = Counter()
    for task_id in task_ids:
        for run in emu.runs(task_id):
            counts[f"{run.state}/{run.reason_resolved}"] += 1
    return counts


def worker_config(*, capacity: int = 8, call_timeout_s: float = 3.0) -> dict:
    """Config keys of a chaos worker (added to the e2e base config)."""
    return {"capacity": capacity, "queueCallTimeoutSecs": call_timeout_s, "shutdownGracePeriodSecs": 20,
            "uploadBudgetSecs": 120}
