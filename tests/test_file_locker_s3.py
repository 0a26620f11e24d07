"""
Several C{twist tus} processes on one machine sharing one S3 bucket with
C{--locker file --lock-dir DIR} (no Redis): S3 upload IDs (with a C{+})
are locked under digest-named files.  Real processes, real S3 servers
(moto with signatures checked, rclone), every byte checked through GET.
"""

from __future__ import annotations

import os
import random
import secrets
import socket
import threading
from pathlib import Path

import pytest

from faultkit import TwistProcess, call, create, head, parse_reply, patch, patch_request, target, wait_read, wait_until
from txtus.lockers.file import lock_name

KiB = 1024


def start_servers(tmp_path: Path, s3, count: int) -> tuple[list[TwistProcess], Path]:
    locks = tmp_path / "locks"
    args = ["--s3-bucket", s3.bucket, "--s3-endpoint", s3.endpoint, "--s3-region", s3.region,
            "--s3-prefix", f"fl{secrets.token_hex(4)}/", "--locker", "file", "--lock-dir", str(locks)]
    env = {"AWS_ACCESS_KEY_ID": s3.credentials.access_key, "AWS_SECRET_ACCESS_KEY": s3.credentials.secret_key,
           "AWS_SHARED_CREDENTIALS_FILE": str(tmp_path / "no-credentials-file")}
    servers = []
    for n in range(count):
        log_dir = tmp_path / f"server{n}"
        log_dir.mkdir()
        servers.append(TwistProcess(tmp_path / "unused", log_dir, *args, env=env))
    return servers, locks


def test_processes_on_one_bucket_share_locks_through_a_directory(tmp_path: Path, s3_server) -> None:
    servers, locks = start_servers(tmp_path, s3_server, 3)
    try:
        rng = random.Random(7)
        source = rng.randbytes(300 * KiB)
        upload_id = create(servers[0].port, len(source))
        assert "+" in upload_id
        lock_file = locks / (lock_name(upload_id) + ".lock")

        # A PATCH stalled on process 0 holds the lock...
        piece = 64 * KiB
        sock = socket.create_connection(("127.0.0.1", servers[0].port), timeout=10)
        sock.sendall(patch_request(upload_id, 0, b"", length=len(source)))
        wait_until(lock_file.exists, "process 0 to lock the upload")
        sock.sendall(source[:piece])
        wait_read(sock)
        # ...until a HEAD on process 1 asks for it: the bytes stay.
        assert head(servers[1].port, upload_id).offset == piece
        raw = b""
        while chunk := sock.recv(65536):
            raw += chunk
        sock.close()
        reply = parse_reply(raw)
        assert reply is not None and reply.status == 400 and reply.body.startswith(b"ERR_UPLOAD_INTERRUPTED")

        # Each PATCH to the next process.
        offset, turn = piece, 1
        while offset < len(source) // 2:
            reply = patch(servers[turn % 3].port, upload_id, offset, source[offset:offset + piece])
            assert reply.status == 204, reply
            offset, turn = reply.offset, turn + 1

        # The holder killed mid-body: the kernel frees its flock at once.
        sock = socket.create_connection(("127.0.0.1", servers[2].port), timeout=10)
        sock.sendall(patch_request(upload_id, offset, b"", length=len(source) - offset))
        wait_until(lock_file.exists, "process 2 to lock the upload")
        servers[2].kill9()
        sock.close()
        kept = head(servers[0].port, upload_id).offset
        assert kept == offset
        while offset < len(source):
            reply = patch(servers[offset // piece % 2].port, upload_id, offset, source[offset:offset + piece])
            assert reply.status == 204, reply
            offset = reply.offset
        got = call(servers[1].port, b"GET", target(upload_id))
        assert got.status == 200 and got.body == source
        assert sorted(os.listdir(locks)) == [".txtus-stop"]
        for server in servers[:2]:
            server.assert_clean_log()
    finally:
        for server in servers:
            server.stop()


def test_racing_clients_on_two_processes_never_corrupt(tmp_path: Path, moto_server) -> None:
    servers, _ = start_servers(tmp_path, moto_server, 2)
    try:
        source = random.Random(9).randbytes(400 * KiB)
        upload_id = create(servers[0].port, len(source))
        piece = 16 * KiB
        statuses: list[int] = []

        def client(server: TwistProcess) -> None:
            # Each sends what it believes comes next, at once with the
            # other; 409 (the other was first) is expected, wrong bytes not.
            for _ in range(200):
                offset = head(server.port, upload_id).offset
                if offset >= len(source):
                    return
                statuses.append(patch(server.port, upload_id, offset, source[offset:offset + piece]).status)

        racers = [threading.Thread(target=client, args=(server,)) for server in servers]
        for racer in racers:
            racer.start()
        for racer in racers:
            racer.join(60)
        assert set(statuses) <= {204, 409}, statuses
        assert call(servers[1].port, b"GET", target(upload_id)).body == source
    finally:
        for server in servers:
            server.stop()
