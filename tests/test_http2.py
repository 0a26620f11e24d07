"""
HTTP/2 over TLS (ALPN): uploads stream and are flow-controlled exactly as
on HTTP/1.1.  A real client (httpx with h2) uploads to a C{twist tus
--port ssl:...} process, and to an in-process server whose store holds the
body paused: the stream's flow-control window then stays closed and the
client's send stalls, until the store catches up.  Certificates are
self-signed, made at test time.
"""

from __future__ import annotations

import datetime
import ipaddress
import shutil
import ssl
import subprocess
from pathlib import Path

import pytest
import pytest_twisted
from twisted.internet import reactor, threads
from twisted.internet.endpoints import serverFromString

from tests import faultkit
from tests.tushttp import wait_for
from txtus.composer import StoreComposer
from txtus.config import TusConfig
from txtus.lockers.memory import MemoryLocker
from txtus.service import make_site
from txtus.stores.memory import MemoryStore

httpx = pytest.importorskip("httpx")
pytest.importorskip("h2")

OCTET = "application/offset+octet-stream"
TUS = {"Tus-Resumable": "1.0.0"}


@pytest.fixture
def certificate(tmp_path) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1: (key file, certificate file)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(hours=1)).not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                           critical=False)
            .sign(key, hashes.SHA256()))
    key_file, cert_file = tmp_path / "key.pem", tmp_path / "cert.pem"
    key_file.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return key_file, cert_file


def tls_port(key_file: Path, cert_file: Path) -> str:
    return f"ssl:0:interface=127.0.0.1:privateKey={key_file}:certKey={cert_file}"


def upload(base: str, cert_file: Path, data: bytes, piece: int) -> list[tuple[str, int, str | None]]:
    """Create and upload C{data} over HTTP/2 in PATCHes of C{piece}; (version, status, offset) of each."""
    seen = []
    tls = ssl.create_default_context(cafile=str(cert_file))
    with httpx.Client(http2=True, verify=tls, timeout=faultkit.WAIT) as client:
        response = client.post(base, headers={**TUS, "Upload-Length": str(len(data))})
        seen.append((response.http_version, response.status_code, None))
        location = response.headers["location"]
        for offset in range(0, len(data), piece):
            response = client.patch(location, content=data[offset:offset + piece], headers={
                **TUS, "Upload-Offset": str(offset), "Content-Type": OCTET})
            seen.append((response.http_version, response.status_code, response.headers.get("upload-offset")))
        response = client.head(location, headers=TUS)
        seen.append((response.http_version, response.status_code, response.headers.get("upload-offset")))
    return seen, location


def test_twist_tus_over_http2(tmp_path, certificate):
    server = faultkit.TwistProcess(tmp_path / "uploads", tmp_path, "--port", tls_port(*certificate))
    try:
        port = faultkit.wait_until(lambda: server.ports()[1:], "the TLS port")[0]
        data = bytes(range(256)) * 4096 + b"tail"  # 1 MiB and a bit: several windows
        seen, location = upload(f"https://127.0.0.1:{port}/files/", certificate[1], data, 300_000)
        assert {version for version, _, _ in seen} == {"HTTP/2"}
        assert [status for _, status, _ in seen] == [201, 204, 204, 204, 204, 200]
        assert seen[-1][2] == str(len(data))
        assert server.stored(location.rsplit("/", 1)[1]) == data
        server.assert_clean_log()
    finally:
        server.stop()


def test_http2_connections_are_counted_until_they_close(tmp_path, certificate):
    """
    Once ALPN picked HTTP/2, twisted.web swaps the connection's channel for
    an H2Connection: the site must still see the connection end (before,
    it never did: the open-connections gauge only grew, and a graceful stop
    waited for the connection until it gave up, 5 s later).
    """
    import time
    import urllib.request

    server = faultkit.TwistProcess(tmp_path / "uploads", tmp_path, "--port", tls_port(*certificate))
    try:
        plain, port = server.ports()[0], faultkit.wait_until(lambda: server.ports()[1:], "the TLS port")[0]
        upload(f"https://127.0.0.1:{port}/files/", certificate[1], b"x" * 1000, 600)

        def open_connections() -> float:
            with urllib.request.urlopen(f"http://127.0.0.1:{plain}/metrics", timeout=faultkit.WAIT) as reply:
                lines = [line for line in reply.read().decode().splitlines()
                         if line.startswith("txtus_open_connections ")]
            return float(lines[0].split()[1])

        faultkit.wait_until(lambda: open_connections() == 1.0, "the HTTP/2 connection to be counted as closed")
        started = time.monotonic()
        server.stop()
        assert time.monotonic() - started < 3.0
    finally:
        server.stop()


@pytest_twisted.ensureDeferred
async def test_slow_store_pauses_the_http2_stream(tmp_path, certificate):
    store = MemoryStore(high_water=16 * 1024, auto_drain=False, reactor=reactor)
    composer = StoreComposer()
    store.use_in(composer)
    MemoryLocker(reactor=reactor).use_in(composer)
    site = make_site(TusConfig(composer=composer, reactor=reactor))
    listening = await serverFromString(reactor, tls_port(*certificate)).listen(site)
    try:
        base = f"https://127.0.0.1:{listening.getHost().port}/files/"
        data = bytes(range(256)) * 16384  # 4 MiB, far more than any window
        client = threads.deferToThread(upload, base, certificate[1], data, len(data))

        async def paused():
            writer = store.last_writer
            return writer is not None and writer._paused

        await wait_for(paused)
        body = store.last_writer._producer
        stream = body._request.channel
        h2 = stream._conn.conn

        async def window_closed():
            # The client has used up what the server let it send, and the
            # server opens no more: the client cannot send another byte.
            return min(h2.inbound_flow_control_window,
                       h2._get_stream_by_id(stream.streamID).inbound_flow_control_window) == 0

        await wait_for(window_closed)
        assert not client.called
        held = body.received + sum(len(chunk) for chunk, _ in stream._inboundDataBuffer)
        assert held < 256 * 1024 < len(data)

        store.auto_drain = True
        store.last_writer.drain()
        seen, location = await client
        assert [status for _, status, _ in seen] == [201, 204, 200]
        assert {version for version, _, _ in seen} == {"HTTP/2"}
        assert bytes(store.data[location.rsplit("/", 1)[1]]) == data
    finally:
        await listening.stopListening()


def curl_with_http2() -> str | None:
    curl = shutil.which("curl")
    if curl is None:
        return None
    features = subprocess.run([curl, "--version"], capture_output=True, text=True).stdout
    return curl if "HTTP2" in features else None


def test_refused_body_over_http2_ends_only_its_stream(tmp_path, certificate):
    """
    A PATCH refused before its body is read gets its answer at once, and
    the stream is reset (RST_STREAM NO_ERROR, RFC 9113 8.1): the rest of
    the body is not read, and the connection carries the next request.
    """
    curl = curl_with_http2()
    if curl is None:
        pytest.skip("needs curl built with HTTP/2 (.ci/system-packages installs it)")
    key_file, cert_file = certificate
    server = faultkit.TwistProcess(tmp_path / "uploads", tmp_path, "--port", tls_port(key_file, cert_file))
    try:
        port = faultkit.wait_until(lambda: server.ports()[1:], "the TLS port")[0]
        upload_id = faultkit.create(server.port, 10)
        url = f"https://127.0.0.1:{port}/files/{upload_id}"
        big = tmp_path / "big.bin"
        big.write_bytes(b"z" * (4 << 20))
        result = subprocess.run(
            [curl, "-sS", "-v", "--http2", "--cacert", str(cert_file),
             "-X", "PATCH", "-H", "Tus-Resumable: 1.0.0", "-H", "Upload-Offset: 3",
             "-H", f"Content-Type: {OCTET}", "--data-binary", f"@{big}", "-o", "/dev/null",
             "-w", "%{http_version} %{http_code}\\n", url,
             "--next", "-sS", "--http2", "--cacert", str(cert_file), "-I", "-H", "Tus-Resumable: 1.0.0",
             "-w", "%{http_version} %{http_code}\\n", url],
            capture_output=True, text=True, timeout=faultkit.WAIT * 3)
        assert result.returncode == 0, result.stderr[-2000:]
        assert result.stdout.splitlines()[0] == "2 409"
        assert result.stdout.splitlines()[-1] == "2 200"
        assert "Re-using existing connection" in result.stderr
        assert faultkit.head(server.port, upload_id).offset == 0
        server.assert_clean_log()
    finally:
        server.stop()


# Trailers and interim responses over HTTP/2 --------------------------------

def h2_exchange(port: int, cert_file: Path, headers: list[tuple[str, str]], body: bytes = b"",
                trailers: list[tuple[str, str]] | None = None) -> tuple[list[dict], dict, bytes]:
    """
    One request on a fresh HTTP/2 connection with the h2 library (httpx
    cannot send trailers nor show 1xx): the interim responses' headers,
    the final response's headers, its body.
    """
    import socket

    import h2.config
    import h2.connection
    import h2.events

    tls = ssl.create_default_context(cafile=str(cert_file))
    tls.set_alpn_protocols(["h2"])
    raw = socket.create_connection(("127.0.0.1", port), timeout=faultkit.WAIT)
    with tls.wrap_socket(raw, server_hostname="127.0.0.1") as sock:
        assert sock.selected_alpn_protocol() == "h2"
        conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True, header_encoding="utf-8"))
        conn.initiate_connection()
        stream = conn.get_next_available_stream_id()
        request = [(":method", "PATCH" if body or trailers else "POST"), (":scheme", "https"),
                   (":authority", f"127.0.0.1:{port}"), *headers]
        conn.send_headers(stream, request, end_stream=not body and not trailers)
        if body:
            conn.send_data(stream, body, end_stream=not trailers)
        if trailers:
            conn.send_headers(stream, trailers, end_stream=True)
        sock.sendall(conn.data_to_send())
        interim: list[dict] = []
        final: dict = {}
        received = b""
        while True:
            data = sock.recv(65536)
            if not data:
                break
            for event in conn.receive_data(data):
                if isinstance(event, h2.events.InformationalResponseReceived):
                    interim.append(dict(event.headers))
                elif isinstance(event, h2.events.ResponseReceived):
                    final = dict(event.headers)
                elif isinstance(event, h2.events.DataReceived):
                    received += event.data
                    conn.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
                elif isinstance(event, (h2.events.StreamEnded, h2.events.StreamReset)):
                    sock.sendall(conn.data_to_send())
                    return interim, final, received
            sock.sendall(conn.data_to_send())
    raise AssertionError("the connection closed before the response ended")


@pytest.fixture
def h2_server(tmp_path, certificate):
    server = faultkit.TwistProcess(tmp_path / "uploads", tmp_path, "--port", tls_port(*certificate))
    port = faultkit.wait_until(lambda: server.ports()[1:], "the TLS port")[0]
    yield server, port, certificate[1]
    server.stop()


def test_checksum_trailer_over_http2(h2_server):
    import base64
    import hashlib
    server, port, cert_file = h2_server
    upload_id = faultkit.create(server.port, 10)
    path = f"/files/{upload_id}"
    base = [(":path", path), ("tus-resumable", "1.0.0"), ("content-type", OCTET), ("trailer", "Upload-Checksum")]

    def digest(data: bytes) -> str:
        return "sha1 " + base64.b64encode(hashlib.sha1(data).digest()).decode()

    _, final, body = h2_exchange(port, cert_file, [*base, ("upload-offset", "0")], b"hello",
                                 [("upload-checksum", digest(b"wrong"))])
    assert final[":status"] == "460", body
    _, final, body = h2_exchange(port, cert_file, [*base, ("upload-offset", "0")], b"hello",
                                 [("upload-checksum", digest(b"hello"))])
    assert final[":status"] == "204" and final["upload-offset"] == "5", body
    # Announced but never sent: a clear 400, the chunk not kept.
    _, final, body = h2_exchange(port, cert_file, [*base, ("upload-offset", "5")], b"world")
    assert final[":status"] == "400", body
    assert faultkit.head(server.port, upload_id).offset == 5
    assert server.stored(upload_id) == b"hello"
    server.assert_clean_log()


def test_ietf_draft_104_over_http2(h2_server):
    server, port, cert_file = h2_server
    interim, final, body = h2_exchange(port, cert_file, [
        (":path", "/files/"), ("upload-draft-interop-version", "6"), ("upload-complete", "?1"),
        ("content-type", "application/octet-stream")], b"hello h2")
    assert [i[":status"] for i in interim] == ["104"]
    location = interim[0]["location"]
    assert interim[0]["upload-draft-interop-version"] == "6"
    assert final[":status"] == "201", body
    assert final["location"] == location
    assert server.stored(location.rsplit("/", 1)[1]) == b"hello h2"
    server.assert_clean_log()


def test_graceful_stop_says_goaway_to_an_idle_http2_connection(h2_server):
    """
    An HTTP/2 client learns why its idle connection ends: a GOAWAY with
    NO_ERROR (no new streams here; retry elsewhere), then the close, at
    once, not when the stop gives up on the connection.
    """
    import signal
    import socket
    import time

    import h2.config
    import h2.connection
    import h2.errors
    import h2.events

    server, port, cert_file = h2_server
    tls = ssl.create_default_context(cafile=str(cert_file))
    tls.set_alpn_protocols(["h2"])
    raw = socket.create_connection(("127.0.0.1", port), timeout=faultkit.WAIT)
    with tls.wrap_socket(raw, server_hostname="127.0.0.1") as sock:
        conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True, header_encoding="utf-8"))
        conn.initiate_connection()
        stream = conn.get_next_available_stream_id()
        conn.send_headers(stream, [(":method", "OPTIONS"), (":scheme", "https"), (":authority", f"127.0.0.1:{port}"),
                                   (":path", "/files/")], end_stream=True)
        sock.sendall(conn.data_to_send())
        events: list = []
        while not any(isinstance(e, h2.events.StreamEnded) for e in events):
            events += conn.receive_data(sock.recv(65536))
            sock.sendall(conn.data_to_send())
        started = time.monotonic()
        server.process.send_signal(signal.SIGTERM)
        goaway = None
        while True:
            try:
                data = sock.recv(65536)
            except (ssl.SSLError, OSError):
                break
            if not data:
                break
            for event in conn.receive_data(data):
                if isinstance(event, h2.events.ConnectionTerminated):
                    goaway = event
    assert goaway is not None and goaway.error_code == h2.errors.ErrorCodes.NO_ERROR
    assert server.process.wait(faultkit.WAIT) == 0
    assert time.monotonic() - started < 2.0
