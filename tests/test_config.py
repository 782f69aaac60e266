"""WorkerConfig: case-insensitive generic-worker keys, environment fill-in, defaults, errors."""

from __future__ import annotations

import json
import logging

import pytest

from tcworker.config import WorkerConfig, load_config
from tcworker.errors import ConfigError

WORKER_RUNNER_CONFIG = {
    # the shape worker-runner writes for generic-worker (peer-workers.md section 4.4)
    "accessToken": "secret-token",
    "availabilityZone": "us-east-1a",
    "cachesDir": "/var/cache/tc",
    "clientId": "worker/proj-test/python-worker/i-123",
    "instanceID": "i-0123456789",
    "instanceType": "m5.large",
    "privateIP": "10.0.0.5",
    "provisionerId": "proj-test",
    "publicIP": "203.0.113.7",
    "region": "us-east-1",
    "rootURL": "https://tc.example.com",
    "workerGroup": "us-east-1",
    "workerId": "i-0123456789",
    "workerLocation": "{\"cloud\":\"aws\",\"region\":\"us-east-1\",\"availabilityZone\":\"us-east-1a\"}",
    "workerType": "python-worker",
    "workerTypeMetadata": {"machine-setup": {"maintainer": "nobody@example.com"}, "instance-type": "m5.large"},
}


def test_worker_runner_written_json_loads_unchanged(tmp_path):
    path = tmp_path / "worker.json"
    path.write_text(json.dumps(WORKER_RUNNER_CONFIG, indent=2))
    config = load_config(path, environ={})
    assert config.instance_id == "i-0123456789"  # written as instanceID, read as instanceId
    assert config.worker_pool_id == "proj-test/python-worker"
    assert json.loads(config.worker_location)["cloud"] == "aws"
    assert config.worker_type_metadata["machine-setup"]["maintainer"] == "nobody@example.com"
    config.require_for_run()


def test_keys_match_case_insensitively():
    config = WorkerConfig.from_mapping({"ROOTURL": "https://x", "CAPACITY": 3, "tasksdir": "/t"}, environ={})
    assert (config.root_url, config.capacity, config.tasks_dir) == ("https://x", 3, "/t")


def test_environment_fills_what_the_file_leaves_out():
    env = {"TASKCLUSTER_ROOT_URL": "https://env", "TASKCLUSTER_CLIENT_ID": "c",
           "TASKCLUSTER_ACCESS_TOKEN": "t", "TASKCLUSTER_CERTIFICATE": "{}"}
    config = WorkerConfig.from_mapping({"clientId": "from-file"}, environ=env)
    assert config.root_url == "https://env" and config.client_id == "from-file"
    assert config.credentials == {"clientId": "from-file", "accessToken": "t", "certificate": "{}"}


def test_worker_pool_id_splits_into_provisioner_and_worker_type():
    config = WorkerConfig.from_mapping({"workerPoolId": "proj/type"}, environ={})
    assert (config.provisioner_id, config.worker_type, config.worker_pool_id) == ("proj", "type", "proj/type")


def test_unknown_keys_are_logged_and_ignored(caplog):
    with caplog.at_level(logging.WARNING):
        config = WorkerConfig.from_mapping({"livelogExecutable": "livelog", "capacity": 2}, environ={})
    assert config.capacity == 2
    assert "livelogExecutable" in caplog.text


@pytest.mark.parametrize("raw,key", [
    ({"capacity": "2"}, "capacity"),
    ({"capacity": 0}, "capacity"),
    ({"maxTaskRunTime": 1.5}, "maxTaskRunTime"),
    ({"enableLiveLog": "yes"}, "enableLiveLog"),
    ({"engines": ["qemu"]}, "engines"),
    ({"dockerConfig": {"allowPrivileged": "true"}}, "dockerConfig"),
])
def test_wrong_types_stop_with_a_message_naming_the_key(raw, key):
    with pytest.raises(ConfigError) as err:
        WorkerConfig.from_mapping(raw, environ={})
    assert key in str(err.value)


def test_defaults_fit_a_small_machine_and_exec_needs_no_key():
    config = WorkerConfig.from_mapping({}, environ={})
    assert config.required_disk_space_megabytes <= 1024
    assert config.max_task_run_time_s == 86400 and config.capacity == 1
    assert config.create_object_artifacts is True and config.run_tasks_as_current_user is True


def test_run_requires_only_identity_keys():
    with pytest.raises(ConfigError) as err:
        WorkerConfig.from_mapping({"rootURL": "https://x"}, environ={}).require_for_run()
    message = str(err.value)
    for key in ("clientId", "accessToken", "workerGroup", "workerId", "provisionerId"):
        assert key in message
    assert "ed25519" not in message
    with pytest.raises(ConfigError, match="ed25519SigningKeyLocation"):
        WorkerConfig.from_mapping(WORKER_RUNNER_CONFIG, environ={}).require_for_run(chain_of_trust=True)


def test_yaml_config_and_unreadable_file(tmp_path):
    path = tmp_path / "worker.yml"
    path.write_text("rootURL: https://x\ncapacity: 4\n")
    assert load_config(path, environ={}).capacity == 4
    with pytest.raises(ConfigError, match="cannot read"):
        load_config(tmp_path / "missing.yml", environ={})


def test_redacted_hides_secrets():
    config = WorkerConfig.from_mapping(WORKER_RUNNER_CONFIG, environ={})
    assert "secret-token" not in json.dumps(config.redacted())
