"""HTTP handlers of the Queue's task methods (contract §2.1): createTask, task, status,
claimWork (long-poll), claimTask, reclaimTask, report*, cancelTask, pendingTasks, ping.

Lives here: each handler and its scope expression, declared on the shared endpoint table, and the
minting of per-run task credentials.

Does not live here: the state machine (``state.py``), artifacts (``artifact_api.py``), the HTTP
pipeline around handlers (``server.py``).
"""

from __future__ import annotations

import asyncio

from .clock import iso
from .model import Run, Task
from .routes import ApiCall, endpoint

Q = "queue"


def _task_creds(call: ApiCall, task: Task, run: Run) -> dict:
    """Named temporary credentials of a claim: valid until takenUntil (+5 min grace upstream)."""
    until = run.taken_until or 0.0
    until_text = f"{until:.3f}".rstrip("0").rstrip(".")
    name = f"task-client/{task.task_id}/{run.run_id}/on/{run.worker_group}/{run.worker_id}/until/{until_text}"
    ref = f"{task.task_id}/{run.run_id}"
    scopes = [f"queue:reclaim-task:{ref}", f"queue:resolve-task:{ref}", f"queue:create-artifact:{ref}",
              *task.definition["scopes"]]
    return call.emu.auth.mint(name, scopes, until - call.emu.clock.now())


def _claim_json(call: ApiCall, task: Task, run: Run, with_task: bool = True) -> dict:
    out = {"status": task.status_json(), "runId": run.run_id, "workerGroup": run.worker_group,
           "workerId": run.worker_id, "takenUntil": iso(run.taken_until or 0.0),
           "credentials": _task_creds(call, task, run)}
    if with_task:
        out["task"] = task.definition
    return out


@endpoint(Q, "ping", "GET", "/ping")
async def ping(call: ApiCall) -> dict:
    return {"alive": True, "uptime": 0}


@endpoint(Q, "createTask", "PUT", "/task/<taskId>", input="create-task-request",
          output="task-status-response")
async def create_task(call: ApiCall) -> dict:
    body = call.body
    queue_id = body.get("taskQueueId") or f"{body.get('provisionerId')}/{body.get('workerType')}"
    call.authorize({"AllOf": [
        f"queue:create-task:{body.get('priority', 'lowest')}:{queue_id}",
        f"queue:scheduler-id:{body.get('schedulerId', '-')}",
        *[f"queue:route:{r}" for r in body.get("routes", [])],
        *body.get("scopes", []),
    ]})
    task = call.emu.state.create_task(call.params["taskId"], body)
    return {"status": task.status_json()}


@endpoint(Q, "task", "GET", "/task/<taskId>", scopes=lambda p: f"queue:get-task:{p['taskId']}",
          output="task")
async def task(call: ApiCall) -> dict:
    return call.emu.state.get(call.params["taskId"]).definition


@endpoint(Q, "status", "GET", "/task/<taskId>/status",
          scopes=lambda p: f"queue:status:{p['taskId']}", output="task-status-response")
async def status(call: ApiCall) -> dict:
    return {"status": call.emu.state.get(call.params["taskId"]).status_json()}


@endpoint(Q, "pendingTasks", "GET", "/pending/<taskQueueId>",
          scopes=lambda p: f"queue:pending-count:{p['taskQueueId']}")
async def pending_tasks(call: ApiCall) -> dict:
    queue_id = call.params["taskQueueId"]
    prov, _, wtype = queue_id.partition("/")
    return {"provisionerId": prov, "workerType": wtype, "taskQueueId": queue_id,
            "pendingTasks": call.emu.state.pending_count(queue_id)}


@endpoint(Q, "claimWork", "POST", "/claim-work/<taskQueueId>", input="claim-work-request",
          output="claim-work-response")
async def claim_work(call: ApiCall) -> dict:
    """Long-poll: answer at once when work is pending, else wait up to ``emu.long_poll_s``."""
    queue_id, body = call.params["taskQueueId"], call.body
    call.authorize({"AllOf": [f"queue:claim-work:{queue_id}",
                              f"queue:worker-id:{body['workerGroup']}/{body['workerId']}"]})
    state, loop = call.emu.state, asyncio.get_running_loop()
    give_up_at = loop.time() + call.emu.long_poll_s
    while True:
        tasks = state.claimable(queue_id, body["tasks"])
        remaining = give_up_at - loop.time()
        if tasks or remaining <= 0 or call.emu.closing:
            break
        event = state.waiter(queue_id)
        try:
            await asyncio.wait_for(event.wait(), remaining)
        except TimeoutError:
            pass
        finally:
            state.unwait(queue_id, event)
    claims = []
    for t in tasks:
        run = state.claim(t, body["workerGroup"], body["workerId"])
        claims.append(_claim_json(call, t, run))
    return {"tasks": claims}


@endpoint(Q, "claimTask", "POST", "/task/<taskId>/runs/<runId>/claim", input="task-claim-request",
          output="task-claim-response")
async def claim_task(call: ApiCall) -> dict:
    """Deprecated single-task claim (kept because its schemas exist upstream)."""
    from .errors import conflict

    task, run = call.emu.state.get_run(call.params["taskId"], call.run_id())
    d, body = task.definition, call.body
    call.authorize({"AllOf": [f"queue:claim-task:{d['provisionerId']}/{d['workerType']}",
                              f"queue:worker-id:{body['workerGroup']}/{body['workerId']}"]})
    if task.deadline <= call.emu.clock.now():
        raise conflict("Task deadline exceeded")
    if run is not task.latest or run.state != "pending":
        raise conflict(f"Run {run.run_id} is {run.state}, not pending")
    call.emu.state.claim(task, body["workerGroup"], body["workerId"])
    return _claim_json(call, task, run)


def _run_scope(verb: str):
    return lambda p: f"queue:{verb}:{p['taskId']}/{p['runId']}"


@endpoint(Q, "reclaimTask", "POST", "/task/<taskId>/runs/<runId>/reclaim",
          scopes=_run_scope("reclaim-task"), output="task-reclaim-response")
async def reclaim_task(call: ApiCall) -> dict:
    task, run = call.emu.state.reclaim(call.params["taskId"], call.run_id())
    return _claim_json(call, task, run, with_task=False)


@endpoint(Q, "reportCompleted", "POST", "/task/<taskId>/runs/<runId>/completed",
          scopes=_run_scope("resolve-task"), output="task-status-response")
async def report_completed(call: ApiCall) -> dict:
    task = call.emu.state.report(call.params["taskId"], call.run_id(), "completed")
    return {"status": task.status_json()}


@endpoint(Q, "reportFailed", "POST", "/task/<taskId>/runs/<runId>/failed",
          scopes=_run_scope("resolve-task"), output="task-status-response")
async def report_failed(call: ApiCall) -> dict:
    task = call.emu.state.report(call.params["taskId"], call.run_id(), "failed")
    return {"status": task.status_json()}


@endpoint(Q, "reportException", "POST", "/task/<taskId>/runs/<runId>/exception",
          scopes=_run_scope("resolve-task"), input="task-exception-request",
          output="task-status-response")
async def report_exception(call: ApiCall) -> dict:
    reason = (call.body or {}).get("reason")
    task = call.emu.state.report(call.params["taskId"], call.run_id(), "exception", reason)
    return {"status": task.status_json()}


@endpoint(Q, "cancelTask", "POST", "/task/<taskId>/cancel", output="task-status-response")
async def cancel_task(call: ApiCall) -> dict:
    task = call.emu.state.get(call.params["taskId"])
    d = task.definition
    call.authorize(f"queue:cancel-task:{d['schedulerId']}/{d['taskGroupId']}/{task.task_id}")
    return {"status": call.emu.state.cancel(task.task_id).status_json()}


