"""
The embedding example (docs/examples/embed.py) really works: tus at /files/
beside a plain page at /, and an echo server, in one reactor.  Once
in-process through its builder function, once as the script a user runs,
driven by a real tus client (tuspy).
"""

from __future__ import annotations

import importlib.util
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import pytest_twisted
import treq
from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol
from twisted.internet.protocol import Protocol

from txtus import make_site
from txtus.composer import StoreComposer
from txtus.config import TusConfig
from txtus.stores.file import FileStore

EXAMPLE = Path(__file__).resolve().parent.parent / "docs" / "examples" / "embed.py"
TUS = {"Tus-Resumable": "1.0.0"}


def _load_example():
    spec = importlib.util.spec_from_file_location("txtus_embed_example", EXAMPLE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _free_ports(count: int) -> list[int]:
    """Ports free right now on 127.0.0.1 (held together so they differ)."""
    sockets = [socket.socket() for _ in range(count)]
    try:
        for s in sockets:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


class _EchoClient(Protocol):
    def __init__(self, expected: int) -> None:
        self.expected = expected
        self.received = b""
        self.done: Deferred = Deferred()

    def dataReceived(self, data: bytes) -> None:
        self.received += data
        if len(self.received) >= self.expected and not self.done.called:
            self.done.callback(self.received)


@pytest_twisted.ensureDeferred
async def test_builder_serves_tus_hello_and_echo(tmp_path):
    example = _load_example()
    web_port, echo_port = _free_ports(2)
    uploads = tmp_path / "uploads"
    service = example.build_service(str(uploads), f"tcp:{web_port}:interface=127.0.0.1",
                                    f"tcp:{echo_port}:interface=127.0.0.1", reactor)
    service.startService()
    try:
        base = f"http://127.0.0.1:{web_port}"
        response = await treq.get(base + "/")
        assert response.code == 200
        assert await response.content() == b"hello\n"

        response = await treq.post(base + "/files/", headers={**TUS, "Upload-Length": "11"})
        assert response.code == 201
        location = response.headers.getRawHeaders("location")[0]
        assert location.startswith(base + "/files/")
        response = await treq.patch(location, b"hello world", headers={
            **TUS, "Upload-Offset": "0", "Content-Type": "application/offset+octet-stream"})
        assert response.code == 204, await response.text()
        assert response.headers.getRawHeaders("upload-offset") == ["11"]
        response = await treq.get(location)
        assert await response.content() == b"hello world"
        upload_id = location.rsplit("/", 1)[1]
        assert (uploads / upload_id).read_bytes() == b"hello world"

        client = _EchoClient(len(b"ping\n"))
        await connectProtocol(TCP4ClientEndpoint(reactor, "127.0.0.1", echo_port), client)
        client.transport.write(b"ping\n")
        assert await client.done.addTimeout(5, reactor) == b"ping\n"
        client.transport.loseConnection()
    finally:
        await service.stopService()


@pytest_twisted.ensureDeferred
async def test_default_root_greets(tmp_path):
    """The site `twist tus` serves answers / (operators check it is up)."""
    composer = StoreComposer()
    FileStore(str(tmp_path)).use_in(composer)
    site = make_site(TusConfig(composer=composer, reactor=reactor))
    port = reactor.listenTCP(0, site, interface="127.0.0.1")
    try:
        response = await treq.get(f"http://127.0.0.1:{port.getHost().port}/")
        assert response.code == 200
        assert b"tus" in await response.content()
        response = await treq.get(f"http://127.0.0.1:{port.getHost().port}/nothing-here")
        assert response.code == 404
        await response.content()
    finally:
        await port.stopListening()


def _wait_for_port(port: int, process: subprocess.Popen, deadline: float) -> None:
    while time.monotonic() < deadline:
        assert process.poll() is None, process.communicate()[0]
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.05)
    pytest.fail(f"port {port} never opened")


def test_script_with_tuspy(tmp_path):
    """The script as a user runs it, with a real tus client uploading."""
    from tusclient import client as tus_client

    web_port, echo_port = _free_ports(2)
    uploads = tmp_path / "uploads"
    # The checkout's txtus, installed (editable) or not.
    env = {**os.environ, "PYTHONPATH": str(EXAMPLE.parent.parent.parent)}
    process = subprocess.Popen(
        [sys.executable, str(EXAMPLE), "--uploads", str(uploads),
         "--web", f"tcp:{web_port}:interface=127.0.0.1", "--echo", f"tcp:{echo_port}:interface=127.0.0.1"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, cwd=tmp_path, env=env)
    try:
        deadline = time.monotonic() + 15
        _wait_for_port(web_port, process, deadline)
        _wait_for_port(echo_port, process, deadline)

        data = os.urandom(300 * 1024)
        source = tmp_path / "photo.bin"
        source.write_bytes(data)
        uploader = tus_client.TusClient(f"http://127.0.0.1:{web_port}/files/").uploader(
            str(source), chunk_size=128 * 1024, metadata={"filename": "photo.bin"})
        uploader.upload()
        upload_id = uploader.url.rsplit("/", 1)[1]
        assert (uploads / upload_id).read_bytes() == data

        with socket.create_connection(("127.0.0.1", echo_port), timeout=5) as echo:
            echo.sendall(b"are you there?")
            received = b""
            while len(received) < len(b"are you there?"):
                chunk = echo.recv(100)
                assert chunk
                received += chunk
        assert received == b"are you there?"
    finally:
        process.terminate()
        try:
            process.communicate(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.communicate(timeout=10)
