"""Wall time of a trivial task through tcworker's docker engine vs ``docker run --rm``.

Same image (``tcworker-test/bash-busybox:1``, built by ``tests/docker_fixtures.py`` when
missing), same command (``sh -c 'echo hello'``). tcworker's side is the engine alone: create
sandbox → run → artifact root → dispose (container created, attached, started, waited, removed);
the CLI side is a ``docker run --rm`` process per task (client start-up included, as a user sees
it). Prints medians and the ratio.

Usage: ``.venv/bin/python bench/docker.py [--runs 20]``. Needs a running Docker daemon.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

# this file is named docker.py: drop its folder from the path so `import docker` finds the SDK
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from docker_fixtures import ensure_test_image  # noqa: E402

from tcworker.config import WorkerConfig  # noqa: E402
from tcworker.engines.base import SandboxSpec  # noqa: E402
from tcworker.engines.docker import ContainerOptions, DockerEngine  # noqa: E402
from tcworker.logs import TaskLog  # noqa: E402

COMMAND = ("sh", "-c", "echo hello")


async def engine_runs(image: str, runs: int, tmp: Path) -> list[float]:
    config = WorkerConfig.from_mapping({"tasksDir": str(tmp / "tasks")})
    engine = DockerEngine(config, default_image=image, required=True)
    await engine.boot()
    walls = []
    for i in range(runs):
        log = TaskLog(tmp / f"log{i}")
        started = time.perf_counter()
        sandbox = await engine.create_sandbox("BenchDockerTaskAaaaaaa", i, log)
        options = ContainerOptions(image=image, artifact_paths=())  # a task declaring no artifacts
        result = await sandbox.run(SandboxSpec(commands=(COMMAND,), env={"PATH": "/bin"}, engine_options=options))
        await sandbox.artifact_root()
        await sandbox.dispose()
        walls.append(time.perf_counter() - started)
        log.close()
        assert result.succeeded and b"hello\n" in log.path.read_bytes()
    return walls


def cli_runs(image: str, runs: int) -> list[float]:
    walls = []
    for _ in range(runs):
        started = time.perf_counter()
        out = subprocess.run(["docker", "run", "--rm", image, *COMMAND], capture_output=True, check=True).stdout
        walls.append(time.perf_counter() - started)
        assert out == b"hello\n"
    return walls


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=20)
    args = parser.parse_args()
    image = ensure_test_image()
    with tempfile.TemporaryDirectory(prefix="tcw-bench-docker-") as tmp:
        asyncio.run(engine_runs(image, 2, Path(tmp)))  # warm-up: SDK import, daemon caches
        cli_runs(image, 2)
        engine = asyncio.run(engine_runs(image, args.runs, Path(tmp)))
        cli = cli_runs(image, args.runs)
    e, c = statistics.median(engine), statistics.median(cli)
    print(f"runs: {args.runs} each; command: {' '.join(COMMAND)}")
    print(f"tcworker docker engine: median {e * 1000:.0f} ms (min {min(engine) * 1000:.0f}, max {max(engine) * 1000:.0f})")
    print(f"docker run --rm:        median {c * 1000:.0f} ms (min {min(cli) * 1000:.0f}, max {max(cli) * 1000:.0f})")
    print(f"wall ratio engine / docker run: {e / c:.2f}")


if __name__ == "__main__":
    main()
