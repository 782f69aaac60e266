"""Hawk authentication and scope checks, as the Taskcluster auth service does them.

Lives here: the client table (:class:`AuthService`: permanent clients, roles, the ``anonymous``
role), scope satisfaction (:func:`satisfies`, :func:`satisfies_expr`), temporary-credential
certificate checks, ``authorizedScopes``, and Hawk verification with ``mohawk`` (±15 min skew,
payload hash over the raw body, no nonce check), following
``services/auth/src/signaturevalidator.js`` as described in the contract §4.
Failures raise :class:`~.errors.ApiError` 401 ``AuthenticationFailed`` / 403 ``InsufficientScopes``.

Does not live here: which scopes an endpoint needs (the API modules say), or HTTP plumbing.
Time here is *real* time, never the emulator's injectable clock.
"""

from __future__ import annotations

import base64
import datetime as dt
import binascii
import hashlib
import hmac
import json
import re
import secrets
import time
from dataclasses import dataclass, field
from typing import Any

import mohawk
import mohawk.exc
import taskcluster

from .errors import ApiError

QUEUE_ISSUER = "static/taskcluster/queue"
SKEW_S = 900
CERT_GRACE_S = 300
CLIENT_ID_RE = re.compile(r"^[A-Za-z0-9!@/:.+|_-]+$")
PUBLIC_ANONYMOUS_SCOPES = (
    "queue:get-artifact:public/*",
    "queue:get-task:*",
    "queue:status:*",
    "queue:list-artifacts:*",
    "queue:pending-count:*",
    "purge-cache:purge-requests:*",
    "index:find-task:*",
    "index:list-namespaces:*",
    "index:list-tasks:*",
)

# A scope expression: a string, {"AllOf": [expr, ...]} or {"AnyOf": [expr, ...]}.
ScopeExpr = Any


def satisfies(held: list[str] | tuple[str, ...], required: str) -> bool:
    """True when one held scope equals ``required`` or is a ``prefix*`` of it."""
    for scope in held:
        if scope == required or (scope.endswith("*") and required.startswith(scope[:-1])):
            return True
    return False


def satisfies_expr(held: list[str] | tuple[str, ...], expr: ScopeExpr) -> bool:
    """Evaluate a scope expression (str, ``{"AllOf": [...]}``, ``{"AnyOf": [...]}``)."""
    if isinstance(expr, str):
        return satisfies(held, expr)
    if "AllOf" in expr:
        return all(satisfies_expr(held, e) for e in expr["AllOf"])
    return any(satisfies_expr(held, e) for e in expr["AnyOf"])


def unsatisfied(held: list[str], expr: ScopeExpr) -> list[str]:
    """The leaf scopes of ``expr`` that ``held`` lacks (for 403 messages)."""
    if isinstance(expr, str):
        return [] if satisfies(held, expr) else [expr]
    if "AllOf" in expr:
        return [s for e in expr["AllOf"] for s in unsatisfied(held, e)]
    if satisfies_expr(held, expr):
        return []
    return [s for e in expr["AnyOf"] for s in unsatisfied(held, e)]


@dataclass
class Client:
    """A permanent client: ``scopes`` list of str, ``expires`` epoch seconds (real time)."""

    client_id: str
    access_token: str
    scopes: list[str]
    expires: float = float("inf")


@dataclass
class Identity:
    """Who made a request: ``client_id`` (None for anonymous) and effective ``scopes``."""

    client_id: str | None
    scopes: list[str] = field(default_factory=list)


def _b64decode_any(text: str) -> bytes:
    """Decode base64 in either alphabet, with or without padding (Node accepts all)."""
    text = text.replace("-", "+").replace("_", "/")
    return base64.b64decode(text + "=" * (-len(text) % 4), validate=True)


class AuthService:
    """The emulator's view of the auth service: clients, roles, request authentication.

    Args:
        anonymous_scopes: scopes of the ``anonymous`` role, carried by every request; default
            :data:`PUBLIC_ANONYMOUS_SCOPES`; ``[]`` for a locked-down deployment.
    """

    def __init__(self, anonymous_scopes: list[str] | tuple[str, ...] | None = None) -> None:
        self.clients: dict[str, Client] = {}
        self.roles: dict[str, list[str]] = {
            "anonymous": list(PUBLIC_ANONYMOUS_SCOPES if anonymous_scopes is None else anonymous_scopes)
        }
        self.add_client(QUEUE_ISSUER, ["*"])

    def add_client(self, client_id: str, scopes: list[str], access_token: str | None = None,
                   expires: float = float("inf")) -> dict[str, str]:
        """Create (or replace) a permanent client → ``{"clientId", "accessToken"}``."""
        token = access_token or secrets.token_urlsafe(33)
        self.clients[client_id] = Client(client_id, token, list(scopes), expires)
        return {"clientId": client_id, "accessToken": token}

    def mint(self, name: str, scopes: list[str], lifetime_s: float) -> dict[str, str]:
        """Named temporary credentials issued by the queue's own client, valid from now (real
        time) for ``lifetime_s`` seconds → ``{"clientId", "accessToken", "certificate"}``."""
        issuer = self.clients[QUEUE_ISSUER]
        now = dt.datetime.now(dt.timezone.utc)
        creds = taskcluster.createTemporaryCredentials(
            issuer.client_id, issuer.access_token, now,
            now + dt.timedelta(seconds=max(lifetime_s, 1)), list(scopes), name=name)
        token = creds["accessToken"]
        return {"clientId": creds["clientId"], "certificate": creds["certificate"],
                "accessToken": token.decode() if isinstance(token, bytes) else token}

    def expand(self, scopes: list[str]) -> list[str]:
        """Add ``assume:anonymous`` and expand ``assume:<role>`` scopes (``auth_api.expand_scopes``)."""
        from .auth_api import expand_scopes

        return expand_scopes(self.roles, [*scopes, "assume:anonymous"])

    def authenticate(self, *, authorization: str | None, method: str, url: str,
                     body: bytes, content_type: str) -> Identity:
        """Verify a request's Hawk header → :class:`Identity` with expanded scopes.

        Args:
            authorization: the ``Authorization`` header, or None (anonymous).
            method: HTTP method; url: ``http://<Host header><raw path?query>``.
            body: raw body bytes; content_type: the request's ``Content-Type`` or "".

        Raises:
            ApiError: 401 AuthenticationFailed (unknown client, bad MAC, bad hash, skew > 15 min,
                bad or expired certificate, unsatisfiable ``authorizedScopes``).
        """
        if not authorization:
            return Identity(None, self.expand([]))
        try:
            attrs = mohawk.util.parse_authorization_header(authorization)
        except mohawk.exc.HawkFail as err:
            raise _auth_failed(f"Bad Hawk header: {err}") from err
        client_id = attrs.get("id", "")
        ext = self._parse_ext(attrs.get("ext"))
        key, scopes = self._credentials(client_id, ext.get("certificate"))
        if "authorizedScopes" in ext:
            wanted = ext["authorizedScopes"]
            if not isinstance(wanted, list) or not all(isinstance(s, str) for s in wanted):
                raise _auth_failed("ext.authorizedScopes must be an array of strings")
            held = self.expand(scopes)
            if not all(satisfies(held, s) for s in wanted):
                raise _auth_failed("Supplied authorizedScopes are not satisfied by the credentials' scopes")
            scopes = list(wanted)
        try:
            mohawk.Receiver(
                lambda _id: {"id": client_id, "key": key, "algorithm": "sha256"},
                authorization, url, method, content=body, content_type=content_type,
                seen_nonce=_no_replay_check, timestamp_skew_in_seconds=SKEW_S,
            )
        except mohawk.exc.HawkFail as err:
            raise _auth_failed(f"Hawk verification failed: {type(err).__name__}: {err}") from err
        return Identity(client_id, self.expand(scopes))

    def _parse_ext(self, ext: str | None) -> dict:
        if not ext:
            return {}
        try:
            parsed = json.loads(_b64decode_any(ext))
        except (binascii.Error, ValueError) as err:
            raise _auth_failed("Failed to parse ext") from err
        if not isinstance(parsed, dict):
            raise _auth_failed("ext must be a JSON object")
        return parsed

    def _permanent(self, client_id: str) -> Client:
        client = self.clients.get(client_id)
        if client is None:
            raise _auth_failed(f"Client ID {client_id} does not exist")
        if client.expires < time.time():
            raise _auth_failed(f"Client ID {client_id} has expired")
        return client

    def _credentials(self, client_id: str, cert: Any) -> tuple[str, list[str]]:
        """→ (Hawk key, scopes) for ``client_id``, checking a certificate when one is given."""
        if cert is None:
            client = self._permanent(client_id)
            return client.access_token, list(client.scopes)
        if not isinstance(cert, dict):
            raise _auth_failed("ext.certificate must be a JSON object")
        issuer_id = cert.get("issuer", client_id) if "issuer" in cert else client_id
        named = "issuer" in cert
        if named and issuer_id == client_id:
            raise _auth_failed("ext.certificate.issuer must differ from the supplied clientId")
        if named and not CLIENT_ID_RE.match(client_id):
            raise _auth_failed(f"clientId {client_id!r} is not a valid clientId")
        issuer = self._permanent(issuer_id)
        self._check_certificate(cert, client_id if named else None, issuer)
        if named and not satisfies(self.expand(issuer.scopes), f"auth:create-client:{client_id}"):
            raise _auth_failed(f"issuer {issuer_id} lacks auth:create-client:{client_id}")
        if not all(satisfies(self.expand(issuer.scopes), s) for s in cert["scopes"]):
            raise _auth_failed("ext.certificate issuer does not have sufficient scopes")
        derived = hmac.new(issuer.access_token.encode(), cert["seed"].encode(), hashlib.sha256).digest()
        key = base64.urlsafe_b64encode(derived).decode().rstrip("=")
        return key, list(cert["scopes"])

    @staticmethod
    def _check_certificate(cert: dict, name: str | None, issuer: Client) -> None:
        if cert.get("version") != 1:
            raise _auth_failed("ext.certificate.version must be 1")
        seed, start, expiry, scopes = (cert.get(k) for k in ("seed", "start", "expiry", "scopes"))
        if not isinstance(seed, str) or len(seed) != 44:
            raise _auth_failed("ext.certificate.seed must be a string of 44 characters")
        if not isinstance(start, (int, float)) or not isinstance(expiry, (int, float)):
            raise _auth_failed("ext.certificate.start and expiry must be numbers")
        if not isinstance(scopes, list) or not all(isinstance(s, str) for s in scopes):
            raise _auth_failed("ext.certificate.scopes must be an array of strings")
        now_ms = time.time() * 1000
        if start > now_ms + CERT_GRACE_S * 1000:
            raise _auth_failed("ext.certificate.start > now (temporary credentials not yet valid)")
        if expiry < now_ms - CERT_GRACE_S * 1000:
            raise _auth_failed("ext.certificate.expiry < now (temporary credentials have expired)")
        if expiry - start > 31 * 24 * 3600 * 1000:
            raise _auth_failed("ext.certificate cannot last more than 31 days")
        lines = ["version:1"]
        if name is not None:
            lines += [f"clientId:{name}", f"issuer:{issuer.client_id}"]
        lines += [f"seed:{seed}", f"start:{start}", f"expiry:{expiry}", "scopes:", *scopes]
        want = hmac.new(issuer.access_token.encode(), "\n".join(lines).encode(), hashlib.sha256).digest()
        try:
            got = _b64decode_any(str(cert.get("signature", "")))
        except binascii.Error as err:
            raise _auth_failed("ext.certificate.signature is not base64") from err
        if not hmac.compare_digest(want, got):
            raise _auth_failed("ext.certificate.signature is not valid")


def _auth_failed(message: str) -> ApiError:
    return ApiError(401, "AuthenticationFailed", message)


def require(identity: Identity, expr: ScopeExpr) -> None:
    """Raise 403 InsufficientScopes unless ``identity`` satisfies the scope expression ``expr``."""
    if satisfies_expr(identity.scopes, expr):
        return
    missing = unsatisfied(identity.scopes, expr)
    raise ApiError(
        403, "InsufficientScopes",
        f"Client ID {identity.client_id or 'anonymous'} does not have sufficient scopes and is "
        f"missing the following scopes:\n\n```\n" + "\n".join(missing) + "\n```\n\n"
        "This request requires the client to satisfy the following scope expression:\n\n```\n"
        + json.dumps(expr, indent=2) + "\n```",
    )


def _no_replay_check(sender_id: str, nonce: str, timestamp: str) -> bool:
    """Upstream does no nonce/replay check; saying "never seen" keeps mohawk quiet about it."""
    return False
