"""
End to end: a pre-create hook places uploads (C{ChangeFileInfo.Storage.Path})
in C{twist tus}'s directory, through C{--hooks-dir} as through tusd's file
hooks.  The placed upload is found again by every verb, after a restart, by
concatenation and by the expiration cleaner; a path that leaves the
directory, or one already taken, is a clear error that creates nothing.
"""

from __future__ import annotations

import base64
import json
import sys
import time
from pathlib import Path

import pytest

from faultkit import OCTET, TwistProcess, call, head, patch, target, wait_until

# The hook places an upload where its "place" metadata says.
PRE_CREATE = """\
#!{python}
import json, sys
event = json.load(sys.stdin)
place = event["Event"]["Upload"]["MetaData"].get("place")
answer = {{}}
if place is not None:
    answer = {{"ChangeFileInfo": {{"Storage": {{"Path": place}}}}}}
print(json.dumps(answer))
"""


def meta(**fields: str) -> bytes:
    return b",".join(name.encode() + b" " + base64.b64encode(value.encode()) for name, value in fields.items())


def create(server: TwistProcess, length: int | None, *extra: tuple[bytes, bytes], **metadata: str):
    headers = {b"Upload-Metadata": meta(**metadata)} if metadata else {}
    if length is not None:
        headers[b"Upload-Length"] = b"%d" % length
    headers.update(dict(extra))
    return call(server.port, b"POST", b"/files/", headers)


def upload_id(reply) -> str:
    assert reply.status == 201, reply
    return reply.header(b"location").rsplit(b"/", 1)[1].decode()


def start(tmp_path: Path, *args: str) -> TwistProcess:
    hooks = tmp_path / "hooks"
    hooks.mkdir()
    script = hooks / "pre-create"
    script.write_text(PRE_CREATE.format(python=sys.executable))
    script.chmod(0o755)
    return TwistProcess(tmp_path / "uploads", tmp_path, "--hooks-dir", str(hooks),
                        "--hooks-enabled-events", "pre-create", *args)


@pytest.fixture
def server(tmp_path: Path):
    process = start(tmp_path)
    yield process
    process.stop()


def test_a_placed_upload_lives_where_the_hook_said_across_restarts(server: TwistProcess) -> None:
    uploads = server.path
    source = b"0123456789" * 100
    upload = upload_id(create(server, len(source), place="users/42/report.pdf"))
    placed = uploads / "users" / "42" / "report.pdf"
    assert placed.exists() and not (uploads / upload).exists()
    info = json.loads((uploads / f"{upload}.info").read_text())
    assert info["Storage"]["Path"] == str(placed)

    assert patch(server.port, upload, 0, source[:300]).status == 204
    server.stop()
    server.restart()
    assert head(server.port, upload).offset == 300
    checksum = base64.b64encode(__import__("hashlib").sha1(source[300:600]).digest())
    reply = call(server.port, b"PATCH", target(upload), {b"Upload-Offset": b"300", b"Content-Type": OCTET,
                                                         b"Upload-Checksum": b"sha1 " + checksum}, source[300:600])
    assert reply.status == 204 and reply.offset == 600
    assert patch(server.port, upload, 600, source[600:]).status == 204
    assert placed.read_bytes() == source
    got = call(server.port, b"GET", target(upload), {b"Range": b"bytes=10-19"})
    assert got.status == 206 and got.body == source[10:20]

    assert call(server.port, b"DELETE", target(upload)).status == 204
    assert not placed.exists() and not (uploads / "users").exists()
    assert call(server.port, b"HEAD", target(upload)).status == 404
    server.assert_clean_log()


def test_concatenation_of_placed_uploads(server: TwistProcess) -> None:
    partials = []
    for n, data in enumerate((b"abc", b"defg")):
        partial = upload_id(create(server, len(data), (b"Upload-Concat", b"partial"), place=f"parts/{n}"))
        assert patch(server.port, partial, 0, data).status == 204
        partials.append(partial)
    final = upload_id(create(server, None, (b"Upload-Concat", b"final;" + b" ".join(target(p) for p in partials)),
                             place="done/all.txt"))
    assert (server.path / "done" / "all.txt").read_bytes() == b"abcdefg"
    assert head(server.port, final).offset == 7
    assert call(server.port, b"GET", target(final)).body == b"abcdefg"


@pytest.mark.parametrize("place", ["../escaped", "/tmp/absolute", "a/../../escaped", ".txtus-stop/x", "x.info"])
def test_a_path_leaving_or_confusing_the_directory_is_refused(server: TwistProcess, place: str) -> None:
    reply = create(server, 5, place=place)
    assert reply.status == 500, reply
    assert b"ERR_INVALID_STORAGE" in reply.body
    wait_until(lambda: "refused" in server.log_text(), "the refusal to be logged")
    assert not (server.path.parent / "escaped").exists()
    assert sorted(p.name for p in server.path.iterdir() if not p.name.startswith(".")) == []
    server.assert_clean_log()


def test_an_existing_file_is_not_taken_over(server: TwistProcess) -> None:
    (server.path / "taken.bin").write_bytes(b"precious")
    reply = create(server, 5, place="taken.bin")
    assert reply.status == 409 and b"ERR_STORAGE_TAKEN" in reply.body
    assert (server.path / "taken.bin").read_bytes() == b"precious"
    first = upload_id(create(server, 5, place="dir/one"))
    assert create(server, 5, place="dir/one").status == 409
    assert head(server.port, first).offset == 0
    server.assert_clean_log()


def test_the_cleaner_removes_expired_placed_uploads_after_a_restart(tmp_path: Path) -> None:
    server = start(tmp_path, "--expire-after", "1s", "--cleanup-interval", "0.2s")
    try:
        upload = upload_id(create(server, 10, place="soon/gone.bin"))
        assert patch(server.port, upload, 0, b"12345").status == 204
        server.stop()
        time.sleep(1.2)
        server.restart()
        wait_until(lambda: not (server.path / "soon").exists(), "the cleaner to remove the placed upload")
        assert not (server.path / f"{upload}.info").exists()
        assert call(server.port, b"HEAD", target(upload)).status == 404
    finally:
        server.stop()

