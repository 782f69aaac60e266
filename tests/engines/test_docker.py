"""The docker engine through the run pipeline (TaskRun + docker plugin + folder outlet).

Real daemon, the bash+busybox test image. Each test states what the task does and asserts the
resolution, the artifacts written and the log lines; every test checks that no container of the
run is left behind.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest

from docker_fixtures import Runner
from tcworker.config import WorkerConfig
from tcworker.engines.docker import LABEL, OWNER_LABEL, TASKS_DIR_LABEL, DockerEngine
from tcworker.errors import RunResolvedElsewhere

pytestmark = pytest.mark.docker


@pytest.fixture
def runner(tmp_path: Path, docker_image: str, docker_client: Any) -> Runner:
    return Runner(tmp_path, docker_image, docker_client)


async def test_command_output_env_and_file_artifact(runner: Runner) -> None:
    resolution, outlet, log = await runner.run({
        "command": ["/bin/bash", "-c", 'echo "id=$TASK_ID run=$RUN_ID x=$X path=$PATH home=$HOME"; '
                    'mkdir -p /out && printf hello > /out/a.txt'],
        "env": {"X": "a b;$(no)"},
        "artifacts": {"public/a.txt": {"type": "file", "path": "/out/a.txt"},
                      "public/dir": {"type": "directory", "path": "/out"}},
    })
    assert (resolution.state, resolution.reason) == ("completed", "completed")
    assert b"id=TcWDockerTest0001aaaaaa run=0 x=a b;$(no) path=/usr/local/sbin:" in log
    assert b"/host/" not in log.split(b"=== Task Starting ===")[1]  # host PATH/HOME stay out
    assert (outlet.out_dir / "public" / "a.txt").read_bytes() == b"hello"
    assert (outlet.out_dir / "public" / "dir" / "a.txt").read_bytes() == b"hello"
    assert runner.leftovers() == []


async def test_no_command_runs_the_image_default(runner: Runner) -> None:
    resolution, _, log = await runner.run({})
    assert resolution.state == "completed"
    assert b"\ntest-image-default-cmd\n" in log


async def test_exit_code_fails_the_task(runner: Runner) -> None:
    resolution, _, log = await runner.run({"command": ["/bin/sh", "-c", "echo bye; exit 3"]})
    assert (resolution.state, resolution.reason) == ("failed", "failed")
    assert b"Exit Code: 3" in log
    assert runner.leftovers() == []


async def test_container_that_cannot_start_fails_with_the_daemons_message(runner: Runner) -> None:
    resolution, _, log = await runner.run({"command": ['echo "Hello world"']})
    assert resolution.state == "failed"
    assert b"[taskcluster:error] Could not start command 0: " in log
    assert b"executable file not found" in log or b"no such file" in log
    assert b"Exit Code: none (command did not start)" in log
    assert runner.leftovers() == []


async def test_image_that_cannot_be_pulled_fails(runner: Runner) -> None:
    resolution, _, log = await runner.run({"image": "127.0.0.1:9/tcw-no-such/image:1", "command": ["true"]})
    assert resolution.state == "failed"
    assert b"could not be pulled" in log


async def test_max_run_time_fails_and_artifacts_are_still_copied(runner: Runner) -> None:
    resolution, outlet, log = await runner.run({
        "maxRunTime": 1,
        "command": ["/bin/sh", "-c", "trap '' TERM; echo partial > /p.txt; echo started; sleep 600"],
        "artifacts": {"public/p.txt": {"type": "file", "path": "/p.txt"}},
    })
    assert resolution.state == "failed"
    assert b"max run time exceeded" in log
    assert (outlet.out_dir / "public" / "p.txt").read_bytes() == b"partial\n"
    assert runner.leftovers() == []


async def test_missing_artifact_is_an_error_artifact_and_does_not_fail(runner: Runner) -> None:
    resolution, outlet, _ = await runner.run({
        "command": ["/bin/sh", "-c", "mkdir -p /o && ln -s /etc/passwd /o/abs && echo in > /o/in"],
        "artifacts": {"public/missing.txt": {"type": "file", "path": "/nope/missing.txt"},
                      "public/o": {"type": "directory", "path": "/o"}},
    })
    assert resolution.state == "completed"
    names = {a.name: type(a).__name__ for a in outlet.artifacts}
    assert names["public/missing.txt"] == "ErrorArtifact"
    assert names.get("public/o/in") == "DataArtifact"
    assert "public/o/abs" not in names  # a link leaving the copied path is never followed


async def test_cancel_kills_the_container_and_leaves_nothing(runner: Runner) -> None:
    run, _ = runner.build({"command": ["/bin/sh", "-c", "echo ready; sleep 600"]})
    execution = asyncio.ensure_future(run.execute())
    async def ready() -> None:
        while b"ready\n" not in run.log.path.read_bytes():
            await asyncio.sleep(0.1)
    await asyncio.wait_for(ready(), 60)
    run.abort(RunResolvedElsewhere("task cancelled"))
    resolution = await asyncio.wait_for(execution, 60)
    assert resolution.state is None
    assert runner.leftovers() == []


@pytest.mark.parametrize("capabilities, config, scopes, problem", [
    ({"privileged": True}, {}, [], b"privileged is not enabled on this worker"),
    ({"privileged": True}, {"dockerConfig": {"allowPrivileged": True}}, [],
     b"needs 'docker-worker:capability:privileged'"),
    ({"devices": {"kvm": True}}, {}, [], b"device kvm is not enabled on this worker"),
    ({"devices": {"kvm": True}}, {"dockerConfig": {"allowedDevices": ["kvm"]}}, ["docker-worker:capability:priv*"],
     b"needs 'docker-worker:capability:device:kvm'"),
])
async def test_privileged_and_devices_need_config_and_scopes(
    tmp_path: Path, docker_image: str, docker_client: Any, capabilities: dict, config: dict, scopes: list,
    problem: bytes,
) -> None:
    runner = Runner(tmp_path, docker_image, docker_client, **config)
    resolution, _, log = await runner.run({"command": ["true"], "capabilities": capabilities}, scopes=scopes)
    assert (resolution.state, resolution.reason) == ("exception", "malformed-payload")
    assert problem in log
    assert b"=== Task Starting ===" not in log


async def test_privileged_scope_with_pool_suffix_is_accepted(tmp_path: Path, docker_image: str,
                                                             docker_client: Any) -> None:
    # privileged containers cannot start on this machine: check the gate passes, not the run
    runner = Runner(tmp_path, docker_image, docker_client, dockerConfig={"allowPrivileged": True})
    run, _ = runner.build({"command": ["true"], "capabilities": {"privileged": True}},
                          scopes=["docker-worker:capability:privileged:proj-test/python-worker"])
    await run._prepare()
    assert run.parsed.payload.capabilities.privileged
    for plugin in run.task_plugins:
        await plugin.dispose()


async def test_indexed_image_without_a_queue_is_refused(runner: Runner) -> None:
    resolution, _, log = await runner.run(
        {"image": {"type": "indexed-image", "namespace": "a.b", "path": "public/image.tar"}, "command": ["true"]})
    assert (resolution.state, resolution.reason) == ("exception", "malformed-payload")
    assert b"indexed-image needs a Queue" in log


async def test_image_tarball_with_another_suffix_is_refused(runner: Runner) -> None:
    resolution, _, log = await runner.run(
        {"image": {"type": "indexed-image", "namespace": "a.b", "path": "public/image.tgz"}, "command": ["true"]})
    assert (resolution.state, resolution.reason) == ("exception", "malformed-payload")
    assert b"must end with .tar, .tar.zst, .tar.lz4" in log


@pytest.mark.parametrize("suffix", [".tar", ".tar.zst", ".tar.lz4"])
async def test_image_tarballs_are_loaded(runner: Runner, tmp_path: Path, suffix: str) -> None:
    import subprocess

    from tcworker.engines.docker_images import load_tarball

    tar = tmp_path / "image.tar"
    subprocess.run(["docker", "save", "-o", str(tar), runner.image], check=True)
    if suffix == ".tar.zst":
        subprocess.run(["zstd", "-q", "--rm", str(tar)], check=True)
    elif suffix == ".tar.lz4":
        subprocess.run(["lz4", "-q", "--rm", str(tar), str(tar) + ".lz4"], check=True)
    loaded = await asyncio.to_thread(load_tarball, runner.client, tmp_path / f"image{suffix}")
    assert loaded == runner.image


async def test_boot_sweeps_leftovers_of_this_worker_only(runner: Runner, docker_image: str,
                                                         docker_client: Any) -> None:
    labels = {LABEL: "1", OWNER_LABEL: runner.engine.owner, TASKS_DIR_LABEL: str(runner.engine.tasks_dir)}
    network = docker_client.networks.create(f"tcw-net-sweep-{runner.engine.owner}", labels=labels)
    mine = docker_client.containers.create(docker_image, ["true"], labels=labels, network=network.name)
    other = docker_client.containers.create(docker_image, ["true"], labels={LABEL: "1", OWNER_LABEL: "someone-else"})
    try:
        await runner.engine.boot()
        names = {c.id for c in docker_client.containers.list(all=True, filters={"label": LABEL})}
        assert mine.id not in names and other.id in names
        assert runner.leftovers() == []  # the network went too
    finally:
        other.remove(force=True)


async def test_no_daemon_is_a_clear_boot_error_or_a_refusal(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from tcworker.errors import ConfigError, MalformedPayload
    from tcworker.logs import TaskLog

    monkeypatch.setenv("DOCKER_HOST", f"unix://{tmp_path}/no-such.sock")
    config = WorkerConfig.from_mapping({"tasksDir": str(tmp_path / "tasks")})
    with pytest.raises(ConfigError, match="no Docker daemon answers"):
        await DockerEngine(config, required=True).boot()
    optional = DockerEngine(config, required=False)
    await optional.boot()
    log = TaskLog(tmp_path / "log")
    with pytest.raises(MalformedPayload, match="docker engine is not available"):
        await optional.create_sandbox("T", 0, log)
    log.close()
    assert json.dumps(config.engines)  # default config lists docker without requiring it
