"""
The listen backlog: a burst of clients connecting at once is queued by the
kernel, not dropped (a dropped SYN is retried only after a second, the
second-long tail the benchmark saw with Twisted's default backlog of 50).
"""

from __future__ import annotations

import os
import select
import signal
import socket
import time
from pathlib import Path

from faultkit import TwistProcess
from txtus.service import LISTEN_BACKLOG, with_backlog

BURST = 200  # a page starting 200 uploads at once; well under LISTEN_BACKLOG


def test_endpoint_strings_get_a_backlog_unless_they_name_one() -> None:
    assert with_backlog("tcp:1080") == f"tcp:1080:backlog={LISTEN_BACKLOG}"
    assert with_backlog("tcp:1080:interface=127.0.0.1") == f"tcp:1080:interface=127.0.0.1:backlog={LISTEN_BACKLOG}"
    assert with_backlog("unix:/run/tus.sock") == f"unix:/run/tus.sock:backlog={LISTEN_BACKLOG}"
    assert with_backlog("ssl:443:privateKey=k.pem") == f"ssl:443:privateKey=k.pem:backlog={LISTEN_BACKLOG}"
    assert with_backlog("tcp:1080:backlog=5") == "tcp:1080:backlog=5"
    assert with_backlog("systemd:domain=INET:index=0") == "systemd:domain=INET:index=0"


def test_a_burst_of_connections_is_queued_while_the_server_is_busy(tmp_path: Path) -> None:
    server = TwistProcess(tmp_path / "uploads", tmp_path)
    sockets: list[socket.socket] = []
    try:
        # A stopped process accepts nothing: only the backlog holds the
        # handshakes, as it does while the reactor is busy.
        os.kill(server.process.pid, signal.SIGSTOP)
        for _ in range(BURST):
            s = socket.socket()
            s.setblocking(False)
            s.connect_ex(("127.0.0.1", server.port))
            sockets.append(s)
        pending = {s.fileno(): s for s in sockets}
        poller = select.poll()  # not select(): the suite may hold more than 1024 descriptors
        for fd in pending:
            poller.register(fd, select.POLLOUT)
        connected = 0
        deadline = time.monotonic() + 10  # a dropped SYN never completes while the server is stopped
        while pending and time.monotonic() < deadline:
            writable = [fd for fd, _ in poller.poll(500)]
            for fd in writable:
                poller.unregister(fd)
                s = pending.pop(fd)
                connected += s.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR) == 0
            if not writable and connected >= min(BURST, 51):
                break  # what is still pending was dropped (Twisted's default queues 51)
        assert connected == BURST
    finally:
        os.kill(server.process.pid, signal.SIGCONT)
        for s in sockets:
            s.close()
        server.stop()
