"""
L{TusResource}: the twisted.web face of the server.  It routes a request to
a verb of L{txtus.protocol.handler.TusHandler}, hands it the request body (streamed,
when the site uses L{txtus.web.streaming.TusRequest}, else buffered), and is the
one place where results and errors become HTTP responses.
"""

from __future__ import annotations

import time
from typing import Any

from twisted.internet.defer import ensureDeferred, maybeDeferred
from twisted.internet.error import ConnectionLost
from txtus.logs import Logger
from twisted.python.failure import Failure
from twisted.web.http import datetimeToString
from twisted.web.http_headers import Headers
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET
from zope.interface import implementer

from txtus.web import _twisted_private
from txtus import errors
from txtus.protocol import headers, ietf
from txtus.web.body import UNUSED_BODY_LIMIT, BodyEnd, BufferedBody, StreamingBody
from txtus.config import TusConfig
from txtus.hooks.events import PRE_REQUEST
from txtus.protocol.cors import Cors
from txtus.protocol.handler import Response, TusHandler
from txtus.interfaces import IStreamingBodyResource

log = Logger()

_METHODS = frozenset({b"POST", b"HEAD", b"PATCH", b"GET", b"DELETE", b"OPTIONS"})
_TUS_RESUMABLE = headers.TUS_VERSION.encode("ascii")
_UNVERSIONED = frozenset({b"OPTIONS", b"GET"})
# Statuses tus defines that twisted.web has no phrase for.
_REASONS = {460: b"Checksum Mismatch", 104: b"Upload Resumption Supported"}
_NOT_YET = object()  # not looked up yet


def effective_method(request: Any) -> bytes:
    """The request's method, after C{X-HTTP-Method-Override}."""
    override = request.getHeader(b"x-http-method-override")
    if override is not None:
        candidate = override.strip().upper()
        if candidate in _METHODS:
            return candidate
    return request.method.upper()


@implementer(IStreamingBodyResource)
class TusResource(Resource):
    """
    A tus endpoint.  Mount it anywhere (C{root.putChild(b"files",
    TusResource(config))}): uploads live below the path it is mounted at.
    """

    isLeaf = True

    def __init__(self, config: TusConfig) -> None:
        super().__init__()
        self.config = config
        self.handler = TusHandler(config)
        self.ietf = ietf.IetfDraftHandler(self.handler)
        self.cors = Cors(config.cors)
        self.verbs = {
            b"OPTIONS": self.handler.options,
            b"POST": self.handler.post,
            b"HEAD": self.handler.head,
            b"PATCH": self.handler.patch,
            b"DELETE": self.handler.delete,
            b"GET": self.handler.get,
        }

    def begin_body(self, request: Any) -> StreamingBody | None:
        method = effective_method(request)
        length = request.getHeader(b"content-length")
        body = StreamingBody(request, self.config.reactor, self.config.network_timeout,
                             int(length) if length is not None and length.isdigit() else None,
                             min_rate=self.config.min_upload_rate)
        # Every body is taken from twisted.web, which would spool it whole
        # to a temporary file: the ones a verb stores stream into the store,
        # the others are dropped, up to a small limit.
        draft = ietf.draft_version(request, self.config)
        request.tus_exchange = _Exchange(self, request, method, body, self._stores_body(request, method, draft),
                                         draft)
        return body

    def _stores_body(self, request: Any, method: bytes, draft: int | None) -> bool:
        """Whether the verb for this request stores its body."""
        if draft is not None:
            # Draft creation may be any content-carrying method, any type.
            return method in (b"POST", b"PUT", b"PATCH")
        if method == b"POST":
            try:
                media = headers.media_type(headers.content_type(request))
            except errors.TusError:
                return True  # ambiguous: the verb refuses it before reading
            return media == headers.OFFSET_OCTET_STREAM
        return method == b"PATCH"

    def render(self, request: Any) -> Any:
        exchange = getattr(request, "tus_exchange", None)
        if exchange is None:
            method = effective_method(request)
            body = None
            if method in (b"PATCH", b"POST", b"PUT") and request.content is not None:
                body = BufferedBody(request.content)
            exchange = request.tus_exchange = _Exchange(self, request, method, body)
        exchange.rendered()
        return NOT_DONE_YET


class _Exchange:
    """
    One request's life: runs the verb as soon as it can (for a streamed
    body, when the headers are in) and writes the response once that is
    safe: after the body was read, or at once with C{Connection: close}
    when the body will not be read.
    """

    def __init__(self, resource: TusResource, request: Any, method: bytes, body: Any,
                 body_stored: bool = True, draft: int | None | object = _NOT_YET) -> None:
        self.resource = resource
        self.request = request
        self.method = method
        self.body = body
        self._body_stored = body_stored
        self.upload_id: str | None = None
        self._rendered = False
        self._lost = False
        self._written = False
        self._closing_call: Any = None
        self._response: Response | None = None
        self._began = time.perf_counter()
        # The IETF draft interop version this request speaks, if any.
        self.draft = ietf.draft_version(request, resource.config) if draft is _NOT_YET else draft
        request.notifyFinish().addBoth(self._request_over)
        # _handled may write the response, and writing can raise (a store
        # failing to open a download): that must still end in an answer.
        ensureDeferred(self._run()).addBoth(self._handled).addErrback(self._abort)

    async def _run(self) -> Response:
        request = self.request
        body = self.body
        if body is not None and not self._body_stored:
            await _drop_unused(body)
            body = None
        postpath = [segment for segment in request.postpath if segment]
        if len(postpath) > 1:
            raise errors.UploadNotFound()
        if postpath:
            upload_id = postpath[0].decode("latin-1")
            if not self.resource.config.composer.is_valid_upload_id(upload_id):
                raise errors.UploadNotFound()
            self.upload_id = upload_id
        self.resource.cors.check(request)
        if self.draft is not None:
            await self._pre_request()
            return await self.resource.ietf.handle(self.method, request, self.upload_id, body, self.draft)
        verb = self.resource.verbs.get(self.method)
        if verb is None:
            raise errors.MethodNotAllowed(headers={"Allow": "POST, HEAD, PATCH, GET, DELETE, OPTIONS"})
        if self.method not in _UNVERSIONED and request.getHeader(b"tus-resumable") != _TUS_RESUMABLE:
            raise errors.UnsupportedVersion(headers={"Tus-Version": headers.TUS_VERSION})
        await self._pre_request()
        return await verb(request, self.upload_id, body)

    async def _pre_request(self) -> None:
        """The pre-request hook: per-request authorisation, before the verb runs."""
        hooks = self.resource.handler.hooks
        if self.method != b"OPTIONS" and hooks.enabled(PRE_REQUEST):
            await hooks.pre_request(self.request, self.upload_id, self.resource.config.composer.core)

    def _handled(self, result: Response | Failure) -> None:
        if isinstance(result, Failure):
            result = self._error_response(result)
        self._response = result
        self.resource.config.metrics.request_done(self.method, result.status, time.perf_counter() - self._began)
        if self.body is not None and self.body.end is None and not self.body.started:
            self.body.discard_or_stop()
        self._maybe_write()

    def _error_response(self, failure: Failure) -> Response:
        error = failure.value
        if not isinstance(error, errors.TusError):
            log.failure("{method} {upload_id}: unexpected error", failure,
                        method=self.method.decode("latin-1"), upload_id=self.upload_id or "-")
            error = errors.InternalServerError()
        elif not self._lost:
            log.info("{method} {upload_id}: {status} {code}", method=self.method.decode("latin-1"),
                     upload_id=self.upload_id or "-", status=error.status, code=error.code)
        self.resource.config.metrics.error(error.code)
        response = Response(error.status, {b"content-type": error.content_type}, error.body())
        for name, value in error.headers.items():
            response.headers[name.lower().encode("latin-1")] = value.encode("latin-1")
        return response

    def rendered(self) -> None:
        self._rendered = True
        self._maybe_write()

    def _request_over(self, result: None | Failure) -> None:
        """
        The request was answered, or its connection lost.  It need not
        reach this exchange any more; the reference cycle between them
        would leave both, and everything they hold, to the garbage
        collector (about a tenth of a small upload's CPU went there).
        """
        self.request.tus_exchange = None
        if isinstance(result, Failure):
            self._lost = True

    def _maybe_write(self) -> None:
        if self._written or self._lost or self._response is None:
            return
        if self._rendered:
            try:
                self._write(self._response)
            except Exception:
                self._abort(Failure())
        elif self.body is not None and self.body.needs_close and self._closing_call is None:
            # The rest of the body will never be read: answer now and close,
            # from a fresh reactor turn (never from inside the channel's
            # header or body parsing).
            self._closing_call = self.resource.config.reactor.callLater(0, self._write_closing)

    def _write_closing(self) -> None:
        if self._written or self._lost:
            return
        _twisted_private.close_after_response(self.request)
        self.request.setHeader(b"date", datetimeToString())
        try:
            self._write(self._response)
        except Exception:
            self._abort(Failure())

    def _write(self, response: Response) -> None:
        self._written = True
        request = self.request
        request.setResponseCode(response.status, _REASONS.get(response.status))
        set_header = request.responseHeaders.setRawHeaders
        if self.draft is None:
            set_header(b"tus-resumable", [_TUS_RESUMABLE])
        else:
            set_header(ietf.INTEROP_HEADER, [b"%d" % self.draft])
        set_header(b"x-content-type-options", [b"nosniff"])
        for name, value in response.headers.items():
            set_header(name, [value])
        self.resource.cors.apply(request, preflight=self.method == b"OPTIONS")
        if response.send is not None:
            maybeDeferred(response.send, request).addCallbacks(self._sent, self._send_failed).addErrback(self._abort)
            return
        request.defaultContentType = None
        if response.status not in (204, 304):
            set_header(b"content-length", [b"%d" % len(response.body)])
        if response.body:
            request.write(response.body)
        request.finish()

    def _sent(self, ignored: Any) -> None:
        if not self._lost:
            self.request.finish()

    def _send_failed(self, failure: Failure) -> None:
        if failure.check(ConnectionLost) or self._lost:
            return  # the client went away mid-download
        if self.request.startedWriting:
            log.failure("download of {upload_id} failed", failure, upload_id=self.upload_id)
            self.request.loseConnection()
        else:
            # Nothing was sent yet (the store could not even start reading):
            # the download's headers give way to the error's.
            self.request.responseHeaders = Headers()
            self._write(self._error_response(failure))

    def _abort(self, failure: Failure) -> None:
        """
        Last resort for a failure while answering: log it, then answer 500
        if no byte of the response was sent, else close the connection.
        """
        log.failure("{method} {upload_id}: could not answer", failure,
                    method=self.method.decode("latin-1"), upload_id=self.upload_id or "-")
        request = self.request
        if self._lost or request.finished:
            return
        if not request.startedWriting:
            try:
                request.responseHeaders = Headers()
                self._write(self._error_response(Failure(errors.InternalServerError())))
                return
            except Exception:
                log.failure("{upload_id}: could not answer 500", upload_id=self.upload_id or "-")
        request.loseConnection()


_UNUSED_BODY_ERRORS = {
    BodyEnd.OVERFLOW: errors.RequestBodyTooLarge,
    BodyEnd.TIMEOUT: errors.ReadTimeout,
    BodyEnd.DISCONNECTED: errors.UnexpectedEOF,
}


async def _drop_unused(body: StreamingBody) -> None:
    """
    Read and drop the body of a request whose verb stores none, before the
    verb runs (as twisted.web would, but bounded): a body declared or found
    larger than L{UNUSED_BODY_LIMIT} is refused with 413.
    """
    if body.length is not None and body.length > UNUSED_BODY_LIMIT:
        raise errors.RequestBodyTooLarge()

    def drop(data: bytes) -> None:
        if body.received > UNUSED_BODY_LIMIT:
            body.stop(BodyEnd.OVERFLOW)

    end = await body.start(drop)
    if end is not BodyEnd.COMPLETE:
        raise _UNUSED_BODY_ERRORS.get(end, errors.UploadStopped)()
