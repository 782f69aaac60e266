"""Table tests of the single outcome → queue-call mapping (``tcworker.resolution``)."""

import pytest

from tcworker import errors
from tcworker.resolution import first_error, resolve

TABLE = [
    # (outcome, report call, reason, upload first, exec exit code)
    (None, "reportCompleted", "completed", True, 0),
    (errors.TaskFailed("exit 1"), "reportFailed", "failed", True, 1),
    (errors.MalformedPayload("payload.maxRunTime: bad"), "reportException", "malformed-payload", False, 2),
    (errors.ResourceUnavailable("upload x: 503"), "reportException", "resource-unavailable", False, 2),
    (errors.WorkerShutdown("SIGTERM"), "reportException", "worker-shutdown", False, 2),
    (errors.IntermittentTask("exit 128"), "reportException", "intermittent-task", False, 2),
    (errors.InternalError("bug"), "reportException", "internal-error", False, 2),
    (ValueError("oops"), "reportException", "internal-error", False, 2),
    (errors.RunResolvedElsewhere("cancelled"), None, None, False, 2),
]


@pytest.mark.parametrize("outcome,call,reason,upload_first,exit_code", TABLE)
def test_given_outcome_when_resolved_then_one_queue_call(outcome, call, reason, upload_first, exit_code):
    resolution = resolve(outcome)
    assert resolution.report_call == call
    assert resolution.reason == reason
    assert resolution.upload_first is upload_first
    assert resolution.exit_code == exit_code


def test_unexpected_exception_message_names_its_type():
    assert "KeyError" in resolve(KeyError("x")).message


def test_first_error_wins_but_resolved_elsewhere_overrides():
    failed = errors.TaskFailed("exit 1")
    unavailable = errors.ResourceUnavailable("503")
    assert first_error(None, failed) is failed
    assert first_error(failed, unavailable) is failed
    assert first_error(None, None) is None
    cancelled = errors.RunResolvedElsewhere("cancelled")
    assert first_error(failed, cancelled) is cancelled


def test_after_upload_a_failed_upload_beats_a_failed_task_but_not_an_exception():
    from tcworker.resolution import after_upload

    failed, unavailable = errors.TaskFailed("exit 1"), errors.ResourceUnavailable("503")
    assert after_upload(failed, unavailable) is unavailable  # the failed run could not carry its artifacts
    assert after_upload(None, unavailable) is unavailable
    shutdown = errors.WorkerShutdown("SIGTERM")
    assert after_upload(shutdown, unavailable) is shutdown
    assert after_upload(failed, None) is failed
