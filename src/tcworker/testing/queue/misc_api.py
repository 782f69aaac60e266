"""The small services: Purge-Cache (purgeRequests, purgeCache) and Index (insertTask, findTask),
with their data.

Lives here: :class:`PurgeCacheState` (requests per worker pool; tests add them with
``emu.purge_cache.add(...)``), :class:`IndexState` (namespace → indexed task, rank and expiry on
the emulator clock) and their HTTP handlers.

Does not live here: anything of the queue or object service.
"""

from __future__ import annotations

from dataclasses import dataclass

from .clock import Clock, iso, parse_time
from .errors import not_found
from .routes import ApiCall, Reply, endpoint


class PurgeCacheState:
    """Purge requests: ``requests`` maps workerPoolId → list of (cacheName, before epoch s)."""

    def __init__(self, clock: Clock) -> None:
        self.clock = clock
        self.requests: dict[str, list[tuple[str, float]]] = {}

    def add(self, worker_pool_id: str, cache_name: str, before: float | None = None) -> None:
        """Ask workers of ``worker_pool_id`` to drop ``cache_name`` caches created before
        ``before`` (epoch seconds, default now)."""
        before = self.clock.now() if before is None else before
        entries = [e for e in self.requests.get(worker_pool_id, []) if e[0] != cache_name]
        self.requests[worker_pool_id] = entries + [(cache_name, before)]

    def list(self, worker_pool_id: str, since: float) -> dict:
        """``purge-cache-request-list``: entries with ``before >= since``."""
        prov, _, wtype = worker_pool_id.partition("/")
        return {"requests": [
            {"provisionerId": prov, "workerType": wtype, "cacheName": name, "before": iso(before)}
            for name, before in self.requests.get(worker_pool_id, []) if before >= since]}


@dataclass
class IndexedTask:
    namespace: str
    task_id: str
    rank: int
    data: dict
    expires: float

    def to_json(self) -> dict:
        return {"namespace": self.namespace, "taskId": self.task_id, "rank": self.rank,
                "data": self.data, "expires": iso(self.expires)}


class IndexState:
    """Indexed tasks by namespace (``a.b.c``)."""

    def __init__(self, clock: Clock) -> None:
        self.clock = clock
        self.entries: dict[str, IndexedTask] = {}

    def insert(self, namespace: str, task_id: str, rank: int = 0, data: dict | None = None,
               expires: float | None = None) -> IndexedTask:
        """Index ``task_id`` at ``namespace``; an existing entry of higher rank wins (upstream)."""
        expires = self.clock.now() + 365 * 24 * 3600 if expires is None else expires
        old = self.entries.get(namespace)
        if old is None or old.expires < self.clock.now() or rank >= old.rank:
            self.entries[namespace] = IndexedTask(namespace, task_id, rank, data or {}, expires)
        return self.entries[namespace]

    def find(self, namespace: str) -> IndexedTask:
        """Raises 404 when nothing (unexpired) is indexed at ``namespace``."""
        entry = self.entries.get(namespace)
        if entry is None or entry.expires < self.clock.now():
            raise not_found(f"Indexed task not found at {namespace}")
        return entry


@endpoint("purge-cache", "ping", "GET", "/ping")
async def purge_ping(call: ApiCall) -> dict:
    return {"alive": True, "uptime": 0}


@endpoint("purge-cache", "purgeRequests", "GET", "/purge-cache/<workerPoolId>",
          scopes=lambda p: f"purge-cache:purge-requests::{p['workerPoolId']}",
          output="purge-cache-request-list")
async def purge_requests(call: ApiCall) -> dict:
    since = parse_time(call.query["since"], "since") if call.query.get("since") else 0.0
    return call.emu.purge_cache.list(call.params["workerPoolId"], since)


@endpoint("purge-cache", "purgeCache", "POST", "/purge-cache/<workerPoolId>")
async def purge_cache(call: ApiCall) -> Reply:
    pool, cache = call.params["workerPoolId"], (call.body or {}).get("cacheName", "")
    call.authorize(f"purge-cache:{pool}:{cache}")
    call.emu.purge_cache.add(pool, cache)
    return Reply(status=204)


@endpoint("index", "ping", "GET", "/ping")
async def index_ping(call: ApiCall) -> dict:
    return {"alive": True, "uptime": 0}


@endpoint("index", "findTask", "GET", "/task/<indexPath>",
          scopes=lambda p: f"index:find-task:{p['indexPath']}")
async def find_task(call: ApiCall) -> dict:
    return call.emu.index.find(call.params["indexPath"]).to_json()


@endpoint("index", "insertTask", "PUT", "/task/<namespace>",
          scopes=lambda p: f"index:insert-task:{p['namespace']}")
async def insert_task(call: ApiCall) -> dict:
    body = call.body or {}
    entry = call.emu.index.insert(call.params["namespace"], body["taskId"], body.get("rank", 0),
                                  body.get("data", {}), parse_time(body["expires"], "expires"))
    return entry.to_json()
