"""The multiuser native engine (``runTasksAsCurrentUser: false``): each run as a fresh OS user.

Given a root worker with tasks under a 0711 parent: commands run as the run's user in its 0700
home; a task cannot read the worker's locked-down config or another running task's directory; a
process of the task's uid outside the process tree dies with the run; links to root-only files do
not leak through artifacts; the user is deleted after the run and leftovers are swept at boot.
"""

from __future__ import annotations

import asyncio
import json
import os
import pwd
import stat
import subprocess
import uuid
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from tcworker.artifacts import DataArtifact, ErrorArtifact, collect
from tcworker.config import WorkerConfig
from tcworker.engines.native import NativeEngine
from tcworker.engines.taskuser import USER_PREFIX, kill_uid_processes, task_user_name
from tcworker.lockdown import lock_down
from tcworker.logs import TaskLog
from tcworker.payloads.common import ArtifactSpec
from tcworker.testing.conformance import Harness, sh

from multiuser_helpers import mu_parent, multiuser_config  # noqa: F401

TASK_ID = "fQaBcDeFgHiJkLmNoPqRsT"


@pytest.fixture
def config(mu_parent: Path) -> WorkerConfig:  # noqa: F811
    return multiuser_config(mu_parent)


async def new_harness(engine: NativeEngine, parent: Path) -> Harness:
    log = TaskLog(parent / f"log-{uuid.uuid4().hex}")
    return Harness(await engine.create_sandbox(TASK_ID, 2, log), log, uuid.uuid4().hex)


@pytest.fixture
async def harness(config: WorkerConfig, mu_parent: Path):  # noqa: F811
    h = await new_harness(NativeEngine(config), mu_parent)
    yield h
    await h.sandbox.dispose()
    h.log.close()


def user_exists(name: str) -> bool:
    try:
        pwd.getpwnam(name)
    except KeyError:
        return False
    return True


async def test_commands_run_as_a_fresh_user_in_its_private_home(harness: Harness) -> None:
    sandbox = harness.sandbox
    uid, gid = sandbox.owner
    name = sandbox.user_env["USER"]
    assert name.startswith(USER_PREFIX) and len(name) <= 20 and uid != 0
    assert sandbox.user_env == {"PATH": "/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin",
                                "HOME": str(sandbox.task_dir), "USER": name, "LOGNAME": name}
    st = os.stat(sandbox.task_dir)
    assert (st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode)) == (uid, gid, 0o700)
    assert stat.S_IMODE(os.stat(sandbox.task_dir.parent).st_mode) == 0o711
    result = await harness.run(sh("id -u; id -g; id -un; touch made-by-task"))
    assert result.succeeded
    assert f"\n{uid}\n{gid}\n{name}\n".encode() in harness.output()
    assert os.stat(sandbox.task_dir / "made-by-task").st_uid == uid


async def test_the_user_and_its_home_are_removed_by_dispose(config: WorkerConfig, mu_parent: Path) -> None:  # noqa: F811
    h = await new_harness(NativeEngine(config), mu_parent)
    name, uid = h.sandbox.user_env["USER"], h.sandbox.owner[0]
    await h.run(sh("printf left > /tmp/tcw-test-left-$$; echo done"))
    await h.sandbox.dispose()
    h.log.close()
    assert not user_exists(name) and not h.sandbox.task_dir.exists()
    leftovers = [p for p in Path("/tmp").glob("tcw-test-left-*") if p.lstat().st_uid == uid]
    assert leftovers == [], "files of the uid in /tmp go with the user (the uid may be reused)"


async def test_a_task_cannot_read_the_locked_down_worker_config(harness: Harness, config: WorkerConfig,
                                                                mu_parent: Path) -> None:  # noqa: F811
    config_file = mu_parent / "worker.json"
    config_file.write_text(json.dumps({"accessToken": "worker-secret-token"}))
    config_file.chmod(0o644)
    changed = lock_down(config, config_file)
    assert f"{config_file}: mode 0644 -> 0600" in changed
    result = await harness.run(("cat", str(config_file)))
    assert result.exit_code == 1
    assert b"Permission denied" in harness.output() and b"worker-secret-token" not in harness.output()


async def test_a_task_cannot_read_another_running_tasks_directory(config: WorkerConfig,
                                                                  mu_parent: Path) -> None:  # noqa: F811
    engine = NativeEngine(config)
    first, second = await new_harness(engine, mu_parent), await new_harness(engine, mu_parent)
    try:
        assert first.sandbox.owner != second.sandbox.owner
        running = first.start(sh("echo first-secret > secret; echo ready; sleep 600"))
        await first.wait_for_output(b"ready\n")
        other = first.sandbox.task_dir
        result = await second.run(sh(f"ls {other}; cat {other}/secret"))
        assert not result.succeeded
        assert second.output().count(b"Permission denied") == 2
        assert b"first-secret" not in second.output()
        await first.sandbox.abort("test over")
        assert (await running).aborted
    finally:
        for h in (first, second):
            await h.sandbox.dispose()
            h.log.close()


async def test_a_process_of_the_task_uid_outside_the_tree_dies_with_the_run(harness: Harness) -> None:
    """Given a process of the task's uid the cgroup does not hold, when the commands end, it is killed."""
    uid, gid = harness.sandbox.owner
    run = harness.start(sh("echo ready; while [ ! -e go ]; do sleep 0.05; done"))
    await harness.wait_for_output(b"ready\n")
    escaped = subprocess.Popen(["sleep", "600"], user=uid, group=gid, start_new_session=True)
    (harness.sandbox.task_dir / "go").touch()
    assert (await run).succeeded
    assert escaped.wait(timeout=10) == -9
    assert kill_uid_processes(uid) == 0


async def test_links_to_a_root_only_file_do_not_leak_through_artifacts(harness: Harness,
                                                                       mu_parent: Path) -> None:  # noqa: F811
    """Given a symlink and a hard link to a root-only file, and a hard link to a world-readable
    root file, in the artifact directory: the root-only file gives error artifacts, never bytes."""
    secret = mu_parent / "root-only"
    secret.write_text("root-only-secret")
    secret.chmod(0o600)
    public = mu_parent / "world-readable"
    public.write_text("public-bytes")
    public.chmod(0o644)
    result = await harness.run(sh(f"mkdir out && printf mine > out/mine && ln -s {secret} out/sym"
                                  f" && ln -s out/mine sym-inside"))
    assert result.succeeded
    out = harness.sandbox.task_dir / "out"
    os.link(secret, out / "hard")  # what protected_hardlinks stops a task from doing itself
    os.link(public, out / "pub")
    expires = datetime.now(timezone.utc) + timedelta(days=1)
    specs = [ArtifactSpec(f"public/{n}", f"out/{n}", "file", expires, None, None, False)
             for n in ("hard", "sym", "pub", "mine")]
    specs.append(ArtifactSpec("public/dir", "out", "directory", expires, None, None, False))
    specs.append(ArtifactSpec("public/sym-inside", "sym-inside", "file", expires, None, None, False))
    root = await harness.sandbox.artifact_root()
    artifacts = {a.name: a for a in collect(specs, root, task_dir=harness.sandbox.task_dir)}
    assert isinstance(artifacts["public/hard"], ErrorArtifact)
    assert artifacts["public/hard"].reason == "file-not-readable-on-worker"
    assert isinstance(artifacts["public/sym"], ErrorArtifact)
    assert isinstance(artifacts["public/dir/hard"], ErrorArtifact)
    assert "public/dir/sym" not in artifacts  # a link outside a directory artifact is skipped
    for name in ("public/pub", "public/mine", "public/dir/pub", "public/dir/mine", "public/sym-inside"):
        assert isinstance(artifacts[name], DataArtifact), name
    published = b"".join(a.path.read_bytes() for a in artifacts.values() if isinstance(a, DataArtifact))
    assert b"root-only-secret" not in published and b"public-bytes" in published


async def test_os_groups_join_the_user_to_existing_groups_only(harness: Harness) -> None:
    from tcworker.engines.base import SandboxSpec
    from tcworker.errors import MalformedPayload

    spec = SandboxSpec(commands=(sh("id -Gn"),), env=harness.env(), os_groups=("tcw-no-such-group",))
    with pytest.raises(MalformedPayload, match="tcw-no-such-group"):
        await harness.sandbox.run(spec)


async def test_boot_sweeps_leftover_task_users_and_their_processes(config: WorkerConfig) -> None:
    await NativeEngine(config).boot()
    tasks_dir = Path(config.tasks_dir)
    name = task_user_name("LeftOverTask", 0)
    home = tasks_dir / "tcw-task-LeftOverTask-0-x"
    home.mkdir()
    subprocess.run(["useradd", "-M", "-U", "-l", "-d", str(home), name], check=True)
    entry = pwd.getpwnam(name)
    os.chown(home, entry.pw_uid, entry.pw_gid)
    stray = subprocess.Popen(["sleep", "600"], user=entry.pw_uid, group=entry.pw_gid, start_new_session=True)
    other = "tcw_test_keep_me"  # a prefixed user of another tasks directory (another worker)
    subprocess.run(["useradd", "-M", "-U", "-l", "-d", str(tasks_dir.parent), other], check=True)
    try:
        await NativeEngine(config).boot()  # a restarted worker
        assert stray.wait(timeout=10) == -9
        assert not user_exists(name) and not home.exists()
        assert user_exists(other)
    finally:
        subprocess.run(["userdel", "-f", other], check=False)
        subprocess.run(["userdel", "-f", name], check=False, stderr=subprocess.DEVNULL)


async def test_boot_refuses_a_tasks_dir_task_users_cannot_reach(tmp_path: Path, mu_parent: Path) -> None:  # noqa: F811
    from tcworker.errors import ConfigError

    config = WorkerConfig.from_mapping({"tasksDir": str(tmp_path / "tasks"), "runTasksAsCurrentUser": False},
                                       environ={})
    with pytest.raises(ConfigError, match="needs o\\+x"):
        await NativeEngine(config).boot()


async def test_concurrent_sandboxes_get_distinct_users(config: WorkerConfig, mu_parent: Path) -> None:  # noqa: F811
    engine = NativeEngine(config)
    await engine.boot()
    logs = [TaskLog(mu_parent / f"log-{i}") for i in range(4)]
    sandboxes = await asyncio.gather(*(engine.create_sandbox(TASK_ID, 0, log) for log in logs))
    try:
        assert len({s.owner for s in sandboxes}) == 4
        assert len({s.user_env["USER"] for s in sandboxes}) == 4
    finally:
        await asyncio.gather(*(s.dispose() for s in sandboxes))
        for log in logs:
            log.close()
    assert not any(user_exists(s.user_env["USER"]) for s in sandboxes)


def test_mounts_are_given_to_the_user_but_never_through_a_link(mu_parent: Path) -> None:  # noqa: F811
    """Given a cache holding a planted link, handing a mount below it refuses; a plain tree is given."""
    from tcworker.engines.taskuser import chown_tree, give_to_user

    task_dir, outside = mu_parent / "task", mu_parent / "outside"
    (task_dir / "a" / "b").mkdir(parents=True)
    (task_dir / "a" / "b" / "f").write_text("x")
    outside.mkdir()
    (outside / "victim").write_text("root's")
    (task_dir / "cache").mkdir()
    (task_dir / "cache" / "link").symlink_to(outside)
    give_to_user(task_dir, task_dir / "a" / "b", (4242, 4243))
    owners = {p.name: (p.lstat().st_uid, p.lstat().st_gid) for p in (task_dir / "a", task_dir / "a" / "b",
                                                                      task_dir / "a" / "b" / "f")}
    assert set(owners.values()) == {(4242, 4243)}
    with pytest.raises(OSError, match="is a link"):
        give_to_user(task_dir, task_dir / "cache" / "link" / "victim", (4242, 4243))
    chown_tree(task_dir / "cache", 4242, 4243)  # the link itself, never its target
    assert (outside / "victim").stat().st_uid == 0 and outside.stat().st_uid == 0
    assert (task_dir / "cache" / "link").lstat().st_uid == 4242
