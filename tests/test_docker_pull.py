"""Images pulled from a registry: Debian's ``docker-registry`` on 127.0.0.1 (no Docker Hub here).

The test image is pushed to the session's registry under ``<registry>/tcworker-test/bash-busybox:1``
and that name is removed from the daemon, so a payload naming it must be pulled before it runs;
a name the registry does not have resolves ``failed`` with the daemon's message.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from docker_fixtures import Runner, docker_client, docker_image, docker_registry  # noqa: F401

pytestmark = pytest.mark.docker


def _drop(client: Any, name: str) -> None:
    import docker.errors

    try:
        client.images.remove(name)
    except docker.errors.ImageNotFound:
        pass


@pytest.fixture
def pushed_image(docker_client: Any, docker_image: str, docker_registry: str) -> Any:
    """The test image in the registry only (not in the daemon) → its name."""
    name = f"{docker_registry}/tcworker-test/bash-busybox:1"
    docker_client.images.get(docker_image).tag(name)
    for line in docker_client.images.push(name, stream=True, decode=True):
        assert "error" not in line, line
    _drop(docker_client, name)
    yield name
    _drop(docker_client, name)


async def test_given_an_image_only_in_a_registry_when_a_task_names_it_then_it_is_pulled_and_runs(
    tmp_path: Path, docker_client: Any, pushed_image: str,
) -> None:
    import docker.errors

    with pytest.raises(docker.errors.ImageNotFound):
        await asyncio.to_thread(docker_client.images.get, pushed_image)
    runner = Runner(tmp_path, pushed_image, docker_client)
    resolution, _, log = await runner.run({"command": ["/bin/bash", "-c", "echo pulled-and-ran"]})
    assert (resolution.state, resolution.reason) == ("completed", "completed"), log.decode()
    assert b"\npulled-and-ran\n" in log
    assert (await asyncio.to_thread(docker_client.images.get, pushed_image)).id
    assert runner.leftovers() == []


async def test_given_a_name_the_registry_lacks_then_failed_with_the_daemons_message(
    tmp_path: Path, docker_client: Any, docker_image: str, docker_registry: str,
) -> None:
    missing = f"{docker_registry}/tcworker-test/no-such-image:1"
    runner = Runner(tmp_path, docker_image, docker_client)
    resolution, _, log = await runner.run({"image": missing, "command": ["true"]})
    assert (resolution.state, resolution.reason) == ("failed", "failed")
    assert f"image {missing} is not on this worker and could not be pulled: ".encode() in log
    assert b"manifest unknown" in log or b"not found" in log, log.decode()
    assert b"=== Task Starting ===" in log and b"Executing command 0" not in log
    assert runner.leftovers() == []
