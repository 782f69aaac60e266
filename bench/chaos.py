"""The long chaos run: one ``tcworker run`` process against the in-process emulator injecting random
faults, the chaos suite's invariants checked at the end (``tcworker.testing.chaos``).

Prints a Markdown table: tasks, runs, retries (runs beyond each task's first), faults injected
(by kind), calls, wall time, the worker's peak RSS (``VmHWM``), outcomes, and every violation.
Exits 1 when an invariant is broken.

Usage: ``.venv/bin/python bench/chaos.py [--tasks 1000] [--rate 0.1] [--seed 1] [--capacity 8]
[--claim-timeout 4] [--call-timeout 3] [--hang 5]``. Schema validation is off (it costs
milliseconds per call). The worker's log goes to ``<tmp>/worker.log`` (kept with ``--keep``).

Does not measure: speed without faults (``bench/daemon.py``), growth over time (``bench/soak.py``).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import signal
import sys
import tempfile
import time
from pathlib import Path

import psutil

from tcworker.testing import chaos
from tcworker.testing.queue import QueueEmulator

POOL = "proj-test/python-worker"


def write_config(emu: QueueEmulator, folder: Path, **keys) -> Path:
    """A worker config for ``emu`` (tasks under ``folder/tasks``); returns its path."""
    creds = emu.worker_credentials(POOL, "bench", "bench-worker")
    doc = {"rootURL": emu.root_url, **creds, "workerPoolId": POOL, "workerGroup": "bench",
           "workerId": "bench-worker", "tasksDir": str(folder / "tasks"), "requiredDiskSpaceMegabytes": 1,
           "engines": ["native"], "killGracePeriodSecs": 1, "outputDrainSecs": 0.2, **keys}
    path = folder / "worker.json"
    path.write_text(json.dumps(doc))
    return path


async def start_worker(config: Path, log_path: Path) -> asyncio.subprocess.Process:
    """``python -m tcworker run --config config``, its log (stderr) into ``log_path``."""
    with log_path.open("ab") as log_file:
        return await asyncio.create_subprocess_exec(
            sys.executable, "-m", "tcworker", "run", "--config", str(config),
            stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.DEVNULL, stderr=log_file)


def peak_rss_mb(pid: int) -> float:
    """``VmHWM`` of a live process, MiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


async def stop_worker(proc: asyncio.subprocess.Process) -> int:
    proc.send_signal(signal.SIGTERM)
    try:
        return await asyncio.wait_for(proc.wait(), 60)
    except TimeoutError:
        proc.kill()
        return await proc.wait()


async def run(args: argparse.Namespace, folder: Path) -> int:
    async with QueueEmulator(claim_timeout_s=args.claim_timeout, long_poll_s=0.5, validate_schemas=False) as emu:
        tasks = chaos.make_mix(args.tasks)
        ids = await chaos.create_tasks(emu, tasks)
        faults = emu.faults.random(args.rate, seed=args.seed, hang_s=args.hang, max_delay_s=1.5)
        config = write_config(emu, folder, **chaos.worker_config(capacity=args.capacity,
                                                                  call_timeout_s=args.call_timeout))
        started = time.monotonic()
        proc = await start_worker(config, folder / "worker.log")
        unresolved = await chaos.wait_resolved(emu, ids, timeout_s=args.timeout)
        elapsed = time.monotonic() - started
        emu.faults.clear()
        calls = len(emu.calls)
        problems = chaos.check_invariants(emu, tasks) + [f"unresolved: {t}" for t in unresolved]
        last = await emu.create_task(payload={"command": [["/bin/sh", "-c", "echo last"]], "maxRunTime": 60})
        if await chaos.wait_resolved(emu, [last], timeout_s=60) or emu.task_state(last) != "completed":
            problems.append(f"the last clean task ended {emu.task_state(last)}")
        await asyncio.sleep(1)  # the last run's directory is removed after its report
        problems += [f"leftover {item}" for item in chaos.leftovers(folder / "tasks", [*ids, last])]
        peak = peak_rss_mb(proc.pid) if proc.returncode is None else float("nan")
        code = await stop_worker(proc)
        if code != 72:
            problems.append(f"worker exit code {code} (expected 72 after SIGTERM)")
        log_text = (folder / "worker.log").read_text(errors="replace")
        crashes = log_text.count(" crashed")
        if crashes:
            problems.append(f"{crashes} run(s) crashed (see the worker log)")
        runs = sum(len(emu.runs(t)) for t in ids)
        print(f"| tasks | runs | retries | faults injected | calls | time (s) | peak RSS (MiB) |\n"
              f"|---|---|---|---|---|---|---|\n"
              f"| {len(ids)} | {runs} | {runs - len(ids)} | {faults.total} ({dict(faults.by_kind())}) "
              f"| {calls} | {elapsed:.0f} | {peak:.0f} |\n")
        print(f"rate {args.rate}, seed {args.seed}, capacity {args.capacity}, claim timeout "
              f"{args.claim_timeout}s, call timeout {args.call_timeout}s, hangs end after {args.hang}s")
        print("outcomes:", dict(chaos.outcome_counts(emu, ids)))
        print("violations:", len(problems))
        for problem in problems:
            print("  ", problem)
        return 1 if problems else 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tasks", type=int, default=1000)
    parser.add_argument("--rate", type=float, default=0.1)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--capacity", type=int, default=8)
    parser.add_argument("--claim-timeout", type=float, default=4.0)
    parser.add_argument("--call-timeout", type=float, default=3.0)
    parser.add_argument("--hang", type=float, default=5.0, help="seconds before an unanswered hang is reset")
    parser.add_argument("--timeout", type=float, default=3600.0, help="give up waiting after this long")
    parser.add_argument("--keep", action="store_true", help="keep the temp folder (worker log)")
    args = parser.parse_args()
    folder = Path(tempfile.mkdtemp(prefix="tcw-bench-chaos-"))
    try:
        return asyncio.run(run(args, folder))
    finally:
        if args.keep:
            print("worker log:", folder / "worker.log")
        else:
            shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
