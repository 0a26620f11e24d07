"""
End to end on S3: C{twist tus --s3-bucket} as real processes against each
test S3 server.  Two processes serve one bucket: PATCHes alternate between
them, a body cut mid-part on one is resumed on the other from the offset S3
reports, a checksum mismatch leaves the upload as it was, and the final
object (tusd's layout) holds every byte; GET serves ranges of it.
"""

from __future__ import annotations

import base64
import hashlib
import re
import secrets
import socket
import time

import pytest

from faultkit import OCTET, TwistProcess, call, create, head, patch, patch_request, target, wait_until
from txtus.stores.s3.config import blocking_request

MiB = 1024 * 1024


@pytest.fixture(params=["buffer", "pipe"])
def s3_pair(s3_server, tmp_path, monkeypatch, request):
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", s3_server.credentials.access_key)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", s3_server.credentials.secret_key)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    prefix = f"e2e{secrets.token_hex(4)}/"
    args = ("--s3-bucket", s3_server.bucket, "--s3-endpoint", s3_server.endpoint, "--s3-prefix", prefix,
            "--s3-part-size", "5MiB", "--s3-concurrency", "2", "--s3-part-mode", request.param)
    servers = []
    for n in range(2):
        (tmp_path / f"p{n}").mkdir()
        servers.append(TwistProcess(tmp_path / f"p{n}", tmp_path / f"p{n}", *args))
    yield servers, prefix, request.param
    for server in servers:
        server.stop()


def test_two_processes_one_bucket(s3_pair, s3_server):
    (a, b), prefix, part_mode = s3_pair
    source = secrets.token_bytes(13 * MiB + 17)
    upload_id = create(a.port, len(source))
    object_id, multipart = upload_id.split("+", 1)
    assert len(object_id) == 32 and multipart

    # 3 MiB through a: below a part, kept in <id>.part.
    assert patch(a.port, upload_id, 0, source[:3 * MiB]).offset == 3 * MiB
    # b announces 10 MiB but the client vanishes after 4: buffered, all 4
    # are kept; piped, the first part (the 3 MiB tail and 2 MiB) is, and the
    # 2 MiB of the second part, whose PUT was aborted, are sent again.
    with socket.create_connection(("127.0.0.1", b.port)) as sock:
        sock.sendall(patch_request(upload_id, 3 * MiB, source[3 * MiB:7 * MiB], length=10 * MiB))
        time.sleep(0.5)
    kept = 7 * MiB if part_mode == "buffer" else 5 * MiB
    wait_until(lambda: head(a.port, upload_id).offset == kept or None, "the cut PATCH to be stored")
    if kept < 7 * MiB:
        assert patch(a.port, upload_id, kept, source[kept:7 * MiB]).offset == 7 * MiB

    # A checksum that does not match: 460, nothing of the chunk stays (it
    # was staged apart, two parts' worth of it already in S3).
    def checksummed(digest_of: bytes):
        return call(b.port, b"PATCH", target(upload_id), {
            b"Upload-Offset": b"%d" % (7 * MiB), b"Content-Type": OCTET,
            b"Upload-Checksum": b"sha1 " + base64.b64encode(hashlib.sha1(digest_of).digest())},
            source[7 * MiB:13 * MiB])

    bad = checksummed(b"other bytes")
    assert bad.status == 460, bad
    assert head(a.port, upload_id).offset == 7 * MiB
    good = checksummed(source[7 * MiB:13 * MiB])
    assert good.status == 204 and good.offset == 13 * MiB, good
    assert head(a.port, upload_id).offset == 13 * MiB
    assert patch(a.port, upload_id, 13 * MiB, source[13 * MiB:]).offset == len(source)

    whole = call(b.port, b"GET", target(upload_id))
    assert whole.status == 200 and whole.body == source
    part = call(a.port, b"GET", target(upload_id), {b"Range": b"bytes=%d-%d" % (5 * MiB - 3, 5 * MiB + 3)})
    assert part.status == 206 and part.body == source[5 * MiB - 3:5 * MiB + 4]
    assert part.header(b"content-range") == b"bytes %d-%d/%d" % (5 * MiB - 3, 5 * MiB + 3, len(source))

    # tusd's layout: the final object and its .info, nothing else.
    listing = blocking_request(s3_server.endpoint, "GET", "/" + s3_server.bucket, s3_server.credentials,
                               s3_server.region, query=[("list-type", "2"), ("prefix", prefix)])
    names = re.findall(rb"<Key>([^<]*)</Key>", listing)
    assert sorted(n.decode()[len(prefix):] for n in names) == [object_id, object_id + ".info"]

    assert call(a.port, b"DELETE", target(upload_id)).status == 204
    assert call(b.port, b"HEAD", target(upload_id)).status == 404
