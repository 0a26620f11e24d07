"""
End-to-end fault tests against C{twist tus} subprocesses on loopback: what
must hold when things go wrong is that nothing is lost and nothing is made
up.  Every upload's stored bytes are a prefix of what its client sent, the
offset the server reports is the size of its data file, and the upload can
be resumed and completed with the right bytes.

Faults: SIGKILL of the server mid-upload and a restart on the same
directory; many clients cutting or resetting their connections at random
bytes at once; slow-loris clients trickling headers or bodies; a disk
(a 4 MiB tmpfs) that fills up; several connections racing PATCHes at the
same offset of one upload.

Randomness is seeded (C{TXTUS_FAULT_SEED}), so a failure reproduces.
"""

from __future__ import annotations

import io
import os
import random
import socket
import subprocess
import time
from pathlib import Path
from typing import Callable

import pytest

from faultkit import (
    OCTET,
    WAIT,
    Conn,
    TwistProcess,
    call,
    create,
    head,
    patch,
    patch_request,
    request_bytes,
    resume,
    run,
    target,
    wait_until,
)

SEED = int(os.environ.get("TXTUS_FAULT_SEED", "4242"))
KiB, MiB = 1024, 1024 * 1024


@pytest.fixture
def twist_factory(tmp_path: Path):
    """Call with extra C{twist tus} options (and C{path=}); stopped after the test."""
    started: list[TwistProcess] = []

    def start(*args: str, path: Path | None = None) -> TwistProcess:
        log_dir = tmp_path / f"server{len(started)}"
        log_dir.mkdir()
        server = TwistProcess(path or tmp_path / "uploads", log_dir, *args)
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()


def assert_prefix_state(server: TwistProcess, upload_id: str, source: bytes) -> int:
    """HEAD's offset is the data file's size, and the file a prefix of C{source}."""
    offset = head(server.port, upload_id).offset
    stored = server.stored(upload_id)
    assert offset == len(stored), (offset, len(stored))
    assert stored == source[:offset], "stored bytes are not a prefix of what was sent"
    return offset


# 1. kill -9 mid-upload, restart, resume ----------------------------------

def _stream_until_killed(server: TwistProcess, request: bytes, stored: Callable[[], int], kill_at: int) -> int:
    """
    Send C{request} in 64 KiB pieces and SIGKILL the server as soon as it
    has stored C{kill_at} bytes, while later pieces are still in flight.
    @return: bytes handed to the kernel before the kill.
    """
    sent = 0
    with socket.create_connection(("127.0.0.1", server.port), timeout=WAIT) as sock:
        while stored() < kill_at:
            if sent < len(request):
                piece = request[sent:sent + 64 * KiB]
                sock.sendall(piece)
                sent += len(piece)
            else:
                wait_until(lambda: stored() >= kill_at, "the server to store the bytes sent")
        server.kill9()
    return sent


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except FileNotFoundError:
        return 0


def _new_upload_size(directory: Path) -> int:
    """The size of the one upload in C{directory} (0 before it exists)."""
    infos = [name for name in os.listdir(directory) if name.endswith(".info")]
    return _size(directory / infos[0][: -len(".info")]) if infos else 0


def test_kill9_mid_upload_then_restart_and_resume(twist_factory, tmp_path: Path) -> None:
    tusclient = pytest.importorskip("tusclient.client")
    rng = random.Random(SEED)
    source = rng.randbytes(6 * MiB + 123)
    server = twist_factory()

    # Killed first during a creation-with-upload: the upload exists and
    # keeps a prefix, although its client never learnt its URL.
    post = request_bytes(b"POST", b"/files/", {b"Upload-Length": b"%d" % len(source),
                                               b"Content-Type": OCTET}, source)
    sent = _stream_until_killed(server, post, lambda: _new_upload_size(server.path),
                                rng.randrange(64 * KiB, len(source) // 4))
    ids = [name for name in os.listdir(server.path) if name.endswith(".info")]
    assert len(ids) == 1
    upload_id = ids[0][: -len(".info")]
    assert server.stored_size(upload_id) <= sent - (len(post) - len(source))

    for _ in range(3):
        server.restart()
        offset = assert_prefix_state(server, upload_id, source)
        if len(source) - offset < 256 * KiB:
            break  # too little left to kill in the middle of
        request = patch_request(upload_id, offset, source[offset:])
        header_length = len(request) - (len(source) - offset)
        kill_at = offset + rng.randrange(1, (len(source) - offset) // 3)
        sent = _stream_until_killed(server, request, lambda: server.stored_size(upload_id), kill_at)
        assert server.stored_size(upload_id) >= kill_at
        assert server.stored_size(upload_id) <= offset + sent - header_length
        assert server.stored(upload_id) == source[:server.stored_size(upload_id)]

    if not server.alive():
        server.restart()
    offset = assert_prefix_state(server, upload_id, source)
    uploader = tusclient.TusClient(server.url).uploader(
        file_stream=io.BytesIO(source), url=server.url + upload_id, chunk_size=2 * MiB)
    assert uploader.offset == offset
    uploader.upload()
    assert server.stored(upload_id) == source
    assert head(server.port, upload_id).offset == len(source)
    server.assert_clean_log()


# 2. Clients disconnecting at random points --------------------------------

def test_many_clients_cut_at_random_bytes(twist_factory) -> None:
    rng = random.Random(SEED + 2)
    server = twist_factory("--network-timeout", "5")
    uploads = []
    for _ in range(40):
        source = rng.randbytes(rng.randrange(1, 384 * KiB))
        upload_id = create(server.port, len(source))
        request = patch_request(upload_id, 0, source)
        header_length = len(request) - len(source)
        # Mostly mid-body, some inside the headers.
        cut = rng.randrange(header_length) if rng.random() < 0.15 else rng.randrange(header_length, len(request))
        pieces, position = [], 0
        while position < cut:  # a few pieces, so the cuts happen while others send
            step = rng.randrange(1, 96 * KiB)
            pieces.append((rng.random() * 0.02, request[position:min(cut, position + step)]))
            position += step
        end = rng.choice(["close", "reset"])
        uploads.append((upload_id, source, Conn(pieces, end=end), max(0, cut - header_length)))

    baseline = server.open_fds()
    run(server.port, [conn for _, _, conn, _ in uploads], timeout=WAIT)
    server.wait_idle(baseline)

    for upload_id, source, conn, body_sent in uploads:
        assert conn.reply is None, f"a cut request was answered: {conn.reply}"
        offset = assert_prefix_state(server, upload_id, source)
        if conn.end == "close":
            # A FIN comes after every byte sent: all of them are kept.
            assert offset == body_sent, (upload_id, offset, body_sent)
        else:
            # A reset may discard bytes still queued in the server's kernel.
            assert offset <= body_sent
    for upload_id, source, _, _ in uploads:
        resume(server.port, upload_id, source)
        assert server.stored(upload_id) == source
    server.assert_clean_log()


# 3. Slow loris -------------------------------------------------------------

TIMEOUT = 2.0


def test_slow_loris_cut_off_while_others_are_served(twist_factory) -> None:
    server = twist_factory("--network-timeout", str(TIMEOUT))
    body = os.urandom(64 * KiB)
    slow_id, kept_id = create(server.port, len(body)), create(server.port, 5)

    request_line = b"PATCH " + target(slow_id) + b" HTTP/1.1\r\n"
    header_sloth = Conn([(0, request_line)] + [(TIMEOUT * 1.6, b"X")] * 4)
    slow_patch = patch_request(slow_id, 0, body)
    kept_bytes = 1000
    body_sloth = Conn([(0, slow_patch[:len(slow_patch) - len(body) + kept_bytes]),
                       (TIMEOUT * 3, slow_patch[-10:])])
    # One byte every TIMEOUT/2: progress, so the body watchdog keeps it.
    patient = patch_request(kept_id, 0, b"12345")
    patient_sloth = Conn([(0, patient[:-5])] + [(TIMEOUT / 2, bytes([b])) for b in patient[-5:]])
    # twisted.web's idle timeout restarts with every byte, but txtus gives
    # the header block a deadline of its own (the network timeout, from the
    # request line on): headers trickling a byte every TIMEOUT/2 are cut.
    header_patient = Conn([(0, b"OPTIONS /files/ HTTP/1.1\r\n")] + [(TIMEOUT / 2, b"X")] * 4
                          + [(TIMEOUT / 2, b": 1\r\nConnection: close\r\n\r\n")])

    # Normal clients, each starting at its own moment while the sloths crawl.
    normal: list[tuple[Conn, str, bytes]] = []
    for i in range(6):
        data = os.urandom(256 * KiB)
        upload_id = create(server.port, len(data))
        normal.append((Conn([(0, patch_request(upload_id, 0, data))], connect_after=0.3 + 0.7 * i),
                       upload_id, data))

    run(server.port, [header_sloth, header_patient, body_sloth, patient_sloth] + [c for c, _, _ in normal],
        timeout=TIMEOUT * 6)

    # Headers arriving slower than the idle timeout: closed, unanswered.
    assert header_sloth.server_closed and header_sloth.reply is None
    assert header_sloth.closed_at - header_sloth.started_at < TIMEOUT * 1.6 + 1.5

    # A body stalled longer than the timeout: ERR_READ_TIMEOUT (or just a
    # closed connection), bytes kept, resumable.
    reply = body_sloth.reply
    assert reply is None or (reply.status == 500 and b"ERR_READ_TIMEOUT" in reply.body), reply
    assert body_sloth.closed_at - body_sloth.started_at < TIMEOUT * 3
    assert assert_prefix_state(server, slow_id, body) == kept_bytes
    resume(server.port, slow_id, body)
    assert server.stored(slow_id) == body

    # A body trickling a byte every TIMEOUT/2 makes progress: it is kept,
    # however long it takes (there is no minimum rate).
    assert patient_sloth.reply is not None and patient_sloth.reply.status == 204, patient_sloth.reply
    assert patient_sloth.closed_at - patient_sloth.started_at > TIMEOUT * 2
    assert server.stored(kept_id) == b"12345"
    assert header_patient.server_closed and header_patient.reply is None, header_patient.reply
    assert TIMEOUT - 0.5 < header_patient.closed_at - header_patient.started_at < TIMEOUT * 1.6 + 1.5

    for conn, upload_id, data in normal:
        assert conn.reply is not None and conn.reply.status == 204, (conn.sent, conn.send_error, conn.recv_error, conn.server_closed, conn.received[:300], conn.closed_at - conn.started_at)
        latency = conn.answered_at - conn.started_at
        assert latency < 1.0, f"a normal PATCH took {latency:.2f}s while sloths crawled"
        assert server.stored(upload_id) == data
    server.assert_clean_log()


# 4. A full disk ------------------------------------------------------------

@pytest.fixture
def small_disk(tmp_path: Path):
    mount_point = tmp_path / "disk"
    mount_point.mkdir()
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    result = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(mount_point)],
                            capture_output=True, timeout=WAIT)
    if result.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs: {result.stderr.decode(errors='replace').strip()}")
    # Requested before twist_factory, so the server has stopped by now;
    # -l still unmounts if something holds a file open.
    yield mount_point
    subprocess.run(["umount", "-l", str(mount_point)], capture_output=True, timeout=WAIT)


def test_disk_full_then_resume_after_space_returns(small_disk: Path, twist_factory) -> None:
    server = twist_factory(path=small_disk / "uploads")
    rng = random.Random(SEED + 4)
    filler = rng.randbytes(int(2.5 * MiB))
    filler_id = create(server.port, len(filler), filler)
    source = rng.randbytes(3 * MiB)
    upload_id = create(server.port, len(source))

    conn = Conn([(0, patch_request(upload_id, 0, source))])
    run(server.port, [conn])
    reply = conn.reply
    assert reply is not None, "the full disk dropped the connection without an answer"
    assert reply.status == 507 and reply.body.startswith(b"ERR_STORAGE_FULL"), reply
    offset = assert_prefix_state(server, upload_id, source)
    assert 0 < offset < len(source)

    # Creating an upload on the full disk fails cleanly and leaves nothing.
    names = sorted(os.listdir(server.path))
    while True:  # fill the last pages, so even an .info cannot be written
        reply = patch(server.port, upload_id, offset, source[offset:])
        assert reply.status == 507, reply
        if head(server.port, upload_id).offset == offset:
            break
        offset = head(server.port, upload_id).offset
    reply = call(server.port, b"POST", b"/files/", {b"Upload-Length": b"10"})
    assert reply.status == 507 and reply.body.startswith(b"ERR_STORAGE_FULL"), reply
    assert sorted(os.listdir(server.path)) == names

    reply = call(server.port, b"DELETE", target(filler_id))
    assert reply.status == 204, reply
    resume(server.port, upload_id, source)
    assert server.stored(upload_id) == source
    assert head(server.port, upload_id).offset == len(source)
    server.assert_clean_log()


# 5. PATCHes racing on one upload -------------------------------------------

def test_racing_patches_never_interleave(twist_factory) -> None:
    rng = random.Random(SEED + 5)
    server = twist_factory()
    piece, rounds, racers = 96 * KiB, 8, 4
    size = piece * rounds
    upload_id = create(server.port, size)
    expected = b""
    for round_number in range(rounds):
        offset = head(server.port, upload_id).offset
        assert offset == len(expected)
        bodies = [rng.randbytes(piece) for _ in range(racers)]
        conns = []
        # Odd rounds start the racers a few milliseconds apart, so some
        # finish before the next asks for the lock (a 204, then 409s);
        # even rounds start them together (the holder is interrupted).
        staggered = round_number % 2 == 1
        for body in bodies:
            request = patch_request(upload_id, offset, body)
            cuts = sorted(rng.sample(range(1, len(request)), 7))
            parts = [request[a:b] for a, b in zip([0] + cuts, cuts + [len(request)])]
            if staggered:
                conns.append(Conn([(0, request)], connect_after=rng.random() * 0.15))
            else:
                conns.append(Conn([(rng.random() * 0.005, p) for p in parts]))
        run(server.port, conns)

        now = head(server.port, upload_id).offset
        stored = server.stored(upload_id)
        assert len(stored) == now and stored[:offset] == expected
        added = stored[offset:]
        writers = [i for i, body in enumerate(bodies) if body[:len(added)] == added]
        assert writers, "the bytes of one round are not a prefix of any one racer's body"
        for body, conn in zip(bodies, conns):
            reply = conn.reply
            if reply is None:
                # Only a request whose connection was closed under it.
                assert conn.send_error is not None or conn.recv_error is not None
                continue
            assert reply.status in (204, 409, 400), reply
            if reply.status == 204:
                assert added == body and reply.offset == now
            elif reply.status == 409:
                assert b"ERR_MISMATCHED_OFFSET" in reply.body and reply.offset is not None
                assert offset < reply.offset <= now
            else:
                assert b"ERR_UPLOAD_INTERRUPTED" in reply.body, reply
        expected = stored
    resume(server.port, upload_id, expected + rng.randbytes(size - len(expected)))
    final = server.stored(upload_id)
    assert len(final) == size and final[:len(expected)] == expected
    server.assert_clean_log()


# 6. Checksummed chunks are never counted before they are verified ----------

def test_kill9_mid_checksummed_patch_counts_none_of_its_bytes(twist_factory) -> None:
    """
    Issue 11: 40 of the 50 bytes of a PATCH whose digest could not match
    were received when the server was killed; after the restart none of
    them may count as stored (HEAD once said 40).
    """
    import base64
    import hashlib

    server = twist_factory()
    upload_id = create(server.port, 50)
    body = bytes(range(50))
    wrong = b"sha1 " + base64.b64encode(hashlib.sha1(b"not the body").digest())
    request = request_bytes(b"PATCH", target(upload_id), {
        b"Upload-Offset": b"0", b"Content-Type": OCTET, b"Upload-Checksum": wrong}, body)

    def received() -> bool:
        # Wherever the store keeps them, 40 bytes have arrived.
        return sum((server.path / name).stat().st_size for name in os.listdir(server.path)
                   if not name.endswith(".info")) == 40

    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        sock.sendall(request[:-10])
        wait_until(received, "the server to receive 40 bytes")
        server.kill9()
    server.restart()
    assert head(server.port, upload_id).offset == 0
    assert server.stored(upload_id) == b""
    right = b"sha1 " + base64.b64encode(hashlib.sha1(body).digest())
    reply = call(server.port, b"PATCH", target(upload_id), {
        b"Upload-Offset": b"0", b"Content-Type": OCTET, b"Upload-Checksum": right}, body)
    assert (reply.status, reply.offset) == (204, 50)
    assert server.stored(upload_id) == body
    server.assert_clean_log()
