"""
A real C{redis-server} for the tests (the Debian package, listed in
C{.ci/system-packages}): started once per session on a free loopback port,
with no persistence and no config file, and stopped (by its PID) at the end.

L{start_tls} starts one that listens only for TLS (C{rediss://}), with a
CA and a server certificate made by L{make_ca}/L{make_certificate}; it
skips when this redis-server was built without TLS.

Tests that need it take the C{redis_server} fixture (registered by
C{tests/conftest.py}); it skips, saying why, only when C{redis-server} is
not installed at all.  Each test keeps out of the others' way with its own
key prefix (L{RedisServer.prefix}) rather than flushing the database.
"""

from __future__ import annotations

import datetime
import ipaddress
import shutil
import signal
import socket
import ssl
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
    # For a TLS-only server (L{start_tls}): the CA file that verifies it.
    ca_file: Path | None = None

    @property
    def url(self) -> str:
        if self.ca_file is not None:
            return f"rediss://127.0.0.1:{self.port}/0?ssl_ca_certs={self.ca_file}"
        return f"redis://127.0.0.1:{self.port}/0"

    @staticmethod
    def prefix() -> str:
        """A key prefix no other test uses."""
        return f"test-{uuid.uuid4().hex[:12]}:"

    def command(self, *args: str, client: tuple[Path, Path] | None = None) -> bytes:
        """
        One command over a plain socket (TLS for a TLS server, presenting
        C{client}, a key and certificate file, if given), for checks the
        locker does not make.
        """
        with socket.create_connection(("127.0.0.1", self.port), timeout=5) as raw:
            sock = raw
            if self.ca_file is not None:
                context = ssl.create_default_context(cafile=str(self.ca_file))
                if client is not None:
                    context.load_cert_chain(str(client[1]), str(client[0]))
                sock = context.wrap_socket(raw, server_hostname="127.0.0.1")
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
    port = port or free_port()
    return _start(directory, port, ["--port", str(port)])


def start_tls(directory: Path, ca: "CA", port: int | None = None,
              server: tuple[Path, Path] | None = None, client_auth: bool = False) -> RedisServer:
    """
    Start redis-server listening for TLS only, on C{port}, with C{server}
    (key file, certificate file: by default one C{ca} signs for
    127.0.0.1); clients must present a certificate C{ca} signs only with
    C{client_auth}.  Skips when this
    redis-server has no TLS.
    """
    port = port or free_port()
    key_file, cert_file = server or ca.issue(directory, "127.0.0.1")
    args = ["--port", "0", "--tls-port", str(port), "--tls-cert-file", str(cert_file),
            "--tls-key-file", str(key_file), "--tls-ca-cert-file", str(ca.cert_file),
            "--tls-auth-clients", "yes" if client_auth else "no"]
    client = ca.issue(directory, "127.0.0.1", name="probe-client") if client_auth else None
    try:
        return _start(directory, port, args, ca_file=ca.cert_file, client=client)
    except RuntimeError as e:
        if "tls" in str(e).lower() and ("not supported" in str(e).lower() or "bad directive" in str(e).lower()):
            pytest.skip(f"this redis-server was built without TLS: {e}")
        raise


def _start(directory: Path, port: int, listen: list[str], ca_file: Path | None = None,
           client: tuple[Path, Path] | None = None) -> RedisServer:
    executable = shutil.which("redis-server")
    if executable is None:
        pytest.skip("redis-server is not installed (Debian package redis-server, see .ci/system-packages)")
    log = directory / "redis.log"
    process = subprocess.Popen(
        [executable, *listen, "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
         "--dir", str(directory), "--logfile", str(log)],
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    server = RedisServer(process, port, directory, ca_file)
    deadline = time.monotonic() + START_TIMEOUT
    while True:
        if process.poll() is not None:
            # Option errors go to stderr, before the log file is opened.
            stderr = process.stderr.read().decode("utf-8", "replace") if process.stderr else ""
            raise RuntimeError(f"redis-server exited with {process.returncode}: {stderr[-2000:]}"
                               f"{log.read_text()[-2000:] if log.exists() else ''}")
        try:
            if server.command("PING", client=client) == b"+PONG\r\n":
                return server
        except OSError:
            pass
        if time.monotonic() > deadline:
            stop(server)
            raise RuntimeError("redis-server did not answer PING in time")
        time.sleep(0.02)


@dataclass
class CA:
    """A certificate authority made for one test: signs server certificates."""

    key: object
    certificate: object
    cert_file: Path

    def issue(self, directory: Path, address: str, name: str = "server") -> tuple[Path, Path]:
        """A key and a certificate this CA signs for the IP C{address}: (key file, certificate file)."""
        from cryptography.hazmat.primitives.asymmetric import ec

        key = ec.generate_private_key(ec.SECP256R1())
        cert = _certificate(key, address, self.certificate.subject, self.key, ca=False,
                            alternative=ipaddress.ip_address(address))
        return _write(directory, name, key, cert)


def make_ca(directory: Path, name: str = "ca") -> CA:
    """A self-signed CA, its certificate written to C{directory/<name>.pem}."""
    from cryptography.hazmat.primitives.asymmetric import ec

    key = ec.generate_private_key(ec.SECP256R1())
    cert = _certificate(key, f"txtus test CA {uuid.uuid4().hex[:8]}", None, key, ca=True)
    _, cert_file = _write(directory, name, None, cert)
    return CA(key, cert, cert_file)


def _certificate(key, common_name, issuer, issuer_key, ca: bool, alternative=None):
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes
    from cryptography.x509.oid import NameOID

    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, str(common_name))])
    now = datetime.datetime.now(datetime.timezone.utc)
    builder = (x509.CertificateBuilder().subject_name(subject).issuer_name(issuer or subject)
               .public_key(key.public_key()).serial_number(x509.random_serial_number())
               .not_valid_before(now - datetime.timedelta(hours=1))
               .not_valid_after(now + datetime.timedelta(days=1))
               .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True))
    if ca:
        builder = builder.add_extension(x509.KeyUsage(
            digital_signature=True, content_commitment=False, key_encipherment=False, data_encipherment=False,
            key_agreement=False, key_cert_sign=True, crl_sign=True, encipher_only=False, decipher_only=False),
            critical=True)
    if alternative is not None:
        builder = builder.add_extension(x509.SubjectAlternativeName([x509.IPAddress(alternative)]),
                                        critical=False)
    return builder.sign(issuer_key, hashes.SHA256())


def _write(directory: Path, name: str, key, cert) -> tuple[Path, Path]:
    from cryptography.hazmat.primitives import serialization

    key_file, cert_file = directory / f"{name}-key.pem", directory / f"{name}.pem"
    if key is not None:
        key_file.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                               serialization.NoEncryption()))
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return key_file, cert_file


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


@pytest.fixture(scope="session")
def redis_tls_server(tmp_path_factory):
    """A TLS-only redis-server (C{url} is C{rediss://...?ssl_ca_certs=...})."""
    directory = tmp_path_factory.mktemp("redis-tls")
    server = start_tls(directory, make_ca(directory))
    try:
        yield server
    finally:
        stop(server)


@pytest.fixture
def redis_prefix(redis_server):
    return redis_server.prefix()


__all__ = ["CA", "RedisServer", "free_port", "make_ca", "redis_prefix", "redis_server", "redis_tls_server", "start",
           "start_tls", "stop"]

