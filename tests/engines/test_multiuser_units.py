"""Pieces of the multiuser mode that need no root: task user names, scope checks, the artifact
readability rule, and the start-up lock-down of the worker's files."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from tcworker.artifact_access import READ, SEARCH, Reader
from tcworker.config import WorkerConfig
from tcworker.engines.taskuser import MAX_NAME_CHARS, USER_PREFIX, remove_files_of, task_user_name
from tcworker.errors import ConfigError, MalformedPayload
from tcworker.lockdown import lock_down
from tcworker.scopes import os_group_scopes, require_scopes, satisfies


def test_task_user_names_carry_the_prefix_task_and_run_and_stay_short_and_distinct() -> None:
    names = {task_user_name("fQaBcDeFgHiJkLmNoPqRsT", 49) for _ in range(200)}
    assert len(names) == 200
    for name in names:
        assert name.startswith(USER_PREFIX + "fqabcd_49_") and len(name) <= MAX_NAME_CHARS
        assert name == name.lower() and name.replace("_", "").isalnum()
    assert len(task_user_name("-_-_", 999)) <= MAX_NAME_CHARS


def test_scope_satisfaction_follows_taskcluster_star_rule() -> None:
    assert satisfies(["generic-worker:os-group:p/w/audio"], "generic-worker:os-group:p/w/audio")
    assert satisfies(["generic-worker:os-group:p/w/*"], "generic-worker:os-group:p/w/audio")
    assert satisfies(["*"], "generic-worker:os-group:p/w/audio")
    assert not satisfies(["generic-worker:os-group:p/w/aud"], "generic-worker:os-group:p/w/audio")
    assert not satisfies(["generic-worker:os-group:p/w/audio*x"], "generic-worker:os-group:p/w/audio")


def test_missing_scopes_are_malformed_payload_listing_required_and_given() -> None:
    required = os_group_scopes(["audio", "video"], "p/w")
    assert required == ["generic-worker:os-group:p/w/audio", "generic-worker:os-group:p/w/video"]
    require_scopes(required, {"scopes": ["generic-worker:os-group:p/w/*"]}, "payload.osGroups")
    with pytest.raises(MalformedPayload) as err:
        require_scopes(required, {"scopes": ["generic-worker:os-group:p/w/audio"]}, "payload.osGroups")
    text = str(err.value)
    assert text.startswith("payload.osGroups: ")
    assert "Required scopes:\n  generic-worker:os-group:p/w/audio\n  generic-worker:os-group:p/w/video" in text
    assert "Given scopes (task.scopes):\n  generic-worker:os-group:p/w/audio" in text
    assert text.endswith("Missing: generic-worker:os-group:p/w/video")


def fake_stat(mode: int, uid: int, gid: int) -> os.stat_result:
    return os.stat_result((mode, 0, 0, 1, uid, gid, 0, 0, 0, 0))


@pytest.mark.parametrize(("mode", "uid", "gid", "readable"), [
    (0o100600, 1001, 1001, True),    # owned by the task user
    (0o100600, 0, 0, False),         # root-only
    (0o100640, 0, 29, True),         # group it is in (osGroups)
    (0o100640, 0, 0, False),         # group it is not in
    (0o100644, 0, 0, True),          # world-readable
    (0o100044, 1001, 1001, False),   # owner bits decide for the owner, as in the kernel
])
def test_reader_applies_the_kernels_mode_bit_rules(mode: int, uid: int, gid: int, readable: bool) -> None:
    reader = Reader(1001, frozenset({1001, 29}))
    assert reader.may(fake_stat(mode, uid, gid), READ) is readable


def test_reader_needs_search_on_every_directory_of_the_path(tmp_path: Path) -> None:
    reader = Reader(54321, frozenset({54321}))
    inner = tmp_path / "a" / "b"
    inner.mkdir(parents=True)
    target = inner / "f"
    target.write_text("x")
    target.chmod(0o644)
    for d in (tmp_path / "a", inner):
        d.chmod(0o755)
    chain_ok = all(reader.may(os.stat(p), SEARCH) for p in Path(target).parents)
    assert reader.can_read(str(target), os.stat(target)) is chain_ok
    (tmp_path / "a").chmod(0o700)
    fresh = Reader(54321, frozenset({54321}))
    assert fresh.can_read(str(target), os.stat(target)) is False


def test_lock_down_makes_secrets_and_other_runs_private(tmp_path: Path) -> None:
    config_file, key = tmp_path / "worker.json", tmp_path / "signing.key"
    for path in (config_file, key):
        path.write_text("secret")
        path.chmod(0o644)
    caches, downloads, tasks = tmp_path / "caches", tmp_path / "downloads", tmp_path / "tasks"
    for d in (caches, downloads, tasks):
        d.mkdir(mode=0o755)
    (caches / "caches.json").write_text("{}")
    other_run = tasks / "tcw-task-other-0-x"
    other_run.mkdir(mode=0o755)
    (tasks / "link").symlink_to(config_file)
    config = WorkerConfig.from_mapping({"tasksDir": str(tasks), "cachesDir": str(caches),
                                        "downloadsDir": str(downloads),
                                        "ed25519SigningKeyLocation": str(key)}, environ={})
    changed = lock_down(config, config_file)

    def mode(p: Path) -> int:
        return stat.S_IMODE(os.lstat(p).st_mode)

    assert (mode(config_file), mode(key)) == (0o600, 0o600)
    assert (mode(caches), mode(downloads), mode(caches / "caches.json")) == (0o700, 0o700, 0o600)
    assert (mode(tasks), mode(other_run)) == (0o711, 0o700)
    assert f"{config_file}: mode 0644 -> 0600" in changed
    assert lock_down(config, config_file) == []  # idempotent


def test_lock_down_failure_refuses_start_up(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config_file = tmp_path / "worker.json"
    config_file.write_text("{}")
    config_file.chmod(0o644)

    def refuse(path, mode):
        raise PermissionError(1, "Operation not permitted")

    monkeypatch.setattr(os, "chmod", refuse)
    config = WorkerConfig.from_mapping({"tasksDir": str(tmp_path / "tasks")}, environ={})
    with pytest.raises(ConfigError, match="cannot lock down .*worker.json: Operation not permitted"):
        lock_down(config, config_file)


def test_lock_down_skips_missing_paths(tmp_path: Path) -> None:
    config = WorkerConfig.from_mapping({"tasksDir": str(tmp_path / "none"), "cachesDir": str(tmp_path / "c"),
                                        "downloadsDir": str(tmp_path / "d")}, environ={})
    assert lock_down(config, None) == []


async def test_worker_boot_locks_down_in_multiuser_mode_only(tmp_path: Path) -> None:
    from tcworker.plugins.base import Plugin
    from tcworker.worker import Worker

    config_file = tmp_path / "worker.json"
    config_file.write_text("{}")
    base = {"rootURL": "http://127.0.0.1:1", "clientId": "c", "accessToken": "t", "workerPoolId": "p/w",
            "workerGroup": "g", "workerId": "i", "tasksDir": str(tmp_path / "tasks"),
            "cachesDir": str(tmp_path / "caches"), "downloadsDir": str(tmp_path / "downloads")}
    for multiuser, expected in ((False, 0o644), (True, 0o600)):
        config_file.chmod(0o644)
        config = WorkerConfig.from_mapping({**base, "runTasksAsCurrentUser": not multiuser}, environ={})
        worker = Worker(config, engines={}, plugins=[Plugin(config)], config_path=str(config_file))
        await worker._boot()
        assert stat.S_IMODE(config_file.stat().st_mode) == expected


def test_remove_files_of_looks_only_at_owned_entries_and_world_writable_dirs(tmp_path: Path) -> None:
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o1777)
    (shared / "mine").write_text("x")
    (shared / "sub").mkdir()
    (shared / "sub" / "deep").write_text("x")
    uid = os.getuid()
    removed = remove_files_of(uid, (str(shared),))
    assert sorted(removed) == sorted([str(shared / "mine"), str(shared / "sub")])
    assert list(shared.iterdir()) == []
