"""Bench: task output through the native engine + TaskLog vs the same command redirected to a file.

Usage: ``.venv/bin/python bench/native_output.py [--gib 1] [--lines 1000000] [--repeat 5] [--dir DIR]``

For each workload, runs the command (a) with ``sh -c '<cmd> > file'`` directly, (b) through
:class:`~tcworker.engines.native.NativeEngine` into a :class:`~tcworker.logs.TaskLog`, and (c) like
(b) with one live reader following the log. Prints a Markdown table of median wall seconds, the
ratio to the redirect (target <= 1.2) and the worker's own user CPU seconds.
"""

from __future__ import annotations

import argparse
import asyncio
import resource
import shutil
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

from tcworker.config import WorkerConfig
from tcworker.engines.base import SandboxSpec
from tcworker.engines.native import NativeEngine
from tcworker.logs import TaskLog

ENV = {"PATH": "/usr/local/bin:/usr/bin:/bin"}


def cpu_s() -> float:
    """User CPU seconds of this process (the kernel's page-cache copy in splice is system time)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_utime


def redirect(cmd: str, workdir: Path) -> tuple[float, float]:
    out = workdir / "redirect.out"
    start, cpu = time.perf_counter(), cpu_s()
    subprocess.run(["sh", "-c", f"{cmd} > {out}"], check=True)
    elapsed = time.perf_counter() - start
    out.unlink()
    return elapsed, cpu_s() - cpu


async def through_engine(engine: NativeEngine, cmd: str, workdir: Path, readers: int) -> tuple[float, float]:
    log = TaskLog(workdir / "live_backing.log")
    sandbox = await engine.create_sandbox("BenchTaskId", 0, log)

    async def drain() -> int:
        return sum([len(chunk) async for chunk in log.follow()])

    followers = [asyncio.ensure_future(drain()) for _ in range(readers)]
    start, cpu = time.perf_counter(), cpu_s()
    result = await sandbox.run(SandboxSpec(commands=(("sh", "-c", cmd),), env=ENV))
    elapsed = time.perf_counter() - start
    log.close()
    total = await asyncio.gather(*followers)
    cpu = cpu_s() - cpu
    assert result.succeeded, result
    assert all(n == log.size_bytes for n in total)
    await sandbox.dispose()
    log.path.unlink()
    return elapsed, cpu


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--gib", type=float, default=1.0)
    parser.add_argument("--lines", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--dir", type=Path, default=None, help="work dir (default: a temp dir)")
    args = parser.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="tcw-bench-", dir=args.dir))
    engine = NativeEngine(WorkerConfig.from_mapping({"tasksDir": str(workdir / "tasks")}))
    await engine.boot()
    workloads = [
        (f"{args.gib:g} GiB stdout", f"head -c {int(args.gib * 2**30)} /dev/zero"),
        (f"seq {args.lines}", f"seq {args.lines}"),
    ]
    print(f"cgroup v2 process trees: {engine.uses_cgroup}\n")
    print("| workload | redirect to file (s) | engine + TaskLog (s) | ratio | + 1 live reader (s) | ratio | worker user CPU (s) |")
    print("|---|---|---|---|---|---|---|")
    try:
        for label, cmd in workloads:
            base = [redirect(cmd, workdir) for _ in range(args.repeat)]
            eng = [await through_engine(engine, cmd, workdir, 0) for _ in range(args.repeat)]
            read = [await through_engine(engine, cmd, workdir, 1) for _ in range(args.repeat)]
            b, e, r = (statistics.median(x[0] for x in runs) for runs in (base, eng, read))
            cpu = statistics.median(x[1] for x in eng)
            print(f"| {label} | {b:.3f} | {e:.3f} | {e / b:.2f} | {r:.3f} | {r / b:.2f} | {cpu:.3f} |")
        peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        print(f"\nworker peak RSS over the whole bench: {peak_mib:.0f} MiB")
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    asyncio.run(main())
