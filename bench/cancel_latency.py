"""Cancellation latency: ``cancelTask`` → the task's process is gone, with and without Pulse.

``.venv/bin/python bench/cancel_latency.py [--repeat 7] [--poll 2.0] [--amqp URL]``

One in-process :class:`~tcworker.worker.Worker` (native engine, capacity 1) claims from an
in-process queue emulator (schema validation off). Each round creates a task that writes its PID
and ``exec``s ``sleep``, waits for the PID, cancels the task on the emulator and times until a
pidfd on that process becomes readable (the process exited). Modes:

- ``pulse``: the emulator publishes to RabbitMQ (a unique exchange prefix), the worker listens;
  status polling every 600 s and the reclaim ~1000 s away, so only Pulse can be that fast.
- ``poll``: no Pulse; status polling every ``--poll`` seconds: latency is bounded by the interval.

Prints the median, min and max seconds per mode. Nothing else lives here.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import slugid

from tcworker.config import WorkerConfig
from tcworker.testing.queue import QueueEmulator
from tcworker.worker import Worker

POOL = "proj-test/python-worker"


async def _pid_from(path: Path, timeout_s: float = 30.0) -> int:
    deadline = time.monotonic() + timeout_s
    while not (path.exists() and path.read_text().strip()):
        if time.monotonic() > deadline:
            raise TimeoutError(f"the task never wrote {path}")
        await asyncio.sleep(0.005)
    return int(path.read_text())


async def _gone(pid: int) -> None:
    try:
        fd = os.pidfd_open(pid)
    except ProcessLookupError:
        return
    loop = asyncio.get_running_loop()
    done = loop.create_future()
    loop.add_reader(fd, lambda: done.done() or done.set_result(None))
    try:
        await done
    finally:
        loop.remove_reader(fd)
        os.close(fd)


def _config(emu: QueueEmulator, root: Path, **keys) -> WorkerConfig:
    creds = emu.worker_credentials(POOL, "bench-group", "bench-worker")
    raw = {"rootURL": emu.root_url, "clientId": creds["clientId"], "accessToken": creds["accessToken"],
           "workerPoolId": POOL, "workerGroup": "bench-group", "workerId": "bench-worker",
           "tasksDir": str(root / "tasks"), "requiredDiskSpaceMegabytes": 1, "engines": ["native"],
           "killGracePeriodSecs": 1, "outputDrainSecs": 0.2, "enableLiveLog": False}
    raw.update(keys)
    return WorkerConfig.from_mapping(raw, environ={})


async def measure(mode: str, repeat: int, poll_s: float, amqp_url: str) -> list[float]:
    """Cancellation latencies in seconds, one per round."""
    prefix = f"exchange/tcworker-bench-{slugid.nice()}/v1/"
    pulse = {"pulse_url": amqp_url, "pulse_prefix": prefix} if mode == "pulse" else {}
    keys = ({"pulseURL": amqp_url, "pulseNamespace": prefix, "statusPollIntervalSecs": 600}
            if mode == "pulse" else {"statusPollIntervalSecs": poll_s})
    latencies = []
    with tempfile.TemporaryDirectory(prefix="tcw-bench-") as tmp:
        root = Path(tmp)
        async with QueueEmulator(long_poll_s=1, validate_schemas=False, **pulse) as emu:
            worker = Worker(_config(emu, root, **keys))
            running = asyncio.create_task(worker.run())
            for i in range(repeat):
                pidfile = root / f"pid-{i}"
                task_id = await emu.create_task(payload={
                    "command": [["/bin/sh", "-c", f"echo $$ > {pidfile}; exec sleep 600"]], "maxRunTime": 900})
                pid = await _pid_from(pidfile)
                if worker.pulse is not None:
                    await asyncio.wait_for(worker.pulse.ready.wait(), 30)
                started = time.monotonic()
                emu.cancel_task(task_id)
                await _gone(pid)
                latencies.append(time.monotonic() - started)
                while worker.runs:  # the slot frees once the log is uploaded
                    await asyncio.sleep(0.01)
            worker.request_stop("bench done")
            await running
    return latencies


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeat", type=int, default=7)
    parser.add_argument("--poll", type=float, default=2.0, help="status poll interval without Pulse (s)")
    parser.add_argument("--amqp", default="amqp://guest:guest@127.0.0.1:5672/")
    parser.add_argument("--modes", default="pulse,poll")
    args = parser.parse_args()
    print(f"{'mode':<9} {'rounds':>6} {'median s':>9} {'min s':>7} {'max s':>7}")
    for mode in args.modes.split(","):
        values = asyncio.run(measure(mode, args.repeat, args.poll, args.amqp))
        label = mode if mode == "pulse" else f"poll {args.poll:g}s"
        print(f"{label:<9} {len(values):>6} {statistics.median(values):>9.3f} {min(values):>7.3f} "
              f"{max(values):>7.3f}")
        sys.stdout.flush()


if __name__ == "__main__":
    main()
