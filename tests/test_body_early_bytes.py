"""
A streamed body can arrive, whole or cut off, while its request still
waits for the upload's lock: those bytes must reach the store once the
handler starts the body (the lock-release tests over HTTP lost them).
"""

from __future__ import annotations

from twisted.internet.task import Clock
from twisted.web.http_headers import Headers

from txtus.web.body import BodyEnd, StreamingBody


class _NoChannel:
    """A request whose connection is not there to pause."""

    channel = None


def _start(body):
    got, ends = [], []
    body.start(got.append).addCallback(ends.append)
    return got, ends


def test_body_completed_before_start_is_delivered():
    body = StreamingBody(_NoChannel(), Clock(), 0, 9)
    body.chunk(b"abc")
    body.chunk(b"defghi")
    body.ended(Headers())
    got, ends = _start(body)
    assert b"".join(got) == b"abcdefghi"
    assert ends == [BodyEnd.COMPLETE]


def test_body_cut_off_before_start_keeps_what_arrived():
    body = StreamingBody(_NoChannel(), Clock(), 0, 9)
    body.chunk(b"abc")
    body.lost(None)
    got, ends = _start(body)
    assert b"".join(got) == b"abc"
    assert ends == [BodyEnd.DISCONNECTED]


def test_rejected_body_delivers_nothing():
    body = StreamingBody(_NoChannel(), Clock(), 0, 10 * 1024 * 1024)
    body.chunk(b"abc")
    body.discard_or_stop()
    assert body.end is BodyEnd.REJECTED
    got, ends = _start(body)
    assert got == []
    assert ends == [BodyEnd.REJECTED]
