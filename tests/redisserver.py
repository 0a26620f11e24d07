"""
A real C{redis-server} for the tests (the Debian package, listed in
C{.ci/system-packages}): started once per session on a free loopback port,
with no persistence and no config file, and stopped (by its PID) at the end.

Tests that need it take the C{redis_server} fixture (registered by
C{tests/conftest.py}); it skips, saying why, only when C{redis-server} is
not installed at all.  Each test keeps out of the others' way with its own
key prefix (L{RedisServer.prefix}) rather than flushing the database.
"""

from __future__ import annotations

import shutil
import signal
import socket
import subprocess
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import pytest

START_TIMEOUT = 10.0  # seconds redis-server may take to answer PING


@dataclass
class RedisServer:
    """A running redis-server: C{url} for C{--redis-url}, C{port} on 127.0.0.1."""

    process: subprocess.Popen
    port: int
    directory: Path

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    @staticmethod
    def prefix() -> str:
        """A key prefix no other test uses."""
        return f"test-{uuid.uuid4().hex[:12]}:"

    def command(self, *args: str) -> bytes:
        """One command over a plain socket (for checks the locker does not make)."""
        with socket.create_connection(("127.0.0.1", self.port), timeout=5) as sock:
            parts = [b"*%d\r\n" % len(args)]
            for arg in args:
                data = arg.encode()
                parts.append(b"$%d\r\n%s\r\n" % (len(data), data))
            sock.sendall(b"".join(parts))
            reply = b""
            while not _complete(reply):
                data = sock.recv(65536)
                if not data:
                    break
                reply += data
            return reply

    def pause(self) -> None:
        """SIGSTOP: the server holds its connections open and answers nothing."""
        self.process.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        self.process.send_signal(signal.SIGCONT)


def _complete(reply: bytes) -> bool:
    """Whether C{reply} holds a whole simple, integer or bulk-string reply."""
    line, sep, rest = reply.partition(b"\r\n")
    if not sep:
        return False
    if not line.startswith(b"$") or line == b"$-1":
        return True
    return len(rest) >= int(line[1:]) + 2


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start(directory: Path, port: int | None = None) -> RedisServer:
    """Start redis-server on C{port} (a free one by default)."""
    executable = shutil.which("redis-server")
    if executable is None:
        pytest.skip("redis-server is not installed (Debian package redis-server, see .ci/system-packages)")
    port = port or free_port()
    process = subprocess.Popen(
        [executable, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
         "--dir", str(directory), "--logfile", str(directory / "redis.log")],
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    server = RedisServer(process, port, directory)
    deadline = time.monotonic() + START_TIMEOUT
    while True:
        if process.poll() is not None:
            log = directory / "redis.log"
            raise RuntimeError(f"redis-server exited with {process.returncode}: "
                               f"{log.read_text()[-2000:] if log.exists() else ''}")
        try:
            if server.command("PING") == b"+PONG\r\n":
                return server
        except OSError:
            pass
        if time.monotonic() > deadline:
            stop(server)
            raise RuntimeError("redis-server did not answer PING in time")
        time.sleep(0.02)


def stop(server: RedisServer) -> None:
    process = server.process
    if process.poll() is not None:
        return
    process.send_signal(signal.SIGCONT)  # in case a test left it paused
    process.terminate()
    try:
        process.wait(10)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(10)


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory):
    server = start(tmp_path_factory.mktemp("redis"))
    try:
        yield server
    finally:
        stop(server)


@pytest.fixture
def redis_prefix(redis_server):
    return redis_server.prefix()


__all__ = ["RedisServer", "free_port", "redis_prefix", "redis_server", "start", "stop"]

