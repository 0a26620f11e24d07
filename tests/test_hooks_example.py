"""
docs/examples/hook_receiver.py, the tusd-compatible receiver docs/hooks.md
shows, run as a script against C{twist tus --hooks-http}: uploads with the
tuspy client, refusals for a wrong token and a missing filename, and the
post-finish it logs.
"""

from __future__ import annotations

import io
import re
import subprocess
import sys

import pytest

from faultkit import REPO, TwistProcess, call, wait_until

tusclient = pytest.importorskip("tusclient.client")

EXAMPLE = REPO / "docs" / "examples" / "hook_receiver.py"


@pytest.fixture
def hook_receiver(tmp_path):
    output = tmp_path / "receiver.log"
    with open(output, "wb") as sink:
        process = subprocess.Popen([sys.executable, str(EXAMPLE), "--port", "tcp:0:interface=127.0.0.1",
                                    "--token", "t0ken", "--max-size", "1000000"],
                                   stdout=sink, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    try:
        port = wait_until(lambda: re.search(r"listening on port (\d+)", output.read_text()), "the receiver")
        yield f"http://127.0.0.1:{port.group(1)}/hooks", output
    finally:
        process.terminate()
        process.wait(10)


def test_example_receiver(hook_receiver, tmp_path):
    url, output = hook_receiver
    server = TwistProcess(tmp_path / "uploads", tmp_path, "--hooks-http", url, "--hooks-enabled-events",
                          "pre-request,pre-create,post-receive,post-finish,post-terminate")
    try:
        data = b"0123456789" * 5000
        client = tusclient.TusClient(server.url, headers={"Authorization": "Bearer t0ken"})
        uploader = client.uploader(file_stream=io.BytesIO(data), chunk_size=20000,
                                   metadata={"filename": "a.txt", "secret": "dropped"})
        uploader.upload()
        upload_id = uploader.url.rsplit("/", 1)[1]
        assert server.stored(upload_id) == data
        info = (server.path / f"{upload_id}.info").read_text()
        assert '"filename": "a.txt"' in info and "secret" not in info
        wait_until(lambda: f"upload {upload_id} finished: a.txt (50000 bytes)" in output.read_text(),
                   "the receiver to log the finished upload")

        reply = call(server.port, b"HEAD", b"/files/" + upload_id.encode(), {b"Authorization": b"Bearer nope"})
        assert reply.status == 401
        reply = call(server.port, b"POST", b"/files/", {b"Authorization": b"Bearer t0ken", b"Upload-Length": b"5"})
        assert (reply.status, reply.body) == (400, b'{"error": "an upload needs a filename"}')
        assert reply.header(b"content-type") == b"application/json"
        reply = call(server.port, b"POST", b"/files/", {b"Authorization": b"Bearer t0ken",
                                                        b"Upload-Length": b"2000000", b"Upload-Metadata": b"filename eA=="})
        assert reply.status == 413
        server.assert_clean_log()
    finally:
        server.stop()
