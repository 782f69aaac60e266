"""Whole runs (TaskRun + the multiuser native engine): ``osGroups`` scopes, the task user's env.

Given a multiuser worker, a task asking for ``osGroups`` without the scope
``generic-worker:os-group:<workerPoolId>/<group>`` resolves exception/malformed-payload before any
command runs, the message listing required and given scopes; with the scope, and the group allowed
by ``allowedOsGroups``, the task's ``id -G`` shows the group. The task sees the task user's clean
environment (HOME, USER, LOGNAME), not the worker's.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tcworker.engines.native import NativeEngine
from tcworker.outlet import RunOutlet
from tcworker.payloads.taskdef import complete_task_definition
from tcworker.taskrun import TaskRun

from multiuser_helpers import mu_parent, multiuser_config  # noqa: F401

POOL = "proj-test/multiuser"
GROUP = "audio"  # in Debian's base system, with no members


class Outlet(RunOutlet):
    def __init__(self) -> None:
        self.log = b""
        self.reports: list[tuple[str | None, str | None]] = []

    async def publish_artifacts(self, artifacts) -> None:
        pass

    async def publish_log(self, path, names, expires) -> None:
        self.log = Path(path).read_bytes()

    async def report(self, resolution) -> None:
        self.reports.append((resolution.state, resolution.reason))


async def run_task(parent: Path, payload: dict, scopes: list[str], worker_env: dict | None = None) -> Outlet:
    config = multiuser_config(parent, workerPoolId=POOL, allowedOsGroups=[GROUP])
    task = complete_task_definition({"payload": {"maxRunTime": 60, **payload}, "scopes": scopes},
                                    task_id="fQaBcDeFgHiJkLmNoPqRsT")
    outlet = Outlet()
    run = TaskRun(task=task, task_id="fQaBcDeFgHiJkLmNoPqRsT", run_id=0, config=config,
                  engines={"native": NativeEngine(config)}, outlet=outlet,
                  log_path=parent / "backing.log", worker_env=worker_env or {})
    await run.execute()
    return outlet


async def test_os_groups_without_the_scope_are_malformed_payload(mu_parent: Path) -> None:  # noqa: F811
    outlet = await run_task(mu_parent, {"command": [["touch", "/tmp/tcw-test-must-not-run"]],
                                        "osGroups": [GROUP]}, scopes=["generic-worker:os-group:other/pool/*"])
    assert outlet.reports == [("exception", "malformed-payload")]
    assert f"generic-worker:os-group:{POOL}/{GROUP}".encode() in outlet.log
    assert b"generic-worker:os-group:other/pool/*" in outlet.log  # the given scopes are listed
    assert b"=== Task Starting ===" not in outlet.log
    assert not Path("/tmp/tcw-test-must-not-run").exists()


async def test_os_groups_with_the_scope_show_in_id(mu_parent: Path) -> None:  # noqa: F811
    outlet = await run_task(mu_parent, {"command": [["id", "-Gn"]], "osGroups": [GROUP]},
                            scopes=[f"generic-worker:os-group:{POOL}/*"])
    assert outlet.reports == [("completed", "completed")]
    lines = outlet.log.decode().splitlines()
    id_line = next(line for line in lines if line.startswith("tcw_"))
    assert GROUP in id_line.split()


async def test_a_group_the_worker_does_not_allow_is_refused(mu_parent: Path) -> None:  # noqa: F811
    outlet = await run_task(mu_parent, {"command": [["true"]], "osGroups": ["video"]},
                            scopes=[f"generic-worker:os-group:{POOL}/*"])
    assert outlet.reports == [("exception", "malformed-payload")]
    assert b"payload.osGroups[0]" in outlet.log


async def test_the_task_sees_its_users_clean_environment(mu_parent: Path) -> None:  # noqa: F811
    worker_env = {"HOME": "/root", "USER": "root", "PATH": "/opt/worker/bin", "WORKER_ONLY": "x"}
    outlet = await run_task(mu_parent, {"command": [["sh", "-c", 'echo "<$HOME|$USER|$LOGNAME|$PATH|$WORKER_ONLY>"']],
                                        "env": {"FROM_PAYLOAD": "1"}},
                            scopes=[], worker_env=worker_env)
    assert outlet.reports == [("completed", "completed")]
    line = next(x for x in outlet.log.decode().splitlines() if x.startswith("<"))
    home, user, logname, path, worker_only = line.strip("<>").split("|")
    assert Path(home).name.startswith("tcw-task-") and user.startswith("tcw_") and logname == user
    assert path == "/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin" and worker_only == ""


@pytest.mark.parametrize("scopes", [[], ["generic-worker:os-group:proj-test/*"]])
async def test_insecure_mode_checks_the_scope_too(tmp_path: Path, scopes: list[str]) -> None:
    """generic-worker requires the scope whatever the engine (peer-workers.md 1.8)."""
    from tcworker.config import WorkerConfig
    from tcworker.payloads.rules import current_user_groups

    own = sorted(current_user_groups())[0]
    config = WorkerConfig.from_mapping({"tasksDir": str(tmp_path / "tasks"), "workerPoolId": POOL}, environ={})
    task = complete_task_definition({"payload": {"maxRunTime": 60, "command": [["true"]], "osGroups": [own]},
                                     "scopes": scopes}, task_id="fQaBcDeFgHiJkLmNoPqRsT")
    outlet = Outlet()
    run = TaskRun(task=task, task_id="fQaBcDeFgHiJkLmNoPqRsT", run_id=0, config=config,
                  engines={"native": NativeEngine(config)}, outlet=outlet, log_path=tmp_path / "log")
    await run.execute()
    expected = ("exception", "malformed-payload") if not scopes else ("completed", "completed")
    assert outlet.reports == [expected]
