"""Benchmark of the worker daemon (``tcworker run``) against the in-process queue emulator.

Measures, with the emulator's schema validation off:

- start-up: process spawn → the first ``claimWork`` request reaching the emulator (median of
  ``--starts`` starts);
- resolution of a trivial task (``true``; the only artifacts are the log's): the run's
  ``started`` → ``resolved`` on the queue, i.e. claim → resolved (median and p90 of ``--tasks``);
- worker CPU per task: user + system seconds of the worker process itself (its task processes
  excluded), measured with psutil over those tasks, divided by their number;
- RSS (and USS) of the worker process after those tasks.

Prints a Markdown table. Usage: ``.venv/bin/python bench/daemon.py [--tasks 50] [--starts 3]``.

Does not measure: large outputs or artifacts (``bench/native_output.py``), cancellation latency.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import statistics
import sys
import tempfile
import time
from pathlib import Path

import psutil

from tcworker.testing.queue import QueueEmulator

POOL = "proj-test/python-worker"


def _config(emu: QueueEmulator, folder: Path) -> Path:
    creds = emu.worker_credentials(POOL, "bench", "bench-worker")
    doc = {"rootURL": emu.root_url, **creds, "workerPoolId": POOL, "workerGroup": "bench",
           "workerId": "bench-worker", "tasksDir": str(folder / "tasks"), "requiredDiskSpaceMegabytes": 1,
           "engines": ["native"]}
    path = folder / "worker.json"
    path.write_text(json.dumps(doc))
    return path


async def _start(config: Path) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        sys.executable, "-m", "tcworker", "run", "--config", str(config),
        stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL)


async def _until(predicate, timeout_s: float = 120.0, step_s: float = 0.005) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError("benchmark step timed out")
        await asyncio.sleep(step_s)


async def _stop(proc: asyncio.subprocess.Process) -> None:
    if proc.returncode is None:
        proc.send_signal(signal.SIGTERM)
        await asyncio.wait_for(proc.wait(), 60)


async def measure_startup(emu: QueueEmulator, config: Path, starts: int) -> list[float]:
    """Seconds from spawn to the first claimWork request, one figure per start."""
    figures = []
    for _ in range(starts):
        seen = len(emu.calls_to("claimWork"))
        spawned = time.time()
        proc = await _start(config)
        await _until(lambda: len(emu.calls_to("claimWork")) > seen)
        figures.append(emu.calls_to("claimWork")[seen].time - spawned)
        await _stop(proc)
    return figures


async def measure_tasks(emu: QueueEmulator, config: Path, count: int) -> dict:
    """Resolution seconds per task, worker CPU seconds per task, peak RSS (MB)."""
    proc = await _start(config)
    seen = len(emu.calls_to("claimWork"))
    await _until(lambda: len(emu.calls_to("claimWork")) > seen)  # booted and idle
    worker = psutil.Process(proc.pid)
    before = worker.cpu_times()
    ids = [await emu.create_task(payload={"command": [["true"]], "maxRunTime": 60}) for _ in range(count)]
    await _until(lambda: all(emu.task_state(t) in ("completed", "failed", "exception") for t in ids))
    after = worker.cpu_times()
    rss_mb = worker.memory_info().rss / 2**20
    try:
        peak_mb = worker.memory_full_info().uss / 2**20
    except psutil.Error:
        peak_mb = rss_mb
    await _stop(proc)
    states = {emu.task_state(t) for t in ids}
    runs = [emu.runs(t)[0] for t in ids]
    user, system = after.user - before.user, after.system - before.system
    return {"resolution_s": [r.resolved - r.started for r in runs], "cpu_per_task_s": (user + system) / count,
            "user_per_task_s": user / count, "system_per_task_s": system / count,
            "rss_mb": rss_mb, "uss_mb": peak_mb, "states": states}


def _ms(seconds: float) -> str:
    return f"{seconds * 1000:.0f} ms"


async def main(tasks: int, starts: int) -> None:
    with tempfile.TemporaryDirectory(prefix="tcw-bench-") as tmp:
        async with QueueEmulator(long_poll_s=20, validate_schemas=False, strict=False) as emu:
            config = _config(emu, Path(tmp))
            startup = await measure_startup(emu, config, starts)
            result = await measure_tasks(emu, config, tasks)
    res = sorted(result["resolution_s"])
    p90 = res[min(len(res) - 1, int(len(res) * 0.9))]
    print(f"| measure (emulator, schema validation off, {psutil.cpu_count()} cores) | value |")
    print("|---|---|")
    print(f"| start-up to first claimWork (median of {starts}) | {_ms(statistics.median(startup))} "
          f"(min {_ms(min(startup))}, max {_ms(max(startup))}) |")
    print(f"| trivial task claim → resolved (median of {tasks}) | {_ms(statistics.median(res))} "
          f"(p90 {_ms(p90)}) |")
    print(f"| worker CPU per task (user+sys, over {tasks} tasks) | {result['cpu_per_task_s'] * 1000:.1f} ms "
          f"(user {result['user_per_task_s'] * 1000:.1f}, sys {result['system_per_task_s'] * 1000:.1f}) |")
    print(f"| worker RSS after {tasks} tasks | {result['rss_mb']:.0f} MB (USS {result['uss_mb']:.0f} MB) |")
    print(f"| task states | {', '.join(sorted(result['states']))} |")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tasks", type=int, default=50, help="trivial tasks to run (default 50)")
    parser.add_argument("--starts", type=int, default=3, help="worker starts to time (default 3)")
    args = parser.parse_args()
    asyncio.run(main(args.tasks, args.starts))
