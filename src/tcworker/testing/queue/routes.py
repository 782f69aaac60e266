"""The endpoint table of the emulator: how a method is declared, matched and given its request.

Lives here: :class:`Endpoint` (service, apiName, HTTP method, route, scope expression, schemas,
handler), the :func:`endpoint` decorator the API modules use to declare theirs, route matching on
the *raw* (percent-encoded) path with greedy tail parameters, the URL parameter patterns of
contract §1, :class:`ApiCall` (what a handler receives) and :class:`Reply` (what it returns).

Does not live here: the HTTP pipeline (``server.py``), the handlers themselves (``*_api.py``).
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote

from .auth import Identity, ScopeExpr, require
from .errors import ApiError

if TYPE_CHECKING:
    from .server import QueueEmulator

PARAM_PATTERNS = {
    "taskId": r"^[A-Za-z0-9_-]{8}[Q-T][A-Za-z0-9_-][CGKOSWaeimquy26-][A-Za-z0-9_-]{10}[AQgw]$",
    "taskGroupId": r"^[A-Za-z0-9_-]{8}[Q-T][A-Za-z0-9_-][CGKOSWaeimquy26-][A-Za-z0-9_-]{10}[AQgw]$",
    "provisionerId": r"^[a-zA-Z0-9-_]{1,38}$",
    "workerType": r"^[a-z]([-a-z0-9]{0,36}[a-z0-9])?$",
    "workerGroup": r"^[a-zA-Z0-9-_]{1,38}$",
    "workerId": r"^[a-zA-Z0-9-_]{1,38}$",
    "taskQueueId": r"^[a-zA-Z0-9-_]{1,38}/[a-z]([-a-z0-9]{0,36}[a-z0-9])?$",
    "runId": r"^[1-9]*[0-9]+$",
    "name": r"^[\x20-\x7e]+$",
    "workerPoolId": r"^[A-Za-z0-9_-]{1,38}/[A-Za-z0-9_-]{1,38}$",
}
GREEDY = {"name", "taskQueueId", "workerPoolId"}


@dataclass
class Reply:
    """A handler's answer: ``status`` int, JSON ``body`` (None → no body), extra ``headers``."""

    body: Any = None
    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    validate: bool = True   # False for bodies outside the output schema (e.g. 424 of getArtifact)


@dataclass
class ApiCall:
    """What a handler gets: decoded URL ``params``, ``query`` dict, parsed JSON ``body`` (or None),
    the caller's :class:`~.auth.Identity`, and the emulator."""

    emu: QueueEmulator
    endpoint: Endpoint
    params: dict[str, str]
    query: dict[str, str]
    body: Any
    identity: Identity
    base_url: str

    def authorize(self, expr: ScopeExpr) -> None:
        """Raise 403 InsufficientScopes unless the caller satisfies ``expr`` (deferred checks)."""
        require(self.identity, expr)

    def run_id(self) -> int:
        return int(self.params["runId"])


Handler = Callable[[ApiCall], Awaitable[Reply | dict]]


@dataclass
class Endpoint:
    """One emulated API method.

    ``scopes`` is a callable ``params -> scope expression`` checked before the handler (when the
    expression needs only URL parameters), or None when the handler calls ``authorize`` itself
    (or the method is public). ``input`` / ``output`` name schemas of ``service``.
    """

    service: str
    name: str
    method: str
    route: str
    handler: Handler
    scopes: Callable[[dict], ScopeExpr] | None = None
    input: str | None = None
    output: str | None = None
    regex: re.Pattern = field(init=False)

    def __post_init__(self) -> None:
        def param(m: re.Match) -> str:
            pname = m.group(1)
            return f"(?P<{pname}>{'.+' if pname in GREEDY else '[^/]+'})"
        self.regex = re.compile("^" + re.sub(r"<(\w+)>", param, self.route) + "$")

    def match(self, method: str, raw_tail: str) -> dict[str, str] | None:
        """Decoded params when ``method`` and the raw (encoded) route tail match, else None."""
        if method != self.method:
            return None
        m = self.regex.match(raw_tail)
        return {k: unquote(v) for k, v in m.groupdict().items()} if m else None


def check_params(params: dict[str, str]) -> None:
    """Raise 400 InvalidRequestArguments when a URL parameter breaks its pattern (contract §1)."""
    for key, value in params.items():
        pattern = PARAM_PATTERNS.get(key)
        if pattern and not re.match(pattern, value):
            raise ApiError(400, "InvalidRequestArguments",
                           f"Invalid URL parameter {key}={value!r}: must match {pattern}")
    if "runId" in params and int(params["runId"]) > 1000:
        raise ApiError(400, "InvalidRequestArguments", "runId must be at most 1000")


class Registry:
    """An ordered list of endpoints; API modules add theirs with :meth:`endpoint`."""

    def __init__(self) -> None:
        self.endpoints: list[Endpoint] = []

    def endpoint(self, service: str, name: str, method: str, route: str, *,
                 scopes: Callable[[dict], ScopeExpr] | None = None,
                 input: str | None = None, output: str | None = None) -> Callable[[Handler], Handler]:
        def register(handler: Handler) -> Handler:
            self.endpoints.append(Endpoint(service, name, method.upper(), route, handler, scopes,
                                           input, output))
            return handler
        return register

    def find(self, service: str, method: str, raw_tail: str) -> tuple[Endpoint, dict] | None:
        for ep in self.endpoints:
            if ep.service != service:
                continue
            params = ep.match(method, raw_tail)
            if params is not None:
                return ep, params
        return None


REGISTRY = Registry()
endpoint = REGISTRY.endpoint
