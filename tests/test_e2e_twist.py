"""
End to end: C{twist tus} as a real process on a loopback port, driven by the
tuspy client (C{tusclient}) and by raw sockets that cut an upload off
mid-body, and checked against the bytes on disk.  Also the CLI's failure
mode: a bad option or an unusable C{--path} exits non-zero with one error
line.
"""

from __future__ import annotations

import io
import json
import os
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

tusclient = pytest.importorskip("tusclient.client")

import txtus
from faultkit import TwistProcess, wait_until

REPO = str(Path(txtus.__file__).resolve().parent.parent)
WAIT = 10.0  # seconds any one real event may take


def twist_command(*args: str) -> list[str]:
    return [sys.executable, "-m", "twisted", "tus", *args]


def twist_env() -> dict[str, str]:
    # The plugin (twisted/plugins/tus_plugin.py) is found through sys.path.
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (REPO, env.get("PYTHONPATH")) if p)
    return env


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def twist(tmp_path_factory: Any) -> Any:
    base = tmp_path_factory.mktemp("twist")
    server = TwistProcess(base / "uploads", base)
    yield server
    server.stop()
    assert server.process.returncode is not None


def client(server: TwistProcess) -> Any:
    return tusclient.TusClient(server.url)


@pytest.mark.parametrize("chunk_size", [1024 * 1024, 64 * 1024 * 1024])
def test_tuspy_upload(twist: TwistProcess, chunk_size: int) -> None:
    data = os.urandom(3 * 1024 * 1024 + 12345)
    uploader = client(twist).uploader(file_stream=io.BytesIO(data), chunk_size=chunk_size,
                                      metadata={"filename": "ünïcode.bin"})
    uploader.upload()
    assert uploader.offset == len(data)
    assert twist.stored(uploader.url.rsplit("/", 1)[1]) == data
    info = json.loads((twist.path / (uploader.url.rsplit("/", 1)[1] + ".info")).read_bytes())
    assert info["Size"] == len(data)
    assert info["MetaData"]["filename"] == "ünïcode.bin"


def _head_offset(server: TwistProcess, url: str) -> int | None:
    with socket.create_connection(("127.0.0.1", server.port), timeout=WAIT) as s:
        path = "/" + url.split("/", 3)[3]
        s.sendall(f"HEAD {path} HTTP/1.1\r\nHost: x\r\nTus-Resumable: 1.0.0\r\nConnection: close\r\n\r\n".encode())
        response = b""
        while chunk := s.recv(65536):
            response += chunk
    for line in response.split(b"\r\n"):
        name, _, value = line.partition(b":")
        if name.lower() == b"upload-offset":
            return int(value)
    return None


def test_cut_connection_then_tuspy_resumes(twist: TwistProcess) -> None:
    data = os.urandom(4 * 1024 * 1024)
    sent = 1536 * 1024 + 7
    uploader = client(twist).uploader(file_stream=io.BytesIO(data), chunk_size=len(data))
    url = uploader.create_url()
    path = "/" + url.split("/", 3)[3]

    s = socket.create_connection(("127.0.0.1", twist.port), timeout=WAIT)
    s.sendall((f"PATCH {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nTus-Resumable: 1.0.0\r\n"
               f"Content-Type: application/offset+octet-stream\r\nUpload-Offset: 0\r\n"
               f"Content-Length: {len(data)}\r\n\r\n").encode() + data[:sent])
    wait_until(lambda: twist.stored_size(url.rsplit("/", 1)[1]) == sent, "the first bytes to reach the disk")
    # Kill the connection: a reset, not a polite close.
    s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
    s.close()

    assert wait_until(lambda: _head_offset(twist, url) == sent, "HEAD to report the bytes kept")
    resumed = client(twist).uploader(file_stream=io.BytesIO(data), url=url, chunk_size=1024 * 1024)
    assert resumed.offset == sent
    resumed.upload()
    assert resumed.offset == len(data)
    assert twist.stored(url.rsplit("/", 1)[1]) == data
    assert twist.process.poll() is None


@pytest.mark.parametrize("args, message", [
    (["--bogus"], "--bogus"),
    (["--max-size", "12XB"], "--max-size"),
    (["--path", "{file}"], "--path"),
    (["--path", "{file}/below"], "--path"),
    (["--locker", "redis", "--redis-url", "redis://127.0.0.1:{free}/0"], "--redis-url: cannot reach Redis"),
    (["--locker", "redis", "--redis-url", "redis:/nohost"], "--redis-url"),
])
def test_bad_options_fail_with_one_line(tmp_path: Path, args: list[str], message: str) -> None:
    not_a_directory = tmp_path / "a-file"
    not_a_directory.write_bytes(b"")
    args = [a.format(file=not_a_directory, free=free_port()) for a in args]
    result = subprocess.run(twist_command("--port", f"tcp:{free_port()}:interface=127.0.0.1", *args),
                            env=twist_env(), stdin=subprocess.DEVNULL, capture_output=True, timeout=60)
    assert result.returncode != 0
    first_line = result.stderr.decode().splitlines()[0]
    assert first_line.startswith("Error: ") and message in first_line, result.stderr
    assert b"Traceback" not in result.stderr + result.stdout
    assert not any(tmp_path.glob("a-file/*"))
