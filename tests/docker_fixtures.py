"""Docker test fixtures: a daemon or a reason, the bash+busybox test image, label pruning, a
local registry, the leftover check.

``docker_client`` (session) skips the test when no daemon answers, or fails it under ``CI=true``
(CI must run the docker tests). At session start it prunes stopped containers and unused
networks carrying the ``tcworker`` label that are older than :data:`PRUNE_AGE` (younger ones may
belong to a test session running next to this one: another engineer's, on the same daemon), and
unused labelled volumes; it builds ``tcworker-test/bash-busybox:1`` with ``docker import`` when
missing (recipe: ``../shared/cases/real-tasks/README.md``). At session end it **fails** when a
container, network or volume made by this session (label ``tcworker.tasks-dir`` under the
session's pytest base temp folder) is left: every path of a run must clean up after itself.

``docker_registry`` (session): Debian's ``docker-registry`` serving on 127.0.0.1:<free port> with
its own config file and storage in a temp folder (skips locally when the package is absent,
fails under ``CI=true``; ``scripts/start-docker`` installs it).

:class:`Runner`: runs docker payloads through ``TaskRun`` + the docker plugin + a folder outlet
(``tcworker exec``'s pipeline, in process) on a worker config under a test's ``tmp_path``.

What does not live here: engine tests (``tests/engines/test_docker*.py``, ``tests/test_docker_*.py``).
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Iterator

import pytest

from tcworker.config import WorkerConfig
from tcworker.engines.docker import LABEL, OWNER_LABEL, DockerEngine, owner_label
from tcworker.execrun import FolderOutlet
from tcworker.plugins.registry import make_plugins
from tcworker.taskrun import TaskRun

TEST_IMAGE = "tcworker-test/bash-busybox:1"
#: Labelled containers and networks younger than this are not pruned at session start.
PRUNE_AGE = "30m"
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
            prune(filters={**filters, "until": PRUNE_AGE})
        except docker.errors.APIError as err:  # 409: another session prunes right now: fine
            if err.status_code != 409:
                raise

    for volume in client.volumes.list(filters=filters):  # none is made by tcworker today
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


def leftovers(client: Any, tasks_dir_prefix: str) -> list[str]:
    """Containers, networks and volumes labelled ``tcworker.tasks-dir`` under ``tasks_dir_prefix``
    (a folder path), as ``"container NAME"`` strings."""
    found = []
    kinds = (("container", lambda: client.containers.list(all=True, sparse=True, filters={"label": "tcworker"})),
             ("network", lambda: client.networks.list(filters={"label": "tcworker"})),
             ("volume", lambda: client.volumes.list(filters={"label": "tcworker"})))
    for kind, listing in kinds:
        for item in listing():
            labels = item.attrs.get("Labels") or {}
            if labels.get("tcworker.tasks-dir", "").startswith(tasks_dir_prefix.rstrip("/") + "/"):
                names = [name.lstrip("/") for name in item.attrs.get("Names") or []]
                found.append(f"{kind} {item.name or ','.join(names) or item.id}")
    return found


@pytest.fixture(scope="session")
def docker_client(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """A ``docker.DockerClient`` with the test image present (skips/fails without a daemon).

    Teardown (session end) fails when this session's runs left a container, network or volume.
    """
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
    base = tmp_path_factory.getbasetemp()
    left = sorted(set(leftovers(client, str(base.absolute())) + leftovers(client, str(base.resolve()))))
    client.close()
    assert not left, f"docker objects left behind by this test session: {left}"


@pytest.fixture(scope="session")
def docker_image(docker_client: Any) -> str:
    """The name of the local bash+busybox test image."""
    return TEST_IMAGE


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="session")
def docker_registry(docker_client: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """``127.0.0.1:<port>`` of a Debian ``docker-registry`` serving this session (HTTP; the daemon
    trusts 127.0.0.0/8 registries without TLS). Stopped, with its storage, at session end."""
    binary = shutil.which("docker-registry")
    if binary is None:
        _unavailable("the docker-registry package is not installed (scripts/start-docker installs it)")
    folder = tmp_path_factory.mktemp("registry")
    for _attempt in range(3):  # the free port may be taken between probe and bind
        address = f"127.0.0.1:{_free_port()}"
        config = folder / "config.yml"
        config.write_text(f"version: 0.1\nlog: {{level: warn}}\nstorage:\n  filesystem:\n"
                          f"    rootdirectory: {folder / 'storage'}\n  delete: {{enabled: true}}\n"
                          f"http:\n  addr: {address}\n")
        log = (folder / "registry.log").open("ab")
        proc = subprocess.Popen([binary, "serve", str(config)], stdout=log, stderr=log)
        log.close()
        if _registry_answers(address, proc):
            break
        proc.kill()
        proc.wait()
    else:
        pytest.fail("docker-registry did not answer; its log:\n" + (folder / "registry.log").read_text()[-2000:])
    try:
        yield address
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _registry_answers(address: str, proc: subprocess.Popen, timeout_s: float = 30.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            with urllib.request.urlopen(f"http://{address}/v2/", timeout=2) as answer:
                return answer.status == 200
        except (urllib.error.URLError, OSError):
            time.sleep(0.1)  # no event to await from another process's listen()
    return False


# ----------------------------------------------------------------------------- runs through TaskRun
def _iso(when: datetime) -> str:
    return when.strftime("%Y-%m-%dT%H:%M:%S.") + f"{when.microsecond // 1000:03d}Z"


def make_task(payload: dict, **extra: Any) -> dict:
    now = datetime.now(timezone.utc)
    return {
        "taskQueueId": "proj-test/python-worker", "schedulerId": "tests", "taskGroupId": "GRP0aaaaTcWJ1e5Ssn3Hgw",
        "created": _iso(now), "deadline": _iso(now + timedelta(hours=1)), "expires": _iso(now + timedelta(days=1)),
        "payload": payload, "metadata": {"name": "t", "description": "t", "owner": "nobody@example.com",
                                         "source": "https://example.com"}, **extra,
    }


class Runner:
    def __init__(self, tmp_path: Path, image: str, client: Any, **config: Any) -> None:
        self.tmp_path = tmp_path
        self.image = image
        self.client = client
        self.config = WorkerConfig.from_mapping({"tasksDir": str(tmp_path / "tasks"), "killGracePeriodSecs": 0.5,
                                                 "outputDrainSecs": 0.5, "provisionerId": "proj-test",
                                                 "workerType": "python-worker", **config})
        self.engine = DockerEngine(self.config, required=True)
        self.count = 0

    def build(self, payload: dict, **extra: Any) -> tuple[TaskRun, FolderOutlet]:
        self.count += 1
        payload = {"image": self.image, "maxRunTime": 60, **payload}
        out = self.tmp_path / f"out{self.count}"
        outlet = FolderOutlet(out)
        run = TaskRun(task=make_task(payload, **extra), task_id=f"TcWDockerTest{self.count:04d}aaaaaa", run_id=0,
                      config=self.config, engines={"docker": self.engine}, outlet=outlet,
                      log_path=self.tmp_path / f"log{self.count}.txt", plugins=make_plugins(self.config, mode="exec"),
                      worker_env={"PATH": "/host/only/path", "HOME": "/host/home"})
        return run, outlet

    async def run(self, payload: dict, **extra: Any) -> tuple[Any, FolderOutlet, bytes]:
        run, outlet = self.build(payload, **extra)
        resolution = await run.execute()
        return resolution, outlet, self.log_of(outlet)

    @staticmethod
    def log_of(outlet: FolderOutlet) -> bytes:
        return (outlet.out_dir / "public" / "logs" / "live_backing.log").read_bytes()

    def leftovers(self) -> list[str]:
        """This runner's containers and networks still on the daemon (``"network NAME"``)."""
        filters = {"label": [f"{LABEL}=1", f"{OWNER_LABEL}={owner_label(self.config)}"]}
        return ([f"container {c.name}" for c in self.client.containers.list(all=True, filters=filters)]
                + [f"network {n.name}" for n in self.client.networks.list(filters=filters)])
