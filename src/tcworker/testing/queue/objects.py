"""The emulated Object service's data and rules, plus the blobs behind every storage URL.

Lives here: :class:`Blob` (bytes + Content-Type/-Encoding served by the storage endpoint),
:class:`StoredObject`, and :class:`ObjectStore` with createUpload (lock-in, exact-match
idempotence on projectId/uploadId/expires, ``dataInline`` and ``putUrl``), finishUpload (hashes,
immutability), startDownload (``getUrl`` preferred, ``simple``) and metadata, as in contract §2.3.

Does not live here: the storage HTTP endpoint (``storage.py``), auth, the queue's artifacts.
"""

from __future__ import annotations

import base64
import binascii
import secrets
from collections.abc import Callable
from dataclasses import dataclass, field

from .clock import Clock, iso, parse_time
from .errors import ApiError, conflict, input_error, not_found

PUT_URL_LIFETIME_S = 45 * 60
GET_URL_LIFETIME_S = 60


@dataclass
class Blob:
    """Bytes behind a storage URL.

    ``data`` is None until uploaded. For PUTs: ``put_token`` (query ``token``), and the
    ``expected_type`` / ``expected_length`` the PUT must carry (None = not checked).
    """

    blob_id: str
    kind: str                     # "object" or "s3"
    data: bytes | None = None
    content_type: str | None = None
    content_encoding: str | None = None
    put_token: str = field(default_factory=lambda: secrets.token_urlsafe(16))
    expected_type: str | None = None
    expected_length: int | None = None


@dataclass
class StoredObject:
    """An object: ``expires`` epoch seconds (ms precision), ``hashes`` {algorithm: hex}."""

    name: str
    project_id: str
    upload_id: str
    expires: float
    blob: Blob
    finished: bool = False
    hashes: dict[str, str] = field(default_factory=dict)


class ObjectStore:
    """Objects by name, and every blob by id.

    Args:
        clock: the emulator clock (upload/download URL expiries).
        blob_url: callable ``(blob, for_put: bool) -> absolute URL`` on the storage endpoint.
    """

    def __init__(self, clock: Clock, blob_url: Callable[[Blob, bool], str]) -> None:
        self.clock = clock
        self.blob_url = blob_url
        self.objects: dict[str, StoredObject] = {}
        self.blobs: dict[str, Blob] = {}

    def new_blob(self, kind: str, **kwargs) -> Blob:
        blob = Blob(secrets.token_hex(12), kind, **kwargs)
        self.blobs[blob.blob_id] = blob
        return blob

    def get(self, name: str) -> StoredObject:
        obj = self.objects.get(name)
        if obj is None:
            raise not_found(f"Object {name} not found")
        return obj

    def create_upload(self, name: str, req: dict) -> dict:
        """createUpload → ``create-upload-response``.

        Raises: 409 (object finished, or projectId/uploadId/expires differ, or hash conflict),
        400 InputError (bad base64).
        """
        expires = parse_time(req["expires"], "expires")
        obj = self.objects.get(name)
        if obj is not None:
            if obj.finished:
                raise conflict("Object already exists", name=name)
            if (obj.project_id, obj.upload_id, obj.expires) != (req["projectId"], req["uploadId"], expires):
                raise conflict("Object already exists with different projectId, uploadId or expires",
                               name=name)
        else:
            obj = StoredObject(name, req["projectId"], req["uploadId"], expires, self.new_blob("object"))
            self.objects[name] = obj
        self._merge_hashes(obj, req.get("hashes", {}))
        methods = req.get("proposedUploadMethods", {})
        out = {"projectId": obj.project_id, "uploadId": obj.upload_id, "expires": req["expires"]}
        if "dataInline" in methods:
            inline = methods["dataInline"]
            try:
                data = base64.b64decode(inline["objectData"], validate=True)
            except (binascii.Error, ValueError) as err:
                raise input_error("dataInline.objectData is not valid base64") from err
            obj.blob.data, obj.blob.content_type = data, inline["contentType"]
            obj.blob.content_encoding = "identity"
            out["uploadMethod"] = {"dataInline": True}
        elif "putUrl" in methods:
            put = methods["putUrl"]
            obj.blob.expected_type, obj.blob.expected_length = put["contentType"], put["contentLength"]
            headers = {"Content-Type": put["contentType"], "Content-Length": str(put["contentLength"]),
                       "Content-Encoding": "identity"}
            if put["contentType"].split(";")[0].strip().lower() == "text/html":
                headers["Content-Disposition"] = "attachment"
            out["uploadMethod"] = {"putUrl": {
                "url": self.blob_url(obj.blob, True),
                "expires": iso(self.clock.now() + PUT_URL_LIFETIME_S), "headers": headers}}
        else:
            out["uploadMethod"] = {}
        return out

    @staticmethod
    def _merge_hashes(obj: StoredObject, hashes: dict[str, str]) -> None:
        for alg, value in hashes.items():
            if obj.hashes.get(alg, value) != value:
                raise conflict(f"Hash {alg} conflicts with the one already stored", name=obj.name)
        obj.hashes.update(hashes)

    def finish_upload(self, name: str, req: dict) -> dict:
        """finishUpload → ``{}``. Raises: 404, 400 (projectId), 409 (uploadId, hashes)."""
        obj = self.get(name)
        if obj.project_id != req["projectId"]:
            raise input_error("projectId does not match the upload", name=name)
        hashes = req.get("hashes", {})
        if obj.finished:
            for alg, value in hashes.items():
                if obj.hashes.get(alg) != value:
                    raise conflict(f"Object is finished; hash {alg} is new or different", name=name)
            return {}
        if obj.upload_id != req["uploadId"]:
            raise conflict("uploadId does not match the upload in progress", name=name)
        self._merge_hashes(obj, hashes)
        obj.finished = True
        return {}

    def start_download(self, name: str, req: dict) -> dict:
        """startDownload → ``download-object-response``. Raises: 404 (missing or unfinished),
        406 NoMatchingMethod."""
        obj = self.objects.get(name)
        if obj is None or not obj.finished:
            raise not_found(f"Object {name} not found")
        accept = req.get("acceptDownloadMethods", {})
        url = self.blob_url(obj.blob, False)
        if accept.get("getUrl"):
            return {"method": "getUrl", "url": url, "hashes": dict(obj.hashes),
                    "expires": iso(self.clock.now() + GET_URL_LIFETIME_S)}
        if accept.get("simple"):
            return {"method": "simple", "url": url}
        raise ApiError(406, "NoMatchingMethod", "None of the accepted download methods is available")

    def metadata(self, name: str) -> dict:
        """object (metadata) → ``get-object-response``. Raises 404."""
        obj = self.get(name)
        return {"projectId": obj.project_id, "expires": iso(obj.expires), "hashes": dict(obj.hashes)}
