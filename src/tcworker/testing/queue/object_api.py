"""HTTP handlers of the Object service (contract §2.3): createUpload, finishUpload,
startDownload, object (metadata), download (303).

Does not live here: the object rules (``objects.py``) and the storage endpoint (``storage.py``).
"""

from __future__ import annotations

from .routes import ApiCall, Reply, endpoint

O = "object"


@endpoint(O, "ping", "GET", "/ping")
async def ping(call: ApiCall) -> dict:
    return {"alive": True, "uptime": 0}


@endpoint(O, "createUpload", "PUT", "/upload/<name>", input="create-upload-request",
          output="create-upload-response")
async def create_upload(call: ApiCall) -> dict:
    name = call.params["name"]
    call.authorize(f"object:upload:{call.body['projectId']}:{name}")
    return call.emu.objects.create_upload(name, call.body)


@endpoint(O, "finishUpload", "POST", "/finish-upload/<name>", input="finish-upload-request")
async def finish_upload(call: ApiCall) -> dict:
    name = call.params["name"]
    call.authorize(f"object:upload:{call.body['projectId']}:{name}")
    return call.emu.objects.finish_upload(name, call.body)


@endpoint(O, "startDownload", "PUT", "/start-download/<name>",
          scopes=lambda p: f"object:download:{p['name']}", input="download-object-request",
          output="download-object-response")
async def start_download(call: ApiCall) -> dict:
    return call.emu.objects.start_download(call.params["name"], call.body)


@endpoint(O, "object", "GET", "/metadata/<name>", scopes=lambda p: f"object:download:{p['name']}",
          output="get-object-response")
async def metadata(call: ApiCall) -> dict:
    return call.emu.objects.metadata(call.params["name"])


@endpoint(O, "download", "GET", "/download/<name>", scopes=lambda p: f"object:download:{p['name']}")
async def download(call: ApiCall) -> Reply:
    resp = call.emu.objects.start_download(call.params["name"], {"acceptDownloadMethods": {"simple": True}})
    return Reply(resp, status=303, headers={"Location": resp["url"]})
