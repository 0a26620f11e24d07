"""
L{UploadInfo}: what the server and the stores know about one upload, and its
JSON form, which uses tusd's C{.info} field names so that a directory written
by tusd can be served by txtus and the other way round.
"""

from __future__ import annotations

import json
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

    def copy(self, **changes: Any) -> "UploadInfo":
        """
        A copy that shares no mutable state with this one.  Cheaper than
        C{dataclasses.replace}, which matters on the per-request path.
        """
        clone = UploadInfo(self.id, self.size, self.offset, dict(self.metadata), self.is_partial,
                           self.is_final, list(self.partial_uploads), dict(self.storage), self.expires,
                           self.finished)
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
        return json.dumps(document).encode("utf-8")

    @classmethod
    def from_json(cls, data: bytes) -> "UploadInfo":
        """
        @raise ValueError: C{data} is not a well-formed info document.
        """
        document = json.loads(data)
        if not isinstance(document, dict):
            raise ValueError("info document is not an object")
        deferred = bool(document.get("SizeIsDeferred", False))
        metadata = document.get("MetaData") or {}
        if not isinstance(metadata, dict):
            raise ValueError("MetaData is not an object")
        expires = document.get("Expires")
        return cls(
            id=str(document.get("ID", "")),
            size=None if deferred else int(document.get("Size", 0)),
            offset=int(document.get("Offset", 0)),
            metadata={str(k): str(v) for k, v in metadata.items()},
            is_partial=bool(document.get("IsPartial", False)),
            is_final=bool(document.get("IsFinal", False)),
            partial_uploads=[str(p) for p in document.get("PartialUploads") or []],
            storage={str(k): str(v) for k, v in (document.get("Storage") or {}).items()},
            expires=None if expires is None else float(expires),
            finished=document.get("Finished") is True,
        )
