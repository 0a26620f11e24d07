"""
Several C{twist tus} processes, one storage, one Redis (docs/deployment.md):
real processes on their own loopback ports, C{--locker redis} on a real
redis-server, and one storage: the same C{--path} (file store), or one S3
bucket on moto's server with signatures checked (S3 store); clients that
never talk to the same process twice in a row, as behind a load balancer
without sticky sessions.

- A PATCH stalled on one process is interrupted (keeping its bytes) by a
  HEAD or PATCH arriving at another.
- Uploads go through the three processes in turns: each PATCH to the next
  process, bodies cut mid-way resumed on another process, one process
  killed with SIGKILL mid-upload (its uploads finished on the others once
  its leases run out), clients on different processes racing on one
  upload.  Every byte is checked at the end, read back through GET.

Bounded: about 10 MiB in all, each wait bounded by faultkit's deadlines.
"""

from __future__ import annotations

import itertools
import os
import random
import socket
from pathlib import Path
from typing import Any

import pytest

from faultkit import (
    Conn,
    TwistProcess,
    call,
    create,
    head,
    parse_reply,
    patch,
    patch_request,
    run,
    target,
    wait_read,
    wait_until,
)

SEED = int(os.environ.get("TXTUS_FAULT_SEED", "4242"))
KiB = 1024
LEASE = 2.0  # --redis-lock-lease: how long a killed process's uploads stay locked


class Cluster:
    """The processes of one test and their storage (C{storage}: file or s3)."""

    def __init__(self, tmp_path: Path, storage: str, redis: Any, redis_prefix: str, s3: Any) -> None:
        self.tmp_path = tmp_path
        self.storage = storage
        self.redis = redis
        self.redis_prefix = redis_prefix
        self.args = ["--locker", "redis", "--redis-url", redis.url, "--redis-key-prefix", redis_prefix,
                     "--redis-lock-lease", str(LEASE)]
        self.env: dict[str, str] = {}
        if storage == "s3":
            self.args += ["--s3-bucket", s3.bucket, "--s3-endpoint", s3.endpoint, "--s3-region", s3.region,
                          "--s3-prefix", redis_prefix.replace(":", "/")]
            self.env = {"AWS_ACCESS_KEY_ID": s3.credentials.access_key,
                        "AWS_SECRET_ACCESS_KEY": s3.credentials.secret_key,
                        "AWS_SHARED_CREDENTIALS_FILE": str(tmp_path / "no-credentials-file")}
        self.servers: list[TwistProcess] = []

    def start(self, count: int) -> list[TwistProcess]:
        for _ in range(count):
            log_dir = self.tmp_path / f"server{len(self.servers)}"
            log_dir.mkdir()
            self.servers.append(TwistProcess(self.tmp_path / "uploads", log_dir, *self.args, env=self.env))
        return self.servers

    def wait_locked(self, upload_id: str) -> None:
        """Until some process holds the upload's lock (its key is in Redis)."""
        key = f"{self.redis_prefix}lock:{upload_id}"
        wait_until(lambda: self.redis.command("EXISTS", key) == b":1\r\n", "the upload to be locked")

    def stop(self) -> None:
        for server in self.servers:
            server.stop()


@pytest.fixture(params=["file", "s3"])
def cluster(request, tmp_path: Path, redis_server, redis_prefix):
    """Call with a count: that many C{twist tus --locker redis} on one storage; stopped after."""
    s3 = request.getfixturevalue("moto_server") if request.param == "s3" else None
    cluster = Cluster(tmp_path, request.param, redis_server, redis_prefix, s3)
    yield cluster
    cluster.stop()


def download(server: TwistProcess, upload_id: str) -> bytes:
    reply = call(server.port, b"GET", target(upload_id))
    assert reply.status == 200, reply
    return reply.body


def offset_of(server: TwistProcess, upload_id: str) -> int:
    offset = head(server.port, upload_id).offset
    assert offset is not None
    return offset


# Lock release between two processes --------------------------------------

def _stalled_patch(cluster: Cluster, server: TwistProcess, upload_id: str, data: bytes,
                   sent: int) -> socket.socket:
    """
    A PATCH announcing all of C{data} that sends C{sent} bytes and stalls.
    The bytes go out once it holds the lock and is reading its body, so
    once the server has read them they are in the store's hands (an S3
    store holds a tail below its part size in memory).
    """
    sock = socket.create_connection(("127.0.0.1", server.port), timeout=10)
    sock.sendall(patch_request(upload_id, 0, b"", length=len(data)))
    cluster.wait_locked(upload_id)
    sock.sendall(data[:sent])
    wait_read(sock)
    return sock


def _interrupted(sock: socket.socket) -> None:
    """The stalled PATCH's answer: 400 ERR_UPLOAD_INTERRUPTED, then close."""
    raw = b""
    try:
        while True:
            data = sock.recv(65536)
            if not data:
                break
            raw += data
    finally:
        sock.close()
    reply = parse_reply(raw)
    assert reply is not None and reply.status == 400, reply
    assert reply.body.startswith(b"ERR_UPLOAD_INTERRUPTED")


# Three processes, uploads in turns -----------------------------------------

def test_three_processes_share_uploads(cluster) -> None:
    rng = random.Random(SEED + 7)
    servers = cluster.start(3)
    turns = itertools.cycle(range(3))

    def next_server(alive: list[TwistProcess] = servers) -> TwistProcess:
        while True:
            server = servers[next(turns)]
            if server in alive:
                return server

    # The last one (raced on in step 4) crosses S3's smallest part size (5 MiB).
    sources = [rng.randbytes(rng.randrange(500 * KiB, 800 * KiB)) for _ in range(3)]
    sources.append(rng.randbytes(6 * 1024 * KiB + 123))
    uploads = [create(next_server().port, len(source)) for source in sources]
    piece = 48 * KiB

    # 0. A PATCH stalled on one process is interrupted, keeping its bytes,
    # by a HEAD (then a PATCH) or by a PATCH arriving at another.
    for n, verb in enumerate(["HEAD", "PATCH"]):
        upload_id, source = uploads[n], sources[n]
        holder, other = servers[n], servers[n + 1]
        sock = _stalled_patch(cluster, holder, upload_id, source, piece)
        if verb == "HEAD":
            assert offset_of(other, upload_id) == piece
        reply = patch(other.port, upload_id, piece, source[piece:2 * piece])
        assert reply.status == 204, reply
        assert reply.offset == 2 * piece
        _interrupted(sock)

    # 1. Each PATCH to the next process.
    for upload_id, source in zip(uploads, sources):
        offset = offset_of(next_server(), upload_id)
        for _ in range(2):
            reply = patch(next_server().port, upload_id, offset, source[offset:offset + piece])
            assert reply.status == 204, reply
            assert reply.offset == offset + piece
            offset = reply.offset

    # 2. Bodies cut mid-way (FIN or RST), resumed on another process.
    for n, (upload_id, source) in enumerate(zip(uploads, sources)):
        server = next_server()
        offset = offset_of(server, upload_id)
        sent = rng.randrange(1, 2 * piece)
        request = patch_request(upload_id, offset, source[offset:offset + sent], length=len(source) - offset)
        conn = Conn([(0, request)], end="reset" if n % 2 else "close")
        run(server.port, [conn])
        # Whatever the cut process kept is a prefix of what was sent: the
        # next process resumes from there.
        resumed = next_server()
        kept = offset_of(resumed, upload_id)
        assert offset <= kept <= offset + sent
        # The cut body may still be on its way into the first process (the
        # client closed; the server reads what was sent): a 409 says where
        # the upload stands now, as tus clients expect.
        for _ in range(3):
            reply = patch(resumed.port, upload_id, kept, source[kept:kept + piece])
            if reply.status != 409:
                break
            assert reply.offset is not None and kept < reply.offset <= offset + sent
            kept = reply.offset
        assert reply.status == 204, reply

    # 3. One process killed mid-upload; the others finish its uploads.
    victim = servers[2]
    stalled = []
    for upload_id, source in zip(uploads[:3], sources[:3]):
        offset = offset_of(victim, upload_id)
        sock = socket.create_connection(("127.0.0.1", victim.port), timeout=10)
        sock.sendall(patch_request(upload_id, offset, source[offset:offset + piece], length=len(source) - offset))
        stalled.append((sock, upload_id, offset))
    for sock, _, _ in stalled:
        wait_read(sock)
    victim.kill9()
    for sock, _, _ in stalled:
        sock.close()
    alive = servers[:2]
    for upload_id, source in zip(uploads[:3], sources[:3]):
        # Its locks are held until their lease runs out: the request waits
        # (within --acquire-lock-timeout) instead of failing.
        assert offset_of(next_server(alive), upload_id) >= piece

    # 4. Clients on different processes racing on one upload: what each
    # round adds must be a prefix of exactly one racer's body (checked at
    # the end: an S3 store serves only finished uploads).
    racing_id = uploads[3]
    rounds = []
    for _ in range(4):
        offset = offset_of(next_server(alive), racing_id)
        if offset == len(sources[3]):
            break
        bodies = [rng.randbytes(min(2 * piece, len(sources[3]) - offset)) for _ in range(2)]
        conns = []
        for body, server in zip(bodies, alive):
            # Both requests' headers first, then their bodies in pieces a
            # few milliseconds apart: both are under way at once.
            request = patch_request(racing_id, offset, body)
            headers = request[:request.index(b"\r\n\r\n") + 4]
            cuts = sorted(rng.sample(range(1, len(body)), 7))
            parts = [body[a:b] for a, b in zip([0] + cuts, cuts + [len(body)])]
            conns.append(Conn([(0, headers), (0.1, parts[0])] + [(rng.random() * 0.02, part) for part in parts[1:]],
                              port=server.port))
        run(alive[0].port, conns)
        for conn in conns:
            reply = conn.reply
            assert reply is not None, conn
            assert reply.status in (204, 400, 409), reply
        rounds.append((offset, offset_of(next_server(alive), racing_id), bodies))
    raced_from = rounds[0][0]
    raced_to = rounds[-1][1]

    # 5. Every upload finished on the survivors, in turns (the racing one
    # with bytes of its own after the race); every byte checked.
    tail = rng.randbytes(len(sources[3]) - raced_to)
    for upload_id, source in zip(uploads, sources):
        offset = offset_of(next_server(alive), upload_id)
        if upload_id == racing_id:
            source = b"\0" * raced_to + tail  # the raced bytes are checked below
        while offset < len(source):
            half = max(piece, (len(source) - offset + 1) // 2)
            reply = patch(next_server(alive).port, upload_id, offset, source[offset:offset + half])
            assert reply.status == 204, reply
            offset = reply.offset
    for upload_id, source in zip(uploads, sources):
        stored = download(next_server(alive), upload_id)
        if upload_id != racing_id:
            assert stored == source
            continue
        assert len(stored) == len(source)
        assert stored[:raced_from] == source[:raced_from]
        for start, end, bodies in rounds:
            added = stored[start:end]
            assert any(body[:len(added)] == added for body in bodies), \
                "the bytes of one round are not a prefix of any one racer's body"
        assert stored[raced_to:] == tail
    for server in alive:
        server.assert_clean_log()
