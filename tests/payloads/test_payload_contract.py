"""Contract: our payload models accept exactly what the upstream schemas accept.

Given the upstream YAML schemas (jsonschema, draft-06, with date-time and uri format checks) and a
corpus (every case payload, rendered, plus handmade edge payloads), when both judge each payload,
then the verdicts agree, except for the deliberate differences pinned in ``DIFFERENCES``.
Only the models are compared here (no worker rules: those are ``test_payload_rules.py``).
"""

from __future__ import annotations

import copy
import re
from datetime import datetime
from pathlib import Path
from typing import Any

import pydantic
import pytest
import yaml
from payload_helpers import docker, native

from tcworker.payloads import DockerWorkerPayload, GenericWorkerPayload, MultiuserGenericWorkerPayload
from tcworker.testing.cases import case_paths, load_case, render_case

SHA = "a" * 64
SLUG = "fN1c8UwXQWqOa9B1MUQNZA"
DATE = "2030-06-01T12:00:00.000Z"

NATIVE_EDGES: dict[str, Any] = {
    "minimal": native(),
    "maxRunTime string": native(maxRunTime="30"),
    "maxRunTime -1": native(maxRunTime=-1),
    "maxRunTime 0": native(maxRunTime=0),
    "maxRunTime 1.5": native(maxRunTime=1.5),
    "maxRunTime 30.0": native(maxRunTime=30.0),
    "maxRunTime 1e12": native(maxRunTime=1e12),
    "maxRunTime bool": native(maxRunTime=True),
    "maxRunTime null": native(maxRunTime=None),
    "no command": {"maxRunTime": 30},
    "no maxRunTime": {"command": [["a"]]},
    "command empty": native(command=[]),
    "command empty argv": native(command=[[]]),
    "command int arg": native(command=[["a", 1]]),
    "command flat": native(command=["a"]),
    "command string": native(command="echo"),
    "env number": native(env={"A": 1}),
    "env null": native(env={"A": None}),
    "env odd names": native(env={"1X": "a", "a b;": "", "": "x", "A=B": "y"}),
    "env list": native(env=["A=1"]),
    "unknown key": native(foo=1),
    "snake_case key": native(max_run_time=30),
    "artifact file": native(artifacts=[{"type": "file", "path": "a"}]),
    "artifact all fields": native(artifacts=[{
        "type": "directory", "path": "d", "name": "public/d", "expires": DATE,
        "contentType": "text/plain", "contentEncoding": "gzip", "optional": True}]),
    "artifact volume": native(artifacts=[{"type": "volume", "path": "a"}]),
    "artifact no path": native(artifacts=[{"type": "file"}]),
    "artifact extra": native(artifacts=[{"type": "file", "path": "a", "foo": 1}]),
    "artifact name null": native(artifacts=[{"type": "file", "path": "a", "name": None}]),
    "artifact expires words": native(artifacts=[{"type": "file", "path": "a", "expires": "tomorrow"}]),
    "artifact expires offset": native(artifacts=[{"type": "file", "path": "a",
                                                  "expires": "2030-06-01T12:00:00+02:00"}]),
    "artifact expires no zone": native(artifacts=[{"type": "file", "path": "a",
                                                   "expires": "2030-06-01T12:00:00"}]),
    "artifact expires bad day": native(artifacts=[{"type": "file", "path": "a",
                                                   "expires": "2030-02-30T12:00:00Z"}]),
    "artifact encoding br": native(artifacts=[{"type": "file", "path": "a", "contentEncoding": "br"}]),
    "artifact optional string": native(artifacts=[{"type": "file", "path": "a", "optional": "yes"}]),
    "artifacts repeated": native(artifacts=[{"type": "file", "path": "a"}] * 2),
    "artifacts repeated with default": native(artifacts=[
        {"type": "file", "path": "a"}, {"type": "file", "path": "a", "optional": False}]),
    "features all native": native(features={
        "taskclusterProxy": True, "liveLog": False, "backingLog": False, "interactive": True,
        "loopbackVideo": True, "loopbackAudio": True, "resourceMonitor": False}),
    "feature unknown": native(features={"magic": True}),
    "feature string": native(features={"liveLog": "true"}),
    "feature chainOfTrust": native(features={"chainOfTrust": True}),
    "feature runTaskAsCurrentUser": native(features={"runTaskAsCurrentUser": True}),
    "mount url file": native(mounts=[{"file": "f", "content": {"url": "https://x/y", "sha256": SHA}}]),
    "mount url not uri": native(mounts=[{"file": "f", "content": {"url": "not a uri"}}]),
    "mount sha upper": native(mounts=[{"file": "f", "content": {"url": "https://x", "sha256": SHA.upper()}}]),
    "mount raw": native(mounts=[{"file": "f", "content": {"raw": "hello"}, "format": "gz"}]),
    "mount raw too long": native(mounts=[{"file": "f", "content": {"raw": "x" * 65537}}]),
    "mount base64": native(mounts=[{"file": "f", "content": {"base64": "aGVsbG8="}}]),
    "mount base64 bad": native(mounts=[{"file": "f", "content": {"base64": "a b"}}]),
    "mount artifact": native(mounts=[{"file": "f", "content": {"taskId": SLUG, "artifact": "a"}}]),
    "mount artifact bad slug": native(mounts=[{"file": "f", "content": {"taskId": "x", "artifact": "a"}}]),
    "mount artifact no taskId": native(mounts=[{"file": "f", "content": {"artifact": "a"}}]),
    "mount indexed": native(mounts=[{"file": "f", "content": {"namespace": "n.s", "artifact": "a"}}]),
    "mount indexed with sha": native(mounts=[{"file": "f", "content": {
        "namespace": "n", "artifact": "a", "sha256": SHA}}]),
    "mount two contents": native(mounts=[{"file": "f", "content": {"url": "https://x", "raw": "y"}}]),
    "mount content empty": native(mounts=[{"file": "f", "content": {}}]),
    "mount file zip": native(mounts=[{"file": "f", "content": {"raw": "x"}, "format": "zip"}]),
    "mount cache": native(mounts=[{"directory": "d", "cacheName": "c"}]),
    "mount cache content": native(mounts=[{"directory": "d", "cacheName": "c",
                                           "content": {"url": "https://x"}, "format": "tar.gz"}]),
    "mount cache content no format": native(mounts=[{"directory": "d", "cacheName": "c",
                                                     "content": {"url": "https://x"}}]),
    "mount cache format no content": native(mounts=[{"directory": "d", "cacheName": "c",
                                                     "format": "zip"}]),
    "mount read-only": native(mounts=[{"directory": "d", "content": {"raw": "x"}, "format": "zip"}]),
    "mount read-only no format": native(mounts=[{"directory": "d", "content": {"raw": "x"}}]),
    "mount file and directory": native(mounts=[{"file": "f", "directory": "d", "content": {"raw": "x"}}]),
    "mount empty": native(mounts=[{}]),
    "mount string": native(mounts=["f"]),
    "osGroups": native(osGroups=["audio", "video"]),
    "osGroups repeated": native(osGroups=["a", "a"]),
    "osGroups int": native(osGroups=[1]),
    "supersederUrl": native(supersederUrl="https://x"),
    "supersederUrl int": native(supersederUrl=1),
    "supersederUrl null": native(supersederUrl=None),
    "retry": native(onExitStatus={"retry": [1, 128], "purgeCaches": [0, 3]}),
    "retry 0": native(onExitStatus={"retry": [0]}),
    "retry repeated": native(onExitStatus={"retry": [1, 1]}),
    "purgeCaches -1": native(onExitStatus={"purgeCaches": [-1]}),
    "onExitStatus extra": native(onExitStatus={"fail": [1]}),
    "logs": native(logs={"live": "public/a.log", "backing": "public/b.log"}),
    "logs int": native(logs={"live": 1}),
    "logs extra": native(logs={"other": "x"}),
    "proxy interface": native(taskclusterProxyInterface="docker-bridge"),
    "proxy interface eth0": native(taskclusterProxyInterface="eth0"),
}

DOCKER_EDGES: dict[str, Any] = {
    "minimal": docker(),
    "named image": docker(image={"type": "docker-image", "name": "x"}),
    "named image no name": docker(image={"type": "docker-image"}),
    "indexed image": docker(image={"type": "indexed-image", "namespace": "n", "path": "p"}),
    "task image": docker(image={"type": "task-image", "taskId": SLUG, "path": "p"}),
    "image other type": docker(image={"type": "other", "name": "x"}),
    "image empty object": docker(image={}),
    "image number": docker(image=5),
    "image null": docker(image=None),
    "no maxRunTime": {"image": "x"},
    "maxRunTime string": docker(maxRunTime="30"),
    "maxRunTime 0": docker(maxRunTime=0),
    "maxRunTime two days": docker(maxRunTime=172800),
    "maxRunTime 30.0": docker(maxRunTime=30.0),
    "command": docker(command=["/bin/sh", "-c", "true"]),
    "command int": docker(command=["a", 1]),
    "command string": docker(command="a"),
    "env number": docker(env={"A": 1}),
    "cache": docker(cache={"c": "/x"}),
    "cache int": docker(cache={"c": 1}),
    "capabilities": docker(capabilities={"privileged": True, "disableSeccomp": True, "devices": {
        "loopbackVideo": True, "loopbackAudio": True, "hostSharedMemory": True, "kvm": True}}),
    "capabilities unknown device": docker(capabilities={"devices": {"phone": True}}),
    "capabilities unknown": docker(capabilities={"root": True}),
    "retry": docker(onExitStatus={"retry": [0, -1, 0], "purgeCaches": [2]}),
    "retry string": docker(onExitStatus={"retry": ["1"]}),
    "artifacts": docker(artifacts={"public/a": {"type": "file", "path": "/a", "expires": DATE}}),
    "artifact volume": docker(artifacts={"public/a": {"type": "volume", "path": "/a"}}),
    "artifact no type": docker(artifacts={"public/a": {"path": "/a"}}),
    "artifact bad expires": docker(artifacts={"public/a": {"type": "file", "path": "/a",
                                                           "expires": "soon"}}),
    "artifact list": docker(artifacts=[{"type": "file", "path": "/a"}]),
    "features": docker(features={
        "localLiveLog": False, "bulkLog": False, "taskclusterProxy": True, "artifacts": False,
        "interactive": True, "allowPtrace": True, "chainOfTrust": True}),
    "feature dind": docker(features={"dind": True}),
    "feature dockerSave": docker(features={"dockerSave": True}),
    "graphs": docker(graphs=["/x"]),
    "log": docker(log="public/x.log"),
    "log int": docker(log=1),
    "supersederUrl": docker(supersederUrl="https://x"),
    "unknown": docker(foo=1),
    "native command shape": docker(command=[["a"]]),
}

# name → (schema, upstream verdict, our verdict, why). Pinned: the test checks both sides.
_INTEGRAL_FLOAT = ("an integral float is an integer for JSON Schema; we refuse it, as "
                   "generic-worker's Go decoding into int64 does")
DIFFERENCES: dict[tuple[str, str], tuple[bool, bool, str]] = {
    ("insecure", "maxRunTime 30.0"): (True, False, _INTEGRAL_FLOAT),
    ("multiuser", "maxRunTime 30.0"): (True, False, _INTEGRAL_FLOAT),
    ("insecure", "maxRunTime 1e12"): (True, False, _INTEGRAL_FLOAT),
    ("multiuser", "maxRunTime 1e12"): (True, False, _INTEGRAL_FLOAT),
    ("docker", "maxRunTime 30.0"): (True, False, _INTEGRAL_FLOAT),
    ("docker-v62", "maxRunTime 30.0"): (True, False, _INTEGRAL_FLOAT),
    ("docker-v62", "maxRunTime two days"): (False, True, "v62 capped maxRunTime at 86400; "
                                            "d2g-current does not; config maxTaskRunTime does"),
    ("docker-v62", "artifact volume"): (False, True, "`volume` artifacts exist since D2G"),
    ("docker-v62", "feature dind"): (True, False, "removed from the schema in 2025-09"),
    ("docker-v62", "feature dockerSave"): (True, False, "removed from the schema in 2025-09"),
}


def _schema(path: Path, *, branch: int | None = None) -> dict[str, Any]:
    root = yaml.safe_load(path.read_text())
    schema = root["oneOf"][branch] if branch is not None else root
    out = {k: v for k, v in schema.items() if k not in ("$id", "$schema")}
    out["definitions"] = root.get("definitions", {})
    return out


def _format_checker():
    import jsonschema

    checker = jsonschema.FormatChecker(formats=())

    @checker.checks("date-time")
    def _date_time(value: object) -> bool:  # RFC 3339, as Go's gojsonschema checks it
        if not isinstance(value, str):
            return True
        if not re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?(Z|[+-]\d\d:\d\d)", value,
                            re.I):
            return False
        try:
            datetime.fromisoformat(re.sub(r"\.\d+", "", value.upper()).replace("Z", "+00:00"))
        except ValueError:
            return False
        return True

    @checker.checks("uri")
    def _uri(value: object) -> bool:
        return not isinstance(value, str) or bool(re.fullmatch(r"[A-Za-z][A-Za-z0-9+.-]*:\S*", value))

    return checker


@pytest.fixture(scope="module")
def validators(shared: Path) -> dict[str, Any]:
    import jsonschema

    peers = shared / "schemas" / "peers"
    schemas = {
        "insecure": _schema(peers / "generic-worker" / "insecure_posix.yml", branch=0),
        "multiuser": _schema(peers / "generic-worker" / "multiuser_posix.yml", branch=0),
        "docker": _schema(peers / "docker-worker" / "d2g-current" / "payload.yml"),
        "docker-v62": _schema(peers / "docker-worker" / "v62.0.0" / "payload.yml"),
        "insecure-docker": _schema(peers / "generic-worker" / "insecure_posix.yml", branch=1),
    }
    checker = _format_checker()
    return {name: jsonschema.Draft6Validator(s, format_checker=checker) for name, s in schemas.items()}


MODELS = {"insecure": GenericWorkerPayload, "multiuser": MultiuserGenericWorkerPayload,
          "docker": DockerWorkerPayload, "docker-v62": DockerWorkerPayload,
          "insecure-docker": DockerWorkerPayload}


def _model_accepts(schema: str, payload: Any) -> bool:
    try:
        MODELS[schema].model_validate(copy.deepcopy(payload))
    except pydantic.ValidationError:
        return False
    return True


def _case_payloads(shared: Path) -> dict[str, tuple[str, Any]]:
    out = {}
    for path in case_paths(shared):
        case = render_case(load_case(path))
        for i, prereq in enumerate(case.prereqs):
            out[f"{case.id} prereq {i}"] = prereq["task"]["payload"]
        out[case.id] = case.task["payload"]
    return out


def _check(validators: dict[str, Any], schema: str, name: str, payload: Any) -> None:
    upstream = validators[schema].is_valid(payload)
    ours = _model_accepts(schema, payload)
    if (schema, name) in DIFFERENCES:
        want_upstream, want_ours, why = DIFFERENCES[(schema, name)]
        assert (upstream, ours) == (want_upstream, want_ours), why
        return
    errors = [e.message for e in validators[schema].iter_errors(payload)][:3]
    assert upstream == ours, f"{schema} / {name}: upstream {upstream} {errors}, ours {ours}"


@pytest.mark.parametrize("schema", ["insecure", "multiuser"])
def test_native_model_matches_generic_worker_schema_on_edge_payloads(validators, schema):
    for name, payload in NATIVE_EDGES.items():
        _check(validators, schema, name, payload)


@pytest.mark.parametrize("schema", ["docker", "docker-v62", "insecure-docker"])
def test_docker_model_matches_docker_worker_schemas_on_edge_payloads(validators, schema):
    for name, payload in DOCKER_EDGES.items():
        key = "docker" if schema == "insecure-docker" else schema
        if (key, name) in DIFFERENCES:
            want_upstream, want_ours, _ = DIFFERENCES[(key, name)]
            assert validators[schema].is_valid(payload) == want_upstream
            assert _model_accepts(schema, payload) == want_ours
            continue
        _check(validators, schema, name, payload)


def test_models_match_upstream_schemas_on_every_case_payload(validators, shared):
    for name, payload in _case_payloads(shared).items():
        schemas = ["docker", "docker-v62"] if "image" in payload else ["insecure", "multiuser"]
        for schema in schemas:
            _check(validators, schema, name, payload)


def test_case_payload_verdicts_are_the_readme_ones(validators, shared):
    """Given the README's table of invalid payloads, our models refuse exactly those."""
    refused = {(name, schema) for name, payload in _case_payloads(shared).items()
               for schema in (["docker"] if "image" in payload else ["insecure", "multiuser"])
               if not _model_accepts(schema, payload)}
    assert refused == {
        ("gw-malformed-env-number", "insecure"),
        ("gw-malformed-env-number", "multiuser"),
        ("dw-malformed-nss-decision-graphs", "docker"),
        ("gw-chain-of-trust-protected-names", "insecure"),
    }


def test_trailing_newline_in_patterns_is_refused_like_go():
    """Python's jsonschema lets `$` match before a final newline; Go's regexp (upstream) does not."""
    payload = native(mounts=[{"file": "f", "content": {"url": "https://x", "sha256": SHA + "\n"}}])
    assert not _model_accepts("insecure", payload)
