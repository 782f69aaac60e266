"""Typed models of generic-worker and docker-worker payloads, and task checks for this worker.

Public API (contract in ``docs/internals.md``):

- :func:`parse_task` ``(task, config) -> ParsedTask``; raises ``MalformedPayload`` listing every
  problem as ``<field path>: <message>``.
- :func:`validate_task` ``(task, config) -> list[Problem]``.
- :class:`ParsedTask`, :class:`ArtifactSpec`, :class:`Problem`, :class:`Features`, :class:`LogNames`.
- :class:`GenericWorkerPayload`, :class:`MultiuserGenericWorkerPayload`, :class:`DockerWorkerPayload`.
- :func:`payload_json_schema` for ``tcworker schema payload``; :func:`cli_validate` for
  ``tcworker validate``; :func:`complete_task_definition` for partial task definitions.

Importing this package loads pydantic only (no jsonschema, no YAML): the worker imports it at start.
"""

from __future__ import annotations

from typing import Any, Literal

from tcworker.payloads.common import ArtifactSpec, Problem
from tcworker.payloads.docker_worker import DockerWorkerPayload
from tcworker.payloads.generic_worker import GenericWorkerPayload, MultiuserGenericWorkerPayload
from tcworker.payloads.parse import Features, LogNames, ParsedTask, parse_task, validate_task
from tcworker.payloads.taskdef import complete_task_definition

__all__ = [
    "ArtifactSpec",
    "DockerWorkerPayload",
    "Features",
    "GenericWorkerPayload",
    "LogNames",
    "MultiuserGenericWorkerPayload",
    "ParsedTask",
    "Problem",
    "cli_validate",
    "complete_task_definition",
    "parse_task",
    "payload_json_schema",
    "validate_task",
]


def payload_json_schema(variant: Literal["insecure", "multiuser"] = "multiuser") -> dict[str, Any]:
    """JSON Schema of the payloads this worker accepts: native (``variant``) or docker.

    Returns:
        a dict with ``anyOf`` of the native and the docker payload schemas (pydantic's rendering,
        keys as in payloads), for ``tcworker schema payload``.
    """
    from pydantic import TypeAdapter

    native = GenericWorkerPayload if variant == "insecure" else MultiuserGenericWorkerPayload
    schema = TypeAdapter(native | DockerWorkerPayload).json_schema(by_alias=True)
    schema["title"] = f"tcworker payload ({variant} native engine, or docker engine)"
    return schema


def cli_validate(path: str, config: Any) -> tuple[int, list[str]]:
    """Logic of ``tcworker validate TASK_FILE``; see :func:`tcworker.payloads.validate_file.cli_validate`."""
    from tcworker.payloads.validate_file import cli_validate as run

    return run(path, config)
