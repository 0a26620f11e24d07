"""
The tus protocol itself: one coroutine per verb, turning a request's headers
and body into a L{Response} or a L{txtus.errors.TusError}.

Nothing here writes to the network: L{txtus.web.resource} feeds requests in and
writes what comes out, so the same logic serves streamed and buffered
bodies.  Storage is reached only through the composer's interfaces.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from time import perf_counter
from typing import Any, Callable
from urllib.parse import urlsplit

from twisted.internet import defer
from twisted.internet.defer import Deferred
from txtus.logs import Logger

from txtus.protocol import checksum, headers
from txtus import errors
from txtus.web.body import BodyEnd
from txtus.protocol.concat import Concatenation
from txtus.config import TusConfig
from txtus.hooks import events as hook
from txtus.hooks.dispatch import HookDispatcher
from txtus.info import UploadInfo
from txtus.interfaces import ILeasedLock, ILengthAwareChunkWriter

log = Logger()


@dataclass
class Response:
    """
    What a verb answers.  C{send}, when set, streams the body (downloads):
    it is called with the request as consumer and returns a Deferred.
    """

    status: int
    headers: dict[bytes, bytes] = field(default_factory=dict)
    body: bytes = b""
    send: Callable[[Any], Deferred] | None = None


_END_ERRORS: dict[BodyEnd, type[errors.TusError]] = {
    BodyEnd.OVERFLOW: errors.UploadSizeExceeded,
    BodyEnd.TIMEOUT: errors.ReadTimeout,
    BodyEnd.INTERRUPTED: errors.UploadInterrupted,
    BodyEnd.DISCONNECTED: errors.UnexpectedEOF,
    BodyEnd.STOPPED: errors.UploadStopped,
    BodyEnd.MALFORMED: errors.MalformedBody,
    BodyEnd.SHUTDOWN: errors.ServerShutdown,
}


def _pump(writer: Any, body: Any, limit: int | None, hasher: Any) -> Callable[[bytes], None]:
    """
    What takes the body's bytes: the chunk writer itself when there is
    nothing to check on the way, else a L{_Pump}.
    """
    if limit is None and hasher is None:
        return writer.write
    return _Pump(writer, body, limit, hasher).write


class _Pump:
    """
    Moves body bytes into a chunk writer, never past C{limit}, hashing them
    on the way when a checksum is expected.
    """

    def __init__(self, writer: Any, body: Any, limit: int | None, hasher: Any) -> None:
        self._writer = writer
        self._body = body
        self._room = limit
        self._hasher = hasher

    def write(self, data: bytes) -> None:
        if self._room is not None:
            if len(data) > self._room:
                data = data[: self._room]
                self._room = 0
                if data:
                    self._forward(data)
                self._body.stop(BodyEnd.OVERFLOW)
                return
            self._room -= len(data)
        self._forward(data)

    def _forward(self, data: bytes) -> None:
        if self._hasher is not None:
            self._hasher.update(data)
        self._writer.write(data)


class TusHandler:
    """
    The tus verbs.  Each takes the twisted.web request (for headers), the
    upload ID from the URL (L{None} for the creation URL) and, for verbs
    with a body, a body source from L{txtus.web.body}.
    """

    def __init__(self, config: TusConfig) -> None:
        self.config = config
        # Metrics time store operations through the composer the verbs use;
        # the rest they are told where it happens.
        self.metrics = config.metrics
        self.composer = config.metrics.instrument(config.composer)
        self.extensions = ",".join(config.extensions()).encode("ascii")
        self.concatenation = Concatenation(self.composer, self._lock)
        self.hooks = HookDispatcher(config.hooks, config.hook_events, config.hook_timeout,
                                    config.progress_hooks_interval, config.reactor, config.metrics)
        # The lock holders of this process that are receiving a body, by
        # upload ID: readers answer beside an active one (see _Held).
        self._receiving: dict[str, _Held] = {}

    # OPTIONS -----------------------------------------------------------

    async def options(self, request: Any, upload_id: str | None, body: Any) -> Response:
        result = {b"tus-version": headers.TUS_VERSION.encode(), b"tus-extension": self.extensions,
                  b"tus-checksum-algorithm": checksum.ADVERTISED}
        if self.config.max_size:
            result[b"tus-max-size"] = b"%d" % self.config.max_size
        return Response(200, result)

    # POST (creation) ---------------------------------------------------

    async def post(self, request: Any, upload_id: str | None, body: Any) -> Response:
        if upload_id is not None:
            raise errors.MethodNotAllowed(headers={"Allow": "HEAD, PATCH, GET, DELETE, OPTIONS"})
        config = self.config
        get = request.requestHeaders.getRawHeaders
        with_body = headers.media_type(headers.content_type(request)) == headers.OFFSET_OCTET_STREAM
        concat = headers.parse_concat(_first(get(b"upload-concat")))
        metadata = headers.parse_metadata(_first(get(b"upload-metadata")))
        partials: list[Any] = []
        if concat is not None and (self.composer.concater is None or config.disable_concatenation):
            raise errors.ConcatUnsupported()
        if concat is not None and concat[0] == "final":
            if with_body and _has_body(request):
                raise errors.ModifyFinal()
            if get(b"upload-length") is not None or get(b"upload-defer-length") is not None:
                raise errors.InvalidConcat("a final upload must not carry Upload-Length")
            partials = [await self._get_partial(request, url) for url in concat[1]]
            size: int | None = await self.concatenation.check_partials(partials, self._live_info)
        else:
            defer = get(b"upload-defer-length")
            if defer is not None and self.composer.length_deferrer is None:
                raise errors.NotImplementedByStore("deferred upload length is not supported")
            size = headers.parse_creation_length(_first(get(b"upload-length")), _first(defer))
        if config.max_size and size is not None and size > config.max_size:
            raise errors.MaxSizeExceeded()
        if with_body and body is not None:
            # Refuse a body that cannot be stored before creating anything.
            _expected_checksum(request, self.composer.stager is not None)
            if size is not None and body.length is not None and body.length > size:
                raise errors.UploadSizeExceeded()

        info = UploadInfo(
            expires=None if concat is not None and concat[0] == "final" else self._expiry(),
            size=size,
            metadata=metadata,
            is_partial=concat is not None and concat[0] == "partial",
            is_final=concat is not None and concat[0] == "final",
            partial_uploads=[p.id for p in partials],
        )
        created_hook = None
        if self.hooks.enabled(hook.PRE_CREATE):
            created_hook = await self.hooks.pre_create(request, info)
        upload = await self.new_upload(info)
        info = await upload.get_info()
        location = self.upload_url(request, info.id).encode("ascii")
        log.info("upload {upload_id} created (length {size})", upload_id=info.id,
                 size="deferred" if info.size is None else info.size)
        self.metrics.upload_created()
        self.hooks.notify(hook.POST_CREATE, request, info)
        result = Response(201, {b"location": location})
        if created_hook is not None:
            created_hook.merge_into(result)

        if info.is_final:
            async with self._lock(info.id, None):
                await self.concatenation.start(
                    upload, info, partials, lambda final, final_id: self._finished(final, final_id, request))
        elif with_body:
            try:
                offset = await self._locked_receive(request, upload, info, 0, body)
            except errors.TusError as e:
                e.headers.setdefault("Location", location.decode("ascii"))
                raise
            result.headers[b"upload-offset"] = b"%d" % offset
        elif info.size == 0:
            await self._finished(upload, info.id, request)
        self._add_expires(result, info, result.headers.get(b"upload-offset"))
        return _with_finish_hook(request, result)

    def new_upload(self, info: UploadInfo) -> Any:
        """
        Create the upload C{info} describes, placed where a pre-create hook
        asked (C{info.storage}) if it did: the core store checks the
        placement first, or refuses it if it cannot place uploads.

        @return: a Deferred firing with the new L{IUpload}.
        """
        try:
            info.storage = self.composer.check_placement(info.storage)
        except errors.TusError as e:
            return defer.fail(e)
        return self.composer.core.new_upload(info)

    def _expiry(self) -> float | None:
        if not self.config.expires_uploads:
            return None
        return self.config.clock.seconds() + self.config.expire_after

    def _add_expires(self, response: Response, info: UploadInfo, offset: bytes | None) -> None:
        """C{Upload-Expires}, on responses about an unfinished upload."""
        stored = info.offset if offset is None else int(offset)
        finished = info.size is not None and stored >= info.size
        if info.expires is not None and not finished:
            response.headers[b"upload-expires"] = headers.http_date(info.expires)

    async def _live_info(self, upload: Any) -> UploadInfo:
        """
        The upload's info, for a caller holding its lock.  An expired,
        unfinished upload is gone (410); a final upload whose partials have
        all finished (perhaps before a restart) is completed first, and a
        complete upload whose C{finish} never succeeded is finished now.
        """
        info = await upload.get_info()
        if info.expires is not None and not info.is_complete and self.config.clock.seconds() >= info.expires:
            raise errors.UploadGone()
        if info.is_final and not info.is_complete:
            info = await self.concatenation.complete(upload, info, self._finished) or info
        elif info.is_complete and not info.finished:
            # finish() failed, or the process died before it ran.
            await self._finished(upload, info.id)
            info.finished = True
        return info

    async def _get_partial(self, request: Any, url: str) -> Any:
        upload_id = self.id_from_url(request, url)
        if upload_id is None:
            raise errors.InvalidConcat(f"{url[:200]!r} is not an upload of this server")
        return await self.composer.core.get_upload(upload_id)

    # HEAD --------------------------------------------------------------

    async def head(self, request: Any, upload_id: str | None, body: Any) -> Response:
        upload_id = _require_id(upload_id)
        upload, info = await self._read(upload_id)
        result = {b"cache-control": b"no-store"}
        if not info.is_final or info.is_complete:
            # A final upload has no offset until it is concatenated.
            result[b"upload-offset"] = b"%d" % info.offset
        if info.expires is not None and not info.is_complete:
            result[b"upload-expires"] = headers.http_date(info.expires)
        if info.size is None:
            result[b"upload-defer-length"] = b"1"
        else:
            result[b"upload-length"] = b"%d" % info.size
        if info.metadata:
            result[b"upload-metadata"] = headers.encode_metadata(info.metadata)
        if info.is_partial:
            result[b"upload-concat"] = b"partial"
        elif info.is_final:
            urls = " ".join(self.upload_url(request, p) for p in info.partial_uploads)
            result[b"upload-concat"] = b"final;" + urls.encode("ascii")
        return Response(200, result)

    # PATCH -------------------------------------------------------------

    async def patch(self, request: Any, upload_id: str | None, body: Any) -> Response:
        upload_id = _require_id(upload_id)
        get = request.requestHeaders.getRawHeaders
        if headers.media_type(headers.content_type(request)) != headers.OFFSET_OCTET_STREAM:
            raise errors.InvalidContentType()
        offset = headers.parse_non_negative(_first(get(b"upload-offset")), errors.InvalidOffset)
        new_length = _first(get(b"upload-length"))
        async with self._lock(upload_id, body):
            upload = await self.composer.core.get_upload(upload_id)
            info = await self._live_info(upload)
            if info.is_final:
                raise errors.ModifyFinal()
            if offset != info.offset:
                raise errors.MismatchedOffset(headers={"Upload-Offset": str(info.offset)})
            if new_length is not None:
                await self._declare_length(upload, info, new_length)
            if info.is_complete:
                if new_length is not None:
                    await self._finished(upload, info.id, request)
                return _with_finish_hook(request, Response(204, {b"upload-offset": b"%d" % info.offset}))
            offset = await self._receive_and_renew(request, upload, info, offset, body)
        result = Response(204, {b"upload-offset": b"%d" % offset})
        self._add_expires(result, info, result.headers[b"upload-offset"])
        return _with_finish_hook(request, result)

    async def _declare_length(self, upload: Any, info: UploadInfo, raw: bytes) -> None:
        deferrer = self.composer.length_deferrer
        if deferrer is None:
            raise errors.NotImplementedByStore("deferred upload length is not supported")
        if info.size is not None:
            raise errors.InvalidUploadLength("upload length is already set")
        length = headers.parse_non_negative(raw.strip(), errors.InvalidUploadLength)
        if length < info.offset:
            raise errors.InvalidUploadLength("upload length is smaller than the offset")
        if self.config.max_size and length > self.config.max_size:
            raise errors.MaxSizeExceeded()
        if info.max_size is not None and length > info.max_size:
            raise errors.MaxSizeExceeded()
        await deferrer.declare_length(upload, length)
        info.size = length

    # Receiving a chunk (PATCH and creation-with-upload) ------------------

    async def _locked_receive(self, request: Any, upload: Any, info: UploadInfo, offset: int, body: Any) -> int:
        async with self._lock(info.id, body):
            return await self._receive_and_renew(request, upload, info, offset, body)

    async def _receive_and_renew(self, request: Any, upload: Any, info: UploadInfo, offset: int, body: Any) -> int:
        """
        L{_receive}, then push the upload's expiry back (sliding expiry): it
        counts from the end of the latest PATCH, cut off or not, so an
        upload in use does not expire under its client.
        """
        try:
            new_offset = await self._receive(request, upload, info, offset, body)
        except Exception:
            await self._renew_expiry(upload, info)
            raise
        if info.size is None or new_offset < info.size:
            await self._renew_expiry(upload, info)  # a finished upload never expires
        return new_offset

    async def _renew_expiry(self, upload: Any, info: UploadInfo) -> None:
        renewer = self.composer.expiry_renewer
        if renewer is None or info.expires is None or not self.config.expires_uploads:
            return
        expires = self._expiry()
        try:
            await renewer.renew_expiry(upload, expires)
        except errors.TusError:
            return  # e.g. removed meanwhile: the request's own outcome tells
        except Exception:
            log.failure("upload {upload_id}: could not push its expiry back", upload_id=info.id)
            return
        info.expires = expires

    async def _receive(self, request: Any, upload: Any, info: UploadInfo, offset: int, body: Any) -> int:
        if info.size is not None:
            limit: int | None = info.size - offset
        elif self.config.max_size or info.max_size is not None:
            limit = min(m for m in (self.config.max_size or None, info.max_size) if m is not None) - offset
        else:
            limit = None
        if limit is not None and body.length is not None and body.length > limit:
            raise errors.UploadSizeExceeded()
        body.max_bytes = limit
        expected = _expected_checksum(request, self.composer.stager is not None)
        hasher: Any = None
        if expected is _TRAILER:
            hasher = checksum.AllHashers()
        elif expected is not None:
            hasher = checksum.new_hasher(expected[0])
        if hasher is None:
            writer = await upload.open_chunk(offset)
        else:
            # Held apart until the digest matched: unverified bytes must not
            # count, be read or survive a crash as part of the upload.
            writer = await self.composer.stager.open_staged_chunk(upload, offset)
        metrics = self.metrics
        metrics.chunk_began()
        new_offset = offset
        progress = None
        try:
            if body.length is not None and ILengthAwareChunkWriter.providedBy(writer):
                writer.expect_length(body.length)
            writer.registerProducer(body, True)
            progress = self.hooks.watch(request, info, offset, body)
            try:
                end = await body.start(_pump(writer, body, limit, hasher))
            finally:
                writer.unregisterProducer()
                if progress is not None:
                    progress.close()
            if hasher is not None:
                # A chunk that cannot be verified is discarded whole, as the
                # checksum extension requires; the offset stays where it was.
                problem = _END_ERRORS[end]() if end is not BodyEnd.COMPLETE else _verify(expected, hasher, body)
                if problem is not None:
                    started = perf_counter()
                    await writer.rollback()
                    metrics.store_operation("rollback", perf_counter() - started)
                    raise problem if progress is None else progress.error(problem)
            started = perf_counter()
            new_offset = await writer.commit()
            metrics.store_operation("commit", perf_counter() - started)
        except BaseException:
            # Neither committed nor rolled back (or that failed): release
            # what the writer holds.  A no-op after commit or rollback.
            await writer.abort()
            raise
        finally:
            metrics.chunk_ended(new_offset - offset)
        if progress is not None:
            progress.ended(new_offset)
        if info.size is not None and new_offset >= info.size:
            await self._finished(upload, info.id, request)
        if end is not BodyEnd.COMPLETE:
            error = _END_ERRORS[end]()
            raise error if progress is None else progress.error(error)
        if hasher is None and body.trailers.hasHeader(b"upload-checksum"):
            # The bytes were received as a plain chunk (kept as they came);
            # a checksum nobody announced could not be checked.
            raise errors.InvalidChecksum("unannounced Upload-Checksum trailer ignored, the chunk was stored"
                                         " unverified; announce it in a Trailer header",
                                         headers={"Upload-Offset": str(new_offset)})
        return new_offset

    async def _finished(self, upload: Any, upload_id: str, request: Any = None) -> None:
        """
        Finish a complete upload.  C{finish} is idempotent and recorded by
        the store; until it is, L{_live_info} runs this again, so a failure
        or a crash before it costs a retry, never a lost completion.  Then
        the finish hooks run (with C{request}, the request that completed
        the upload, when there is one).  Finals waiting for this upload are
        completed once the caller's lock is released.
        """
        await upload.finish()
        log.info("upload {upload_id} finished", upload_id=upload_id)
        self.metrics.upload_finished()
        if self.hooks.enabled(hook.PRE_FINISH) or self.hooks.enabled(hook.POST_FINISH):
            info = await upload.get_info()
            if self.hooks.enabled(hook.PRE_FINISH):
                finish_hook = await self.hooks.pre_finish(request, info)
                if request is not None:
                    request.txtus_finish_hook = finish_hook
            self.hooks.notify(hook.POST_FINISH, request, info)
        self.concatenation.partial_finished(upload_id, self._finished)

    # DELETE ------------------------------------------------------------

    async def delete(self, request: Any, upload_id: str | None, body: Any) -> Response:
        upload_id = _require_id(upload_id)
        terminater = self.composer.terminater
        if terminater is None or self.config.disable_termination:
            raise errors.NotImplementedByStore("termination is not supported")
        hooked = self.hooks.enabled(hook.PRE_TERMINATE) or self.hooks.enabled(hook.POST_TERMINATE)
        result = Response(204)
        async with self._lock(upload_id, None):
            upload = await self.composer.core.get_upload(upload_id)
            info = await upload.get_info() if hooked else None
            if info is not None and self.hooks.enabled(hook.PRE_TERMINATE):
                (await self.hooks.pre_terminate(request, info)).merge_into(result)
            await terminater.terminate(upload)
        self.concatenation.partial_removed(upload_id)
        log.info("upload {upload_id} terminated", upload_id=upload_id)
        self.metrics.upload_terminated()
        if info is not None:
            self.hooks.notify(hook.POST_TERMINATE, request, info)
        return result

    # GET (download) ----------------------------------------------------

    async def get(self, request: Any, upload_id: str | None, body: Any) -> Response:
        upload_id = _require_id(upload_id)
        reader = self.composer.reader
        if self.config.disable_download or reader is None:
            raise errors.DownloadDisabled(headers={"Allow": "HEAD, PATCH, DELETE, OPTIONS"})
        upload, info = await self._read(upload_id)
        content_type, disposition = headers.download_headers(info.metadata)
        result = {b"content-type": content_type, b"content-disposition": disposition}
        if info.offset == 0:
            # RFC 9110 8.6: a 204 carries no Content-Length (tusd sends 0).
            return Response(204, result)
        result[b"accept-ranges"] = b"bytes"
        # A validator in If-Range can never match (txtus sends no ETag or
        # Last-Modified), so the whole upload is sent, as RFC 9110 asks.
        wanted = None if request.getHeader(b"if-range") is not None else \
            headers.parse_range(request.getHeader(b"range"), info.offset)
        if wanted is None:
            start, length, status = 0, info.offset, 200
        else:
            (start, length), status = wanted, 206
            result[b"content-range"] = b"bytes %d-%d/%d" % (start, start + length - 1, info.offset)
        result[b"content-length"] = b"%d" % length
        return Response(status, result, send=lambda consumer: reader.send_content(upload, consumer, start, length))

    # Helpers -----------------------------------------------------------

    def _lock(self, upload_id: str, body: Any, patience: float | None = None) -> "_Held":
        return _Held(self, upload_id, body, patience)

    async def _read(self, upload_id: str) -> tuple[Any, UploadInfo]:
        """
        The upload and its info, for HEAD and GET.  A reader does not cut
        an upload that is receiving bytes, nor waits for it: beside an
        active PATCH of this process it answers at once from what is
        committed, and it waits at most L{READER_PATIENCE} for a lock held
        elsewhere (another process's PATCH, which it cannot see) before
        doing the same.  A silent holder is interrupted as for any request.
        """
        holder = self._receiving.get(upload_id)
        if holder is None or not holder.active:
            async with self._lock(upload_id, None, patience=READER_PATIENCE) as locked:
                if locked:
                    upload = await self.composer.core.get_upload(upload_id)
                    return upload, await self._live_info(upload)
        # The lock is busy, most likely with a PATCH whose bytes flow: what
        # is committed is the answer, and an upload in use is not expired
        # (no 410 check).
        upload = await self.composer.core.get_upload(upload_id)
        return upload, await upload.get_info()

    def upload_url(self, request: Any, upload_id: str) -> str:
        """
        The URL of an upload, for C{Location} and C{Upload-Concat}:
        absolute, or just its path with C{relative_location}.
        """
        config = self.config
        if config.absolute_base:
            if config.relative_location:
                return urlsplit(config.base_path).path + upload_id
            return config.base_path + upload_id
        path = f"{self._proxy_prefix(request)}{mount_path(request)}{upload_id}"
        if config.relative_location:
            return path
        scheme = "https" if request.isSecure() else "http"
        host = None
        if config.behind_proxy:
            get = request.requestHeaders.getRawHeaders
            fwd_host, fwd_scheme = headers.forwarded_origin(
                _first(get(b"forwarded")), _first(get(b"x-forwarded-host")), _first(get(b"x-forwarded-proto")))
            host, scheme = fwd_host, fwd_scheme or scheme
        if host is None:
            raw = request.getHeader(b"host")
            host = headers.clean_host(raw.decode("latin-1")) if raw else None
        if host is None:
            address = request.getHost()
            host = f"{getattr(address, 'host', 'localhost')}:{getattr(address, 'port', 80)}"
        host = headers.strip_default_port(host, scheme)
        return f"{scheme}://{host}{path}"

    def _proxy_prefix(self, request: Any) -> str:
        """The path a trusted proxy says it removed (X-Forwarded-Prefix)."""
        if not self.config.behind_proxy:
            return ""
        return headers.forwarded_prefix(request.getHeader(b"x-forwarded-prefix"))

    def id_from_url(self, request: Any, url: str) -> str | None:
        """The upload ID in an absolute or relative upload URL, or L{None}."""
        path = urlsplit(url).path
        if self.config.absolute_base:
            prefixes = [urlsplit(self.config.base_path).path]
        else:
            # As the client knows it (through the proxy), or as we do.
            prefixes = [self._proxy_prefix(request) + mount_path(request), mount_path(request)]
        for prefix in prefixes:
            if path.startswith(prefix):
                upload_id = path[len(prefix):].strip("/")
                return upload_id if self.composer.is_valid_upload_id(upload_id) else None
        return None


def mount_path(request: Any) -> str:
    """The path the resource is mounted at, with a trailing slash."""
    prepath = b"/".join(request.prepath).decode("latin-1")
    return "/" + prepath + "/" if prepath else "/"


# The longest a HEAD or GET waits for a lock before answering from what is
# committed: tusd's promise that a stalled PATCH never blocks a resuming
# client for more than about a second.
READER_PATIENCE = 1.0


class _Held:
    """
    C{async with} for an upload's lock; without a locker it does nothing.
    It evaluates to whether the lock is held (a reader may stop waiting:
    C{patience}).

    Lock release is for holders whose client is gone.  When another request
    asks for the lock, a holder receiving a body lets go (the body ends
    L{BodyEnd.INTERRUPTED}, keeping what arrived) only once the client has
    sent nothing for C{config.lock_release_after} seconds; a body still
    flowing goes on, and the newcomer waits for it.  A holder without a
    body is brief and simply finishes.  This sits above the locker, so
    every L{ILocker} behaves the same.
    """

    def __init__(self, handler: TusHandler, upload_id: str, body: Any, patience: float | None) -> None:
        self._handler = handler
        self._locker = handler.composer.locker
        self._clock = handler.config.reactor
        self._upload_id = upload_id
        self._body = body
        self._patience = patience
        self._lock: Any = None
        self._check: Any = None

    async def __aenter__(self) -> bool:
        if self._locker is None:
            return True
        waiting = self._locker.lock(self._upload_id, self._release_requested)
        if self._patience is not None and not waiting.called:
            waiting.addTimeout(self._patience, self._clock)
        try:
            self._lock = await waiting
        except defer.TimeoutError:
            return False
        if self._body is not None:
            self._handler._receiving[self._upload_id] = self
            if ILeasedLock.providedBy(self._lock):
                # Not a request to let go but a fact: someone else may
                # hold the upload now, so no byte more may be written.
                self._lock.when_lost(lambda: self._body.stop(BodyEnd.INTERRUPTED))
        return True

    async def __aexit__(self, *exc_info: Any) -> None:
        if self._handler._receiving.get(self._upload_id) is self:
            del self._handler._receiving[self._upload_id]
        if self._check is not None and self._check.active():
            self._check.cancel()
        self._check = None
        if self._lock is not None:
            try:
                await self._lock.unlock()
            except Exception:
                # The work under the lock is done (and answered for); a
                # locker that failed to let go is the operator's problem,
                # not the client's.
                log.failure("could not unlock upload {upload_id}", upload_id=self._upload_id)

    @property
    def active(self) -> bool:
        """Whether the body is still arriving (not silent for too long)."""
        body = self._body
        return body.end is None and body.silent_for(self._clock.seconds()) < self._handler.config.lock_release_after

    def _release_requested(self) -> None:
        if self._body is not None and self._check is None:
            self._check_silence()

    def _check_silence(self) -> None:
        # Lockers ask once per holder: from now on, watch for silence.
        self._check = None
        body = self._body
        if body.end is not None:
            return
        quiet = self._handler.config.lock_release_after
        silent = body.silent_for(self._clock.seconds())
        if silent >= quiet:
            body.stop(BodyEnd.INTERRUPTED)
        else:
            self._check = self._clock.callLater(quiet - silent, self._check_silence)


_TRAILER = object()


def _expected_checksum(request: Any, supported: bool = True) -> Any:
    """
    What the request says about its checksum: C{(algorithm, digest)} from
    C{Upload-Checksum}, L{_TRAILER} when it announces the checksum as a
    trailer, or L{None}.  Raises before any byte is stored, also when the
    store cannot stage chunks (C{supported} false): then no algorithm is
    supported.
    """
    raw = request.getHeader(b"upload-checksum")
    announced = request.getHeader(b"trailer")
    trailer = announced is not None and b"upload-checksum" in announced.lower()
    if not supported and (raw is not None or trailer):
        raise errors.UnsupportedChecksumAlgorithm("this server's store cannot verify checksums")
    if raw is not None:
        return headers.parse_checksum(raw, checksum.SUPPORTED)
    return _TRAILER if trailer else None


def _verify(expected: Any, hasher: Any, body: Any) -> errors.TusError | None:
    """The error that rejects a fully received chunk, or L{None}."""
    if expected is _TRAILER:
        raw = body.trailers.getRawHeaders(b"upload-checksum")
        if not raw:
            return errors.InvalidChecksum("the announced Upload-Checksum trailer did not arrive")
        try:
            algorithm, digest = headers.parse_checksum(raw[0], checksum.SUPPORTED)
        except errors.TusError as e:
            return e
        actual = hasher.digest_for(algorithm)
    else:
        digest = expected[1]
        actual = hasher.digest()
    return None if actual == digest else errors.ChecksumMismatch()


def _with_finish_hook(request: Any, response: Response) -> Response:
    """C{response}, with what a pre-finish hook asked for merged in."""
    finish_hook = getattr(request, "txtus_finish_hook", None)
    if finish_hook is not None:
        finish_hook.merge_into(response)
    return response


def _first(values: list[bytes] | None) -> bytes | None:
    return values[0] if values else None


def _require_id(upload_id: str | None) -> str:
    if upload_id is None:
        raise errors.MethodNotAllowed(headers={"Allow": "POST, OPTIONS"})
    return upload_id


def _has_body(request: Any) -> bool:
    length = request.getHeader(b"content-length")
    return length not in (None, b"0") or request.getHeader(b"transfer-encoding") is not None
