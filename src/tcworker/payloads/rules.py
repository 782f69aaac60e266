"""Worker-level refusals: payloads the schema accepts but this worker must not run.

Each check returns a list of :class:`~tcworker.payloads.common.Problem` (empty: fine); every one
becomes ``exception/malformed-payload`` before any task code runs, as generic-worker does
(``../shared/reference/peer-workers.md`` section 1.9). The checks: payload size, ``maxRunTime``
above ``maxTaskRunTime``, artifact expiry outside ``[deadline, expires]`` (1 s slack), env names
that cannot exist in an environment and strings that cannot be passed to ``execve`` (NUL, longer
than the kernel's per-string limit), features or capabilities this worker does not enable, and
mount/image artifacts of tasks that are not dependencies.

What does not live here: the shape of the payload (the models), scope checks (they need the
task's expanded scopes: the task runner does them).
"""

from __future__ import annotations

import grp
import json
import os
from datetime import datetime, timedelta
from typing import Any, Iterable

from tcworker.config import WorkerConfig
from tcworker.payloads.common import Problem
from tcworker.payloads.docker_worker import DockerWorkerPayload, TaskImage
from tcworker.payloads.generic_worker import ArtifactContent, GenericWorkerPayload

MAX_PAYLOAD_BYTES = 2 * 1024 * 1024
"""Largest payload (as compact JSON) we run. The Queue takes 10 MB task bodies, but commands and
env must fit Linux's ``ARG_MAX`` (2 MiB with the default 8 MiB stack) and the rest of a payload
(mount contents of at most 64 KiB each) is small: a bigger payload is a mistake, refused early."""
MAX_EXEC_STRING_BYTES = 128 * 1024 - 1
"""Linux ``MAX_ARG_STRLEN`` (32 pages) minus the NUL: the longest argv or ``NAME=value`` string."""
EXPIRY_SLACK = timedelta(seconds=1)
"""generic-worker's slack on the artifact-expiry check."""


def _not_enabled(feature: str) -> str:
    # generic-worker's wording for features a pool does not enable (interactive_feature.go).
    return f"feature {feature} is not enabled on this worker"


def check_payload_size(payload: Any) -> list[Problem]:
    """Refuse payloads larger than :data:`MAX_PAYLOAD_BYTES` as compact JSON."""
    try:
        text = json.dumps(payload, separators=(",", ":"), default=str)
    except (TypeError, ValueError) as err:  # keys JSON cannot hold (from YAML), circular data
        return [Problem("payload", f"the payload cannot be represented as JSON: {err}")]
    size = len(text.encode("utf-8", "replace"))
    if size <= MAX_PAYLOAD_BYTES:
        return []
    return [Problem("payload", f"payload is {size} bytes as JSON; this worker accepts at most "
                               f"{MAX_PAYLOAD_BYTES} bytes")]


def check_max_run_time(max_run_time_s: int, config: WorkerConfig) -> list[Problem]:
    """Refuse ``maxRunTime`` above the worker's ``maxTaskRunTime`` (seconds)."""
    if max_run_time_s <= config.max_task_run_time_s:
        return []
    return [Problem("payload.maxRunTime", f"{max_run_time_s} s exceeds this worker's "
                                          f"maxTaskRunTime ({config.max_task_run_time_s} s)")]


def check_artifact_expiry(
    expiries: Iterable[tuple[str, str, datetime | None]], deadline: datetime, expires: datetime
) -> list[Problem]:
    """Refuse artifact expiries outside ``[deadline, expires]`` with 1 s slack (FM-05).

    Args:
        expiries: ``(field path of the artifact, artifact name, explicit expiry or None)``.
        deadline: the task's deadline (aware datetime).
        expires: the task's expiry (aware datetime); artifacts without one expire then.
    """
    problems = []
    for path, name, when in expiries:
        if when is None:
            continue
        if when < deadline - EXPIRY_SLACK:
            problems.append(Problem(f"{path}.expires", f"artifact {name!r} expires {_iso(when)}, "
                                    f"before the task deadline {_iso(deadline)}"))
        elif when > expires + EXPIRY_SLACK:
            problems.append(Problem(f"{path}.expires", f"artifact {name!r} expires {_iso(when)}, "
                                    f"after the task expires {_iso(expires)}"))
    return problems


def _iso(when: datetime) -> str:
    return when.strftime("%Y-%m-%dT%H:%M:%S.") + f"{when.microsecond // 1000:03d}Z"


def check_env(env: dict[str, str]) -> list[Problem]:
    """Refuse env names that cannot exist (empty, ``=`` or NUL) and values execve cannot pass (FM-15).

    Every other name, however odd (leading digit, spaces, ``;``), is fine.
    """
    problems = []
    for name, value in env.items():
        path = f"payload.env.{name}"
        if name == "":
            problems.append(Problem(path, "an environment variable name cannot be empty"))
        elif "=" in name:
            problems.append(Problem(path, "an environment variable name cannot contain '='"))
        elif "\0" in name:
            problems.append(Problem(path, "an environment variable name cannot contain NUL"))
        elif "\0" in value:
            problems.append(Problem(path, "an environment variable value cannot contain NUL"))
        elif len(f"{name}={value}".encode("utf-8", "surrogatepass")) > MAX_EXEC_STRING_BYTES:
            problems.append(Problem(path, f"NAME=value is longer than the {MAX_EXEC_STRING_BYTES} "
                                          "bytes the kernel passes to a process"))
    return problems


def check_argv(argvs: Iterable[tuple[str, list[str]]]) -> list[Problem]:
    """Refuse argv strings that ``execve`` cannot pass: containing NUL, or over the size limit.

    Args:
        argvs: ``(field path of the argv list, argv)`` pairs.
    """
    problems = []
    for path, argv in argvs:
        for index, arg in enumerate(argv):
            if "\0" in arg:
                problems.append(Problem(f"{path}[{index}]", "an argument cannot contain NUL"))
            elif len(arg.encode("utf-8", "surrogatepass")) > MAX_EXEC_STRING_BYTES:
                problems.append(Problem(f"{path}[{index}]", f"argument is longer than the "
                                        f"{MAX_EXEC_STRING_BYTES} bytes the kernel passes"))
    return problems


def check_native_features(payload: GenericWorkerPayload, config: WorkerConfig) -> list[Problem]:
    """Refuse requested native features, mounts and OS groups this worker does not enable.

    ``liveLog`` and ``resourceMonitor`` are best-effort (generic-worker only warns when the live log
    cannot start), so a worker without them runs the task without them instead of refusing it.
    """
    f = payload.features
    gates = {
        "taskclusterProxy": (f.taskcluster_proxy, config.enable_taskcluster_proxy),
        "interactive": (f.interactive, config.enable_interactive),
        "loopbackVideo": (f.loopback_video, False),
        "loopbackAudio": (f.loopback_audio, False),
        "chainOfTrust": (getattr(f, "chain_of_trust", False), config.enable_chain_of_trust),
        "runTaskAsCurrentUser": (getattr(f, "run_task_as_current_user", False), False),
    }
    problems = [
        Problem(f"payload.features.{name}", _not_enabled(name))
        for name, (wanted, enabled) in gates.items() if wanted and not enabled
    ]
    if payload.mounts and not config.enable_mounts:
        problems.append(Problem("payload.mounts", _not_enabled("mounts")))
    if payload.os_groups:
        if not config.enable_os_groups:
            problems.append(Problem("payload.osGroups", _not_enabled("osGroups")))
        else:
            problems += _check_os_groups(payload.os_groups, config)
    return problems


def _check_os_groups(groups: list[str], config: WorkerConfig) -> list[Problem]:
    # The insecure engine runs tasks as the worker's own user, which cannot join groups per task:
    # generic-worker accepts only groups that user is already in.
    own = current_user_groups() if config.run_tasks_as_current_user else None
    problems = []
    for index, group in enumerate(groups):
        if config.allowed_os_groups and group not in config.allowed_os_groups:
            problems.append(Problem(f"payload.osGroups[{index}]",
                                    f"OS group {group!r} is not allowed on this worker"))
        elif own is not None and group not in own:
            problems.append(Problem(f"payload.osGroups[{index}]",
                                    f"OS group {group!r}: tasks run as this worker's user "
                                    "(runTasksAsCurrentUser), which is not a member"))
    return problems


def current_user_groups() -> set[str]:
    """Names of the groups the worker process is in (primary and supplementary)."""
    names = set()
    for gid in {os.getegid(), *os.getgroups()}:
        try:
            names.add(grp.getgrgid(gid).gr_name)
        except KeyError:
            names.add(str(gid))
    return names


def check_docker_features(payload: DockerWorkerPayload, config: WorkerConfig) -> list[Problem]:
    """Refuse docker features and capabilities this worker does not enable (``dockerConfig``)."""
    f, caps, docker = payload.features, payload.capabilities, config.docker_config
    gates = {
        "features.taskclusterProxy": (f.taskcluster_proxy, config.enable_taskcluster_proxy),
        "features.interactive": (f.interactive, config.enable_interactive),
        "features.chainOfTrust": (f.chain_of_trust, config.enable_chain_of_trust),
        "features.allowPtrace": (f.allow_ptrace, docker.allow_ptrace),
        "capabilities.privileged": (caps.privileged, docker.allow_privileged),
        "capabilities.disableSeccomp": (caps.disable_seccomp, False),
    }
    problems = [
        Problem(f"payload.{path}", _not_enabled(path.rsplit(".", 1)[1]))
        for path, (wanted, enabled) in gates.items() if wanted and not enabled
    ]
    devices = caps.devices.model_dump(by_alias=True)
    for name, wanted in devices.items():
        if wanted and name not in docker.allowed_devices:
            problems.append(Problem(f"payload.capabilities.devices.{name}",
                                    f"device {name} is not enabled on this worker"))
    return problems


def check_dependencies(
    payload: GenericWorkerPayload | DockerWorkerPayload, task: dict[str, Any]
) -> list[Problem]:
    """Refuse artifact content (mounts, task images) from a task not in ``task.dependencies``.

    generic-worker requires it (the artifact must exist when the task starts); D2G turns task
    images into such mounts, so docker payloads get the same rule.
    """
    deps = task.get("dependencies")
    deps = set(deps) if isinstance(deps, list) and all(isinstance(d, str) for d in deps) else set()
    wanted: list[tuple[str, str]] = []
    if isinstance(payload, DockerWorkerPayload):
        if isinstance(payload.image, TaskImage):
            wanted.append(("payload.image.taskId", payload.image.task_id))
    else:
        for index, mount in enumerate(payload.mounts):
            content = getattr(mount, "content", None)
            if isinstance(content, ArtifactContent):
                wanted.append((f"payload.mounts[{index}].content.taskId", content.task_id))
    return [
        Problem(path, f"task {task_id} must be listed in task.dependencies")
        for path, task_id in wanted if task_id not in deps
    ]
