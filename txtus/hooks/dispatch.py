"""
L{HookDispatcher}: what the protocol handler calls at each point of an
upload's life.  It sends only the enabled events, applies the hook timeout,
turns a hook's answer into what tusd v2 does with it (a rejection with the
hook's status, headers and body; changes to a new upload; a response to
merge; a stop), and turns every way a hook can fail into one
L{txtus.errors.TusError} with a stable code, logged with the upload ID.

Blocking events (C{pre-*}) are awaited; C{post-*} events are sent and
forgotten, so they can neither hold up nor fail a request.  Progress
(C{post-receive}) is sent while a body streams, at most once per interval
per upload, and its answer may stop the body: the bytes already stored
stay.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.defer import Deferred, TimeoutError
from txtus.logs import Logger
from twisted.python.failure import Failure

from txtus import errors
from txtus.hooks.events import (
    PRE_CREATE,
    PRE_FINISH,
    PRE_REQUEST,
    PRE_TERMINATE,
    POST_RECEIVE,
    HookRequest,
    HookResponse,
    HTTPRequest,
    HTTPResponse,
)
from txtus.hooks.inprocess import call_hook
from txtus.info import UploadInfo
from txtus.interfaces import IDataStore, IHookHandler, IMetrics
from txtus.metrics import NO_METRICS
from txtus.protocol.headers import is_valid_upload_id
from txtus.web.body import BodyEnd

log = Logger()


class HookDispatcher:
    """
    @param handler: where events go; L{None} turns every hook off.
    @param events: the enabled event names.
    @param timeout: seconds a hook may take before it is cancelled; 0 for
        no limit.
    @param progress_interval: least seconds between two C{post-receive}
        events of one upload.
    @param metrics: counts hook calls and failures by event.
    """

    def __init__(self, handler: IHookHandler | None, events: frozenset[str], timeout: float,
                 progress_interval: float, reactor: Any, metrics: IMetrics = NO_METRICS) -> None:
        self._handler = handler
        self._metrics = metrics
        self._events = events if handler is not None else frozenset()
        self._timeout = timeout
        self.progress_interval = progress_interval
        self.reactor = reactor
        # Upload ID -> when its last post-receive went out.
        self.progress_sent: dict[str, float] = {}

    def enabled(self, event: str) -> bool:
        return event in self._events

    def invoke(self, event: str, request: Any, info: UploadInfo,
               http_request: HTTPRequest | None = None) -> Deferred:
        """
        Send one event.

        @return: a Deferred firing with the L{HookResponse}, or failing with
            a L{txtus.errors.TusError} (already logged).
        """
        if http_request is None:
            http_request = snapshot(request)
        hook_request = HookRequest(event, info.copy(), http_request)
        self._metrics.hook_called(event)
        result = call_hook(self._handler, hook_request, self.reactor)
        if self._timeout and not result.called:
            result.addTimeout(self._timeout, self.reactor)
        return result.addErrback(self._failed, event, info.id)

    def _failed(self, failure: Failure, event: str, upload_id: str) -> Failure:
        if failure.check(TimeoutError):
            error: errors.TusError = errors.HookTimeout(f"the {event} hook did not answer within {self._timeout:g} s")
        elif failure.check(errors.HookFailed, errors.HookTimeout, errors.HookInvalidResponse):
            error = failure.value
        elif failure.check(errors.TusError):
            # An in-process hook's deliberate answer (UploadRejected...).
            log.info("{event} hook for upload {upload_id} answered {code}", event=event,
                     upload_id=upload_id or "-", code=failure.value.code)
            return failure
        else:
            log.failure("{event} hook for upload {upload_id} raised", failure, event=event,
                        upload_id=upload_id or "-")
            error = errors.HookFailed(f"the {event} hook failed")
        self._metrics.hook_failed(event)
        log.error("{event} hook for upload {upload_id} failed: {code}: {message}", event=event,
                  upload_id=upload_id or "-", code=error.code, message=error.message)
        return Failure(error)

    def notify(self, event: str, request: Any, info: UploadInfo) -> None:
        """Send a C{post-*} event without waiting; a failure is only logged."""
        if event in self._events:
            self.invoke(event, request, info).addErrback(lambda failure: None)

    # Blocking events ---------------------------------------------------

    async def pre_request(self, request: Any, upload_id: str | None, core: IDataStore) -> None:
        """
        Ask whether C{request} may go ahead, showing the hook the upload's
        current info (only its ID when there is no such upload).

        @raise txtus.errors.TusError: refused (C{RejectRequest}: 403
            C{ERR_REQUEST_REJECTED}, or the hook's status), or the hook
            failed.
        """
        info = UploadInfo(id=upload_id or "")
        if upload_id is not None:
            try:
                info = await (await core.get_upload(upload_id)).get_info()
            except errors.UploadNotFound:
                pass
        response: HookResponse = await self.invoke(PRE_REQUEST, request, info)
        if response.reject_request:
            raise response.http_response.apply_to(errors.RequestRejected())

    async def pre_create(self, request: Any, info: UploadInfo) -> HTTPResponse:
        """
        Ask whether an upload described by C{info} may be created, and apply
        the hook's C{ChangeFileInfo} to C{info}.

        @return: the hook's C{HTTPResponse}, to merge into the 201.
        @raise txtus.errors.TusError: rejected (C{ERR_UPLOAD_REJECTED}
            with the hook's response), an invalid change, or the hook
            failed.
        """
        response: HookResponse = await self.invoke(PRE_CREATE, request, info)
        if response.reject_upload:
            raise response.http_response.apply_to(errors.UploadRejected())
        changes = response.change_file_info
        if changes.id:
            if not is_valid_upload_id(changes.id):
                log.error("pre-create hook chose an invalid upload ID {new_id!r}", new_id=changes.id[:100])
                raise errors.HookInvalidResponse("the pre-create hook chose an invalid upload ID")
            info.id = changes.id
        if changes.metadata is not None:
            info.metadata = changes.metadata
        if changes.storage is not None:
            info.storage = changes.storage
        if changes.max_size is not None:
            if info.size is not None and info.size > changes.max_size:
                raise errors.MaxSizeExceeded()
            info.max_size = changes.max_size
        return response.http_response

    async def pre_finish(self, request: Any, info: UploadInfo) -> HTTPResponse:
        response: HookResponse = await self.invoke(PRE_FINISH, request, info)
        return response.http_response

    async def pre_terminate(self, request: Any, info: UploadInfo) -> HTTPResponse:
        """
        @raise txtus.errors.TusError: refused (C{RejectTermination}: 400
            C{ERR_UPLOAD_TERMINATION_REJECTED}, or the hook's status), or
            the hook failed.
        """
        response: HookResponse = await self.invoke(PRE_TERMINATE, request, info)
        if response.reject_termination:
            raise response.http_response.apply_to(errors.TerminationRejected())
        return response.http_response

    # Progress ----------------------------------------------------------

    def watch(self, request: Any, info: UploadInfo, offset: int, body: Any) -> "Progress | None":
        """A L{Progress} for a body about to stream, if post-receive is enabled."""
        if POST_RECEIVE not in self._events:
            return None
        return Progress(self, request, info, offset, body)


class Progress:
    """
    C{post-receive} for one body: every interval while bytes arrive, and
    once more with the committed offset when it ends (later, if the upload
    had one less than an interval ago), never more often than once per
    interval for the upload.  A C{StopUpload} answer stops the body while
    it still streams; L{error} then gives the client the hook's response.
    """

    def __init__(self, hooks: HookDispatcher, request: Any, info: UploadInfo, offset: int, body: Any) -> None:
        self._hooks = hooks
        self._info = info
        self._start = offset
        self._body = body
        self._http = snapshot(request)
        self._reported = offset
        self._in_flight = False
        self._streaming = True
        self.stopped: HTTPResponse | None = None
        self._tick_call = hooks.reactor.callLater(hooks.progress_interval, self._tick)

    def _tick(self) -> None:
        offset = self._start + self._body.received
        if self._info.size is not None:
            offset = min(offset, self._info.size)
        if not self._in_flight and offset != self._reported and self._due() <= 0:
            self._send(offset)
        self._tick_call = self._hooks.reactor.callLater(self._hooks.progress_interval, self._tick)

    def _due(self) -> float:
        """Seconds until this upload may have its next post-receive."""
        last = self._hooks.progress_sent.get(self._info.id)
        if last is None:
            return 0.0
        return last + self._hooks.progress_interval - self._hooks.reactor.seconds()

    def _send(self, offset: int) -> None:
        hooks = self._hooks
        now = hooks.reactor.seconds()
        hooks.progress_sent[self._info.id] = now
        hooks.reactor.callLater(hooks.progress_interval, _forget, hooks.progress_sent, self._info.id, now)
        self._reported = offset
        self._in_flight = True
        result = hooks.invoke(POST_RECEIVE, None, self._info.copy(offset=offset), self._http)
        result.addCallbacks(self._answered, lambda failure: None)

    def _answered(self, response: HookResponse) -> None:
        self._in_flight = False
        if response.stop_upload and self._streaming and self.stopped is None:
            log.info("upload {upload_id} stopped by its post-receive hook", upload_id=self._info.id)
            self.stopped = response.http_response
            self._body.stop(BodyEnd.STOPPED)

    def close(self) -> None:
        """The body ended; no more ticks."""
        self._streaming = False
        if self._tick_call.active():
            self._tick_call.cancel()

    def ended(self, offset: int) -> None:
        """Report the offset committed when the body ended."""
        self.close()
        if offset == self._reported:
            return
        due = self._due()
        if due <= 0:
            self._send(offset)
        else:
            since = self._hooks.progress_sent.get(self._info.id)
            self._hooks.reactor.callLater(due, self._trailing, offset, since)

    def _trailing(self, offset: int, since: float | None) -> None:
        # Nothing newer went out meanwhile (another request's progress).
        if self._hooks.progress_sent.get(self._info.id) in (since, None):
            self._send(offset)

    def error(self, default: errors.TusError) -> errors.TusError:
        """The error for a body that did not complete."""
        if self.stopped is None:
            return default
        return self.stopped.apply_to(errors.UploadStopped())


def snapshot(request: Any) -> HTTPRequest:
    """
    The L{HTTPRequest} of C{request} (empty for L{None}), taken once per
    request: every event of a request shows the same headers.
    """
    if request is None:
        return HTTPRequest()
    http = getattr(request, "txtus_hook_request", None)
    if http is None:
        http = request.txtus_hook_request = HTTPRequest.from_request(request)
    return http


def _forget(sent: dict[str, float], upload_id: str, when: float) -> None:
    if sent.get(upload_id) == when:
        del sent[upload_id]
