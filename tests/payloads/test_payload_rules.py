"""Worker-level refusals (schema-valid payloads this worker must not run), FM-05, FM-15 and FM-18.

Each test: given a task, when parsed for a config, then ``MalformedPayload`` names the field (or
the task parses).
"""

from __future__ import annotations

from datetime import timedelta

import pytest
from payload_helpers import NOW, docker, make_task, native

from tcworker.config import WorkerConfig
from tcworker.errors import MalformedPayload
from tcworker.payloads import parse_task, validate_task
from tcworker.payloads.rules import current_user_groups
from tcworker.payloads.taskdef import format_time

CONFIG = WorkerConfig()


def paths(task, config=CONFIG) -> list[str]:
    return [p.path for p in validate_task(task, config)]


def refused(task, config=CONFIG) -> str:
    with pytest.raises(MalformedPayload) as info:
        parse_task(task, config)
    assert info.value.reason == "malformed-payload"
    return str(info.value)


# ---------------------------------------------------------------- maxRunTime vs maxTaskRunTime
def test_max_run_time_above_config_max_task_run_time_is_refused():
    message = refused(make_task(native(maxRunTime=86401)))
    assert message.startswith("payload.maxRunTime: 86401 s exceeds this worker's maxTaskRunTime (86400 s)")


def test_max_run_time_at_config_limit_is_accepted_and_config_lowers_it():
    assert parse_task(make_task(native(maxRunTime=86400)), CONFIG).max_run_time_s == 86400
    config = WorkerConfig.from_mapping({"maxTaskRunTime": 60}, environ={})
    assert paths(make_task(docker(maxRunTime=61)), config) == ["payload.maxRunTime"]


# ---------------------------------------------------------------- FM-05 artifact expiry
@pytest.mark.parametrize("offset, ok", [
    (timedelta(days=1), True),                       # = task expires
    (timedelta(days=1, seconds=1), True),            # 1 s slack
    (timedelta(days=1, seconds=2), False),           # after the task expires
    (timedelta(hours=1), True),                      # = deadline
    (timedelta(hours=1, seconds=-1), True),          # 1 s slack
    (timedelta(minutes=59), False),                  # before the deadline
    (timedelta(hours=-1), False),                    # in the past
])
def test_fm05_artifact_expiry_outside_deadline_and_expires_is_refused(offset, ok):
    artifact = {"type": "file", "path": "a.txt", "name": "public/a.txt",
                "expires": format_time(NOW + offset)}
    for payload, path in ((native(artifacts=[artifact]), "payload.artifacts[0].expires"),
                          (docker(artifacts={"public/a.txt": {"type": "file", "path": "/a.txt",
                                                              "expires": artifact["expires"]}}),
                           "payload.artifacts.public/a.txt.expires")):
        problems = validate_task(make_task(payload), CONFIG)
        assert [p.path for p in problems] == ([] if ok else [path])
        if not ok:
            assert "'public/a.txt'" in problems[0].message


def test_fm05_artifact_without_expiry_gets_the_task_expiry():
    parsed = parse_task(make_task(native(artifacts=[{"type": "file", "path": "x\\y.txt"}])), CONFIG)
    (spec,) = parsed.artifact_specs
    assert spec.expires == NOW + timedelta(days=1)
    assert spec.name == "x/y.txt" and spec.path == "x\\y.txt"


# ---------------------------------------------------------------- FM-15 environment
@pytest.mark.parametrize("env", [{"A": True}, {"N": 1.5}, {"X": None}, {"L": ["a"]}])
def test_fm15_env_values_that_are_not_strings_are_refused(env):
    (name,) = env
    assert refused(make_task(native(env=env))).startswith(f"payload.env.{name}: Input should be a valid string")
    assert paths(make_task(docker(env=env))) == [f"payload.env.{name}"]


@pytest.mark.parametrize("name, why", [("", "empty"), ("A=B", "'='"), ("A\0B", "NUL")])
def test_fm15_env_names_that_cannot_exist_are_refused(name, why):
    for payload in (native(env={name: "x"}), docker(env={name: "x"})):
        problems = validate_task(make_task(payload), CONFIG)
        assert [p.path for p in problems] == [f"payload.env.{name}"]
        assert why in problems[0].message


def test_fm15_odd_env_names_and_values_are_accepted_byte_exact():
    env = {"1X": "a", "A B": "b", "x;y": "c", "Q": "a b;&|\"'$HOME`x`", "E": "", "NL": "l1\nl2",
           "U": "ünï©ødé"}
    assert parse_task(make_task(native(env=env)), CONFIG).env == env
    assert parse_task(make_task(docker(env=env)), CONFIG).env == env


def test_fm15_nul_in_a_value_or_an_argument_is_refused():
    assert paths(make_task(native(env={"A": "x\0y"}))) == ["payload.env.A"]
    assert paths(make_task(native(command=[["echo"], ["echo", "a\0b"]]))) == ["payload.command[1][1]"]
    assert paths(make_task(docker(command=["sh", "a\0b"]))) == ["payload.command[1]"]


# ---------------------------------------------------------------- FM-18 malformed payloads
@pytest.mark.parametrize("payload, path, words", [
    (native(maxRunTime="30"), "payload.maxRunTime", "valid integer"),
    (native(maxRunTime=-1), "payload.maxRunTime", "greater than or equal to 1"),
    (native(maxRunTime=1e12), "payload.maxRunTime", "valid integer"),
    (native(maxRunTime=10**12), "payload.maxRunTime", "maxTaskRunTime"),
    ({"maxRunTime": 30}, "payload.command", "Field required"),
    (None, "payload", "must be an object, got null"),
    ([["echo"]], "payload", "must be an object, got list"),
    (native(command=[["echo", "x" * (5 * 1024 * 1024)]]), "payload", "bytes"),
    (native(unexpected=1), "payload.unexpected", "unknown property"),
    (docker(maxRunTime="30"), "payload.maxRunTime", "valid integer"),
    (docker(unexpected=1), "payload.unexpected", "unknown property"),
])
def test_fm18_malformed_payloads_are_refused_naming_the_field(payload, path, words):
    message = refused(make_task(payload))
    first = message.splitlines()[0]
    assert first.startswith(f"{path}: ") and words in first


def test_fm18_a_long_argument_under_the_size_cap_is_refused_naming_it():
    assert paths(make_task(native(command=[["echo", "x" * 200_000]]))) == ["payload.command[0][1]"]


def test_fm18_every_problem_is_listed_one_per_line():
    message = refused(make_task(native(maxRunTime="30", env={"A": 1}, foo=2)))
    assert sorted(message.splitlines()) == [
        "payload.env.A: Input should be a valid string (got 1)",
        "payload.foo: not allowed: unknown property",
        "payload.maxRunTime: Input should be a valid integer (got '30')",
    ]


def test_task_without_parseable_deadline_or_expires_is_refused():
    task = make_task(native())
    task["deadline"] = "tomorrow"
    del task["expires"]
    assert paths(task) == ["deadline", "expires"]
    assert paths("not a task") == ["task"]


# ---------------------------------------------------------------- features and engines
@pytest.mark.parametrize("features, key, gate", [
    ({"taskclusterProxy": True}, "taskclusterProxy", "enableTaskclusterProxy"),
    ({"interactive": True}, "interactive", "enableInteractive"),
    ({"chainOfTrust": True}, "chainOfTrust", "enableChainOfTrust"),
])
def test_requested_feature_disabled_in_config_is_refused(features, key, gate):
    config = WorkerConfig.from_mapping({gate: False, "runTasksAsCurrentUser": False}, environ={})
    problems = validate_task(make_task(native(features=features)), config)
    assert [str(p) for p in problems] == [
        f"payload.features.{key}: feature {key} is not enabled on this worker"]


def test_features_this_worker_never_enables_are_refused():
    assert paths(make_task(native(features={"loopbackVideo": True, "loopbackAudio": True}))) == [
        "payload.features.loopbackVideo", "payload.features.loopbackAudio"]
    assert paths(make_task(docker(capabilities={"privileged": True, "devices": {"kvm": True}}))) == [
        "payload.capabilities.privileged", "payload.capabilities.devices.kvm"]


def test_docker_capabilities_follow_docker_config():
    # a tuple: config.py's from_mapping does not yet turn nested YAML lists into tuples
    config = WorkerConfig.from_mapping({"dockerConfig": {
        "allowPrivileged": True, "allowPtrace": False, "allowedDevices": ("kvm",)}}, environ={})
    payload = docker(capabilities={"privileged": True, "devices": {"kvm": True}},
                     features={"allowPtrace": True})
    assert paths(make_task(payload), config) == ["payload.features.allowPtrace"]


def test_chain_of_trust_needs_the_multiuser_engine():
    task = make_task(native(features={"chainOfTrust": True}))
    assert [str(p) for p in validate_task(task, CONFIG)][0].startswith(
        "payload.features.chainOfTrust: not allowed: only the multiuser engine has it")
    multiuser = WorkerConfig.from_mapping({"runTasksAsCurrentUser": False}, environ={})
    assert parse_task(task, multiuser).features.chain_of_trust is True


def test_disabled_live_log_turns_the_feature_off_instead_of_refusing():
    config = WorkerConfig.from_mapping({"enableLiveLog": False}, environ={})
    parsed = parse_task(make_task(native(features={"liveLog": True})), config)
    assert parsed.features.live_log is False and parsed.features.backing_log is True


def test_mounts_and_os_groups_follow_their_gates():
    payload = native(mounts=[{"directory": "d", "cacheName": "c"}], osGroups=["audio", "video"])
    config = WorkerConfig.from_mapping({"enableMounts": False, "enableOSGroups": False}, environ={})
    assert paths(make_task(payload), config) == ["payload.mounts", "payload.osGroups"]
    config = WorkerConfig.from_mapping({"allowedOsGroups": ["audio"], "runTasksAsCurrentUser": False},
                                       environ={})
    assert paths(make_task(payload), config) == ["payload.osGroups[1]"]


def test_insecure_engine_accepts_only_groups_the_worker_user_is_in():
    own = sorted(current_user_groups())[0]
    payload = native(osGroups=[own, "no-such-group-tcworker"])
    problems = validate_task(make_task(payload), CONFIG)
    assert [p.path for p in problems] == ["payload.osGroups[1]"]
    assert "not a member" in problems[0].message


def test_engine_not_in_config_is_refused_naming_it():
    config = WorkerConfig.from_mapping({"engines": ["native"]}, environ={})
    problems = validate_task(make_task(docker()), config)
    assert [p.path for p in problems] == ["payload.image"] and "docker engine" in problems[0].message


def test_artifact_content_from_a_task_that_is_not_a_dependency_is_refused():
    slug = "fN1c8UwXQWqOa9B1MUQNZA"
    mount = {"file": "f", "content": {"taskId": slug, "artifact": "public/x"}}
    assert paths(make_task(native(mounts=[mount]))) == ["payload.mounts[0].content.taskId"]
    assert paths(make_task(native(mounts=[mount]), dependencies=[slug])) == []
    image = {"type": "task-image", "taskId": slug, "path": "public/image.tar"}
    assert paths(make_task(docker(image=image))) == ["payload.image.taskId"]
