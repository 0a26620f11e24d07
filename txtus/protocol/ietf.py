"""
The IETF "Resumable Uploads for HTTP" draft (draft-ietf-httpbis-resumable-
upload), interop versions 3 to 8, spoken beside tus 1.0 on the same URLs and
the same uploads.

A request is a draft request when the configuration allows it and it carries
a supported C{Upload-Draft-Interop-Version}; L{txtus.web.resource} then routes it
here instead of to the tus verbs.  L{IetfDraftHandler} is a thin layer over
L{txtus.protocol.handler.TusHandler}: it reuses its locking, chunk streaming,
finishing, expiry and URL building, and only translates the draft's headers
(C{Upload-Complete}, C{Upload-Offset}, C{Upload-Length}, C{Upload-Limit})
to and from the store's view of an upload (size, offset).

The store knows an upload as complete when its size is known and reached,
while the draft marks completion explicitly: a request with
C{Upload-Complete: ?1} fixes the size (declaring a deferred length if
needed).  An upload whose declared C{Upload-Length} is reached is therefore
complete even if the last append said C{?0}; see C{docs/ietf-draft.md}.
"""

from __future__ import annotations

import math
from typing import Any

from txtus.logs import Logger

from txtus.web import _twisted_private
from txtus import errors
from txtus.protocol import headers
from txtus.web.body import StreamingBody
from txtus.protocol.handler import Response, TusHandler
from txtus.hooks import events as hook
from txtus.info import UploadInfo

log = Logger()

INTEROP_HEADER = b"upload-draft-interop-version"
# The first interop version with application/partial-upload, problem types
# and Upload-Limit (draft -04).
_PARTIAL_UPLOAD_SINCE = 6
_CREATION_METHODS = (b"POST", b"PUT", b"PATCH")
# Media types that describe the transfer, not the uploaded representation.
_TRANSFER_TYPES = (headers.PARTIAL_UPLOAD, headers.OFFSET_OCTET_STREAM)


def draft_version(request: Any, config: Any) -> int | None:
    """
    The interop version a request speaks, or L{None} for tus 1.0 (draft
    support off, header absent, or a version we do not speak).
    """
    if not config.enable_ietf_draft:
        return None
    return headers.parse_interop_version(request.getHeader(INTEROP_HEADER))


def completeness_header(version: int, complete: bool) -> tuple[bytes, bytes]:
    """C{Upload-Complete}, or its inverse C{Upload-Incomplete} for version 3."""
    if version == 3:
        return b"upload-incomplete", headers.sf_boolean(not complete)
    return b"upload-complete", headers.sf_boolean(complete)


class IetfDraftHandler:
    """
    The draft's operations: upload creation (POST/PUT/PATCH to the
    collection URL), offset retrieval (HEAD), append (PATCH), cancellation
    (DELETE) and limits discovery (OPTIONS).
    """

    def __init__(self, tus: TusHandler) -> None:
        self.tus = tus
        self.config = tus.config
        self.composer = tus.composer

    async def handle(self, method: bytes, request: Any, upload_id: str | None, body: Any,
                     version: int) -> Response:
        if method == b"OPTIONS":
            return self.options(version)
        if upload_id is None:
            if method in _CREATION_METHODS:
                return await self.create(request, body, version)
            raise errors.MethodNotAllowed(headers={"Allow": "POST, PUT, PATCH, OPTIONS"})
        if method == b"HEAD":
            return await self.head(request, upload_id, version)
        if method == b"PATCH":
            return await self.append(request, upload_id, body, version)
        if method == b"DELETE":
            return await self.tus.delete(request, upload_id, body)
        if method == b"GET":
            return await self.tus.get(request, upload_id, body)
        raise errors.MethodNotAllowed(headers={"Allow": "HEAD, PATCH, GET, DELETE, OPTIONS"})

    # OPTIONS -----------------------------------------------------------

    def options(self, version: int) -> Response:
        return Response(200, {b"upload-limit": self.upload_limit(version, None),
                              b"accept-patch": headers.PARTIAL_UPLOAD})

    # Creation ----------------------------------------------------------

    async def create(self, request: Any, body: Any, version: int) -> Response:
        get = request.requestHeaders.getRawHeaders
        complete = self._complete(request, version)
        declared = headers.parse_sf_non_negative(get(b"upload-length"), errors.InvalidUploadLength)
        length = _body_length(body)
        size = _target_length(0, None, declared, complete, length)
        if size is None and self.composer.length_deferrer is None:
            raise errors.NotImplementedByStore("this store needs the upload's length up front "
                                               "(Upload-Length, or Upload-Complete: ?1 with Content-Length)")
        self._check_max_size(size, version)

        info = UploadInfo(size=size, metadata=_metadata(request), expires=self.tus._expiry())
        hooks = self.tus.hooks
        if hooks.enabled(hook.PRE_CREATE):
            # The hook's response is not merged: draft clients read 104s and 201s.
            await hooks.pre_create(request, info)
        upload = await self.tus.new_upload(info)
        info = await upload.get_info()
        hooks.notify(hook.POST_CREATE, request, info)
        location = self.tus.upload_url(request, info.id).encode("ascii")
        log.info("upload {upload_id} created by draft {version} request (length {size})",
                 upload_id=info.id, version=version, size="deferred" if size is None else size)
        self.tus.metrics.upload_created()
        limit = self.upload_limit(version, info)
        if isinstance(body, StreamingBody):
            # Tell the client where to resume before reading any of the body.
            _twisted_private.write_informational(
                request, 104, b"Upload Resumption Supported",
                [(b"Location", location), (b"Upload-Draft-Interop-Version", b"%d" % version),
                 (b"Upload-Limit", limit)])
        try:
            async with self.tus._lock(info.id, body):
                offset = await self._transfer(request, upload, info, 0, body, complete)
        except errors.TusError as e:
            e.headers.setdefault("Location", location.decode("ascii"))
            raise
        result = Response(201, {b"location": location, b"upload-offset": b"%d" % offset,
                                b"upload-limit": self.upload_limit(version, info)})
        self._add_state(result, version, info, offset)
        return result

    # Offset retrieval --------------------------------------------------

    async def head(self, request: Any, upload_id: str, version: int) -> Response:
        upload, info = await self.tus._read(upload_id)
        result = Response(204, {b"cache-control": b"no-store",
                                b"upload-offset": b"%d" % info.offset,
                                b"upload-limit": self.upload_limit(version, info)})
        self._add_state(result, version, info, info.offset)
        if info.size is not None:
            result.headers[b"upload-length"] = b"%d" % info.size
        return result

    # Append ------------------------------------------------------------

    async def append(self, request: Any, upload_id: str, body: Any, version: int) -> Response:
        get = request.requestHeaders.getRawHeaders
        if version >= _PARTIAL_UPLOAD_SINCE:
            if headers.media_type(headers.content_type(request)) != headers.PARTIAL_UPLOAD:
                raise errors.UnsupportedPatchType(headers={"Accept-Patch": headers.PARTIAL_UPLOAD.decode()})
        offset = headers.parse_sf_non_negative(get(b"upload-offset"), errors.InvalidOffset)
        if offset is None:
            raise errors.InvalidOffset()
        complete = self._complete(request, version)
        declared = headers.parse_sf_non_negative(get(b"upload-length"), errors.InvalidUploadLength)
        length = _body_length(body)
        async with self.tus._lock(upload_id, body):
            upload = await self.composer.core.get_upload(upload_id)
            info = await self.tus._live_info(upload)
            if info.is_final:
                raise errors.ModifyFinal()
            if info.is_complete:
                if length != 0 or (declared is not None and declared != info.size):
                    raise errors.InconsistentUploadLength("the upload is already complete")
                if not (complete and offset == info.offset):
                    raise errors.CompletedUpload()
                # Completing again what is complete: answer as the first time.
            elif offset != info.offset:
                name, value = completeness_header(version, False)
                raise errors.MismatchingUploadOffset(
                    headers={"Upload-Offset": str(info.offset), name.decode(): value.decode()},
                    members={"expected-offset": info.offset, "provided-offset": offset})
            else:
                size = _target_length(offset, info.size, declared, complete, length)
                if info.size is None and size is not None:
                    self._check_max_size(size, version)
                    await self._declare(upload, info, size)
                offset = await self._transfer(request, upload, info, offset, body, complete)
        result = Response(204, {b"upload-offset": b"%d" % offset})
        self._add_state(result, version, info, offset)
        return result

    # Shared -------------------------------------------------------------

    async def _transfer(self, request: Any, upload: Any, info: UploadInfo, offset: int, body: Any,
                        complete: bool) -> int:
        """
        Store the request content at C{offset} in an unfinished upload (the
        caller holds the lock) and settle completion; returns the new
        offset.  A body cut short
        keeps what arrived and leaves the upload incomplete (the error
        propagates).
        """
        if _body_length(body) != 0:
            # TusHandler finishes the upload once a known size is reached.
            try:
                offset = info.offset = await self.tus._receive_and_renew(request, upload, info, offset, body)
            except errors.TusError as e:
                # A cut body keeps what arrived: say how much.
                refreshed = await upload.get_info()
                e.headers.setdefault("Upload-Offset", str(refreshed.offset))
                raise
        elif info.size is not None and offset >= info.size:
            # Nothing to receive, and the (just declared) length is reached.
            await self.tus._finished(upload, info.id, request)
        if complete:
            if info.size is None:
                # A chunked body of unknown length that ended: that was all.
                await self._declare(upload, info, offset)
                await self.tus._finished(upload, info.id, request)
            elif offset < info.size:
                raise errors.InconsistentUploadLength(
                    f"the upload was marked complete at offset {offset}, but its length is {info.size}",
                    headers={"Upload-Offset": str(offset)})
        return offset

    async def _declare(self, upload: Any, info: UploadInfo, size: int) -> None:
        await self.composer.length_deferrer.declare_length(upload, size)
        info.size = size

    def _check_max_size(self, size: int | None, version: int) -> None:
        if self.config.max_size and size is not None and size > self.config.max_size:
            raise errors.MaxSizeExceeded(headers={"Upload-Limit": self.upload_limit(version, None).decode()})

    def _complete(self, request: Any, version: int) -> bool:
        """
        Whether the request's content ends the upload: C{Upload-Complete}
        (required), or for interop version 3 the inverse
        C{Upload-Incomplete} (optional, absent meaning complete).
        """
        get = request.requestHeaders.getRawHeaders
        if version == 3:
            incomplete = headers.parse_sf_boolean(get(b"upload-incomplete"), "Upload-Incomplete")
            return not incomplete
        complete = headers.parse_sf_boolean(get(b"upload-complete"), "Upload-Complete")
        if complete is None:
            raise errors.InvalidRequest("missing Upload-Complete header")
        return complete

    def _add_state(self, response: Response, version: int, info: UploadInfo, offset: int) -> None:
        complete = info.size is not None and offset >= info.size
        name, value = completeness_header(version, complete)
        response.headers[name] = value

    def upload_limit(self, version: int, info: UploadInfo | None) -> bytes:
        """
        C{Upload-Limit} for the server (C{info} L{None}) or one upload:
        C{min-size=0} (resumption is offered for any size), C{max-size}
        when a maximum is configured, and the remaining lifetime in seconds
        of an unfinished upload when uploads expire (C{expires} in interop
        version 6, C{max-age} from version 7).
        """
        limits: dict[str, int] = {"min-size": 0}
        if self.config.max_size:
            limits["max-size"] = self.config.max_size
        age_key = "expires" if version == 6 else "max-age"
        if info is None:
            if self.config.expires_uploads:
                limits[age_key] = int(self.config.expire_after)
        elif info.expires is not None and not info.is_complete:
            limits[age_key] = max(0, math.floor(info.expires - self.config.clock.seconds()))
        return headers.format_sf_dictionary(limits)


def _body_length(body: Any) -> int | None:
    """The request content's length: 0 without a body, L{None} if chunked."""
    return 0 if body is None else body.length


def _target_length(offset: int, known: int | None, declared: int | None, complete: bool,
                   length: int | None) -> int | None:
    """
    The upload length that every indication in a request agrees on: the
    length already known, C{Upload-Length}, and offset + Content-Length
    when the request completes the upload; L{None} if nothing tells.

    @raise errors.InconsistentUploadLength: they disagree, or the content
        would run past the length.
    """
    indications = {value for value in (known, declared) if value is not None}
    if complete and length is not None:
        indications.add(offset + length)
    if len(indications) > 1:
        raise errors.InconsistentUploadLength()
    size = indications.pop() if indications else None
    if size is not None and (size < offset or (length is not None and offset + length > size)):
        raise errors.InconsistentUploadLength()
    return size


def _metadata(request: Any) -> dict[str, str]:
    """
    tus metadata for a draft upload: C{Upload-Metadata} if the client sent
    one (tus-js-client does), with C{filetype} from C{Content-Type} and
    C{filename} from C{Content-Disposition} taking precedence.
    """
    get = request.requestHeaders.getRawHeaders
    raw = get(b"upload-metadata")
    metadata = headers.parse_metadata(raw[0] if raw else None)
    content_type = headers.content_type(request)
    if content_type and headers.media_type(content_type) not in _TRANSFER_TYPES + (b"",):
        try:
            metadata["filetype"] = content_type.decode("ascii").strip()
        except UnicodeDecodeError:
            pass
    disposition = get(b"content-disposition")
    filename = headers.content_disposition_filename(disposition[0] if disposition else None)
    if filename:
        metadata["filename"] = filename
    return metadata
