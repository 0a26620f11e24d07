"""
L{UploadInfo}: what the server and the stores know about one upload, and its
JSON form, which uses tusd's C{.info} field names so that a directory written
by tusd can be served by txtus and the other way round.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from typing import Any


@dataclass
class UploadInfo:
    """
    @ivar size: the upload's length in bytes, or L{None} while deferred.
    @ivar offset: bytes durably stored.
    @ivar expires: POSIX time after which an unfinished upload may be
        removed, or L{None}.  tusd ignores the field.
    @ivar finished: the store's C{finish} succeeded for this upload (see
        L{txtus.interfaces.IUpload.finish}).  Stored as C{"Finished"}, a
        field tusd ignores; a complete upload without it (one written by
        tusd) is finished again once, which is harmless.
    @ivar max_size: the most bytes this upload may hold (chosen by a
        pre-create hook), or L{None}.  Stored as C{"MaxSize"}, a field
        tusd ignores.
    """

    id: str = ""
    size: int | None = None
    offset: int = 0
    metadata: dict[str, str] = field(default_factory=dict)
    is_partial: bool = False
    is_final: bool = False
    partial_uploads: list[str] = field(default_factory=list)
    storage: dict[str, str] = field(default_factory=dict)
    expires: float | None = None
    finished: bool = False
    max_size: int | None = None

    def copy(self, **changes: Any) -> "UploadInfo":
        """
        A copy that shares no mutable state with this one.  Several are
        made per request, so it copies the instance dictionary (every field,
        whatever fields are added later) instead of calling C{__init__} or
        C{dataclasses.replace}, which cost several times more.
        """
        clone = object.__new__(UploadInfo)
        fields = clone.__dict__
        fields.update(self.__dict__)
        fields["metadata"] = dict(self.metadata)
        fields["partial_uploads"] = list(self.partial_uploads)
        fields["storage"] = dict(self.storage)
        for name, value in changes.items():
            setattr(clone, name, value)
        return clone

    @property
    def size_is_deferred(self) -> bool:
        return self.size is None

    @property
    def is_complete(self) -> bool:
        return self.size is not None and self.offset >= self.size

    def to_json(self) -> bytes:
        document: dict[str, Any] = {
            "ID": self.id,
            "Size": 0 if self.size is None else self.size,
            "SizeIsDeferred": self.size is None,
            "Offset": self.offset,
            "MetaData": self.metadata,
            "IsPartial": self.is_partial,
            "IsFinal": self.is_final,
            "PartialUploads": self.partial_uploads or None,
            "Storage": self.storage or None,
        }
        if self.expires is not None:
            document["Expires"] = self.expires
        if self.finished:
            document["Finished"] = True
        if self.max_size is not None:
            document["MaxSize"] = self.max_size
        return json.dumps(document).encode("utf-8")

    @classmethod
    def from_json(cls, data: bytes) -> "UploadInfo":
        """
        Decode and validate an info document.  Checked here, once, so that
        a hand-edited or damaged file can never reach a response (a
        negative C{Upload-Length}) or a computation (an infinite expiry).

        @raise ValueError: C{data} is not a well-formed info document.
        """
        try:
            document = json.loads(data)
        except RecursionError:
            raise ValueError("info document is nested too deeply") from None
        if not isinstance(document, dict):
            raise ValueError("info document is not an object")
        deferred = _field(document, "SizeIsDeferred", bool, False)
        size = _length(document, "Size")
        expires = _field(document, "Expires", (int, float), None)
        if expires is not None and not 0 <= expires <= _LATEST_EXPIRY:
            raise ValueError("Expires is not a time between 1970 and 9999")
        partials = _field(document, "PartialUploads", list, None) or []
        # Which IDs are valid is the store's to say, when it is asked for one.
        if not all(isinstance(p, str) and p for p in partials):
            raise ValueError("PartialUploads holds something that is not an upload ID")
        return cls(
            id=_field(document, "ID", str, ""),
            size=None if deferred else size,
            offset=_length(document, "Offset"),
            metadata=_text_map(document, "MetaData"),
            is_partial=_field(document, "IsPartial", bool, False),
            is_final=_field(document, "IsFinal", bool, False),
            partial_uploads=partials,
            storage=_text_map(document, "Storage"),
            expires=None if expires is None else float(expires),
            finished=document.get("Finished") is True,
            max_size=None if document.get("MaxSize") is None else _length(document, "MaxSize"),
        )


# The largest length tus allows (Upload-Length is a 63-bit integer).
_MAX_LENGTH = 2 ** 63 - 1
# 9999-12-31T23:59:59Z, the last instant an HTTP date can name.
_LATEST_EXPIRY = 253402300799


def _field(document: dict[str, Any], name: str, kind: Any, default: Any) -> Any:
    value = document.get(name)
    if value is None:
        return default
    # bool is an int to Python, never a number in an info document.
    if not isinstance(value, kind) or (isinstance(value, bool) and kind is not bool):
        raise ValueError(f"{name} has the wrong type")
    if isinstance(value, float) and not math.isfinite(value):
        raise ValueError(f"{name} is not finite")
    return value


def _length(document: dict[str, Any], name: str) -> int:
    value = _field(document, name, int, 0)
    if not 0 <= value <= _MAX_LENGTH:
        raise ValueError(f"{name} is out of range")
    return value


def _text_map(document: dict[str, Any], name: str) -> dict[str, str]:
    value = _field(document, name, dict, {})
    if not all(isinstance(k, str) and isinstance(v, str) for k, v in value.items()):
        raise ValueError(f"{name} holds something that is not text")
    return dict(value)
