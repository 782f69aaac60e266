"""Checking a :class:`~caserun.TaskResult` against a case's ``expect:`` mapping.

:func:`problems` returns every mismatch as a readable line (empty when the result matches):
``resolution``, ``reason``, ``runs`` (every run in order), ``artifacts`` (exists, ``contains``,
``not_contains``, ``sha256``, ``contentType``, ``storageType: error``, ``absent``) and ``log``
(``contains`` / ``not_contains`` on the backing log of the last run).

What does not live here: running the tasks (:mod:`caserun`).
"""

from __future__ import annotations

import hashlib
from typing import Any

from caserun import TaskResult

ARTIFACT_KEYS = {"contains", "not_contains", "sha256", "contentType", "storageType", "absent"}


def problems(expect: dict[str, Any], result: TaskResult) -> list[str]:
    """Every way ``result`` differs from ``expect`` (README "Case file format")."""
    out: list[str] = []
    if not result.runs:
        return [f"task {result.task_id}: no run resolved"]
    state, reason = result.runs[-1]
    if "resolution" in expect and state != expect["resolution"]:
        out.append(f"resolution: expected {expect['resolution']}, got {state} ({reason})")
    if "reason" in expect and reason != expect["reason"]:
        out.append(f"reason: expected {expect['reason']}, got {reason}")
    if "runs" in expect:
        want = expect["runs"]
        same = len(want) == len(result.runs) and all(
            got_state == w["state"] and w.get("reason", got_reason) == got_reason
            for (got_state, got_reason), w in zip(result.runs, want))
        if not same:
            out.append(f"runs: expected {[(w['state'], w.get('reason')) for w in want]}, got {result.runs}")
    for name, spec in (expect.get("artifacts") or {}).items():
        out.extend(_artifact_problems(result, name, spec or {}))
    log_spec = expect.get("log") or {}
    if log_spec:
        log = result.log
        if log is None:
            out.append(f"log: backing log {result.log_name} missing")
        else:
            out.extend(_text_problems(f"log {result.log_name}", log, log_spec))
    return out


def _artifact_problems(result: TaskResult, name: str, spec: dict[str, Any]) -> list[str]:
    unknown = set(spec) - ARTIFACT_KEYS
    if unknown:
        return [f"artifact {name}: unknown expectation keys {sorted(unknown)}"]
    art = result.artifacts.get(name)
    if spec.get("absent"):
        if art is not None and art.storage_type != "error":
            return [f"artifact {name}: expected absent, found ({art.storage_type})"]
        return []
    if art is None:
        return [f"artifact {name}: missing (have: {sorted(result.artifacts)})"]
    if spec.get("storageType") == "error" or art.storage_type == "error":
        if spec.get("storageType") != art.storage_type:
            return [f"artifact {name}: expected storageType {spec.get('storageType', 'data')}, "
                    f"got {art.storage_type}"]
        return []
    out: list[str] = []
    if art.content is None:
        return [f"artifact {name}: content not available ({art.storage_type})"]
    if "sha256" in spec and hashlib.sha256(art.content).hexdigest() != spec["sha256"]:
        out.append(f"artifact {name}: sha256 {hashlib.sha256(art.content).hexdigest()}, "
                   f"expected {spec['sha256']}")
    if "contentType" in spec and art.content_type != spec["contentType"]:
        out.append(f"artifact {name}: contentType {art.content_type!r}, expected {spec['contentType']!r}")
    out.extend(_text_problems(f"artifact {name}", art.content, spec))
    return out


def _text_problems(what: str, content: bytes, spec: dict[str, Any]) -> list[str]:
    out = []
    for needle in _as_list(spec.get("contains")):
        if needle.encode() not in content:
            out.append(f"{what}: does not contain {needle!r}")
    for needle in _as_list(spec.get("not_contains")):
        if needle.encode() in content:
            out.append(f"{what}: contains {needle!r}")
    return out


def _as_list(value: Any) -> list[str]:
    if value is None:
        return []
    return [str(v) for v in value] if isinstance(value, list) else [str(value)]
