"""
Request bodies as push producers, and the pump that moves them into a
store's L{IChunkWriter}.

Two sources exist: L{StreamingBody}, fed chunk by chunk by
L{txtus.web.streaming.TusRequest} while the body arrives (the fast path, with
TCP backpressure and nothing buffered), and L{BufferedBody}, which replays
the body twisted.web already buffered when txtus is mounted in a plain
C{Site}.  The handler sees the same interface either way.
"""

from __future__ import annotations

import enum
from typing import Any, Callable

from twisted.internet.defer import Deferred, succeed
from twisted.internet.interfaces import IPushProducer
from twisted.internet.task import cooperate
from twisted.web.http_headers import Headers
from zope.interface import implementer

from txtus.web import _twisted_private


class BodyEnd(enum.Enum):
    """Why a body stopped flowing."""

    COMPLETE = "complete"          # every byte arrived
    DISCONNECTED = "disconnected"  # the client went away mid-body
    OVERFLOW = "overflow"          # more bytes than the upload may take
    TIMEOUT = "timeout"            # no bytes for the network timeout
    INTERRUPTED = "interrupted"    # another request asked for the lock
    STOPPED = "stopped"            # the store or a hook stopped it
    REJECTED = "rejected"          # refused before reading it
    MALFORMED = "malformed"        # impossible framing (a chunk size past 2**64)
    SHUTDOWN = "shutdown"          # the server is shutting down


# The largest chunk size a chunked body may announce: 16 hex digits.  Twisted
# accepts any number; a bigger one is an attack or a broken client.
MAX_CHUNK_SIZE = (1 << 64) - 1


# A rejected body no larger than this is read and dropped, so the
# connection can be kept; a larger one gets its connection closed.
DRAIN_LIMIT = 64 * 1024

# The largest body a request that stores none (HEAD, GET, DELETE, a POST
# that is not an upload...) may carry: it is read and dropped; a larger one
# is refused with 413, before any byte of it is read if its length is
# declared.
UNUSED_BODY_LIMIT = 64 * 1024


@implementer(IPushProducer)
class StreamingBody:
    """
    A request body arriving from the network.  Until a receiver is
    attached, at most one socket read of it is kept: the first bytes that
    arrive before then pause reading, so nothing piles up while the upload
    is locked and looked up; after that, the receiver's C{pauseProducing}
    pauses the socket.

    Reading is not paused as soon as the headers end: with the stores and
    lockers that answer at once, the handler attaches its receiver while
    the header block is still being parsed, and pausing then resuming the
    socket for every request cost two C{epoll_ctl} calls and their Python
    overhead on every small upload.
    """

    def __init__(self, request: Any, clock: Any, network_timeout: float, length: int | None,
                 min_rate: float = 0.0) -> None:
        self._request = request
        self._clock = clock
        self._timeout = network_timeout
        # Bytes per second a body must average over each network_timeout
        # window (0: any progress will do).  Without it a client sending a
        # byte every few seconds holds its connection and upload for ever.
        self._min_rate = min_rate
        self._window = (0.0, 0)
        self.length = length
        self.received = 0
        # Body bytes the upload can still take (set by the handler once it
        # knows; L{None}: no limit).  Checked against each announced chunk.
        self.max_bytes: int | None = None
        self._announced_end = 0
        self.trailers = Headers()
        self.end: BodyEnd | None = None
        self._pending: list[bytes] = []
        self._receiver: Callable[[bytes], None] | None = None
        self._done: Deferred | None = None
        self._paused = False
        self._consumer_paused = False
        self._watchdog: Any = None
        self._last_progress = 0.0
        # The body's watchdog (which knows when the store, not the client,
        # is the slow one) replaces the channel's idle timeout meanwhile.
        self._idle_timeout = _twisted_private.suspend_idle_timeout(request) if network_timeout else None

    # Fed by TusRequest -------------------------------------------------

    def chunk(self, data: bytes) -> None:
        self.received += len(data)
        self._last_progress = self._clock.seconds()
        if self._receiver is not None:
            self._receiver(data)
        elif self.end is None:
            self._pending.append(data)
            self._pause_reading()

    def chunk_announced(self, size: int) -> None:
        """
        A chunked body's chunk-size line said C{size}, and no byte of that
        chunk has been delivered yet: refuse an impossible or oversized
        chunk now, before any of it is stored.
        """
        self._announced_end = self.received + size
        if size > MAX_CHUNK_SIZE:
            self._finish(BodyEnd.MALFORMED)
        else:
            self._check_announced()

    def _check_announced(self) -> None:
        if self.max_bytes is not None and self._announced_end > self.max_bytes:
            self._finish(BodyEnd.OVERFLOW)

    def ended(self, trailers: Headers) -> None:
        self.trailers = trailers
        self._finish(BodyEnd.COMPLETE)

    def lost(self, reason: Any) -> None:
        self._finish(BodyEnd.DISCONNECTED)

    # Used by the handler -----------------------------------------------

    def start(self, receiver: Callable[[bytes], None]) -> Deferred:
        """
        Deliver the body to C{receiver} from now on.

        @return: a Deferred firing with the L{BodyEnd} once no more bytes
            will come.
        """
        done = self._done = Deferred()
        self._check_announced()  # a chunk announced while the lock was awaited
        pending, self._pending = self._pending, []
        self._receiver = receiver
        if self.end is None and getattr(self._request, "expects_continue", False):
            _twisted_private.write_informational(self._request, 100, b"Continue", [])
        for data in pending:
            receiver(data)  # may end the body (overflow, a failing writer)
        if self.end is not None:
            self._receiver = None
            if self._done is not None:
                self._done = None
                done.callback(self.end)
            return done
        self._resume_reading()
        self._last_progress = self._clock.seconds()
        if self._timeout:
            self._window = (self._last_progress, self.received)
            self._watchdog = self._clock.callLater(self._timeout, self._check_progress)
        return self._done

    def stop(self, why: BodyEnd) -> None:
        """Stop reading the body; what was delivered stays delivered."""
        self._finish(why)

    def discard_or_stop(self) -> None:
        """
        The handler refused the request before reading its body: read and
        drop a small body (keeping the connection), stop a large one.
        """
        if self.end is not None:
            return
        remaining = None if self.length is None else self.length - self.received
        waiting = getattr(self._request, "expects_continue", False)
        if remaining is not None and remaining <= DRAIN_LIMIT and not waiting:
            self._pending = []
            self._receiver = _drop
            self._restore_idle_timeout(body_complete=False)  # no watchdog here
            self._resume_reading()
        else:
            self._finish(BodyEnd.REJECTED)

    @property
    def started(self) -> bool:
        return self._receiver is not None

    def silent_for(self, now: float) -> float:
        """
        Seconds the client has sent nothing while we were reading.  Zero
        before reading starts, while the store holds the body paused and
        after it ended: only the client's silence counts.
        """
        if self._receiver is None or self._consumer_paused or self.end is not None:
            return 0.0
        return max(0.0, now - self._last_progress)

    @property
    def needs_close(self) -> bool:
        """Whether the response must close the connection (body unread)."""
        return self.end not in (None, BodyEnd.COMPLETE, BodyEnd.DISCONNECTED)

    # IPushProducer, for the chunk writer ---------------------------------

    def pauseProducing(self) -> None:
        self._consumer_paused = True
        self._pause_reading()

    def resumeProducing(self) -> None:
        self._consumer_paused = False
        if self._receiver is not None:
            self._last_progress = self._clock.seconds()
            self._resume_reading()

    def stopProducing(self) -> None:
        self._finish(BodyEnd.STOPPED)

    # Internals ---------------------------------------------------------

    def _finish(self, why: BodyEnd) -> None:
        if self.end is not None:
            return
        self.end = why
        if why not in (BodyEnd.COMPLETE, BodyEnd.DISCONNECTED):
            self._pending = []
        # else bytes that arrived while the handler was not ready yet (the
        # lock was held elsewhere) are still part of the body: start()
        # delivers them.
        if why is not BodyEnd.COMPLETE or self._receiver is not None:
            # (Also after the last byte: the receiver, which holds this
            # body, is not needed any more, and a cycle would leave the
            # request to the garbage collector.)
            self._receiver = _drop
        if self._watchdog is not None and self._watchdog.active():
            self._watchdog.cancel()
        self._watchdog = None
        if why is not BodyEnd.DISCONNECTED:
            self._restore_idle_timeout(body_complete=why is BodyEnd.COMPLETE)
        if why not in (BodyEnd.COMPLETE, BodyEnd.DISCONNECTED):
            # A rejected or stopped body stays unread: its response closes
            # the connection, so stop reading what would be thrown away.
            self._pause_reading()
        if self._done is not None:
            done, self._done = self._done, None
            done.callback(why)

    def _check_progress(self) -> None:
        # Bytes record when they arrived (in chunk), so the timeout counts
        # from the last byte, not from when a check happened to notice it.
        now = self._clock.seconds()
        if self._consumer_paused:
            # Waiting for the store, not the client.
            self._last_progress = now
            self._window = (now, self.received)
        idle = now - self._last_progress
        too_slow = False
        next_check = self._timeout - idle
        if self._min_rate:
            since, count = self._window
            elapsed = now - since
            if elapsed >= self._timeout:
                too_slow = self.received - count < self._min_rate * elapsed
                self._window = (now, self.received)
                elapsed = 0.0
            next_check = min(next_check, self._timeout - elapsed)
        if idle >= self._timeout or too_slow:
            self._watchdog = None
            self._finish(BodyEnd.TIMEOUT)
            return
        self._watchdog = self._clock.callLater(next_check, self._check_progress)

    def _restore_idle_timeout(self, body_complete: bool) -> None:
        timeout, self._idle_timeout = self._idle_timeout, None
        if timeout is not None:
            _twisted_private.restore_idle_timeout(self._request, timeout, body_complete)

    def _pause_reading(self) -> None:
        if not self._paused:
            producer = _twisted_private.transport_producer(self._request)
            if producer is not None:
                producer.pauseProducing()
                self._paused = True

    def _resume_reading(self) -> None:
        if self._paused and not self._consumer_paused:
            self._paused = False
            producer = _twisted_private.transport_producer(self._request)
            if producer is not None:
                producer.resumeProducing()


def _drop(data: bytes) -> None:
    pass


@implementer(IPushProducer)
class BufferedBody:
    """
    A body twisted.web has already read whole (into memory or a temporary
    file), replayed in 64 KiB pieces.  Used when txtus is mounted in a plain
    C{Site}: bytes of an interrupted request never reach us there.
    """

    CHUNK = 64 * 1024

    def __init__(self, content: Any) -> None:
        self._content = content
        self.trailers = Headers()
        self.end: BodyEnd | None = None
        self.received = 0
        self.max_bytes: int | None = None  # the handler's limit; the pump enforces it
        content.seek(0, 2)
        self.length: int | None = content.tell()
        content.seek(0, 0)
        self._task: Any = None
        self._done: Deferred | None = None

    def start(self, receiver: Callable[[bytes], None]) -> Deferred:
        if self.end is not None:
            return succeed(self.end)
        self._done = Deferred()

        def pieces():
            while self.end is None:
                data = self._content.read(self.CHUNK)
                if not data:
                    self._finish(BodyEnd.COMPLETE)
                    return
                self.received += len(data)
                receiver(data)
                yield None

        self._task = cooperate(pieces())
        self._task.whenDone().addErrback(lambda f: None)
        return self._done

    def stop(self, why: BodyEnd) -> None:
        self._finish(why)

    def discard_or_stop(self) -> None:
        self._finish(BodyEnd.COMPLETE)

    needs_close = False

    @property
    def started(self) -> bool:
        return self._task is not None

    def silent_for(self, now: float) -> float:
        """Never: every byte is already here."""
        return 0.0

    def pauseProducing(self) -> None:
        if self._task is not None and self.end is None:
            self._task.pause()

    def resumeProducing(self) -> None:
        if self._task is not None and self.end is None:
            self._task.resume()

    def stopProducing(self) -> None:
        self._finish(BodyEnd.STOPPED)

    def _finish(self, why: BodyEnd) -> None:
        if self.end is not None:
            return
        self.end = why
        if self._done is not None:
            done, self._done = self._done, None
            done.callback(why)
