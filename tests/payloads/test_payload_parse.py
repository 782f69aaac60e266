"""ParsedTask conveniences, models, JSON schema, task-definition completion, import cost."""

from __future__ import annotations

import subprocess
import sys
from datetime import timedelta

from payload_helpers import NOW, docker, make_task, native

from tcworker.config import WorkerConfig
from tcworker.payloads import (
    ArtifactSpec,
    DockerWorkerPayload,
    GenericWorkerPayload,
    complete_task_definition,
    parse_task,
    payload_json_schema,
)
from tcworker.payloads.docker_worker import backing_log_name
from tcworker.payloads.common import parse_rfc3339

CONFIG = WorkerConfig()


def test_native_task_gives_commands_env_exit_codes_features_logs_and_specs():
    payload = native(
        command=[["chmod", "+x", "run-task"], ["./run-task", "--", "bash", "-c", "true"]],
        env={"A": "1"},
        onExitStatus={"retry": [128, 9001], "purgeCaches": [3]},
        features={"taskclusterProxy": True, "liveLog": False},
        logs={"live": "public/banana.log", "backing": "public/banana_backing.log"},
        artifacts=[{"type": "directory", "path": "public"},
                   {"type": "file", "path": "r.log", "name": "public/logs/result.log",
                    "contentType": "text/plain; charset=utf-8", "contentEncoding": "identity",
                    "optional": True, "expires": "2030-06-01T14:30:00Z"}],
    )
    parsed = parse_task(make_task(payload), CONFIG)
    assert parsed.engine == "native" and isinstance(parsed.payload, GenericWorkerPayload)
    assert parsed.commands == (("chmod", "+x", "run-task"), ("./run-task", "--", "bash", "-c", "true"))
    assert parsed.env == {"A": "1"} and parsed.max_run_time_s == 30
    assert parsed.retry_exit_codes == {128, 9001} and parsed.purge_cache_exit_codes == {3}
    assert parsed.features.taskcluster_proxy and not parsed.features.live_log
    assert parsed.features.backing_log and not parsed.features.chain_of_trust
    assert (parsed.log_names.live, parsed.log_names.backing) == ("public/banana.log", "public/banana_backing.log")
    assert parsed.artifact_specs == [
        ArtifactSpec("public", "public", "directory", NOW + timedelta(days=1), None, None, False),
        ArtifactSpec("public/logs/result.log", "r.log", "file", NOW + timedelta(hours=2, minutes=30),
                     "text/plain; charset=utf-8", "identity", True),
    ]


def test_docker_task_gives_one_argv_log_names_and_optional_specs():
    payload = docker(
        command=["/bin/bash", "-c", "echo hi"], log="apple/banana.log.txt",
        features={"taskclusterProxy": True, "chainOfTrust": True},
        artifacts={"public": {"type": "directory", "path": "/builds/worker/artifacts"},
                   "public/v": {"type": "volume", "path": "/v"}},
        onExitStatus={"retry": [0]},
    )
    parsed = parse_task(make_task(payload), CONFIG)
    assert parsed.engine == "docker" and isinstance(parsed.payload, DockerWorkerPayload)
    assert parsed.commands == (("/bin/bash", "-c", "echo hi"),)
    assert parsed.log_names.live == "apple/banana.log.txt"
    assert parsed.log_names.backing == "apple/banana.log_backing.txt"
    assert parsed.features.chain_of_trust and parsed.features.taskcluster_proxy
    assert [(s.name, s.kind, s.optional) for s in parsed.artifact_specs] == [
        ("public", "directory", True), ("public/v", "directory", True)]
    assert parsed.retry_exit_codes == {0}


def test_docker_default_command_is_an_empty_argv_and_features_artifacts_false_drops_logs():
    parsed = parse_task(make_task(docker(features={"artifacts": False})), CONFIG)
    assert parsed.commands == ((),)
    assert not parsed.features.live_log and not parsed.features.backing_log
    assert not parsed.features.upload_artifacts
    assert parsed.log_names.backing == "public/logs/live_backing.log"


def test_backing_log_name_follows_d2g():
    assert backing_log_name("public/logs/live.log") == "public/logs/live_backing.log"
    assert backing_log_name("live") == "live_backing"
    assert backing_log_name("a.b/c") == "a.b/c_backing"


def test_rfc3339_parsing_is_strict_and_gives_utc():
    assert parse_rfc3339("2030-06-01T14:00:00.123456789+02:00") == NOW.replace(microsecond=123456)
    for bad in ("2030-06-01", "2030-06-01 12:00:00Z", "2030-06-01T12:00:00", "now"):
        try:
            parse_rfc3339(bad)
        except ValueError:
            continue
        raise AssertionError(bad)


def test_payload_json_schema_covers_both_engines():
    schema = payload_json_schema()
    text = str(schema)
    assert "maxRunTime" in text and "chainOfTrust" in text and "image" in text
    assert "chainOfTrust" not in str(payload_json_schema("insecure")["$defs"].get("Features"))


def test_complete_task_definition_fills_queue_defaults_and_keeps_given_fields():
    task = complete_task_definition({"payload": native()}, task_id="fN1c8UwXQWqOa9B1MUQNZA", now=NOW)
    assert task["created"] == "2030-06-01T12:00:00.000Z"
    assert task["deadline"] == "2030-06-02T12:00:00.000Z"
    assert task["expires"] == "2031-06-02T12:00:00.000Z"
    assert task["taskGroupId"] == "fN1c8UwXQWqOa9B1MUQNZA"
    assert task["metadata"]["owner"] == "nobody@example.com"
    given = complete_task_definition({"payload": {}, "deadline": "2030-06-01T13:00:00.000Z",
                                      "provisionerId": "p", "workerType": "w"}, now=NOW)
    assert given["deadline"] == "2030-06-01T13:00:00.000Z"
    assert given["expires"] == "2031-06-01T13:00:00.000Z" and given["taskQueueId"] == "p/w"
    assert parse_task(task, CONFIG).expires == parse_rfc3339(task["expires"])


def test_importing_payloads_loads_neither_jsonschema_nor_yaml():
    code = "import sys, tcworker.payloads; print('jsonschema' in sys.modules, 'yaml' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "False"]
