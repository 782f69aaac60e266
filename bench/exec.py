"""Bench: ``tcworker exec`` end to end (the real CLI, a fresh process per run) against the bare command.

Usage: ``.venv/bin/python bench/exec.py [--gib 1] [--lines 1000000] [--repeat 5] [--dir DIR]``

Workloads: a task printing N GiB of zeros to stdout and ``seq N`` (each compared with the same
command redirected to a file), and ``true`` (compared with ``true`` itself). ``tcworker exec`` echoes
task output to its own stdout: here that stdout (and stderr) is ``/dev/null``, so the figures are the
worker's cost (engine, task log, copying the log into the ``--out`` folder as both log names), not a
terminal's. Prints a Markdown table: median wall seconds, the ratio (target <= 1.2 for the output
workloads), and peak RSS in MiB as ``/usr/bin/time`` reports it (``ru_maxrss`` of the process and the
descendants it waited for; for exec that is the worker's Python process in practice).
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

TIME = "/usr/bin/time"
TCWORKER = [sys.executable, "-m", "tcworker"]


def timed(argv: list[str], cwd: Path) -> tuple[float, float]:
    """Run ``argv`` under ``/usr/bin/time`` with output to /dev/null → (wall s, peak RSS MiB)."""
    rss_file = cwd / "rss.txt"
    start = time.perf_counter()
    subprocess.run([TIME, "-f", "%M", "-o", str(rss_file), *argv], cwd=cwd, check=False,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wall = time.perf_counter() - start
    rss_kib = int(rss_file.read_text().split()[-1])
    return wall, rss_kib / 1024


def baseline_argv(cmd: str, workdir: Path) -> list[str]:
    if cmd == "true":
        return ["true"]
    return ["sh", "-c", f"{cmd} > {workdir / 'redirect.out'}"]


def exec_argv(cmd: str, workdir: Path) -> list[str]:
    task = workdir / "task.json"
    task.write_text(json.dumps({"maxRunTime": 3600, "command": [["/bin/sh", "-c", cmd]]}))
    return [*TCWORKER, "exec", str(task), "--out", str(workdir / "out")]


def measure(cmd: str, workdir: Path, repeat: int) -> dict[str, tuple[float, float]]:
    """Median (wall, peak RSS) of the bare command and of ``tcworker exec``, alternating runs."""
    results: dict[str, list[tuple[float, float]]] = {"bare": [], "exec": []}
    for _ in range(repeat):
        for kind, build in (("bare", baseline_argv), ("exec", exec_argv)):
            results[kind].append(timed(build(cmd, workdir), workdir))
            for leftover in ("redirect.out", "out", "tasks"):
                path = workdir / leftover
                if path.is_dir():
                    shutil.rmtree(path)
                elif path.exists():
                    path.unlink()
    return {kind: (statistics.median(w for w, _ in runs), max(r for _, r in runs))
            for kind, runs in results.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--gib", type=float, default=1.0)
    parser.add_argument("--lines", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--dir", type=Path, default=None, help="scratch folder (default: a temp dir)")
    args = parser.parse_args()
    workloads = [
        (f"{args.gib:g} GiB stdout", f"head -c {int(args.gib * 2**30)} /dev/zero", "same, > file"),
        (f"seq {args.lines}", f"seq {args.lines}", "same, > file"),
        ("true", "true", "`true` itself"),
    ]
    print(f"`tcworker exec` (stdout and stderr to /dev/null) vs the bare command; median of "
          f"{args.repeat} runs, peak RSS the maximum.\n")
    print("| workload | baseline | baseline wall (s) | exec wall (s) | ratio | baseline peak RSS (MiB) "
          "| exec peak RSS (MiB) |")
    print("|---|---|---|---|---|---|---|")
    with tempfile.TemporaryDirectory(prefix="tcworker-bench-", dir=args.dir) as scratch:
        for label, cmd, baseline in workloads:
            got = measure(cmd, Path(scratch), args.repeat)
            (bare_wall, bare_rss), (exec_wall, exec_rss) = got["bare"], got["exec"]
            print(f"| {label} | {baseline} | {bare_wall:.3f} | {exec_wall:.3f} | {exec_wall / bare_wall:.2f} "
                  f"| {bare_rss:.1f} | {exec_rss:.1f} |", flush=True)


if __name__ == "__main__":
    main()
