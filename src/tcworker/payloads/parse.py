"""From a task definition to a :class:`ParsedTask`: pick the engine, validate the payload with the
matching model, apply the worker rules, and normalize what the task runner needs.

What does not live here: the models (:mod:`.generic_worker`, :mod:`.docker_worker`), the rules
themselves (:mod:`.rules`), filling in partial task definitions (:mod:`.taskdef`).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal, Mapping

import pydantic

from tcworker.config import WorkerConfig
from tcworker.errors import MalformedPayload
from tcworker.payloads import rules
from tcworker.payloads.common import ArtifactSpec, Problem, parse_rfc3339, problems_from_error
from tcworker.payloads.docker_worker import LEGACY_PROPERTIES, DockerWorkerPayload
from tcworker.payloads.generic_worker import GenericWorkerPayload, MultiuserGenericWorkerPayload

Engine = Literal["native", "docker"]


@dataclass(frozen=True)
class Features:
    """Effective feature switches of one run: payload request, schema default, worker config.

    Native tasks use generic-worker names, docker tasks are mapped onto them (``localLiveLog`` →
    ``live_log``, ``bulkLog`` → ``backing_log``; ``features.artifacts: false`` turns off the logs
    too, as D2G does).
    """

    live_log: bool = True
    backing_log: bool = True
    taskcluster_proxy: bool = False
    chain_of_trust: bool = False
    interactive: bool = False
    resource_monitor: bool = True
    loopback_video: bool = False
    loopback_audio: bool = False
    run_task_as_current_user: bool = False
    upload_artifacts: bool = True
    allow_ptrace: bool = False
    privileged: bool = False


@dataclass(frozen=True)
class LogNames:
    """Artifact names of the live log (reference, then link) and the backing log (the full log)."""

    live: str
    backing: str


@dataclass(frozen=True)
class ParsedTask:
    """A task definition checked for this worker, with what the task runner needs.

    Attributes:
        task: the task definition as given (a dict).
        payload: the validated payload model.
        engine: ``"native"`` or ``"docker"`` (``image`` in the payload → docker).
        artifact_specs: declared artifacts, normalized (docker: ``optional`` always True).
        max_run_time_s: ``payload.maxRunTime`` in seconds.
        commands: native: one argv tuple per command; docker: one argv tuple (empty: the image's
            default command).
        env: ``payload.env``.
        retry_exit_codes: ``onExitStatus.retry``.
        purge_cache_exit_codes: ``onExitStatus.purgeCaches``.
        features: effective feature switches.
        log_names: live and backing log artifact names.
        deadline: the task's deadline (aware UTC).
        expires: the task's expiry (aware UTC).
    """

    task: dict[str, Any]
    payload: GenericWorkerPayload | DockerWorkerPayload
    engine: Engine
    artifact_specs: list[ArtifactSpec]
    max_run_time_s: int
    commands: tuple[tuple[str, ...], ...]
    env: dict[str, str]
    retry_exit_codes: frozenset[int]
    purge_cache_exit_codes: frozenset[int]
    features: Features
    log_names: LogNames
    deadline: datetime
    expires: datetime


def parse_task(task: Mapping[str, Any], config: WorkerConfig) -> ParsedTask:
    """Check a task definition for this worker and normalize it.

    Args:
        task: the task definition (``queue.task()`` / ``claimWork`` shape).
        config: this worker's config (engines, feature gates, ``maxTaskRunTime``, engine variant:
            ``runTasksAsCurrentUser: false`` selects the multiuser schema).

    Raises:
        MalformedPayload: one line per problem, ``<field path>: <message>``
            → ``exception/malformed-payload``.
    """
    parsed, problems = _check(task, config)
    if problems or parsed is None:
        raise MalformedPayload("\n".join(str(p) for p in problems))
    return parsed


def validate_task(task: Any, config: WorkerConfig) -> list[Problem]:
    """Every problem :func:`parse_task` would report, as a list (empty: the task is valid)."""
    return _check(task, config)[1]


def _check(task: Any, config: WorkerConfig) -> tuple[ParsedTask | None, list[Problem]]:
    if not isinstance(task, Mapping):
        return None, [Problem("task", f"a task definition must be an object, got {_kind(task)}")]
    problems: list[Problem] = []
    deadline = _task_time(task, "deadline", problems)
    expires = _task_time(task, "expires", problems)
    raw = task.get("payload")
    if not isinstance(raw, Mapping):
        problems.append(Problem("payload", f"the payload must be an object, got {_kind(raw)}"))
        return None, problems
    engine: Engine = "docker" if "image" in raw else "native"
    if engine not in config.engines:
        problems.append(Problem("payload.image" if engine == "docker" else "payload",
                                f"the {engine} engine is not enabled on this worker "
                                f"(engines: {', '.join(config.engines) or 'none'})"))
    size_problems = rules.check_payload_size(raw)
    if size_problems:
        return None, problems + size_problems
    payload = _validate_model(raw, engine, config, problems)
    if payload is None:
        return None, problems
    problems += _rules(payload, task, config, deadline, expires)
    if problems or deadline is None or expires is None:
        return None, problems
    return _build(dict(task), payload, engine, config, deadline, expires), []


def _kind(value: Any) -> str:
    return "null" if value is None else type(value).__name__


def _task_time(task: Mapping[str, Any], key: str, problems: list[Problem]) -> datetime | None:
    value = task.get(key)
    if value is None:
        problems.append(Problem(key, "missing: the task definition needs it"))
        return None
    try:
        return parse_rfc3339(value)
    except ValueError as err:
        problems.append(Problem(key, str(err)))
        return None


def _validate_model(
    raw: Mapping[str, Any], engine: Engine, config: WorkerConfig, problems: list[Problem]
) -> GenericWorkerPayload | DockerWorkerPayload | None:
    model: type[GenericWorkerPayload | DockerWorkerPayload]
    if engine == "docker":
        model = DockerWorkerPayload
    elif config.run_tasks_as_current_user:
        model = GenericWorkerPayload
    else:
        model = MultiuserGenericWorkerPayload
    try:
        return model.model_validate(dict(raw))
    except pydantic.ValidationError as err:
        problems += [_explain(p, engine, model) for p in problems_from_error(err)]
        return None


def _explain(problem: Problem, engine: Engine, model: type) -> Problem:
    if problem.message != "Extra inputs are not permitted":
        return problem
    key = problem.path.removeprefix("payload.")
    if engine == "docker" and key in LEGACY_PROPERTIES:
        return Problem(problem.path, f"not allowed: legacy docker-worker property "
                                     f"({LEGACY_PROPERTIES[key]})")
    if model is GenericWorkerPayload and key in ("features.chainOfTrust",
                                                 "features.runTaskAsCurrentUser"):
        return Problem(problem.path, "not allowed: only the multiuser engine has it "
                                     "(this worker runs tasks as its own user: runTasksAsCurrentUser)")
    return Problem(problem.path, "not allowed: unknown property")


def _rules(
    payload: GenericWorkerPayload | DockerWorkerPayload,
    task: Mapping[str, Any],
    config: WorkerConfig,
    deadline: datetime | None,
    expires: datetime | None,
) -> list[Problem]:
    problems = rules.check_max_run_time(payload.max_run_time, config)
    problems += rules.check_env(payload.env)
    if isinstance(payload, DockerWorkerPayload):
        problems += rules.check_argv([("payload.command", payload.command)])
        problems += rules.check_docker_features(payload, config)
        expiries = [(f"payload.artifacts.{name}", name, a.expires)
                    for name, a in payload.artifacts.items()]
    else:
        problems += rules.check_argv((f"payload.command[{i}]", argv)
                                     for i, argv in enumerate(payload.command))
        problems += rules.check_native_features(payload, config)
        expiries = [(f"payload.artifacts[{i}]", _native_name(a.name, a.path), a.expires)
                    for i, a in enumerate(payload.artifacts)]
    problems += rules.check_dependencies(payload, dict(task))
    if deadline is not None and expires is not None:
        problems += rules.check_artifact_expiry(expiries, deadline, expires)
    return problems


def _native_name(name: str | None, path: str) -> str:
    # generic-worker: an artifact without a name is published under its path, `/`-separated.
    return name if name is not None else path.replace("\\", "/")


def _build(
    task: dict[str, Any],
    payload: GenericWorkerPayload | DockerWorkerPayload,
    engine: Engine,
    config: WorkerConfig,
    deadline: datetime,
    expires: datetime,
) -> ParsedTask:
    if isinstance(payload, DockerWorkerPayload):
        specs = [ArtifactSpec(name, a.path, "file" if a.type == "file" else "directory",
                              a.expires or expires, None, None, True)
                 for name, a in payload.artifacts.items()]
        commands: tuple[tuple[str, ...], ...] = (tuple(payload.command),)
        features = _docker_features(payload, config)
        logs = LogNames(payload.log, payload.backing_log_name)
    else:
        specs = [ArtifactSpec(_native_name(a.name, a.path), a.path, a.type, a.expires or expires,
                              a.content_type, a.content_encoding, a.optional)
                 for a in payload.artifacts]
        commands = tuple(tuple(argv) for argv in payload.command)
        features = _native_features(payload, config)
        logs = LogNames(payload.logs.live, payload.logs.backing)
    return ParsedTask(
        task=task, payload=payload, engine=engine, artifact_specs=specs,
        max_run_time_s=payload.max_run_time, commands=commands, env=dict(payload.env),
        retry_exit_codes=frozenset(payload.on_exit_status.retry),
        purge_cache_exit_codes=frozenset(payload.on_exit_status.purge_caches),
        features=features, log_names=logs, deadline=deadline, expires=expires,
    )


def _native_features(payload: GenericWorkerPayload, config: WorkerConfig) -> Features:
    f = payload.features
    return Features(
        live_log=f.live_log and config.enable_live_log,
        backing_log=f.backing_log,
        taskcluster_proxy=f.taskcluster_proxy,
        chain_of_trust=getattr(f, "chain_of_trust", False),
        interactive=f.interactive,
        resource_monitor=f.resource_monitor and config.enable_resource_monitor,
        loopback_video=f.loopback_video,
        loopback_audio=f.loopback_audio,
        run_task_as_current_user=getattr(f, "run_task_as_current_user", False),
    )


def _docker_features(payload: DockerWorkerPayload, config: WorkerConfig) -> Features:
    f = payload.features
    return Features(
        live_log=f.local_live_log and f.artifacts and config.enable_live_log,
        backing_log=f.bulk_log and f.artifacts,
        taskcluster_proxy=f.taskcluster_proxy,
        chain_of_trust=f.chain_of_trust,
        interactive=f.interactive,
        resource_monitor=config.enable_resource_monitor,
        upload_artifacts=f.artifacts,
        allow_ptrace=f.allow_ptrace,
        privileged=payload.capabilities.privileged,
    )
