"""The case loader and placeholder rendering (:mod:`tcworker.testing.cases`)."""

from __future__ import annotations

import json
from datetime import datetime, timezone

import pytest

from tcworker.testing.cases import case_from_mapping, case_paths, load_case, render, render_case
from tcworker.testing.shared import require_shared

NOW = datetime(2030, 6, 1, 12, 0, 0, 123456, tzinfo=timezone.utc)
IDS = dict(now=NOW, task_ids={"producer": "PRODUCERxxxxxxxxxxxxxx"}, task_id="MAINxxxxxxxxxxxxxxxxxx",
           task_group_id="GROUPxxxxxxxxxxxxxxxxx", scheduler_id="sched", fileserver="http://fs:1/",
           docker_image="img:1")


@pytest.fixture
def shared():
    """The shared folder (skips locally when absent, fails under CI=true)."""
    return require_shared()


def test_render_substitutes_whole_and_embedded_placeholders_in_keys_and_values():
    obj = {
        "created": "{{now}}", "deadline": "{{now+1h}}", "expires": "{{now+1y+1s}}",
        "mix": "{{now+2d+3h}}", "back": "{{now-30m}}",
        "ids": ["{{taskId}}", "{{taskId:producer}}", "{{taskGroupId}}", "{{schedulerId}}"],
        "url": "{{fileserver}}/case/file", "image": "{{docker_image}}",
        "{{taskId:producer}}/x": 1, "text": "see {{ event.head.sha }} and {{unknown}}", "n": 3,
    }
    out = render(obj, **IDS)
    assert out["created"] == "2030-06-01T12:00:00.123Z"
    assert out["deadline"] == "2030-06-01T13:00:00.123Z"
    assert out["expires"] == "2031-06-01T12:00:01.123Z"
    assert out["mix"] == "2030-06-03T15:00:00.123Z" and out["back"] == "2030-06-01T11:30:00.123Z"
    assert out["ids"] == ["MAINxxxxxxxxxxxxxxxxxx", "PRODUCERxxxxxxxxxxxxxx", "GROUPxxxxxxxxxxxxxxxxx", "sched"]
    assert out["url"] == "http://fs:1/case/file" and out["image"] == "img:1"
    assert out["PRODUCERxxxxxxxxxxxxxx/x"] == 1 and out["n"] == 3
    assert out["text"] == "see {{ event.head.sha }} and {{unknown}}"


def test_render_refuses_an_unknown_prereq_label():
    with pytest.raises(ValueError, match="unknown prereq label"):
        render("{{taskId:nobody}}", **IDS)


def test_case_from_mapping_checks_the_shape():
    case = case_from_mapping({"needs": ["native"], "task": {"payload": {}}, "expect": {}}, case_id="x")
    assert (case.id, case.needs, case.worker_config, case.prereqs) == ("x", ("native",), {}, [])
    for bad in ({"needs": []}, {"task": {}, "surprise": 1}, []):
        with pytest.raises(ValueError):
            case_from_mapping(bad, case_id="x")


def test_every_shared_case_loads_and_renders_without_leftover_placeholders(shared):
    paths = case_paths(shared)
    assert paths
    for path in paths:
        case = load_case(path)
        assert case.id == path.stem and case.path == path and case.needs and case.expect
        rendered = render_case(case, now=NOW)
        text = json.dumps([rendered.task, rendered.prereqs, rendered.expect, rendered.fixtures])
        assert "{{" not in text, case.id
        labels = [p["label"] for p in case.prereqs]
        assert len(set(labels)) == len(labels)


def test_render_case_gives_prereqs_fresh_ids_used_by_the_main_task(shared):
    case = render_case(load_case(shared / "cases/real-tasks/gw-nss-mac-build-and-test.yml"),
                       task_id="MAINxxxxxxxxxxxxxxxxxx")
    assert case.task["dependencies"][0] not in ("{{taskId:mac-build}}", "MAINxxxxxxxxxxxxxxxxxx")
    assert case.task["payload"]["env"]["TC_PARENT_TASK_ID"] == case.task["dependencies"][0]
