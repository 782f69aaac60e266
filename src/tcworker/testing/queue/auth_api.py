"""The emulator's minimal Auth service: roles and ``expandScopes``.

Lives here: :func:`expand_scopes` (upstream's role expansion: ``assume:<roleId>`` grants the
role's scopes; a role id ending in ``*`` is assumed by every ``assume:`` scope it prefixes, and
``<..>`` in its scopes is replaced by the matched rest; a held scope ending in ``*`` assumes every
role it prefixes; recursive to a fixed point; the result normalized), :func:`normalize` and the
``POST /api/auth/v1/scopes/expand`` endpoint (request and response ``{"scopes": [...]}``).
Roles live in ``AuthService.roles`` (``auth.py``); tests add them with ``emu.add_role``.

No auth schema ships in ``../shared/schemas/queue/json``: the endpoint names ``scopeset`` as its
input/output and the pipeline skips validation while that schema is absent.

Does not live here: Hawk and the request's own scope checks (``auth.py``), any other auth method
(clients, roles CRUD over HTTP, temporary credentials).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from .errors import ApiError
from .routes import ApiCall, endpoint

ASSUME = "assume:"
MAX_ROUNDS = 100


def _grants(held: str, pattern: str) -> bool:
    """True when scope ``held`` grants ``pattern`` (``*``-ended prefix or equal)."""
    return held == pattern or (held.endswith("*") and pattern.startswith(held[:-1]))


def _role_scopes(role_id: str, role_scopes: list[str], held: str) -> list[str] | None:
    """The scopes ``held`` gets from the role, or None when it does not assume it."""
    pattern = ASSUME + role_id
    if pattern.endswith("*") and held.startswith(pattern[:-1]):
        rest = held[len(pattern) - 1:]  # what the role's ``*`` matched
    elif _grants(held, pattern):
        rest = "*"  # a ``*``-ended held scope prefixing the role: the parameter is open
    else:
        return None
    out = []
    for scope in role_scopes:
        if "<..>" not in scope:
            out.append(scope)
        elif rest.endswith("*"):  # an open-ended parameter: nothing after it counts
            out.append(scope.split("<..>", 1)[0] + rest)
        else:
            out.append(scope.replace("<..>", rest))
    return out


def normalize(scopes: Iterable[str]) -> list[str]:
    """Sorted, without duplicates or scopes another (``*``-ended) scope of the set grants."""
    unique = sorted(set(scopes))
    return [s for s in unique if not any(o != s and _grants(o, s) for o in unique)]


def expand_scopes(roles: Mapping[str, list[str]], scopes: Iterable[str]) -> list[str]:
    """Expand ``assume:`` scopes through ``roles`` (role id → scopes) until nothing new appears.

    Args:
        roles: role id (may end with ``*``) → its scopes (may hold ``<..>``).
        scopes: the scopes to expand (strings).

    Returns:
        The normalized expansion, the input scopes included (sorted list of str).
    """
    held = set(scopes)
    todo = [s for s in held if s.startswith(ASSUME) or s.endswith("*")]
    for _ in range(MAX_ROUNDS):
        new: set[str] = set()
        for scope in todo:
            for role_id, role_scopes in roles.items():
                granted = _role_scopes(role_id, role_scopes, scope)
                if granted:
                    new.update(s for s in granted if s not in held)
        if not new:
            break
        held |= new
        todo = [s for s in new if s.startswith(ASSUME) or s.endswith("*")]
    return normalize(held)


@endpoint("auth", "ping", "GET", "/ping")
async def auth_ping(call: ApiCall) -> dict:
    return {"alive": True, "uptime": 0}


@endpoint("auth", "expandScopes", "POST", "/scopes/expand", input="scopeset", output="scopeset")
async def expand(call: ApiCall) -> dict:
    body = call.body if isinstance(call.body, dict) else {}
    scopes = body.get("scopes")
    if not isinstance(scopes, list) or not all(isinstance(s, str) for s in scopes):
        raise ApiError(400, "InputValidationError", "body must be {\"scopes\": [string, ...]}")
    return {"scopes": expand_scopes(call.emu.auth.roles, scopes)}
