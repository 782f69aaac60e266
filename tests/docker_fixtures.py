"""Docker test fixtures: a daemon or a reason, the bash+busybox test image, label pruning.

``docker_client`` (session) skips the test when no daemon answers, or fails it under ``CI=true``
(CI must run the docker tests). At session start it prunes stopped containers, unused networks
and unused volumes carrying the ``tcworker`` label (running ones may belong to another session
on the same machine), and builds ``tcworker-test/bash-busybox:1`` with ``docker import`` when
missing (recipe: ``../shared/cases/real-tasks/README.md``).

What does not live here: engine tests (``tests/engines/test_docker*.py``).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Any, Iterator

import pytest

TEST_IMAGE = "tcworker-test/bash-busybox:1"
DEFAULT_CMD = 'CMD ["/bin/sh","-c","echo test-image-default-cmd"]'


def _unavailable(reason: str) -> None:
    if os.environ.get("CI") == "true":
        pytest.fail(f"docker is required under CI=true: {reason}")
    pytest.skip(f"docker not available: {reason}")


def build_test_image(client: Any) -> None:
    """``docker import`` a busybox-static + bash root filesystem as :data:`TEST_IMAGE` if missing."""
    import docker.errors

    try:
        client.images.get(TEST_IMAGE)
        return
    except docker.errors.ImageNotFound:
        pass
    busybox = shutil.which("busybox") or "/bin/busybox"
    with tempfile.TemporaryDirectory(prefix="tcw-image-") as tmp:
        root = Path(tmp)
        for sub in ("bin", "tmp", "etc", "root", "usr"):
            (root / sub).mkdir()
        shutil.copy2(busybox, root / "bin" / "busybox")
        applets = subprocess.run([busybox, "--list"], capture_output=True, text=True, check=True).stdout.split()
        for applet in applets:
            if not (root / "bin" / applet).exists():
                (root / "bin" / applet).symlink_to("busybox")
        shutil.copy2("/bin/bash", root / "bin" / "bash")
        ldd = subprocess.run(["ldd", "/bin/bash"], capture_output=True, text=True, check=True).stdout
        for lib in (word for word in ldd.split() if word.startswith("/")):
            target = root / lib.lstrip("/")
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(lib, target)
        (root / "usr" / "bin").symlink_to("../bin")
        (root / "etc" / "passwd").write_text("root:x:0:0:root:/root:/bin/sh\n")
        (root / "etc" / "group").write_text("root:x:0:\n")
        (root / "tmp").chmod(0o1777)
        tar = subprocess.Popen(["tar", "-C", str(root), "-c", "."], stdout=subprocess.PIPE)
        subprocess.run(["docker", "import", "--change", DEFAULT_CMD, "-", TEST_IMAGE], stdin=tar.stdout,
                       check=True, capture_output=True)
        assert tar.stdout is not None
        tar.stdout.close()
        if tar.wait() != 0:
            raise RuntimeError("tar of the test image root failed")


def prune_labelled(client: Any, label: str = "tcworker") -> None:
    """Remove stopped containers, unused networks and volumes carrying ``label``."""
    import docker.errors

    filters = {"label": label}
    for prune in (client.containers.prune, client.networks.prune):
        try:
            prune(filters=filters)
        except docker.errors.APIError as err:  # 409: another session prunes right now: fine
            if err.status_code != 409:
                raise

    for volume in client.volumes.list(filters=filters):  # named (cache) volumes too
        try:
            volume.remove()
        except docker.errors.APIError as err:  # in use by a running container (409): keep it
            if err.status_code not in (404, 409):
                raise


def ensure_test_image(save_to: Path | None = None) -> str:
    """Skip (or fail under ``CI=true``) without a daemon; build :data:`TEST_IMAGE` if missing;
    ``docker save`` it to ``save_to`` when given (the cases' runner file ``docker-image.tar``)."""
    try:
        import docker

        client = docker.from_env(timeout=120)
        client.ping()
    except Exception as err:  # DockerException, connection errors: all mean "no daemon"
        _unavailable(str(err))
        raise
    try:
        build_test_image(client)
        if save_to is not None:
            subprocess.run(["docker", "save", "-o", str(save_to), TEST_IMAGE], check=True, capture_output=True)
    finally:
        client.close()
    return TEST_IMAGE


@pytest.fixture(scope="session")
def docker_client() -> Iterator[Any]:
    """A ``docker.DockerClient`` with the test image present (skips/fails without a daemon)."""
    try:
        import docker

        client = docker.from_env(timeout=120)
        client.ping()
    except Exception as err:  # DockerException, connection errors: all mean "no daemon"
        _unavailable(str(err))
        return
    prune_labelled(client)
    build_test_image(client)
    yield client
    client.close()


@pytest.fixture(scope="session")
def docker_image(docker_client: Any) -> str:
    """The name of the local bash+busybox test image."""
    return TEST_IMAGE
