"""The HTTP pipeline of every emulated API call, in upstream's order (contract §1).

Lives here: :func:`handle_api` (route → faults "before" → parse body → Hawk → URL-only scopes →
URL parameter patterns → input schema → handler → output schema → call log → faults "after"),
and :func:`apply_fault`, shared with the storage endpoint.

Does not live here: the handlers (``*_api.py``), storage (``storage.py``), life cycle
(``server.py``).
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl

from aiohttp import web

from .errors import STATUS_BY_CODE, ApiError, error_body
from .faults import Call, Fault
from .routes import REGISTRY, ApiCall, Reply, check_params
from .schemas import SchemaMismatch

if TYPE_CHECKING:
    from .server import QueueEmulator

log = logging.getLogger(__name__)
SERVICES = ("queue", "object", "purge-cache", "index", "auth")
CODE_BY_STATUS = {status: code for code, status in reversed(list(STATUS_BY_CODE.items()))}


class ConnectionDropped(Exception):
    """The fault aborted the connection: nothing must be written."""


def json_response(body: Any, status: int, headers: dict | None = None) -> web.Response:
    if body is None:
        return web.Response(status=status, headers=headers)
    return web.Response(status=status, text=json.dumps(body), content_type="application/json",
                        headers=headers)


async def apply_fault(emu: QueueEmulator, request: web.Request, fault: Fault, api_name: str,
                      params: dict) -> web.Response | None:
    """Apply ``fault``: a Response to send instead, None to go on (delay), or raise
    :class:`ConnectionDropped` (reset, or hang ended by shutdown)."""
    if fault.kind == "delay":
        await asyncio.sleep(fault.delay_s)
        return None
    if fault.kind == "status":
        body = fault.body if fault.body is not None else error_body(
            ApiError(fault.status, CODE_BY_STATUS.get(fault.status, "InternalServerError"),
                     f"Injected fault: status {fault.status}"), api_name, params, None)
        return json_response(body, fault.status)
    if fault.kind == "hang":
        try:  # until the client gives up (handler cancelled), the emulator stops, or hang_s
            await asyncio.wait_for(emu._closing_event.wait(), fault.hang_s)
        except TimeoutError:
            pass
    if request.transport is not None:
        request.transport.abort()
    raise ConnectionDropped()


def _split(raw_path: str) -> tuple[str | None, str, dict[str, str]]:
    path, _, query = raw_path.partition("?")
    for service in SERVICES:
        prefix = f"/api/{service}/v1"
        if path.startswith(prefix + "/"):
            return service, path[len(prefix):], dict(parse_qsl(query))
    return None, path, dict(parse_qsl(query))


async def handle_api(emu: QueueEmulator, request: web.Request) -> web.StreamResponse:
    """aiohttp handler for every ``/api/<service>/v1/...`` request."""
    service, tail, query = _split(request.raw_path)
    found = REGISTRY.find(service, request.method, tail) if service else None
    call = Call(service or "?", "?", request.method, request.raw_path, {}, None, 0,
                time=time.time(), query=query)
    if found is None:
        err = ApiError(404, "ResourceNotFound", f"No such endpoint: {request.method} {request.path}")
        call.status = 404
        emu.calls.append(call)
        return json_response(error_body(err, "?", {}, None), 404)
    ep, params = found
    call.api_name, call.params = ep.name, params
    emu.calls.append(call)
    try:
        fault = emu.faults.take(ep.service, ep.name, "before")
        if fault is not None:
            call.fault, call.fault_when = fault.kind, "before"
            resp = await apply_fault(emu, request, fault, ep.name, params)
            if resp is not None:
                call.status = resp.status
                return resp
        status, body, headers = await _run(emu, request, ep, params, query, call)
        call.status, call.response_body = status, body
        fault = emu.faults.take(ep.service, ep.name, "after")
        if fault is not None:
            call.fault, call.fault_when = fault.kind, "after"
            resp = await apply_fault(emu, request, fault, ep.name, params)
            if resp is not None:
                call.status = resp.status
                return resp
        return json_response(body, status, headers)
    except ConnectionDropped:
        call.status = 0
        return web.Response(status=500)   # never written: the transport is gone


async def _run(emu: QueueEmulator, request: web.Request, ep, params: dict, query: dict,
               call: Call) -> tuple[int, Any, dict]:
    raw = await request.read()
    payload: Any = None
    try:
        if raw:
            try:
                payload = json.loads(raw)
            except ValueError as err:
                raise ApiError(400, "MalformedPayload", f"Request body is not JSON: {err}") from err
        call.request_body = payload
        identity = emu.auth.authenticate(
            authorization=request.headers.get("Authorization"), method=request.method,
            url=f"http://{request.host}{request.raw_path}", body=raw,
            content_type=request.headers.get("Content-Type", ""))
        call.client_id = identity.client_id
        api_call = ApiCall(emu, ep, params, query, payload, identity, emu.root_url)
        if ep.scopes is not None:
            api_call.authorize(ep.scopes(params))
        check_params(params)
        if ep.input is not None:
            if not request.headers.get("Content-Type", "").startswith("application/json"):
                raise ApiError(400, "MalformedPayload", "Content-Type must be application/json")
            _check_input(emu, ep, payload)
        reply = await ep.handler(api_call)
        if not isinstance(reply, Reply):
            reply = Reply(reply)
    except ApiError as err:
        return err.status, error_body(err, ep.name, params, payload), (
            {"www-authenticate": "hawk"} if err.status == 401 else {})
    except (KeyError, TypeError, ValueError, AttributeError, AssertionError) as err:
        # An emulator bug (or, with schemas off, a body the handler cannot read): loud 500.
        log.exception("emulator handler %s.%s crashed", ep.service, ep.name)
        emu.errors.append(f"{ep.service}.{ep.name}: {type(err).__name__}: {err}")
        return 500, error_body(ApiError(500, "InternalServerError", f"{type(err).__name__}: {err}"),
                               ep.name, params, payload), {}
    if (ep.output is not None and reply.validate and emu.schemas is not None
            and emu.schemas.has(ep.service, ep.output)):
        try:
            emu.schemas.validate(ep.service, ep.output, reply.body)
        except SchemaMismatch as err:
            emu.schema_errors.append(f"{ep.service}.{ep.name} response: {err}")
            log.error("emulator response failed its schema: %s", err)
            body = error_body(ApiError(500, "InternalServerError",
                                       f"Response failed schema validation: {err}"), ep.name, params, payload)
            return 500, body, {}
    return reply.status, reply.body, reply.headers


def _check_input(emu: QueueEmulator, ep, payload: Any) -> None:
    if emu.schemas is None or not emu.schemas.has(ep.service, ep.input):
        if not isinstance(payload, dict):
            raise ApiError(400, "InputValidationError", "Request body must be a JSON object")
        return
    try:
        emu.schemas.validate(ep.service, ep.input, payload)
    except SchemaMismatch as err:
        raise ApiError(400, "InputValidationError", f"Request body is invalid: {err}") from err
