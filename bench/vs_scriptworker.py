"""tcworker against scriptworker, side by side, on one queue emulator: one command, one Markdown table.

    .venv/bin/python bench/vs_scriptworker.py [--c1-tasks 200] [--tp-tasks 1000] [--quick]

Writes the table into ``docs/benchmarks.md`` (``--out``) and prints it. scriptworker (PyPI
``scriptworker``) runs from its own virtualenv (``--sw-venv``, default
``/tmp/tcworker-bench-sw-venv``, created with ``pip install scriptworker`` when missing) so its pins
never touch ours; ``--no-scriptworker`` measures tcworker alone.

Set-up, as ``../shared/reference/scriptworker.md`` A.9 says: the in-process
:class:`~tcworker.testing.queue.QueueEmulator` (``validate_schemas=False``), each worker on its own
task queue, the same trivial command (``/bin/echo hi``), scriptworker with ``poll_interval: 0``,
chain of trust off, ``s3`` artifacts (its only kind: the log and ``chain-of-trust.json``);
tcworker with ``createObjectArtifacts: false`` (``s3``: backing log, live-log reference, link) and
again with ``object`` artifacts. scriptworker runs one task per process, so its capacity N is N
processes. Workers are real processes (``tcworker run``, ``scriptworker``); CPU and RSS are their
own (``psutil``, task processes excluded), sampled every 0.1 s.

Measures: start-up (spawn → first ``claimWork`` request), idle peak RSS (2 s after start-up),
claim → resolution per task at capacity 1 (median and p90, from the queue's ``started`` and
``resolved``), worker CPU per task, throughput at capacity 8 and 32 (tasks / (last resolved − first
claim)), peak RSS at capacity 32, a task printing 1,000,000 lines (claim → resolution), and
cancellation latency (``cancelTask`` → the worker's log upload; tcworker polls the task status
every ``--cancel-poll`` seconds, scriptworker notices at its next reclaim, ``reclaim_interval``
set to the same value).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import psutil

from tcworker.testing.queue import QueueEmulator

ROOT = Path(__file__).resolve().parent.parent
TRIVIAL = ["/bin/echo", "hi"]
WAIT_S = 900.0


# ---------------------------------------------------------------------- processes
@dataclass
class Sample:
    """Peak RSS (bytes) per process and of the sum; CPU seconds (user+system) per pid."""

    peak_rss: int = 0
    peak_total_rss: int = 0
    cpu: dict[int, float] = field(default_factory=dict)


class Workers:
    """Worker processes of one kind, started together, sampled until stopped."""

    def __init__(self, procs: list[subprocess.Popen], spawned: float) -> None:
        self.procs = procs
        self.spawned = spawned
        self.sample = Sample()
        self._ps = [psutil.Process(p.pid) for p in procs]
        self._task = asyncio.create_task(self._sampler())

    def cpu_s(self) -> float:
        self._measure()
        return sum(self.sample.cpu.values())

    def reset_peaks(self) -> None:
        self.sample.peak_rss = self.sample.peak_total_rss = 0

    def _measure(self) -> None:
        total = 0
        for ps in self._ps:
            try:
                rss = ps.memory_info().rss
                times = ps.cpu_times()
            except psutil.NoSuchProcess:
                continue
            total += rss
            self.sample.peak_rss = max(self.sample.peak_rss, rss)
            self.sample.cpu[ps.pid] = times.user + times.system
        self.sample.peak_total_rss = max(self.sample.peak_total_rss, total)

    async def _sampler(self) -> None:
        while True:
            self._measure()
            await asyncio.sleep(0.1)

    async def stop(self) -> None:
        self._task.cancel()
        for p in self.procs:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + 30
        for p in self.procs:
            while p.poll() is None and time.monotonic() < deadline:
                await asyncio.sleep(0.05)
            if p.poll() is None:
                p.kill()
                p.wait()


def clean_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("TASKCLUSTER_")}


def start_tcworker(emu: QueueEmulator, queue: str, workdir: Path, *, capacity: int, objects: bool,
                   poll_s: float) -> Workers:
    import json

    creds = emu.worker_credentials(task_queue_id=queue, worker_group="bench", worker_id="tc-1")
    config = {
        "rootURL": emu.root_url, **creds, "workerPoolId": queue, "workerGroup": "bench",
        "workerId": "tc-1", "tasksDir": str(workdir / "tasks"), "engines": ["native"],
        "capacity": capacity, "createObjectArtifacts": objects, "requiredDiskSpaceMegabytes": 0,
        "statusPollIntervalSecs": poll_s,
    }
    path = workdir / "tcworker.json"
    path.write_text(json.dumps(config))
    log = open(workdir / "tcworker.log", "wb")
    spawned = time.time()
    proc = subprocess.Popen([sys.executable, "-m", "tcworker", "run", "--config", str(path)],
                            stdin=subprocess.DEVNULL, stdout=log, stderr=log, env=clean_env(), cwd=workdir)
    return Workers([proc], spawned)


def start_scriptworkers(emu: QueueEmulator, queue: str, workdir: Path, sw_bin: Path, *, count: int,
                        script: list[str], reclaim_s: int) -> Workers:
    provisioner, worker_type = queue.split("/")
    procs = []
    spawned = time.time()
    for i in range(count):
        wid = f"sw-{i}"
        creds = emu.worker_credentials(task_queue_id=queue, worker_group="bench", worker_id=wid)
        run = workdir / wid
        run.mkdir(parents=True)
        (run / "scriptworker.yaml").write_text("\n".join([
            f'taskcluster_root_url: "{emu.root_url}"', f"provisioner_id: {provisioner}",
            f"worker_type: {worker_type}", "worker_group: bench", f"worker_id: {wid}",
            "credentials:", f'  clientId: "{creds["clientId"]}"', f'  accessToken: "{creds["accessToken"]}"',
            f"work_dir: {run}/work", f"artifact_dir: {run}/artifact",
            f"task_log_dir: {run}/artifact/public/logs", f"log_dir: {run}/log",
            f"ed25519_private_key_path: {run}/unused-key", "sign_chain_of_trust: false",
            "verify_chain_of_trust: false", "verify_cot_signature: false", "poll_interval: 0",
            f"reclaim_interval: {reclaim_s}", "task_max_timeout: 600", "verbose: false",
            f"task_script: {script!r}".replace("'", '"'), "",
        ]))
        log = open(run / "stderr.log", "wb")
        procs.append(subprocess.Popen([str(sw_bin), str(run / "scriptworker.yaml")], stdin=subprocess.DEVNULL,
                                      stdout=log, stderr=log, env=clean_env(), cwd=run))
    return Workers(procs, spawned)


# ---------------------------------------------------------------------- the queue side
class Resolved:
    """Emulator listener: which tasks are resolved (completed, failed or exception)."""

    def __init__(self, emu: QueueEmulator) -> None:
        self.done: set[str] = set()
        self.event = asyncio.Event()
        emu.state.listeners.append(self)

    def __call__(self, event: str, task, run) -> None:
        if event in ("task-completed", "task-failed", "task-exception"):
            self.done.add(task.task_id)
            self.event.set()

    async def wait_all(self, task_ids: list[str]) -> None:
        wanted = set(task_ids)
        async with asyncio.timeout(WAIT_S):
            while not wanted <= self.done:
                self.event.clear()
                await self.event.wait()


async def wait_claimers(emu: QueueEmulator, queue: str, count: int, since: float) -> float:
    """Wait until ``count`` distinct clients called claimWork on ``queue``; the first call's time."""
    async with asyncio.timeout(WAIT_S):
        while True:
            calls = [c for c in emu.calls_to("claimWork")
                     if c.params.get("taskQueueId") == queue and c.time >= since]
            if len({c.client_id or c.time for c in calls}) >= count:
                return min(c.time for c in calls)
            await asyncio.sleep(0.02)


@dataclass
class Side:
    """One column of the table: a worker kind and its artifact mode."""

    name: str
    kind: str  # "tcworker" | "scriptworker"
    objects: bool = False
    sw_bin: Path | None = None

    def start(self, emu, queue, workdir, *, capacity, command, poll_s) -> Workers:
        if self.kind == "tcworker":
            return start_tcworker(emu, queue, workdir, capacity=capacity, objects=self.objects, poll_s=poll_s)
        return start_scriptworkers(emu, queue, workdir, self.sw_bin, count=capacity, script=command,
                                   reclaim_s=max(1, int(poll_s)))

    def payload(self, command: list[str]) -> dict:
        if self.kind == "tcworker":
            return {"command": [command], "maxRunTime": 600}
        return {"maxRunTime": 600}  # scriptworker runs its configured task_script


class Bench:
    def __init__(self, emu: QueueEmulator, args, tmp: Path) -> None:
        self.emu = emu
        self.args = args
        self.tmp = tmp
        self.resolved = Resolved(emu)

    def _queue(self, side: Side, what: str) -> tuple[str, Path]:
        tag = uuid.uuid4().hex[:8]
        workdir = self.tmp / f"{side.name.replace(' ', '_').replace('(', '').replace(')', '')}-{what}-{tag}"
        workdir.mkdir(parents=True)
        return f"bench-{tag}/{what}", workdir

    async def _tasks(self, side: Side, queue: str, n: int, command: list[str]) -> list[str]:
        return [await self.emu.create_task(taskQueueId=queue, payload=side.payload(command)) for _ in range(n)]

    def _runs(self, task_ids: list[str]):
        return [self.emu.runs(t)[-1] for t in task_ids]

    async def capacity_one(self, side: Side) -> dict:
        """Start-up, idle RSS, claim → resolution and CPU per task at capacity 1."""
        queue, workdir = self._queue(side, "c1")
        workers = side.start(self.emu, queue, workdir, capacity=1, command=TRIVIAL, poll_s=30)
        try:
            first = await wait_claimers(self.emu, queue, 1, workers.spawned)
            await asyncio.sleep(2.0)
            idle_rss = workers.sample.peak_rss
            cpu0 = workers.cpu_s()
            ids = await self._tasks(side, queue, self.args.c1_tasks, TRIVIAL)
            await self.resolved.wait_all(ids)
            cpu1 = workers.cpu_s()
        finally:
            await workers.stop()
        runs = self._runs(ids)
        lat = sorted(r.resolved - r.started for r in runs)
        states = {r.state for r in runs}
        return {"startup_s": first - workers.spawned, "idle_rss": idle_rss,
                "c1_median_ms": 1000 * statistics.median(lat), "c1_p90_ms": 1000 * lat[int(0.9 * (len(lat) - 1))],
                "cpu_ms": 1000 * (cpu1 - cpu0) / len(ids), "c1_states": states}

    async def throughput(self, side: Side, capacity: int) -> dict:
        queue, workdir = self._queue(side, f"c{capacity}")
        workers = side.start(self.emu, queue, workdir, capacity=capacity, command=TRIVIAL, poll_s=30)
        try:
            await wait_claimers(self.emu, queue, capacity if side.kind == "scriptworker" else 1, workers.spawned)
            await asyncio.sleep(1.0)
            workers.reset_peaks()
            ids = await self._tasks(side, queue, self.args.tp_tasks, TRIVIAL)
            await self.resolved.wait_all(ids)
            peak, total = workers.sample.peak_rss, workers.sample.peak_total_rss
        finally:
            await workers.stop()
        runs = self._runs(ids)
        span = max(r.resolved for r in runs) - min(r.started for r in runs)
        return {"tasks_per_s": len(ids) / span, "peak_rss": peak, "peak_total_rss": total,
                "states": {r.state for r in runs}}

    async def million_lines(self, side: Side) -> dict:
        command = ["seq", "1000000"]
        queue, workdir = self._queue(side, "seq")
        workers = side.start(self.emu, queue, workdir, capacity=1, command=command, poll_s=30)
        try:
            await wait_claimers(self.emu, queue, 1, workers.spawned)
            ids = await self._tasks(side, queue, 3, command)
            await self.resolved.wait_all(ids)
        finally:
            await workers.stop()
        runs = self._runs(ids)
        return {"seq_s": statistics.median(r.resolved - r.started for r in runs), "states": {r.state for r in runs}}

    async def cancellation(self, side: Side) -> dict:
        command = ["sleep", "120"]
        queue, workdir = self._queue(side, "cancel")
        poll = self.args.cancel_poll
        workers = side.start(self.emu, queue, workdir, capacity=1, command=command, poll_s=poll)
        latencies = []
        try:
            await wait_claimers(self.emu, queue, 1, workers.spawned)
            for _ in range(self.args.cancels):
                (task_id,) = await self._tasks(side, queue, 1, command)
                async with asyncio.timeout(WAIT_S):
                    while self.emu.task_state(task_id) != "running":
                        await asyncio.sleep(0.02)
                await asyncio.sleep(0.5)  # the task's process is up
                cancelled = time.time()
                self.emu.cancel_task(task_id)
                latencies.append(await self._first_upload_after(task_id, cancelled) - cancelled)
        finally:
            await workers.stop()
        return {"cancel_s": statistics.median(latencies), "cancel_max_s": max(latencies)}

    async def _first_upload_after(self, task_id: str, since: float) -> float:
        async with asyncio.timeout(WAIT_S):
            while True:
                calls = [c for c in self.emu.calls_to("createArtifact")
                         if c.params.get("taskId") == task_id and c.time >= since]
                if calls:
                    return min(c.time for c in calls)
                await asyncio.sleep(0.02)


# ---------------------------------------------------------------------- driver and report
def scriptworker_bin(venv: Path) -> Path:
    """The scriptworker executable of ``venv``, installed with pip when missing."""
    exe = venv / "bin" / "scriptworker"
    if not exe.exists():
        print(f"installing scriptworker into {venv} ...", file=sys.stderr)
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        subprocess.run([str(venv / "bin" / "pip"), "install", "-q", "scriptworker"], check=True)
    return exe


def version_of(venv: Path) -> str:
    out = subprocess.run([str(venv / "bin" / "python"), "-c",
                          "import importlib.metadata as m; print(m.version('scriptworker'))"],
                         capture_output=True, text=True)
    return out.stdout.strip() or "?"


async def measure(args) -> tuple[list[Side], dict[str, dict]]:
    sides = []
    if not args.no_scriptworker:
        sides.append(Side("scriptworker (s3)", "scriptworker", sw_bin=scriptworker_bin(Path(args.sw_venv))))
    sides += [Side("tcworker (s3)", "tcworker", objects=False), Side("tcworker (object)", "tcworker", objects=True)]
    results: dict[str, dict] = {s.name: {} for s in sides}
    tmp = Path(tempfile.mkdtemp(prefix="tcw-bench-"))
    try:
        async with QueueEmulator(long_poll_s=5, validate_schemas=False, claim_timeout_s=1200) as emu:
            bench = Bench(emu, args, tmp)
            steps = [("capacity 1", bench.capacity_one), ("capacity 8", lambda s: bench.throughput(s, 8)),
                     ("capacity 32", lambda s: bench.throughput(s, 32)), ("1M lines", bench.million_lines),
                     ("cancellation", bench.cancellation)]
            for label, step in steps:
                for side in sides:
                    if side.kind == "scriptworker" and label == "capacity 32" and args.sw_max_procs < 32:
                        continue
                    print(f"{label}: {side.name} ...", file=sys.stderr, flush=True)
                    out = await step(side)
                    key = label.replace(" ", "")
                    results[side.name].update({f"{key}.{k}" if k in ("states", "peak_rss", "peak_total_rss",
                                                                     "tasks_per_s") else k: v
                                               for k, v in out.items()})
                    print(f"  {out}", file=sys.stderr, flush=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return sides, results


def table(sides: list[Side], results: dict[str, dict]) -> str:
    mb = 1024 * 1024

    def cell(side: Side, key: str, fmt) -> str:
        value = results[side.name].get(key)
        return "n/a" if value is None else fmt(value, results[side.name])

    rows = [
        ("start-up to first claimWork (s)", "startup_s", lambda v, r: f"{v:.2f}"),
        ("peak RSS idle (MB)", "idle_rss", lambda v, r: f"{v / mb:.1f}"),
        ("claim → resolution, capacity 1, median [p90] (ms)", "c1_median_ms",
         lambda v, r: f"{v:.1f} [{r['c1_p90_ms']:.1f}]"),
        ("worker CPU per task, capacity 1 (ms)", "cpu_ms", lambda v, r: f"{v:.1f}"),
        ("throughput, capacity 8 (tasks/s)", "capacity8.tasks_per_s", lambda v, r: f"{v:.1f}"),
        ("throughput, capacity 32 (tasks/s)", "capacity32.tasks_per_s", lambda v, r: f"{v:.1f}"),
        ("peak RSS at capacity 32 (MB; scriptworker: one process / all)", "capacity32.peak_rss",
         lambda v, r: f"{v / mb:.1f}" + (f" / {r['capacity32.peak_total_rss'] / mb:.0f}"
                                         if r["capacity32.peak_total_rss"] != v else "")),
        ("task printing 1,000,000 lines, claim → resolution (s)", "seq_s", lambda v, r: f"{v:.2f}"),
        ("cancellation → log upload, median / max (s)", "cancel_s",
         lambda v, r: f"{v:.2f} / {r['cancel_max_s']:.2f}"),
    ]
    head = "| metric | " + " | ".join(s.name for s in sides) + " |"
    lines = [head, "|---|" + "---|" * len(sides)]
    for label, key, fmt in rows:
        lines.append(f"| {label} | " + " | ".join(cell(s, key, fmt) for s in sides) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--c1-tasks", type=int, default=200, help="tasks for claim → resolution at capacity 1")
    parser.add_argument("--tp-tasks", type=int, default=1000, help="tasks per throughput run")
    parser.add_argument("--cancels", type=int, default=3, help="cancellations per worker")
    parser.add_argument("--cancel-poll", type=float, default=5.0,
                        help="tcworker statusPollIntervalSecs = scriptworker reclaim_interval (s)")
    parser.add_argument("--sw-venv", default="/tmp/tcworker-bench-sw-venv")
    parser.add_argument("--sw-max-procs", type=int, default=32, help="skip scriptworker at capacity 32 if < 32")
    parser.add_argument("--no-scriptworker", action="store_true")
    parser.add_argument("--quick", action="store_true", help="20 tasks at capacity 1, 100 per throughput run")
    parser.add_argument("--out", default=str(ROOT / "docs" / "benchmarks.md"))
    args = parser.parse_args()
    if args.quick:
        args.c1_tasks, args.tp_tasks, args.cancels = 20, 100, 1
    started = time.time()
    sides, results = asyncio.run(measure(args))
    text = table(sides, results)
    problems = [f"{name}: {k} {v}" for name, r in results.items() for k, v in r.items()
                if k.endswith("states") and v != {"completed"}]
    meta = (f"{time.strftime('%Y-%m-%d')}, {platform.machine()} {os.cpu_count()} cores, Python "
            f"{platform.python_version()}, scriptworker "
            f"{version_of(Path(args.sw_venv)) if not args.no_scriptworker else '-'}; "
            f"{args.c1_tasks} tasks at capacity 1, {args.tp_tasks} per throughput run, "
            f"{args.cancels} cancellations, poll/reclaim {args.cancel_poll:g} s; "
            f"whole run {time.time() - started:.0f} s")
    print(text)
    print(meta)
    for p in problems:
        print("WARNING", p)
    write_report(Path(args.out), text, meta, problems)


def write_report(path: Path, text: str, meta: str, problems: list[str]) -> None:
    """Replace the generated section of ``path`` (between the markers), keeping the rest."""
    begin, end = "<!-- vs_scriptworker:begin -->", "<!-- vs_scriptworker:end -->"
    block = f"{begin}\n{text}\n\n_{meta}_\n" + "".join(f"\n**warning**: {p}\n" for p in problems) + f"{end}"
    old = path.read_text() if path.exists() else "# Benchmarks\n\n" + block + "\n"
    if begin in old and end in old:
        old = old[:old.index(begin)] + block + old[old.index(end) + len(end):]
    path.write_text(old)


if __name__ == "__main__":
    main()
