"""Upstream-shaped API errors of the emulator, and nothing else.

Lives here: :class:`ApiError` (an HTTP status, an upstream error ``code``, a message and optional
details) and :func:`error_body`, which renders the body upstream's ``libraries/api`` sends:
``{"code", "message", "requestInfo": {"method", "params", "payload", "time"}}``, the message
ending in a ``---`` footer. Status per code follows ``libraries/api/src/middleware/errors.js``.

Does not live here: deciding *when* an error happens (the API modules do).
"""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

STATUS_BY_CODE = {
    "MalformedPayload": 400,
    "InvalidRequestArguments": 400,
    "InputValidationError": 400,
    "InputError": 400,
    "NoMatchingBackend": 400,
    "AuthenticationFailed": 401,
    "InsufficientScopes": 403,
    "ResourceNotFound": 404,
    "NoMatchingMethod": 406,
    "RequestConflict": 409,
    "ResourceExpired": 410,
    "InputTooLarge": 413,
    "InternalServerError": 500,
}


class ApiError(Exception):
    """An error answer of an emulated endpoint.

    Args:
        status: HTTP status (int), e.g. 409.
        code: upstream error code, e.g. ``"RequestConflict"``.
        message: human text; the footer is added by :func:`error_body`.
        details: optional dict rendered into the message (upstream does the same).
    """

    def __init__(self, status: int, code: str, message: str, details: dict | None = None):
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.details = details or {}


def not_found(what: str) -> ApiError:
    return ApiError(404, "ResourceNotFound", what)


def conflict(what: str, **details: Any) -> ApiError:
    return ApiError(409, "RequestConflict", what, details)


def input_error(what: str, **details: Any) -> ApiError:
    return ApiError(400, "InputError", what, details)


def error_body(err: ApiError, api_name: str, params: dict, payload: Any) -> dict:
    """The JSON body upstream sends for ``err`` raised by method ``api_name``."""
    now = dt.datetime.now(dt.timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    message = err.message
    if err.details:
        message += "\n\n" + json.dumps(err.details, indent=2, sort_keys=True)
    message += (
        f"\n\n---\n\n* method:     {api_name}\n* errorCode:  {err.code}"
        f"\n* statusCode: {err.status}\n* time:       {now}"
    )
    return {
        "code": err.code,
        "message": message,
        "requestInfo": {"method": api_name, "params": params, "payload": payload, "time": now},
    }
