"""The taskcluster-proxy of one run: :class:`TaskclusterProxy`, an aiohttp server in the worker
process that signs a task's Taskcluster API calls with the run's task credentials.

Behaviour follows taskcluster-proxy (``../shared/reference/peer-workers.md`` section 3.13,
``tools/taskcluster-proxy/routes.go`` upstream):

- ``<proxy>/api/<service>/<version>/<path>`` → ``<rootUrl>/api/<service>/<version>/<path>``, and
  the legacy ``<proxy>/<service>/<version>/<path>`` form. The raw path and query are passed on
  unchanged (``%2F`` in an artifact name stays encoded). Unlike upstream, a service name with a
  dot (upstream: "any https host") is refused: the proxy reaches the root URL only.
- Each attempt is signed afresh (Hawk, the official client's ``ext`` with ``certificate`` and
  ``authorizedScopes``): the credentials are replaced at every reclaim (:meth:`set_credentials`),
  the scopes are restricted to ``authorized_scopes`` (``task.scopes`` plus
  ``queue:create-artifact:<taskId>/<runId>``).
- Redirects are passed back, never followed (artifact downloads go to storage directly); bodies
  and ``Content-Encoding`` pass through untouched. Connection errors and 5xx answers are retried
  a few times with backoff, as upstream's ``httpbackoff``; then the last answer (or 502) is given.
- Headers ``X-Taskcluster-Endpoint`` (the upstream URL) and ``X-Taskcluster-Proxy-Version``.

Who may use it (the owning run only):

- ``secret``: the URL path must start with ``/<secret>``; ``TASKCLUSTER_PROXY_URL`` carries it
  (``http://127.0.0.1:<port>/<secret>``), so tasks that append ``/api/queue/v1/...`` work
  unchanged. Docker tasks reach ``http://taskcluster`` (no secret; ``allowed_network`` instead).
- ``allowed_uid``: the connecting socket must belong to that uid (or root, or the worker's own
  uid), read from ``/proc/net/tcp[6]`` as upstream's ``--allowed-user``.
- ``allowed_network``: the peer address must lie in that network (upstream's ``--allowed-network``).

Refusals answer 403 (wrong secret, user or network) or 404 (not an API path, other host).
Not implemented: ``/bewit`` (signed URLs) and ``PUT /credentials`` (the worker refreshes the
credentials itself).

What does not live here: when a proxy starts and stops, and how tasks learn its URL
(:mod:`tcworker.plugins.proxy`).
"""

from __future__ import annotations

import asyncio
import hmac
import ipaddress
import logging
import os
import random
import re
from typing import Mapping, Sequence

import aiohttp
import mohawk
import taskcluster_urls
import yarl
from aiohttp import web

from tcworker import __version__

log = logging.getLogger(__name__)

#: Largest request body forwarded (API requests are JSON; artifact data goes to storage directly).
MAX_BODY_BYTES = 32 * 1024 * 1024
#: Attempts per request on connection errors and 5xx answers, and the first backoff in seconds.
ATTEMPTS = 4
BACKOFF_S = 0.1

_API_PATH = re.compile(r"^/api/([^/]+)/([^/]+)/(.*)$", re.S)
_LEGACY_PATH = re.compile(r"^/([^/]+)/([^/]+)/?(.*)$", re.S)
_SERVICE = re.compile(r"^[a-z0-9][a-z0-9-]*$")
# Not copied either way: connection-level headers, and those aiohttp computes itself.
_HOP_HEADERS = frozenset({
    "connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "te", "trailer",
    "transfer-encoding", "upgrade", "host", "content-length", "authorization",
})


class ProxyRefused(Exception):
    """A request the proxy does not forward; ``status`` is the HTTP answer (403 or 404)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def upstream_url(root_url: str, raw_path: str) -> str:
    """Map a proxy path (``/api/queue/v1/task/X`` or ``/queue/v1/task/X``, raw, with query) to
    the URL under ``root_url``.

    Raises:
        ProxyRefused: 404 for anything but a Taskcluster API path under the root URL.
    """
    path, sep, query = raw_path.partition("?")
    match = _API_PATH.match(path) or _LEGACY_PATH.match(path)
    if match is None:
        raise ProxyRefused(404, f"not a Taskcluster API path: {path!r}")
    service, version, rest = match.groups()
    if not _SERVICE.match(service):
        raise ProxyRefused(404, f"{service!r} is not a Taskcluster service: "
                                "this proxy only reaches the worker's root URL")
    return taskcluster_urls.api(root_url, service, version, rest) + (sep + query if sep else "")


def socket_owner_uid(peer: tuple, local: tuple) -> int | None:
    """The uid owning the client socket ``peer`` → ``local`` (host order tuples), from
    ``/proc/net/tcp`` or ``tcp6``; None when not found. Blocking (reads procfs)."""
    peer_ip = ipaddress.ip_address(peer[0])
    wanted = _proc_addr(peer_ip, peer[1])
    remote = _proc_addr(ipaddress.ip_address(local[0]), local[1])
    for table in ("/proc/net/tcp6", "/proc/net/tcp") if peer_ip.version == 6 else ("/proc/net/tcp",):
        try:
            with open(table, encoding="ascii") as lines:
                next(lines, None)
                for line in lines:
                    fields = line.split()
                    if len(fields) > 7 and fields[1] == wanted and fields[2] == remote:
                        return int(fields[7])
        except OSError:
            continue
    return None


def _proc_addr(ip: ipaddress.IPv4Address | ipaddress.IPv6Address, port: int) -> str:
    packed = ip.packed
    # /proc/net/tcp prints each 32-bit word of the address in host (little-endian) order
    words = "".join(packed[i:i + 4][::-1].hex().upper() for i in range(0, len(packed), 4))
    return f"{words}:{port:04X}"


class TaskclusterProxy:
    """One run's proxy server.

    Args:
        root_url: the deployment's root URL (``config.rootURL``).
        credentials: ``{"clientId", "accessToken"[, "certificate"]}``: the run's task credentials.
        authorized_scopes: scopes every forwarded call is restricted to.
        secret: URL path prefix required of every request (None: none, for docker's fixed URL).
        host, port: where to listen (port 0: a free one; see :attr:`port` once started).
        allowed_uid: only sockets of this uid (and root, and the worker's uid) may connect.
        allowed_network: only peers inside this network (CIDR string) may connect.
    """

    def __init__(
        self,
        *,
        root_url: str,
        credentials: Mapping[str, str],
        authorized_scopes: Sequence[str],
        secret: str | None,
        host: str = "127.0.0.1",
        port: int = 0,
        allowed_uid: int | None = None,
        allowed_network: str | None = None,
    ) -> None:
        self.root_url = root_url.rstrip("/")
        self.authorized_scopes = list(authorized_scopes)
        self.secret = secret
        self.host = host
        self.port = port
        self.allowed_uid = allowed_uid
        self.allowed_network = ipaddress.ip_network(allowed_network) if allowed_network else None
        self.requests = 0  # forwarded requests, for logs and tests
        self._credentials: dict[str, str] = {}
        self._ext = ""
        self.set_credentials(credentials)
        self._runner: web.AppRunner | None = None
        self._session: aiohttp.ClientSession | None = None

    # ------------------------------------------------------------------ life cycle
    @property
    def url(self) -> str:
        """The base URL tasks use (``TASKCLUSTER_PROXY_URL``): ``http://host:port[/<secret>]``."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        base = f"http://{host}" if self.port == 80 else f"http://{host}:{self.port}"
        return f"{base}/{self.secret}" if self.secret else base

    def set_credentials(self, credentials: Mapping[str, str]) -> None:
        """Sign every later request with ``credentials`` (called after each reclaim)."""
        from taskcluster.aio import Queue  # for its makeHawkExt: the official client's ``ext``

        options = {"rootUrl": self.root_url, "credentials": dict(credentials),
                   "authorizedScopes": self.authorized_scopes}
        self._ext = Queue(options).makeHawkExt() or ""
        self._credentials = dict(credentials)

    async def start(self) -> None:
        """Listen. Raises ``OSError`` when the address cannot be bound."""
        app = web.Application(client_max_size=MAX_BODY_BYTES)
        app.router.add_route("*", "/{tail:.*}", self._handle)
        runner = web.AppRunner(app, access_log=None, handle_signals=False, shutdown_timeout=1.0)
        await runner.setup()
        try:
            site = web.TCPSite(runner, self.host, self.port, reuse_address=True)
            await site.start()
        except BaseException:
            await runner.cleanup()
            raise
        self._runner = runner
        self.port = runner.addresses[0][1]
        self._session = aiohttp.ClientSession(
            auto_decompress=False,
            timeout=aiohttp.ClientTimeout(total=None, sock_connect=30, sock_read=300),
        )

    async def stop(self) -> None:
        """Stop listening, close open connections and the upstream session. Idempotent."""
        runner, self._runner = self._runner, None
        session, self._session = self._session, None
        if runner is not None:
            await runner.cleanup()
        if session is not None:
            await session.close()

    # ------------------------------------------------------------------ requests
    async def _handle(self, request: web.Request) -> web.StreamResponse:
        try:
            raw_path = self._strip_secret(request.raw_path)
            await self._check_peer(request)
            target = upstream_url(self.root_url, raw_path)
        except ProxyRefused as err:
            log.info("proxy refused %s %s: %s", request.method, _redact(request.raw_path, self.secret), err)
            return web.Response(status=err.status, text=f"taskcluster-proxy: {err}\n")
        body = await request.read()
        self.requests += 1
        return await self._forward(request, target, body)

    def _strip_secret(self, raw_path: str) -> str:
        if not self.secret:
            return raw_path
        prefix = "/" + self.secret
        head, rest = raw_path[:len(prefix)], raw_path[len(prefix):]
        if not hmac.compare_digest(head.encode(), prefix.encode()) or rest[:1] not in ("/", "?", ""):
            raise ProxyRefused(403, "this proxy belongs to another run (wrong or missing secret)")
        return rest or "/"

    async def _check_peer(self, request: web.Request) -> None:
        peer = request.transport.get_extra_info("peername") if request.transport else None
        if peer is None:
            raise ProxyRefused(403, "unknown peer")
        if self.allowed_network is not None:
            if ipaddress.ip_address(peer[0]) not in self.allowed_network:
                raise ProxyRefused(403, f"peer {peer[0]} is outside {self.allowed_network}")
        if self.allowed_uid is not None:
            local = request.transport.get_extra_info("sockname")
            uid = await asyncio.to_thread(socket_owner_uid, peer, local)
            if uid not in (0, os.geteuid(), self.allowed_uid):
                raise ProxyRefused(403, f"connection from uid {uid}, not the task's user")

    async def _forward(self, request: web.Request, target: str, body: bytes) -> web.StreamResponse:
        headers = {k: v for k, v in request.headers.items() if k.lower() not in _HOP_HEADERS}
        if body and "Content-Type" not in request.headers:
            headers["Content-Type"] = "application/json"  # as upstream (taskcluster#3521)
        url = yarl.URL(target, encoded=True)
        upstream = None
        for attempt in range(1, ATTEMPTS + 1):
            headers["Authorization"] = self._sign(request.method, target, body, headers.get("Content-Type", ""))
            try:
                upstream = await self._session.request(
                    request.method, url, headers=headers, data=body or None, allow_redirects=False)
            except (aiohttp.ClientError, TimeoutError, OSError) as err:
                if attempt == ATTEMPTS:
                    return web.Response(status=502, text=f"taskcluster-proxy: {target}: {err!r}\n")
                await asyncio.sleep(BACKOFF_S * 2 ** (attempt - 1) * random.uniform(0.5, 1.0))
                continue
            if upstream.status < 500 or attempt == ATTEMPTS:
                break
            upstream.release()
            await asyncio.sleep(BACKOFF_S * 2 ** (attempt - 1) * random.uniform(0.5, 1.0))
        async with upstream:
            return await self._relay(request, upstream, target)

    async def _relay(self, request: web.Request, upstream: aiohttp.ClientResponse, target: str) -> web.StreamResponse:
        response = web.StreamResponse(status=upstream.status, reason=upstream.reason)
        for name, value in upstream.headers.items():
            if name.lower() not in _HOP_HEADERS:
                response.headers.add(name, value)
        response.headers["X-Taskcluster-Endpoint"] = target
        response.headers["X-Taskcluster-Proxy-Version"] = f"tcworker {__version__}"
        if upstream.content_length is not None:
            response.content_length = upstream.content_length
        await response.prepare(request)
        async for chunk in upstream.content.iter_chunked(64 * 1024):
            await response.write(chunk)
        await response.write_eof()
        return response

    def _sign(self, method: str, url: str, body: bytes, content_type: str) -> str:
        creds = self._credentials
        sender = mohawk.Sender(
            credentials={"id": creds["clientId"], "key": creds["accessToken"], "algorithm": "sha256"},
            ext=self._ext or {}, url=url, method=method, content=body, content_type=content_type,
        )
        return sender.request_header


def _redact(raw_path: str, secret: str | None) -> str:
    return raw_path.replace(secret, "<secret>") if secret else raw_path

