"""``tcworker validate`` logic (:func:`tcworker.payloads.cli_validate`) over the real-task cases,
task definitions, bare payloads and broken files."""

from __future__ import annotations

import json

import pytest

from tcworker.config import WorkerConfig
from tcworker.payloads import cli_validate
from tcworker.testing.cases import case_paths

REFUSED = {  # case → field paths validate must name
    "dw-malformed-nss-decision-graphs": ["payload.graphs"],
    "gw-malformed-env-number": ["payload.env.GITHUB_PULL_REQUEST"],
}


def test_validate_gives_the_right_verdict_on_every_case_file(shared):
    """Given each case file, when validated with the default config, then malformed cases exit 2
    naming their fields and all others exit 0 (chain of trust: via `needs: [multiuser]`)."""
    paths = case_paths(shared)
    assert len(paths) >= 20
    for path in paths:
        code, lines = cli_validate(str(path), WorkerConfig())
        malformed = path.stem.startswith("gw-malformed-") or "malformed" in path.stem
        assert code == (2 if malformed else 0), (path.stem, lines)
        if malformed:
            assert [line.split(": ", 1)[0] for line in lines] == REFUSED[path.stem]


def test_chain_of_trust_case_task_is_valid_only_in_multiuser_mode(shared, tmp_path):
    import yaml

    case = yaml.safe_load((shared / "cases/real-tasks/gw-chain-of-trust-protected-names.yml").read_text())
    case["needs"] = ["native", "chain-of-trust"]  # without `multiuser`, the insecure engine judges
    path = tmp_path / "case.yml"
    path.write_text(yaml.safe_dump(case))
    code, lines = cli_validate(str(path), WorkerConfig())
    assert code == 2 and lines[0].startswith("payload.features.chainOfTrust: ")
    multiuser = WorkerConfig.from_mapping({"runTasksAsCurrentUser": False}, environ={})
    assert cli_validate(str(path), multiuser)[0] == 0


def test_validate_accepts_a_partial_task_definition_and_a_bare_payload(tmp_path):
    task = tmp_path / "task.yml"
    task.write_text("payload:\n  command: [[echo, hi]]\n  maxRunTime: 30\n")
    assert cli_validate(str(task), WorkerConfig()) == (0, [f"{task}: valid for the native engine (insecure)"])
    payload = tmp_path / "payload.json"
    payload.write_text(json.dumps({"image": "ubuntu", "maxRunTime": "30"}))
    assert cli_validate(str(payload), WorkerConfig()) == (
        2, ["payload.maxRunTime: Input should be a valid integer (got '30')"])


def test_validate_keeps_yaml_timestamps_as_strings(tmp_path):
    task = tmp_path / "task.yml"
    task.write_text("deadline: 2099-01-01T00:00:00Z\nexpires: 2099-06-01T00:00:00Z\n"
                    "payload:\n  command: [[a]]\n  maxRunTime: 1\n  artifacts:\n"
                    "  - {type: file, path: a, expires: 2099-02-01T00:00:00Z}\n")
    assert cli_validate(str(task), WorkerConfig())[0] == 0


@pytest.mark.parametrize("content, words", [
    (None, "cannot read"),
    ("- just\n- a list\n", "expected a mapping"),
    ("payload: [unclosed\n", "cannot read"),
    ("task: {payload: {}}\nbogus: 1\n", "unknown keys"),
    ("payload: null\n", "payload: the payload must be an object"),
])
def test_validate_reports_bad_files_without_a_traceback(tmp_path, content, words):
    path = tmp_path / "t.yml"
    if content is not None:
        path.write_text(content)
    code, lines = cli_validate(str(path), WorkerConfig())
    assert code == 2 and words in lines[0]
