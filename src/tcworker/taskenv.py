"""The environment a task's commands see: a documented base, the payload's ``env``, and the
variables the worker reserves. Pure functions; no I/O.

Base (copied from the worker's environment when set there, else the default shown):

=========================  ===================================================================
``PATH``                   worker's ``PATH``, else ``/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin``
``HOME``, ``USER``,        worker's (the task runs as the worker's user unless the multiuser
``LOGNAME``, ``SHELL``     mode gives it its own)
``LANG``, ``LC_ALL``,      worker's, when set
``TERM``, ``TZ``,
``TMPDIR``
=========================  ===================================================================

Multiuser (``runTasksAsCurrentUser: false``): the base comes from the task user's clean
environment instead (``Sandbox.user_env``: ``PATH`` as above, ``HOME`` = the task directory,
``USER`` = ``LOGNAME`` = the task user), as generic-worker's multiuser engine does; the task
runner passes it as ``worker_env``.

Nothing else of the worker's environment reaches a task: never the worker's credentials
(``TASKCLUSTER_CLIENT_ID``, ``TASKCLUSTER_ACCESS_TOKEN``, ``TASKCLUSTER_CERTIFICATE``).

Reserved (set by the worker, overriding the payload, as generic-worker and docker-worker do):
``TASK_ID``, ``RUN_ID``, ``TASK_GROUP_ID``, ``TASK_WORKDIR``, ``TASKCLUSTER_ROOT_URL``, and where
known ``TASKCLUSTER_WORKER_TYPE``, ``TASKCLUSTER_WORKER_POOL``, ``TASKCLUSTER_WORKER_GROUP``,
``TASKCLUSTER_INSTANCE_TYPE``, ``TASKCLUSTER_PUBLIC_IP``, ``TASKCLUSTER_WORKER_LOCATION``.
"""

from __future__ import annotations

from typing import Mapping

from tcworker.config import WorkerConfig

DEFAULT_PATH = "/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin"
BASE_NAMES = ("HOME", "USER", "LOGNAME", "SHELL", "LANG", "LC_ALL", "TERM", "TZ", "TMPDIR")
SECRET_NAMES = frozenset({"TASKCLUSTER_CLIENT_ID", "TASKCLUSTER_ACCESS_TOKEN", "TASKCLUSTER_CERTIFICATE"})


def base_env(worker_env: Mapping[str, str]) -> dict[str, str]:
    """The base environment taken from the worker's own (see the module docstring)."""
    env = {"PATH": worker_env.get("PATH") or DEFAULT_PATH}
    env.update({name: worker_env[name] for name in BASE_NAMES if worker_env.get(name)})
    return env


def reserved_env(
    *, task: Mapping, task_id: str, run_id: int, task_dir: str, config: WorkerConfig
) -> dict[str, str]:
    """The variables the worker sets for every run; empty values are left out."""
    env = {
        "TASK_ID": task_id,
        "RUN_ID": str(run_id),
        "TASK_GROUP_ID": str(task.get("taskGroupId") or task_id),
        "TASK_WORKDIR": task_dir,
        "TASKCLUSTER_ROOT_URL": config.root_url,
        "TASKCLUSTER_WORKER_TYPE": config.worker_type,
        "TASKCLUSTER_WORKER_POOL": config.worker_pool_id,
        "TASKCLUSTER_WORKER_GROUP": config.worker_group,
        "TASKCLUSTER_INSTANCE_TYPE": config.instance_type,
        "TASKCLUSTER_PUBLIC_IP": config.public_ip,
        "TASKCLUSTER_WORKER_LOCATION": config.worker_location,
    }
    return {name: value for name, value in env.items() if value}


def task_env(
    *,
    worker_env: Mapping[str, str],
    payload_env: Mapping[str, str],
    reserved: Mapping[str, str],
) -> dict[str, str]:
    """Base, then the payload's ``env``, then the reserved variables; no worker secret survives."""
    env = base_env(worker_env)
    env.update(payload_env)
    env.update(reserved)
    for name in SECRET_NAMES:
        if name not in payload_env:
            env.pop(name, None)
    return env
