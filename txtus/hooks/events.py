"""
The hook wire format: what a hook is told (L{HookRequest}) and what it may
answer (L{HookResponse}), as plain objects with their JSON in tusd v2's
shape, so that a hook receiver written for tusd works unchanged.

A request is C{{"Type": ..., "Event": {"Upload": {...}, "HTTPRequest":
{...}}}}; a response may carry C{HTTPResponse}, C{RejectUpload},
C{RejectTermination}, C{ChangeFileInfo} and C{StopUpload}.  Two things go
beyond tusd: the C{pre-request} event, and C{ChangeFileInfo.MaxSize} (a
per-upload size limit chosen by pre-create).  A tusd receiver never sends
either, and ignores the extra event type if it is enabled.
"""

from __future__ import annotations

import functools
import json
import re
from dataclasses import dataclass, field
from typing import Any

from txtus import errors
from txtus.info import UploadInfo

PRE_REQUEST = "pre-request"
PRE_CREATE = "pre-create"
POST_CREATE = "post-create"
POST_RECEIVE = "post-receive"
PRE_FINISH = "pre-finish"
POST_FINISH = "post-finish"
PRE_TERMINATE = "pre-terminate"
POST_TERMINATE = "post-terminate"

ALL_EVENTS = (PRE_REQUEST, PRE_CREATE, POST_CREATE, POST_RECEIVE, PRE_FINISH, POST_FINISH,
              PRE_TERMINATE, POST_TERMINATE)
# tusd's default for -hooks-enabled-events.
DEFAULT_EVENTS = frozenset({PRE_CREATE, POST_CREATE, POST_RECEIVE, POST_TERMINATE, POST_FINISH})
# Events whose answer the request waits for; the others never hold it up.
BLOCKING_EVENTS = frozenset({PRE_REQUEST, PRE_CREATE, PRE_FINISH, PRE_TERMINATE})


def parse_events(text: str) -> frozenset[str]:
    """
    C{--hooks-enabled-events}: a comma-separated list of event names; an
    empty list enables every event, as in tusd.

    @raise ValueError: an unknown event name.
    """
    names = [name.strip() for name in text.split(",") if name.strip()]
    unknown = [name for name in names if name not in ALL_EVENTS]
    if unknown:
        raise ValueError(f"unknown hook event {unknown[0]!r} (known: {', '.join(ALL_EVENTS)})")
    return frozenset(names) if names else frozenset(ALL_EVENTS)


@dataclass
class HTTPRequest:
    """The request that caused an event, as tusd describes it."""

    method: str = ""
    uri: str = ""
    remote_addr: str = ""
    # Canonical names (C{Upload-Length}) to every value, as Go's http.Header.
    header: dict[str, list[str]] = field(default_factory=dict)

    @classmethod
    def from_request(cls, request: Any) -> "HTTPRequest":
        """A snapshot of a twisted.web request (later changes do not show)."""
        header: dict[str, list[str]] = {}
        for name, values in request.requestHeaders.getAllRawHeaders():
            key = canonical_header(name.decode("latin-1"))
            header.setdefault(key, []).extend(v.decode("latin-1") for v in values)
        address = request.getClientAddress()
        host = getattr(address, "host", None)
        # A UNIX socket's peer usually has no name: tusd sends "@" there.
        remote = f"{host}:{getattr(address, 'port', 0)}" if host is not None else "@"
        return cls(request.method.decode("latin-1"), request.uri.decode("latin-1"), remote, header)

    def to_dict(self) -> dict[str, Any]:
        return {"Method": self.method, "URI": self.uri, "RemoteAddr": self.remote_addr,
                "Header": self.header}


@functools.lru_cache(maxsize=1024)
def canonical_header(name: str) -> str:
    """C{upload-length} -> C{Upload-Length}, as Go canonicalises keys."""
    return "-".join(part[:1].upper() + part[1:].lower() for part in name.split("-"))


def upload_to_dict(info: UploadInfo) -> dict[str, Any]:
    """tusd's C{FileInfo} JSON (without our C{Expires})."""
    return {
        "ID": info.id,
        "Size": 0 if info.size is None else info.size,
        "SizeIsDeferred": info.size is None,
        "Offset": info.offset,
        "MetaData": dict(info.metadata),
        "IsPartial": info.is_partial,
        "IsFinal": info.is_final,
        "PartialUploads": list(info.partial_uploads) or None,
        "Storage": dict(info.storage) or None,
    }


@dataclass
class HookRequest:
    """
    One event, handed to an L{txtus.interfaces.IHookHandler}.

    @ivar type: the event name (L{PRE_CREATE}, ...).
    @ivar upload: the upload's info when the event happened (a copy; in
        pre-create its C{id} is empty unless the client cannot choose it).
    @ivar http_request: the request that caused it.
    """

    type: str
    upload: UploadInfo
    http_request: HTTPRequest

    def to_dict(self) -> dict[str, Any]:
        return {"Type": self.type,
                "Event": {"Upload": upload_to_dict(self.upload), "HTTPRequest": self.http_request.to_dict()}}

    def to_json(self) -> bytes:
        return json.dumps(self.to_dict()).encode("utf-8")


@dataclass
class HTTPResponse:
    """What a hook wants the client to get; zero values change nothing."""

    status_code: int = 0
    body: str = ""
    header: dict[str, str] = field(default_factory=dict)

    def apply_to(self, error: errors.TusError) -> errors.TusError:
        """C{error}, answered as this response asks (a rejection)."""
        return error.override(self.status_code, self.body, self.header)

    def merge_into(self, response: Any) -> None:
        """
        Merge into a successful L{txtus.protocol.handler.Response} as tusd's
        C{MergeWith} does: status and body replace, headers are added.
        """
        if self.status_code:
            response.status = self.status_code
        if self.body:
            response.body = self.body.encode("utf-8")
        for name, value in self.header.items():
            response.headers[name.lower().encode("latin-1")] = value.encode("latin-1")


@dataclass
class FileInfoChanges:
    """
    pre-create's C{ChangeFileInfo}: an ID for the store to use, metadata
    replacing the client's, storage details for the store, and (beyond
    tusd) C{max_size}, the most bytes this upload may ever hold.  L{None}
    (or an empty ID) leaves a property alone.
    """

    id: str = ""
    metadata: dict[str, str] | None = None
    storage: dict[str, str] | None = None
    max_size: int | None = None


@dataclass
class HookResponse:
    """A hook's answer; the default answer changes nothing."""

    http_response: HTTPResponse = field(default_factory=HTTPResponse)
    reject_upload: bool = False
    reject_termination: bool = False
    reject_request: bool = False
    change_file_info: FileInfoChanges = field(default_factory=FileInfoChanges)
    stop_upload: bool = False

    @classmethod
    def from_json(cls, data: bytes) -> "HookResponse":
        """
        @raise txtus.errors.HookInvalidResponse: not JSON, or not in tusd's
            shape.
        """
        try:
            document = json.loads(data)
        except (ValueError, UnicodeDecodeError):
            raise errors.HookInvalidResponse("a hook answered with something that is not JSON") from None
        return cls.from_dict(document)

    @classmethod
    def from_dict(cls, document: Any) -> "HookResponse":
        """
        Read tusd's response shape, as leniently as Go's decoder where it is
        harmless (missing and unknown fields, C{null}) and strictly where a
        wrong type would change what happens.

        @raise txtus.errors.HookInvalidResponse: not in tusd's shape.
        """
        if document is None:
            return cls()
        document = _object(document, "the response")
        http = _object(document.get("httpresponse"), "HTTPResponse")
        changes = _object(document.get("changefileinfo"), "ChangeFileInfo")
        max_size = changes.get("maxsize")
        if max_size is not None and (type(max_size) is not int or max_size < 0):
            raise errors.HookInvalidResponse("ChangeFileInfo.MaxSize must be a non-negative integer")
        status = _typed(http, "StatusCode", int, 0)
        if status and not 100 <= status <= 599:
            raise errors.HookInvalidResponse(f"HTTPResponse.StatusCode {status} is not an HTTP status")
        return cls(
            http_response=HTTPResponse(status, _typed(http, "Body", str, ""), _headers(http)),
            reject_upload=_typed(document, "RejectUpload", bool, False),
            reject_termination=_typed(document, "RejectTermination", bool, False),
            reject_request=_typed(document, "RejectRequest", bool, False),
            change_file_info=FileInfoChanges(_typed(changes, "ID", str, ""), _strings(changes, "MetaData"),
                                             _strings(changes, "Storage"), max_size),
            stop_upload=_typed(document, "StopUpload", bool, False),
        )


def _object(value: Any, what: str) -> dict[str, Any]:
    """A JSON object with its keys lowercased: Go matches field names without case."""
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise errors.HookInvalidResponse(f"{what} in a hook response is not a JSON object")
    return {str(key).lower(): item for key, item in value.items()}


def _typed(document: dict[str, Any], name: str, kind: type, default: Any) -> Any:
    value = document.get(name.lower())
    if value is None:
        return default
    # bool is an int in Python, not in JSON.
    if type(value) is not kind:
        raise errors.HookInvalidResponse(f"{name} in a hook response must be a {kind.__name__}")
    return value


def _strings(document: dict[str, Any], name: str) -> dict[str, str] | None:
    value = document.get(name.lower())
    if value is None:
        return None
    if not isinstance(value, dict) or not all(isinstance(v, str) for v in value.values()):
        raise errors.HookInvalidResponse(f"{name} in a hook response must map names to strings")
    return dict(value)


_TOKEN = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")
_FIELD_VALUE = re.compile(r"[\t\x20-\x7e\x80-\xff]*")


def _headers(http: dict[str, Any]) -> dict[str, str]:
    """HTTPResponse.Header, refused unless every name and value is sendable as is."""
    header = _strings(http, "Header") or {}
    for name, value in header.items():
        if not _TOKEN.fullmatch(name) or not _FIELD_VALUE.fullmatch(value):
            raise errors.HookInvalidResponse(f"HTTPResponse.Header {name[:100]!r} is not a valid header")
    return header
