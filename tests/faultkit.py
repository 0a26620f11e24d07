"""
Helpers for the end-to-end fault tests (C{tests/test_faults.py}): a
C{twist tus} subprocess that can be killed with SIGKILL and restarted on
the same directory, a blocking one-shot HTTP/1.1 client, and a small
single-threaded scheduler of raw connections (L{Conn}, L{run}) that sends
planned pieces of requests at planned times, cuts or resets connections,
and collects what the server answers, so many clients can misbehave at
once without threads.
"""

from __future__ import annotations

import errno
import fcntl
import os
import re
import selectors
import signal
import socket
import struct
import subprocess
import sys
import termios
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
WAIT = 10.0  # seconds any one real event may take
OCTET = b"application/offset+octet-stream"

_STARTED = re.compile(r"starting on ([0-9]+)")


def wait_until(predicate: Any, what: str, timeout: float = WAIT) -> Any:
    """Poll C{predicate} until it is true (returned), or fail after C{timeout}."""
    deadline = time.monotonic() + timeout
    while True:
        result = predicate()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.01)


def wait_read(sock: socket.socket, timeout: float = WAIT) -> None:
    """
    Wait until the server has read every byte sent on C{sock}: none left in
    this side's send queue, none waiting in the server socket's receive
    queue (Linux: C{SIOCOUTQ} and C{/proc/net/tcp}).  Whatever store it
    writes to, a body's bytes are then in the server's hands.
    """
    client_port, server_port = sock.getsockname()[1], sock.getpeername()[1]

    def drained() -> bool:
        unsent = struct.unpack("i", fcntl.ioctl(sock.fileno(), termios.TIOCOUTQ, b"\0" * 4))[0]
        if unsent:
            return False
        with open("/proc/net/tcp") as table:
            for line in table.readlines()[1:]:
                fields = line.split()
                if (int(fields[1].rsplit(":", 1)[1], 16) == server_port
                        and int(fields[2].rsplit(":", 1)[1], 16) == client_port):
                    return int(fields[4].split(":")[1], 16) == 0
        return False

    wait_until(drained, "the server to read what was sent", timeout)


class TwistProcess:
    """
    C{twist tus --path <path>} on an ephemeral loopback port, logging to a
    file per start (C{server-<n>.log}) in C{log_dir}, with C{env} added to
    its environment.  L{restart} starts a new process with the same options
    on the same directory.
    """

    def __init__(self, path: Path, log_dir: Path, *args: str, env: dict[str, str] | None = None,
                 twist_args: tuple[str, ...] = ()) -> None:
        self.path = Path(path)
        self.log_dir = Path(log_dir)
        self.args = args
        self.env = env or {}
        # Options of twist itself (before "tus"), such as --reactor.
        self.twist_args = tuple(twist_args)
        self.starts = 0
        self.process: subprocess.Popen | None = None
        self.port = 0
        self.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/files/"

    @property
    def log(self) -> Path:
        """The current process's log file."""
        return self._log(self.starts)

    def _log(self, n: int) -> Path:
        return self.log_dir / f"server-{n}.log"

    def plugin_args(self) -> list[str]:
        """What follows C{twist}: the plugin and its options."""
        return ["tus", "--path", str(self.path), "--port", "tcp:0:interface=127.0.0.1", *self.args]

    def start(self) -> None:
        assert self.process is None or self.process.poll() is not None
        self.starts += 1
        log = self._log(self.starts)
        env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])),
                   **self.env)
        self._stderr = open(self.log_dir / f"server-{self.starts}.stderr", "wb")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "twisted", "--log-file", str(log), "--log-format", "text", *self.twist_args,
             *self.plugin_args()],
            cwd=self.log_dir, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
            stderr=self._stderr)

        def port() -> int | None:
            if self.process.poll() is not None:
                raise AssertionError(f"twist tus exited with {self.process.returncode}: "
                                     f"{(self.log_dir / f'server-{self.starts}.stderr').read_text()[-2000:]}")
            match = _STARTED.search(log.read_text() if log.exists() else "")
            return int(match.group(1)) if match else None

        self.port = wait_until(port, "twist tus to listen", timeout=20)

    def ports(self) -> list[int]:
        """Every port the current process listens on, in the order of its --port options."""
        return [int(port) for port in _STARTED.findall(self.log.read_text() if self.log.exists() else "")]

    def kill9(self) -> None:
        """SIGKILL: no cleanup, no flush, no goodbye."""
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(WAIT)
        self._stderr.close()

    def restart(self) -> None:
        self.start()

    def stop(self) -> None:
        process = self.process
        if process is None or process.poll() is not None:
            return
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(WAIT)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(WAIT)
        self._stderr.close()

    def open_fds(self) -> int:
        """How many files and sockets the server holds open (Linux /proc)."""
        assert self.process is not None
        return len(os.listdir(f"/proc/{self.process.pid}/fd"))

    def wait_idle(self, baseline: int, timeout: float = WAIT) -> None:
        """
        Wait until the server holds no more open files than C{baseline}:
        every connection it had has been seen to end, and every upload
        file it wrote is closed, so what is on disk is final.
        """
        wait_until(lambda: self.open_fds() <= baseline, "the server to close its connections and files",
                   timeout)

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def log_text(self) -> str:
        """Everything every start logged (and wrote to stderr)."""
        parts = []
        for n in range(1, self.starts + 1):
            for path in (self._log(n), self.log_dir / f"server-{n}.stderr"):
                if path.exists():
                    parts.append(path.read_text(errors="replace"))
        return "\n".join(parts)

    def assert_clean_log(self) -> None:
        text = self.log_text()
        for marker in ("Traceback", "Unhandled", "unexpected error"):
            assert marker not in text, f"{marker!r} in the server log:\n{text[-4000:]}"

    # The store, read directly ---------------------------------------------

    def data_file(self, upload_id: str) -> Path:
        return self.path / upload_id

    def stored(self, upload_id: str) -> bytes:
        return self.data_file(upload_id).read_bytes()

    def stored_size(self, upload_id: str) -> int:
        return self.data_file(upload_id).stat().st_size


# Blocking one-shot requests -----------------------------------------------

@dataclass
class Reply:
    status: int
    headers: dict[bytes, bytes]
    body: bytes

    def header(self, name: bytes) -> bytes | None:
        return self.headers.get(name.lower())

    @property
    def offset(self) -> int | None:
        value = self.header(b"upload-offset")
        return None if value is None else int(value)


def parse_reply(raw: bytes) -> Reply | None:
    """The final (non-1xx) response in C{raw}, or L{None} if there is none."""
    while True:
        end = raw.find(b"\r\n\r\n")
        if end < 0:
            return None
        lines = raw[:end].split(b"\r\n")
        parts = lines[0].split(b" ", 2)
        if len(parts) < 2 or not parts[0].startswith(b"HTTP/1.") or not parts[1].isdigit():
            raise AssertionError(f"bad status line {lines[0][:200]!r}")
        status = int(parts[1])
        raw = raw[end + 4:]
        if status >= 200:
            break
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(b":")
        headers[name.strip().lower()] = value.strip()
    return Reply(status, headers, raw)


def request_bytes(method: bytes, target: bytes, headers: dict[bytes, bytes] | None = None,
                  body: bytes | None = None, length: int | None = None) -> bytes:
    """
    An HTTP/1.1 request with C{Connection: close} and the tus version
    header; C{length} overrides C{Content-Length} (to announce more than is
    sent).
    """
    lines = [method + b" " + target + b" HTTP/1.1", b"Host: 127.0.0.1", b"Tus-Resumable: 1.0.0",
             b"Connection: close"]
    lines += [name + b": " + value for name, value in (headers or {}).items()]
    if body is not None or length is not None:
        lines.append(b"Content-Length: %d" % (len(body or b"") if length is None else length))
    return b"\r\n".join(lines) + b"\r\n\r\n" + (body or b"")


def call(port: int, method: bytes, target: bytes, headers: dict[bytes, bytes] | None = None,
         body: bytes | None = None, timeout: float = WAIT) -> Reply:
    """Send one request, read until the server closes, parse the answer."""
    raw = exchange(port, request_bytes(method, target, headers, body), timeout)
    reply = parse_reply(raw)
    assert reply is not None, f"no answer to {method!r} {target!r}: {raw[:300]!r}"
    return reply


def exchange(port: int, raw: bytes, timeout: float = WAIT) -> bytes:
    """Send raw request bytes and read everything until the server closes."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        try:
            sock.sendall(raw)
        except (BrokenPipeError, ConnectionResetError):
            pass  # answered early and closed; the answer may still be readable
        return read_until_closed(sock)


def read_until_closed(sock: socket.socket) -> bytes:
    """Everything the server sends on C{sock} until it closes (or resets) it."""
    chunks = []
    while True:
        try:
            data = sock.recv(65536)
        except ConnectionResetError:
            break
        if not data:
            break
        chunks.append(data)
    return b"".join(chunks)


def target(upload_id: str) -> bytes:
    return b"/files/" + upload_id.encode("ascii")


def create(port: int, length: int, body: bytes | None = None) -> str:
    """Create an upload (with a creation-with-upload body if given); its ID."""
    headers = {b"Upload-Length": b"%d" % length}
    if body is not None:
        headers[b"Content-Type"] = OCTET
    reply = call(port, b"POST", b"/files/", headers, body)
    assert reply.status == 201, reply
    return reply.header(b"location").rsplit(b"/", 1)[1].decode("ascii")


def head(port: int, upload_id: str) -> Reply:
    reply = call(port, b"HEAD", target(upload_id))
    assert reply.status == 200, reply
    return reply


def patch(port: int, upload_id: str, offset: int, body: bytes) -> Reply:
    return call(port, b"PATCH", target(upload_id),
                {b"Upload-Offset": b"%d" % offset, b"Content-Type": OCTET}, body)


def patch_request(upload_id: str, offset: int, body: bytes, length: int | None = None) -> bytes:
    return request_bytes(b"PATCH", target(upload_id),
                         {b"Upload-Offset": b"%d" % offset, b"Content-Type": OCTET}, body, length)


def resume(port: int, upload_id: str, source: bytes, piece: int = 1 << 20) -> Reply:
    """Finish an upload from wherever HEAD says it stands, in PATCHes of C{piece}."""
    offset = head(port, upload_id).offset
    assert offset is not None
    reply = None
    while offset < len(source):
        reply = patch(port, upload_id, offset, source[offset:offset + piece])
        assert reply.status == 204, reply
        offset = reply.offset
    return reply or head(port, upload_id)


# Many raw connections at once -------------------------------------------

@dataclass
class Conn:
    """
    One client connection following a plan: C{pieces} are C{(delay, bytes)}
    sent C{delay} seconds after the previous piece went out (after the
    connection, for the first; the connection itself is made C{connect_after}
    seconds after L{run} starts, to C{port} if set, else to L{run}'s); then
    C{end}: C{"read"} (wait for the
    server to close), C{"close"} (FIN at once) or C{"reset"} (RST at once).
    """

    pieces: list[tuple[float, bytes]]
    end: str = "read"
    connect_after: float = 0.0
    port: int | None = None
    received: bytes = b""
    sent: int = 0
    send_error: int | None = None
    recv_error: int | None = None
    server_closed: bool = False
    closed_at: float | None = None
    answered_at: float | None = None
    started_at: float = 0.0
    sock: socket.socket | None = None
    _due: float = 0.0
    _current: bytes = b""
    _queue: list[tuple[float, bytes]] = field(default_factory=list)

    @property
    def reply(self) -> Reply | None:
        return parse_reply(self.received)

    @property
    def done(self) -> bool:
        return self.sock is None and self.closed_at is not None


def _reset(sock: socket.socket) -> None:
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()


def run(port: int, conns: list[Conn], timeout: float = WAIT) -> None:
    """
    Drive C{conns} concurrently until each is finished: closed or reset by
    plan, or closed by the server.  Fails if that takes over C{timeout}.
    """
    selector = selectors.DefaultSelector()
    began = time.monotonic()
    deadline = began + timeout
    waiting = sorted(conns, key=lambda c: c.connect_after)

    def connect(conn: Conn) -> None:
        sock = socket.socket()
        sock.setblocking(False)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        err = sock.connect_ex(("127.0.0.1", conn.port or port))
        assert err in (0, errno.EINPROGRESS), os.strerror(err)
        conn.sock = sock
        conn.started_at = now = time.monotonic()
        conn._queue = list(conn.pieces)
        conn._due = now + (conn._queue[0][0] if conn._queue else 0.0)
        selector.register(sock, selectors.EVENT_READ | selectors.EVENT_WRITE, conn)

    def finish(conn: Conn, how: str) -> None:
        selector.unregister(conn.sock)
        if how == "reset":
            _reset(conn.sock)
        else:
            conn.sock.close()
        conn.sock = None
        conn.closed_at = time.monotonic()

    try:
        while any(not c.done for c in conns):
            now = time.monotonic()
            assert now < deadline, "connections did not finish in time"
            while waiting and began + waiting[0].connect_after <= now:
                connect(waiting.pop(0))
            wait = deadline - now
            if waiting:
                wait = min(wait, began + waiting[0].connect_after - now)
            for conn in conns:
                if conn.sock is None:
                    continue
                wants_write = bool(conn._current) or (conn._queue and conn.send_error is None)
                if conn._queue and not conn._current and conn.send_error is None:
                    wait = min(wait, max(0.0, conn._due - now))
                selector.modify(conn.sock, selectors.EVENT_READ | (
                    selectors.EVENT_WRITE if wants_write and (conn._current or conn._due <= now) else 0), conn)
            for key, events in selector.select(min(wait, 0.05)):
                conn = key.data
                if events & selectors.EVENT_READ:
                    try:
                        data = conn.sock.recv(65536)
                    except (ConnectionResetError, BrokenPipeError) as e:
                        conn.recv_error = e.errno
                        data = b""
                    if data:
                        conn.received += data
                        if conn.answered_at is None and parse_reply(conn.received) is not None:
                            conn.answered_at = time.monotonic()
                    else:
                        conn.server_closed = True
                        finish(conn, "close")
                        continue
                if events & selectors.EVENT_WRITE and conn.send_error is None:
                    if not conn._current and conn._queue and conn._due <= time.monotonic():
                        conn._current = conn._queue.pop(0)[1]
                    if conn._current:
                        try:
                            sent = conn.sock.send(conn._current)
                        except BlockingIOError:
                            sent = 0
                        except OSError as e:
                            conn.send_error = e.errno
                            conn._queue = []
                            conn._current = b""
                            continue
                        conn.sent += sent
                        conn._current = conn._current[sent:]
                        if not conn._current and conn._queue:
                            conn._due = time.monotonic() + conn._queue[0][0]
            for conn in conns:
                if conn.sock is not None and not conn._current and not conn._queue and conn.end != "read":
                    finish(conn, conn.end)
    finally:
        for conn in conns:
            if conn.sock is not None:
                selector.unregister(conn.sock)
                conn.sock.close()
                conn.sock = None
        selector.close()
