"""HTTP handlers of the Queue's artifact methods (contract §2.2): createArtifact,
finishArtifact, getArtifact / getLatestArtifact (303, 424 for errors), artifact /
latestArtifact (content), listArtifacts / listLatestArtifacts, artifactInfo /
latestArtifactInfo.

Does not live here: the artifact rules themselves (``artifacts.py``).
"""

from __future__ import annotations

from .routes import ApiCall, Reply, endpoint

Q = "queue"


def _create_scope(p: dict) -> str:
    return f"queue:create-artifact:{p['taskId']}/{p['runId']}"


@endpoint(Q, "createArtifact", "POST", "/task/<taskId>/runs/<runId>/artifacts/<name>",
          scopes=_create_scope, input="post-artifact-request", output="post-artifact-response")
async def create_artifact(call: ApiCall) -> dict:
    p = call.params
    return call.emu.artifacts.create(p["taskId"], call.run_id(), p["name"], call.body)


@endpoint(Q, "finishArtifact", "PUT", "/task/<taskId>/runs/<runId>/artifacts/<name>",
          scopes=_create_scope, input="finish-artifact-request")
async def finish_artifact(call: ApiCall) -> Reply:
    p = call.params
    call.emu.artifacts.finish(p["taskId"], call.run_id(), p["name"], call.body["uploadId"])
    return Reply(status=204)


def _redirect(call: ApiCall, run_lookup) -> Reply:
    rules = call.emu.artifacts
    name = call.params["name"]
    call.authorize(f"queue:get-artifact:{name}")   # before existence, as upstream
    task, run = run_lookup()
    art = rules.find(run, name, call.authorize)
    if art.storage_type == "error":
        return Reply({"reason": art.details["reason"], "message": art.details["message"]},
                     status=424, validate=False)
    url = rules.url(art)
    return Reply({"storageType": art.storage_type, "url": url}, status=303,
                 headers={"Location": url, "x-taskcluster-artifact-storage-type": art.storage_type})


@endpoint(Q, "getArtifact", "GET", "/task/<taskId>/runs/<runId>/artifacts/<name>",
          output="get-artifact-response")
async def get_artifact(call: ApiCall) -> Reply:
    return _redirect(call, lambda: call.emu.state.get_run(call.params["taskId"], call.run_id()))


@endpoint(Q, "getLatestArtifact", "GET", "/task/<taskId>/artifacts/<name>",
          output="get-artifact-response")
async def get_latest_artifact(call: ApiCall) -> Reply:
    return _redirect(call, lambda: call.emu.artifacts.latest_run(call.params["taskId"]))


def _content(call: ApiCall, task, run) -> dict:
    art = call.emu.artifacts.find(run, call.params["name"], call.authorize)
    return call.emu.artifacts.content(task, run, art)


@endpoint(Q, "artifact", "GET", "/task/<taskId>/runs/<runId>/artifact-content/<name>",
          output="artifact-content-response")
async def artifact(call: ApiCall) -> dict:
    call.authorize(f"queue:get-artifact:{call.params['name']}")
    task, run = call.emu.state.get_run(call.params["taskId"], call.run_id())
    return _content(call, task, run)


@endpoint(Q, "latestArtifact", "GET", "/task/<taskId>/artifact-content/<name>",
          output="artifact-content-response")
async def latest_artifact(call: ApiCall) -> dict:
    call.authorize(f"queue:get-artifact:{call.params['name']}")
    task, run = call.emu.artifacts.latest_run(call.params["taskId"])
    return _content(call, task, run)


def _limit(call: ApiCall) -> int | None:
    raw = call.query.get("limit")
    return int(raw) if raw and raw.isdigit() else None


@endpoint(Q, "listArtifacts", "GET", "/task/<taskId>/runs/<runId>/artifacts",
          scopes=lambda p: f"queue:list-artifacts:{p['taskId']}:{p['runId']}",
          output="list-artifacts-response")
async def list_artifacts(call: ApiCall) -> dict:
    _, run = call.emu.state.get_run(call.params["taskId"], call.run_id())
    return call.emu.artifacts.page(run, call.query.get("continuationToken"), _limit(call))


@endpoint(Q, "listLatestArtifacts", "GET", "/task/<taskId>/artifacts",
          scopes=lambda p: f"queue:list-artifacts:{p['taskId']}", output="list-artifacts-response")
async def list_latest_artifacts(call: ApiCall) -> dict:
    _, run = call.emu.artifacts.latest_run(call.params["taskId"])
    return call.emu.artifacts.page(run, call.query.get("continuationToken"), _limit(call))


@endpoint(Q, "artifactInfo", "GET", "/task/<taskId>/runs/<runId>/artifact-info/<name>",
          scopes=lambda p: f"queue:list-artifacts:{p['taskId']}:{p['runId']}",
          output="artifact-response")
async def artifact_info(call: ApiCall) -> dict:
    _, run = call.emu.state.get_run(call.params["taskId"], call.run_id())
    return call.emu.artifacts.info(run, call.params["name"]).to_json()


@endpoint(Q, "latestArtifactInfo", "GET", "/task/<taskId>/artifact-info/<name>",
          scopes=lambda p: f"queue:list-artifacts:{p['taskId']}", output="artifact-response")
async def latest_artifact_info(call: ApiCall) -> dict:
    _, run = call.emu.artifacts.latest_run(call.params["taskId"])
    return call.emu.artifacts.info(run, call.params["name"]).to_json()
