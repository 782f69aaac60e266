"""The emulator's storage endpoint: what signed S3 URLs and object-service URLs point to.

Lives here: ``PUT /storage/blob/<id>?token=...`` (upload: the token from createArtifact /
createUpload, ``Content-Length`` required (a chunked body, even empty, gets 411 as on S3), length
and ``Content-Type`` checked against what was declared, ``Content-Encoding`` stored) and
``GET /storage/blob/<id>`` (no credentials, serves the bytes with the stored Content-Type and
Content-Encoding), with faults (``storage.put`` / ``storage.get``) and bandwidth throttling.

Does not live here: which blob an artifact or object uses (``objects.py``, ``artifacts.py``).
"""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING

from aiohttp import web

from .faults import Call
from .objects import Blob
from .pipeline import ConnectionDropped, apply_fault

if TYPE_CHECKING:
    from .server import QueueEmulator

CHUNK = 64 * 1024


def _s3_error(status: int, code: str, message: str) -> web.Response:
    body = f'<?xml version="1.0" encoding="UTF-8"?><Error><Code>{code}</Code><Message>{message}</Message></Error>'
    return web.Response(status=status, text=body, content_type="application/xml")


async def _throttle(emu: QueueEmulator, nbytes: int) -> None:
    rate = emu.faults.storage_bytes_per_s
    if rate:
        await asyncio.sleep(nbytes / rate)


async def _put(emu: QueueEmulator, request: web.Request, blob: Blob) -> web.Response:
    if request.query.get("token") != blob.put_token:
        return _s3_error(403, "AccessDenied", "bad or missing upload token")
    length_header = request.headers.get("Content-Length")
    if length_header is None:
        return _s3_error(411, "MissingContentLength", "You must provide the Content-Length HTTP header.")
    ctype = request.headers.get("Content-Type")
    if blob.expected_type is not None and ctype != blob.expected_type:
        return _s3_error(403, "SignatureDoesNotMatch", f"Content-Type {ctype!r} was not the signed one")
    if blob.expected_length is not None and int(length_header) != blob.expected_length:
        return _s3_error(403, "SignatureDoesNotMatch", "Content-Length was not the signed one")
    chunks = []
    while True:
        chunk = await request.content.read(CHUNK)
        if not chunk:
            break
        await _throttle(emu, len(chunk))
        chunks.append(chunk)
    data = b"".join(chunks)
    if len(data) != int(length_header):
        return _s3_error(400, "IncompleteBody", "body length differs from Content-Length")
    blob.data, blob.content_type = data, ctype
    blob.content_encoding = request.headers.get("Content-Encoding")
    return web.Response(status=200)


async def _get(emu: QueueEmulator, request: web.Request, blob: Blob,
               truncate: bool = False) -> web.StreamResponse:
    """Serve the blob; ``truncate`` sends the headers and half the body, then resets."""
    if blob.data is None:
        return _s3_error(404, "NoSuchKey", "The specified key does not exist.")
    headers = {"Content-Type": blob.content_type or "application/octet-stream",
               "Content-Length": str(len(blob.data))}
    if blob.content_encoding:
        headers["Content-Encoding"] = blob.content_encoding
    resp = web.StreamResponse(status=200, headers=headers)
    await resp.prepare(request)
    data = blob.data[: len(blob.data) // 2] if truncate else blob.data
    for start in range(0, len(data), CHUNK):
        chunk = data[start:start + CHUNK]
        await _throttle(emu, len(chunk))
        await resp.write(chunk)
    if truncate:
        if request.transport is not None:
            request.transport.abort()
        raise ConnectionDropped()
    await resp.write_eof()
    return resp


async def handle_storage(emu: QueueEmulator, request: web.Request) -> web.StreamResponse:
    """aiohttp handler for ``/storage/blob/{blob_id}`` (GET, HEAD and PUT).

    Faults: "before" refuses the request. "after" on a PUT applies once the bytes are stored
    (upload done, answer lost); "after" on a GET applies before the body is sent, except
    ``reset``, which sends the headers and half of the body first (a truncated download).
    """
    api_name = "put" if request.method == "PUT" else "get"
    blob_id = request.match_info["blob_id"]
    call = Call("storage", api_name, request.method, request.raw_path, {"blobId": blob_id}, None, 0,
                time=time.time())
    emu.calls.append(call)
    blob = emu.objects.blobs.get(blob_id)
    try:
        fault = emu.faults.take("storage", api_name, "before")
        if fault is not None:
            call.fault, call.fault_when = fault.kind, "before"
            resp = await apply_fault(emu, request, fault, api_name, call.params)
            if resp is not None:
                call.status = resp.status
                return resp
        if blob is None:
            call.status = 404
            return _s3_error(404, "NoSuchKey", "The specified key does not exist.")
        after = emu.faults.take("storage", api_name, "after")
        if after is not None:
            call.fault, call.fault_when = after.kind, "after"
        if api_name == "put":
            resp = await _put(emu, request, blob)
        elif after is not None and after.kind == "reset":
            return await _get(emu, request, blob, truncate=True)
        else:
            resp = None
        if after is not None:
            replaced = await apply_fault(emu, request, after, api_name, call.params)
            if replaced is not None:
                call.status = replaced.status
                return replaced
        if resp is None:
            resp = await _get(emu, request, blob)
        call.status = resp.status
        return resp
    except ConnectionDropped:
        call.status = 0
        return web.Response(status=500)
