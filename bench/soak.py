"""Soak: one ``tcworker run`` process runs tasks for N minutes while its RSS, open file descriptors
and thread count are sampled (psutil); reports whether any of them grows without bound.

The queue (in-process emulator, schemas off) is kept fed with the chaos mix
(``tcworker.testing.chaos.make_task``: quick, slow, chatty, artifact-heavy, failing, retrying),
about two tasks pending per slot, optionally with random faults (``--rate``). The emulator's own
call log is cleared as it goes (it would grow in this process, not the worker).

Verdict per metric: the median of the last quarter of the samples against the median of the
second quarter (the first quarter is warm-up: imports, pools, caches filling). "flat" when the
growth stays within the noise allowance (RSS: 10 % or 8 MiB, whichever is larger; fds: 8; threads:
4), else "GROWS". Prints a per-minute table and the verdicts; exits 1 when anything grows.

Usage: ``.venv/bin/python bench/soak.py [--minutes 20] [--capacity 4] [--sample 5] [--rate 0]``.

Does not check: correctness of the runs (``bench/chaos.py`` does).
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import psutil

sys.path.insert(0, str(Path(__file__).resolve().parent))
from chaos import start_worker, stop_worker, write_config  # noqa: E402  (bench/chaos.py)

from tcworker.testing import chaos  # noqa: E402
from tcworker.testing.queue import QueueEmulator  # noqa: E402

ALLOWANCE = {"rss_mib": lambda base: max(8.0, base * 0.10), "fds": lambda base: 8, "threads": lambda base: 4}


def sample(proc: psutil.Process) -> dict[str, float]:
    """The worker's RSS (MiB), open fds and threads now."""
    with proc.oneshot():
        return {"rss_mib": proc.memory_info().rss / 2**20, "fds": proc.num_fds(), "threads": proc.num_threads()}


def verdicts(samples: list[dict[str, float]]) -> dict[str, tuple[float, float, str]]:
    """metric → (second-quarter median, last-quarter median, "flat" | "GROWS")."""
    quarter = max(1, len(samples) // 4)
    result = {}
    for metric, allowance in ALLOWANCE.items():
        base = statistics.median(s[metric] for s in samples[quarter:2 * quarter] or samples)
        last = statistics.median(s[metric] for s in samples[-quarter:])
        result[metric] = (base, last, "flat" if last - base <= allowance(base) else "GROWS")
    return result


async def feed(emu: QueueEmulator, want_pending: int, stop: asyncio.Event, counter: list[int]) -> None:
    """Keep about ``want_pending`` tasks pending until ``stop``."""
    index = 0
    while not stop.is_set():
        pending = sum(1 for task_id in counter[1:] if emu.task_state(task_id) == "pending")
        for _ in range(max(0, want_pending - pending)):
            task = chaos.make_task(chaos.KINDS[index % len(chaos.KINDS)], index, slow_s=2.0)
            counter.append(await emu.create_task(payload=task.payload, retries=20))
            index += 1
        del counter[1:max(1, len(counter) - 4 * want_pending)]  # only recent ids can be pending
        counter[0] = index
        emu.calls.clear()
        try:
            await asyncio.wait_for(stop.wait(), 0.5)
        except TimeoutError:
            pass


async def run(args: argparse.Namespace, folder: Path) -> int:
    async with QueueEmulator(claim_timeout_s=20, long_poll_s=0.5, validate_schemas=False) as emu:
        if args.rate:
            emu.faults.random(args.rate, seed=1, hang_s=5.0, max_delay_s=1.5)
        config = write_config(emu, folder, **chaos.worker_config(capacity=args.capacity))
        worker = await start_worker(config, folder / "worker.log")
        proc = psutil.Process(worker.pid)
        stop, created = asyncio.Event(), [0]
        feeder = asyncio.create_task(feed(emu, 2 * args.capacity, stop, created))
        samples: list[dict[str, float]] = []
        started = time.monotonic()
        print("| minute | tasks created | RSS (MiB) | fds | threads |\n|---|---|---|---|---|")
        next_row = 60.0
        while time.monotonic() - started < args.minutes * 60 and worker.returncode is None:
            samples.append(sample(proc))
            if time.monotonic() - started >= next_row:
                s = samples[-1]
                print(f"| {next_row / 60:.0f} | {created[0]} | {s['rss_mib']:.1f} | {s['fds']:.0f} | {s['threads']:.0f} |",
                      flush=True)
                next_row += 60.0
            await asyncio.sleep(args.sample)
        stop.set()
        await feeder
        peak = max(s["rss_mib"] for s in samples)
        code = await stop_worker(worker)
        crashed = (folder / "worker.log").read_text(errors="replace").count(" crashed")
        print(f"\n{created[0]} tasks created in {args.minutes} min, capacity {args.capacity}, faults {args.rate}; "
              f"{len(samples)} samples; peak RSS {peak:.1f} MiB; worker exit {code}; runs crashed: {crashed}")
        grows = False
        for metric, (base, last, verdict) in verdicts(samples).items():
            print(f"{metric}: second quarter {base:.1f}, last quarter {last:.1f}: {verdict}")
            grows |= verdict != "flat"
        return 1 if grows or crashed or code != 72 else 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=20.0)
    parser.add_argument("--capacity", type=int, default=4)
    parser.add_argument("--sample", type=float, default=5.0, help="seconds between samples")
    parser.add_argument("--rate", type=float, default=0.0, help="random fault rate (0: none)")
    args = parser.parse_args()
    folder = Path(tempfile.mkdtemp(prefix="tcw-bench-soak-"))
    try:
        return asyncio.run(run(args, folder))
    finally:
        shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
