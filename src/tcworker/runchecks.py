"""Checks of a parsed task against this worker, made before anything of the task runs.

Each refusal is a :class:`~tcworker.errors.MalformedPayload` whose message names the field:
artifact names the queue cannot store (FM-01, FM-06), payload features no plugin of this worker
provides, and ``osGroups`` without their scopes (``peer-workers.md`` section 1.8; ``assume:``
scopes expanded through the Auth service when the run is given, :func:`tcworker.scopes.held_scopes`).

What does not live here: the schema-level payload checks and worker rules
(:mod:`tcworker.payloads`), scope checks that belong to one feature (its plugin's ``prepare``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Mapping, Sequence

from tcworker.config import WorkerConfig
from tcworker.errors import MalformedPayload

if TYPE_CHECKING:
    from tcworker.payloads import ParsedTask
    from tcworker.plugins.base import Plugin

FEATURE_FIELDS = {
    "taskclusterProxy": "payload.features.taskclusterProxy",
    "chainOfTrust": "payload.features.chainOfTrust",
    "mounts": "payload.mounts",
    "cache": "payload.cache",
}


async def check_before_run(
    parsed: "ParsedTask", task: Mapping, config: WorkerConfig, plugins: Sequence["Plugin"],
    run: Any = None,
) -> None:
    """Run every check below; ``run`` (the ``TaskRun``) lets scope checks expand ``assume:``.

    Raises:
        MalformedPayload: the first failing check, one line per problem → malformed-payload.
        ResourceUnavailable: expanding ``assume:`` scopes failed (Auth service unreachable).
    """
    check_supported(parsed, plugins)
    await check_os_group_scopes(parsed, task, config, run)
    check_artifact_names(parsed)


def check_artifact_names(parsed: "ParsedTask") -> None:
    """Refuse artifact names the queue cannot store (``..``, ``//``, control characters, ...)."""
    from tcworker.artifact_names import check_artifact_name

    problems = [
        f"payload.artifacts: name {spec.name!r} ({spec.path}): {problem}"
        for spec in parsed.artifact_specs
        if (problem := check_artifact_name(spec.name, directory=spec.kind == "directory"))
    ]

    if problems:
        raise MalformedPayload("\n".join(problems))


def check_log_names(parsed: "ParsedTask") -> None:
    """Refuse ``logs.live`` / ``logs.backing`` (docker-worker: ``log``) names the queue cannot store.

    Called before the run adopts them, so the log of a refused run goes up under the defaults.
    """
    from tcworker.artifact_names import check_artifact_name

    fields = {"live": parsed.log_names.live, "backing": parsed.log_names.backing}
    problems = [
        f"payload.logs.{field}: name {name!r}: {problem}"
        for field, name in fields.items()
        if (problem := check_artifact_name(name))
    ]
    if problems:
        raise MalformedPayload("\n".join(problems))


def check_supported(parsed: "ParsedTask", plugins: Sequence["Plugin"]) -> None:
    """Refuse payload parts the schema allows but no plugin of this worker provides."""
    provided = {name for plugin in plugins for name in plugin.provides}
    wanted = {
        "taskclusterProxy": parsed.features.taskcluster_proxy,
        "chainOfTrust": parsed.features.chain_of_trust,
        "mounts": bool(getattr(parsed.payload, "mounts", None)),
        "cache": bool(getattr(parsed.payload, "cache", None)),
    }
    missing = sorted(name for name, asked in wanted.items() if asked and name not in provided)
    if missing:
        raise MalformedPayload("\n".join(
            f"{FEATURE_FIELDS[name]}: not supported by this worker (no plugin provides it)"
            for name in missing
        ))


async def check_os_group_scopes(parsed: "ParsedTask", task: Mapping, config: WorkerConfig,
                                run: Any = None) -> None:
    """``osGroups`` need ``generic-worker:os-group:<workerPoolId>/<group>`` for each group."""
    from tcworker.scopes import held_scopes, os_group_scopes, require_scopes

    groups = getattr(parsed.payload, "os_groups", None) or []
    if groups:
        required = os_group_scopes(groups, config.worker_pool_id)
        held = await held_scopes(run) if run is not None else None
        require_scopes(required, dict(task), "payload.osGroups", held)
