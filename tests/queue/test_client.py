"""Tests of tcworker.queue.client: error classification, claim parsing, call timeouts (no server),
then the worker and run queues against the queue emulator."""

from __future__ import annotations

import asyncio
import datetime as dt

import aiohttp
import pytest
from taskcluster import exceptions as tc_exceptions

from tcworker.errors import QueueError, RunResolvedElsewhere
from tcworker.queue.client import (
    Claim,
    ClientFactory,
    QueueCallError,
    is_auth_failure,
    is_transient,
    parse_time,
    status_of,
    WorkerQueue,
    translate,
)
from tcworker.testing.queue import QueueEmulator


def _rest(status: int) -> tc_exceptions.TaskclusterRestFailure:
    return tc_exceptions.TaskclusterRestFailure("boom\n\n---\n\n* footer", None, status_code=status,
                                                body={"code": "X", "message": "boom"})


def _response_error(status: int) -> aiohttp.ClientResponseError:
    return aiohttp.ClientResponseError(None, (), status=status, message="Internal Server Error")  # type: ignore[arg-type]


# ------------------------------------------------------------------ classification
@pytest.mark.parametrize(
    "err, status, transient, auth",
    [
        (_rest(409), 409, False, False),
        (_rest(404), 404, False, False),
        (_rest(403), 403, False, True),
        (tc_exceptions.TaskclusterAuthFailure("no", status_code=401), 401, False, True),
        (_response_error(500), 500, True, False),  # what the client raises after its 5xx retries
        (_response_error(503), 503, True, False),
        (tc_exceptions.TaskclusterConnectionError("reset", superExc=None), None, True, False),
        (aiohttp.ServerDisconnectedError(), None, True, False),
        (TimeoutError(), None, True, False),
        (QueueCallError("x", "m", status=502, transient=True), 502, True, False),
        (ValueError("bug"), None, False, False),
    ],
)
def test_classification_given_client_errors(err, status, transient, auth):
    assert status_of(err) == status
    assert is_transient(err) is transient
    assert is_auth_failure(err) is auth


def test_cancelled_error_is_never_transient():
    assert is_transient(asyncio.CancelledError()) is False


def test_translate_keeps_status_body_and_drops_the_footer():
    err = translate(_rest(409), "reclaimTask")
    assert isinstance(err, QueueError)
    assert (err.api, err.status, err.transient) == ("reclaimTask", 409, False)
    assert err.body["code"] == "X"
    assert "footer" not in str(err) and "HTTP 409" in str(err)


# ------------------------------------------------------------------ claims and times
def test_parse_time_accepts_z_and_offsets_and_gives_aware_utc():
    a = parse_time("2026-11-29T10:36:43.882Z")
    b = parse_time("2026-11-29T10:36:43.882+00:00")
    c = parse_time("2026-11-29T11:36:43.882029+01:00")
    assert a == b and a.tzinfo is not None
    assert abs((c - a).total_seconds()) < 0.001
    assert c.utcoffset() == dt.timedelta(0)


def test_claim_from_response_given_postgres_offset_taken_until():
    item = {
        "status": {"taskId": "abc", "runs": [{"runId": 0, "state": "running",
                                               "started": "2026-11-29T10:00:00.000Z"}]},
        "runId": 0,
        "workerGroup": "g",
        "workerId": "w",
        "takenUntil": "2026-11-29T10:20:00.000+00:00",
        "task": {"payload": {}},
        "credentials": {"clientId": "c", "accessToken": "t", "certificate": "{}"},
    }
    received = parse_time("2026-11-29T10:00:02.000Z").timestamp()
    claim = Claim.from_response(item, received)
    assert (claim.task_id, claim.run_id) == ("abc", 0)
    assert claim.taken_until == dt.datetime(2026, 11, 29, 10, 20, tzinfo=dt.timezone.utc)
    assert claim.clock_offset_s == pytest.approx(-2.0)
    assert claim.credentials["clientId"] == "c"


# ------------------------------------------------------------------ call boundary
async def test_call_given_a_hung_method_then_transient_timeout_error():
    async with ClientFactory.open("http://127.0.0.1:1") as clients:
        async def claimWork() -> None:
            await asyncio.Event().wait()

        with pytest.raises(QueueCallError) as info:
            await clients.call(claimWork, timeout_s=0.1)
    assert info.value.transient and info.value.status is None
    assert info.value.api == "claimWork"


async def test_call_given_connection_refused_then_transient_error():
    async with ClientFactory.open("http://127.0.0.1:1", max_retries=0) as clients:
        queue = clients.queue({"clientId": "c", "accessToken": "t"})
        with pytest.raises(QueueCallError) as info:
            await clients.call(queue.ping, timeout_s=5)
    assert info.value.transient and info.value.status is None


async def test_call_lets_cancellation_through():
    async with ClientFactory.open("http://127.0.0.1:1") as clients:
        started = asyncio.Event()

        async def status() -> None:
            started.set()
            await asyncio.Event().wait()

        task = asyncio.create_task(clients.call(status))
        await started.wait()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task


def test_run_resolved_elsewhere_is_not_a_queue_call_error():
    # The task runner tells "report nothing" apart from "the queue call failed".
    assert not issubclass(RunResolvedElsewhere, QueueCallError)


# ------------------------------------------------------------------ against the queue emulator
QUEUE_ID = "proj-test/python-worker"


@pytest.fixture
async def emu():
    async with QueueEmulator(long_poll_s=0.2, claim_timeout_s=30) as emulator:
        yield emulator


@pytest.fixture
async def clients(emu):
    async with ClientFactory.open(emu.root_url, max_retries=0, call_timeout_s=10) as factory:
        yield factory


def _worker_queue(emu, clients: ClientFactory) -> WorkerQueue:
    return WorkerQueue(clients, worker_pool_id=QUEUE_ID, worker_group="test-group",
                       worker_id="test-worker", credentials=emu.worker_credentials())


async def test_claim_work_given_a_pending_task_then_a_claim_with_aware_taken_until(emu, clients):
    task_id = await emu.create_task(payload={"command": [["true"]]})
    claims = await _worker_queue(emu, clients).claim_work(2)
    assert len(claims) == 1
    claim = claims[0]
    assert (claim.task_id, claim.run_id) == (task_id, 0)
    assert claim.task["payload"] == {"command": [["true"]]}
    assert claim.credentials["clientId"].startswith(f"task-client/{task_id}/0/on/test-group/test-worker/")
    assert claim.taken_until.tzinfo is not None
    assert claim.taken_until.timestamp() == pytest.approx(emu.runs(task_id)[0].taken_until, abs=0.002)
    assert abs(claim.clock_offset_s) < 1
    assert emu.task_state(task_id) == "running"


async def test_claim_work_given_no_work_then_empty_after_the_long_poll(emu, clients):
    assert await _worker_queue(emu, clients).claim_work(1) == []


async def test_worker_credentials_are_replaceable(emu, clients):
    worker = _worker_queue(emu, clients)
    worker.set_credentials({"clientId": "nobody", "accessToken": "wrong"})
    with pytest.raises(QueueCallError) as info:
        await worker.claim_work(1)
    assert info.value.status == 401 and not info.value.transient
    worker.set_credentials(emu.worker_credentials())
    await emu.create_task()
    assert len(await worker.claim_work(1)) == 1
    assert emu.calls_to("claimWork")[-1].client_id.startswith("worker/")


async def test_claim_work_given_a_hung_queue_then_a_transient_queue_error(emu, clients):
    emu.faults.inject("claimWork", "hang")
    with pytest.raises(QueueError) as info:
        await _worker_queue(emu, clients).claim_work(1, timeout_s=0.3)
    assert is_transient(info.value)


async def test_run_queue_reports_with_task_credentials(emu, clients):
    await emu.create_task()
    worker = _worker_queue(emu, clients)
    run = worker.run_queue((await worker.claim_work(1))[0])
    assert 25 < run.seconds_left() <= 30
    status = await run.report_completed()
    assert status["runs"][0]["state"] == "completed" and run.resolving
    assert emu.calls_to("reportCompleted")[-1].client_id == run.credentials["clientId"]
    assert (await run.status())["state"] == "completed"


async def test_report_given_a_cancelled_run_then_run_resolved_elsewhere(emu, clients):
    task_id = await emu.create_task()
    worker = _worker_queue(emu, clients)
    run = worker.run_queue((await worker.claim_work(1))[0])
    emu.cancel_task(task_id)
    with pytest.raises(RunResolvedElsewhere):
        await run.report_failed()
    with pytest.raises(RunResolvedElsewhere):
        await run.report_exception("worker-shutdown")
    assert emu.runs(task_id)[0].reason_resolved == "canceled"


async def test_report_given_5xx_beyond_the_client_retries_then_a_transient_error(emu, clients):
    await emu.create_task()
    worker = _worker_queue(emu, clients)
    run = worker.run_queue((await worker.claim_work(1))[0])
    emu.faults.inject("reportCompleted", status=503)
    with pytest.raises(QueueCallError) as info:
        await run.report_completed()
    assert info.value.status == 503 and info.value.transient
    await run.report_completed()
