"""
Graceful shutdown: what L{txtus.service.TusService.stopService} does, and
the signal handling C{twist tus} adds so that a second signal cuts short.

Stopping a site (L{drain}) means: new requests, also on connections that
are already open, get C{503 ERR_SERVER_SHUTDOWN} with C{Connection: close};
requests in flight get C{timeout} seconds to finish; then their bodies are
cut the way a disconnected client's are (what arrived is committed, so the
stored bytes and the offset agree) and they answer 503.  Their locks are
released as each request ends.

Under C{twist}, SIGINT and SIGTERM make the reactor stop, which runs
C{stopService}; the reactor's own handler would make a second signal a
logged error that changes nothing, and makes C{twist} exit by re-raising
the signal.  L{ShutdownSignals} handles both signals instead: the first
stops the reactor (so C{twist} exits 0 once the site is drained), the
second cuts every body at once.
"""

from __future__ import annotations

import signal
import threading
from typing import Any

from twisted.application.service import Service
from twisted.internet.defer import Deferred
from twisted.internet.error import ReactorNotRunning
from txtus.logs import Logger

from txtus.web.body import BodyEnd
from txtus.web import _twisted_private
from txtus.web.streaming import TusSite

log = Logger()

# Once bodies are cut, requests only commit and answer; if some store or
# lock still holds one after this long, stop waiting for it.
AFTER_CUT = 5.0


class Drain:
    """
    One site's graceful stop; L{cut} ends the grace period early.

    @ivar done: fires (with L{None}) when every request has ended and
        every connection is closed, or at the latest C{AFTER_CUT} seconds
        after the bodies were cut.
    """

    def __init__(self, site: TusSite, timeout: float, clock: Any) -> None:
        self._site = site
        self._clock = clock
        self.done: Deferred = Deferred()
        self._calls: list[Any] = []
        self._cut = False
        self._give_up_call: Any = None
        site.draining = True
        pending = len(site.in_flight)
        if pending:
            log.info("shutting down: waiting up to {timeout} s for {count} request(s) in flight",
                     timeout=timeout, count=pending)
        self._calls.append(clock.callLater(timeout, self.cut))
        site.when_idle().addCallback(self._idle)

    def cut(self) -> None:
        """Cut every request body now, keeping what it stored."""
        if self._cut or self.done.called:
            return
        self._cut = True
        self._stop_waiting_soon()
        count = self._site.stop_bodies(BodyEnd.SHUTDOWN)
        if count:
            log.info("shutting down: cut {count} upload(s) in flight", count=count)

    def _stop_waiting_soon(self) -> None:
        if self._give_up_call is None:
            self._give_up_call = self._clock.callLater(AFTER_CUT, self._give_up)
            self._calls.append(self._give_up_call)

    def _give_up(self) -> None:
        if self._site.in_flight:
            log.warn("shutting down: {count} request(s) did not end in time; closing their connections",
                     count=len(self._site.in_flight))
        for protocol in list(self._site.connections):
            transport = _twisted_private.connection_transport(protocol)
            if transport is not None:
                transport.abortConnection()
        self._finish(None)

    def _idle(self, ignored: Any) -> None:
        # Responses may still sit in transport buffers: close connections
        # (idle kept-alive ones too) after they are flushed, as stopping the
        # reactor would drop them.
        self._stop_waiting_soon()
        self._site.close_connections().addCallback(self._finish)

    def _finish(self, ignored: Any) -> None:
        for call in self._calls:
            if call.active():
                call.cancel()
        if not self.done.called:
            self.done.callback(None)


class ShutdownSignals(Service):
    """
    SIGINT / SIGTERM handling for C{twist tus}: the first signal stops the
    reactor (which stops the services, draining the site), a second one
    calls C{cut_now}.  Installed once the reactor runs, replacing the
    reactor's own handlers for these two signals.
    """

    def __init__(self, reactor: Any, cut_now: Any) -> None:
        self._reactor = reactor
        self._cut_now = cut_now
        self._signals = 0

    def startService(self) -> None:
        super().startService()
        self._reactor.callWhenRunning(self._install)

    def _install(self) -> None:
        if threading.current_thread() is not threading.main_thread():
            return
        for number in (signal.SIGINT, signal.SIGTERM):
            signal.signal(number, self._received)

    def _received(self, number: int, frame: Any) -> None:
        # A signal handler: hand over to the reactor thread at once.
        self._signals += 1
        self._reactor.callFromThread(self._act, signal.Signals(number).name, self._signals)

    def _act(self, name: str, count: int) -> None:
        if count == 1:
            log.info("received {signal}: shutting down gracefully (send it again to cut uploads now)",
                     signal=name)
            try:
                self._reactor.stop()
            except ReactorNotRunning:
                pass  # already stopping for another reason
        else:
            log.info("received {signal} again: cutting uploads in flight now", signal=name)
            self._cut_now()
