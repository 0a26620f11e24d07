"""
Graceful shutdown of a C{twist tus} subprocess: SIGTERM or SIGINT
mid-upload stops accepting, answers new requests on open connections with
503 and C{Connection: close}, lets a body in flight finish within
C{--shutdown-timeout} or cuts it keeping what it stored, and exits 0; a
second signal cuts at once.  Each upload is resumed afterwards by a
restarted server, and nothing is lost.
"""

from __future__ import annotations

import signal
import socket

import pytest

from tests import faultkit

DATA = bytes(range(256)) * 1024  # 256 KiB


def keep_alive_request(method: bytes, target: bytes) -> bytes:
    return method + b" " + target + b" HTTP/1.1\r\nHost: 127.0.0.1\r\nTus-Resumable: 1.0.0\r\n\r\n"


def read_reply(sock: socket.socket) -> faultkit.Reply:
    """One response on a kept-alive connection (no body expected beyond Content-Length)."""
    raw = b""
    while True:
        reply = faultkit.parse_reply(raw)
        if reply is not None and len(reply.body) >= int(reply.header(b"content-length") or 0):
            return reply
        data = sock.recv(65536)
        assert data, f"connection closed after {raw!r}"
        raw += data


def start_patch(port: int, upload_id: str, sent: int) -> socket.socket:
    """A PATCH announcing the whole of DATA, of which C{sent} bytes go out now."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=faultkit.WAIT)
    sock.sendall(faultkit.patch_request(upload_id, 0, DATA[:sent], length=len(DATA)))
    return sock


def read_to_close(sock: socket.socket) -> faultkit.Reply:
    raw = faultkit.read_until_closed(sock)
    reply = faultkit.parse_reply(raw)
    assert reply is not None, raw
    return reply


def signal_and_wait_for_drain(server: faultkit.TwistProcess, number: int) -> None:
    server.process.send_signal(number)
    faultkit.wait_until(lambda: "shutting down: waiting" in server.log.read_text(), "the drain to start")


def exits_zero(server: faultkit.TwistProcess) -> None:
    assert server.process.wait(faultkit.WAIT) == 0, server.log_text()[-3000:]


@pytest.mark.parametrize("number", [signal.SIGTERM, signal.SIGINT])
def test_body_in_flight_finishes_and_new_requests_get_503(tmp_path, number):
    server = faultkit.TwistProcess(tmp_path / "uploads", tmp_path, "--shutdown-timeout", "30")
    port = server.port
    upload_id = faultkit.create(port, len(DATA))
    idle = socket.create_connection(("127.0.0.1", port), timeout=faultkit.WAIT)
    idle.sendall(keep_alive_request(b"HEAD", faultkit.target(upload_id)))
    assert read_reply(idle).status == 200  # kept alive, idle from now on
    body = start_patch(port, upload_id, 100_000)
    faultkit.wait_until(lambda: server.stored_size(upload_id) == 100_000, "the first bytes to be stored")

    signal_and_wait_for_drain(server, number)
    # Not accepting any more.
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", port), timeout=faultkit.WAIT).close()
    # A new request on a connection opened before: 503, and the connection closes.
    idle.sendall(keep_alive_request(b"OPTIONS", b"/files/"))
    refused = read_to_close(idle)
    assert refused.status == 503
    assert refused.header(b"connection") == b"close"
    assert refused.body.startswith(b"ERR_SERVER_SHUTDOWN")
    idle.close()
    assert server.alive()
    # The body in flight may still finish.
    body.sendall(DATA[100_000:])
    reply = read_to_close(body)
    assert (reply.status, reply.offset) == (204, len(DATA))
    assert reply.header(b"connection") == b"close"
    body.close()
    exits_zero(server)

    assert server.stored(upload_id) == DATA
    server.restart()
    try:
        assert faultkit.head(server.port, upload_id).offset == len(DATA)
        server.assert_clean_log()
    finally:
        server.stop()


@pytest.mark.parametrize("grace, signals", [
    ("0.5", 1),  # the grace period ends without more bytes
    ("600", 2),  # far longer than the test may wait: only the second signal cuts in time
])
def test_body_cut_keeps_what_arrived_and_resumes(tmp_path, grace, signals):
    server = faultkit.TwistProcess(tmp_path / "uploads", tmp_path, "--shutdown-timeout", grace)
    upload_id = faultkit.create(server.port, len(DATA))
    body = start_patch(server.port, upload_id, 70_000)
    faultkit.wait_until(lambda: server.stored_size(upload_id) == 70_000, "the first bytes to be stored")

    signal_and_wait_for_drain(server, signal.SIGTERM)
    if signals == 2:
        server.process.send_signal(signal.SIGTERM)
    reply = read_to_close(body)
    body.close()
    assert reply.status == 503
    assert reply.body.startswith(b"ERR_SERVER_SHUTDOWN")
    exits_zero(server)

    server.restart()
    try:
        assert faultkit.head(server.port, upload_id).offset == 70_000
        assert faultkit.resume(server.port, upload_id, DATA).offset == len(DATA)
        assert server.stored(upload_id) == DATA
        server.assert_clean_log()
    finally:
        server.stop()


def test_idle_server_exits_zero_at_once(tmp_path):
    server = faultkit.TwistProcess(tmp_path / "uploads", tmp_path, "--shutdown-timeout", "600")
    faultkit.create(server.port, 10)
    server.process.send_signal(signal.SIGTERM)
    exits_zero(server)
    server.assert_clean_log()



def test_idle_kept_alive_connections_are_closed_at_once(tmp_path):
    """
    Connections idle between requests are closed as soon as nothing is in
    flight, with a FIN, not held until the give-up delay and then reset.
    (twisted.web's per-connection protocol keeps its transport on the
    channel it wraps: closing through it did nothing, and every stop took
    AFTER_CUT = 5 s more.)
    """
    import time

    server = faultkit.TwistProcess(tmp_path / "uploads", tmp_path, "--shutdown-timeout", "600")
    idle = socket.create_connection(("127.0.0.1", server.port), timeout=faultkit.WAIT)
    idle.sendall(keep_alive_request(b"OPTIONS", b"/files/"))
    assert read_reply(idle).status == 200
    started = time.monotonic()
    server.process.send_signal(signal.SIGTERM)
    assert idle.recv(1) == b""  # an orderly close
    exits_zero(server)
    assert time.monotonic() - started < 2.0
    idle.close()
    server.assert_clean_log()

# Drain, on a real TusSite with a Clock ----------------------------------------

class _StuckBody:
    """A body whose request never ends, even once stopped (a store that hangs)."""

    end = None

    def stop(self, why):
        self.stopped = why


class _StuckRequest:
    def __init__(self):
        self._tus_body = _StuckBody()


def test_drain_cuts_after_the_timeout_then_gives_up_on_requests_that_hang():
    from twisted.internet.task import Clock
    from twisted.web.resource import Resource

    from txtus.shutdown import AFTER_CUT, Drain
    from txtus.web.body import BodyEnd
    from txtus.web.streaming import TusSite

    clock = Clock()
    site = TusSite(Resource(), reactor=clock)
    request = _StuckRequest()
    site.in_flight.add(request)
    drain = Drain(site, 10.0, clock)
    assert site.draining
    clock.advance(9.9)
    assert not hasattr(request._tus_body, "stopped") and not drain.done.called
    clock.advance(0.1)
    assert request._tus_body.stopped is BodyEnd.SHUTDOWN
    assert not drain.done.called
    clock.advance(AFTER_CUT)
    assert drain.done.called
    assert not clock.getDelayedCalls()


def test_drain_of_an_idle_site_is_done_at_once():
    from twisted.internet.task import Clock
    from twisted.web.resource import Resource

    from txtus.shutdown import Drain
    from txtus.web.streaming import TusSite

    clock = Clock()
    drain = Drain(TusSite(Resource(), reactor=clock), 10.0, clock)
    assert drain.done.called
    assert not clock.getDelayedCalls()
