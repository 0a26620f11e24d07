"""
The servers the benchmark measures, each started as its own process on a
fresh store directory, and what C{/proc} says about that process (peak RSS,
CPU seconds).

- C{txtus-default}: C{twist tus} with its default options (fsync on
  finish), as an operator starts it: what the targets are judged on.
- C{txtus}: the same with C{--fsync never} (the other servers never fsync).
- C{txtus-hooks}: C{txtus} with every hook event sent to an in-process
  no-op hook (only with C{--peers}): the cost of hooks.
- C{txtus-nometrics}: C{txtus} with C{--disable-metrics} (only with
  C{--peers}): the cost of metrics, and with C{txtus-hooks}, of both.
- C{twisted}: the no-logic twisted.web server of L{twisted_server}: the
  ceiling a Twisted server can reach.
- C{asyncio}: the no-logic asyncio server of L{minimal_server}.
- C{discard}: the same, throwing bodies away; shows the load generator's
  own limit.
- C{tus-node}: @tus/server 2.x with @tus/file-store, installed with npm into
  the benchmark's temporary folder, when C{node} and C{npm} exist.

The tus servers are started as their documentation shows, with their
default listen backlog; only the no-logic servers ask for a long one.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import socket
import subprocess
import sys
from dataclasses import dataclass, field
from typing import Any

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
ALL = ("txtus-default", "txtus", "twisted", "asyncio", "discard", "tus-node")
# Measured only when asked for (--peers): what a feature costs.
EXTRA = ("txtus-hooks", "txtus-nometrics")

NODE_SERVER = """\
import { Server } from '@tus/server';
import { FileStore } from '@tus/file-store';

const [port, directory] = process.argv.slice(2);
const server = new Server({ path: '/files', datastore: new FileStore({ directory }) });
server.listen({ host: '127.0.0.1', port: Number(port) }, () => console.log('listening'));
"""


@dataclass
class Peer:
    """How to start one kind of server; C{stores} says whether bytes land on disk."""

    name: str
    command: list[str]  # with {port} and {dir} placeholders
    stores: bool = True
    env: dict[str, str] = field(default_factory=dict)
    cwd: str | None = None


@dataclass
class Running:
    peer: Peer
    process: Any
    port: int
    directory: str
    log_path: str

    @property
    def pid(self) -> int:
        return self.process.pid


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _child_env(extra: dict[str, str]) -> dict[str, str]:
    env = dict(os.environ)
    # A fresh clone works without installing txtus: the repository root
    # holds both the package and its twisted/plugins/ entry.
    env["PYTHONPATH"] = REPO + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    env.update(extra)
    return env


def python_peers() -> dict[str, Peer]:
    twist = [sys.executable, "-m", "twisted", "tus", "--port", "tcp:{port}:interface=127.0.0.1", "--path", "{dir}"]
    minimal = [sys.executable, os.path.join(HERE, "minimal_server.py")]
    return {
        "txtus-default": Peer("txtus-default", twist),
        "txtus": Peer("txtus", twist + ["--fsync", "never"]),
        # Every hook event to an in-process no-op handler (benchmarks/twisted/plugins/).
        "txtus-hooks": Peer("txtus-hooks", twist + ["--fsync", "never", "--hooks-plugin", "bench-noop",
                                                    "--hooks-enabled-events", ""],
                            env={"PYTHONPATH": os.pathsep.join([REPO, HERE, os.environ.get("PYTHONPATH", "")])}),
        "txtus-nometrics": Peer("txtus-nometrics", twist + ["--fsync", "never", "--disable-metrics"]),
        "twisted": Peer("twisted", [sys.executable, os.path.join(HERE, "twisted_server.py"), "{port}", "{dir}"]),
        "asyncio": Peer("asyncio", minimal + ["store", "{port}", "{dir}"]),
        "discard": Peer("discard", minimal + ["discard", "{port}", "{dir}"], stores=False),
    }


def install_tus_node(workdir: str, timeout: float = 240.0) -> tuple[Peer | None, str]:
    """Install @tus/server 2.x into C{workdir}; the peer, or None and why not."""
    node, npm = shutil.which("node"), shutil.which("npm")
    if not node or not npm:
        return None, "node and npm are not both on PATH"
    folder = os.path.join(workdir, "tus-node")
    os.makedirs(folder, exist_ok=True)
    with open(os.path.join(folder, "package.json"), "w") as f:
        f.write('{"name": "txtus-bench-peer", "private": true, "type": "module"}\n')
    with open(os.path.join(folder, "server.mjs"), "w") as f:
        f.write(NODE_SERVER)
    try:
        result = subprocess.run([npm, "install", "--no-audit", "--no-fund", "--loglevel=error",
                                 "@tus/server@2", "@tus/file-store@2"], cwd=folder, capture_output=True,
                                text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return None, f"npm install did not finish in {timeout:.0f} s"
    if result.returncode != 0:
        return None, "npm install failed: " + (result.stderr.strip().splitlines() or ["(no output)"])[-1]
    version = "?"
    try:
        import json
        with open(os.path.join(folder, "node_modules", "@tus", "server", "package.json")) as f:
            version = json.load(f)["version"]
    except (OSError, ValueError, KeyError):
        pass
    peer = Peer("tus-node", [node, os.path.join(folder, "server.mjs"), "{port}", "{dir}"], cwd=folder)
    peer.env["TUS_NODE_VERSION"] = version
    return peer, f"@tus/server {version} on node {subprocess.run([node, '--version'], capture_output=True, text=True).stdout.strip()}"


async def start(peer: Peer, directory: str, log_dir: str, timeout: float = 30.0) -> Running:
    port = free_port()
    os.makedirs(directory, exist_ok=True)
    command = [part.format(port=port, dir=directory) for part in peer.command]
    log_path = os.path.join(log_dir, f"{peer.name}-{port}.log")
    log = open(log_path, "wb")
    process = await asyncio.create_subprocess_exec(*command, stdin=subprocess.DEVNULL, stdout=log,
                                                   stderr=subprocess.STDOUT, env=_child_env(peer.env),
                                                   cwd=peer.cwd or REPO)
    log.close()
    running = Running(peer, process, port, directory, log_path)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while loop.time() < deadline:
        if process.returncode is not None:
            break
        try:
            _, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.close()
            return running
        except OSError:
            await asyncio.sleep(0.05)
    await stop(running)
    raise RuntimeError(f"{peer.name} did not start listening; log tail:\n{log_tail(log_path)}")


async def stop(running: Running, grace: float = 5.0) -> None:
    process = running.process
    if process.returncode is None:
        process.send_signal(signal.SIGTERM)
        try:
            await asyncio.wait_for(process.wait(), grace)
        except asyncio.TimeoutError:
            process.kill()
            await process.wait()


def log_tail(path: str, lines: int = 15) -> str:
    try:
        with open(path, "rb") as f:
            return b"\n".join(f.read()[-8000:].splitlines()[-lines:]).decode("utf-8", "replace")
    except OSError:
        return "(no log)"


_TICK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """utime + stime of C{pid}, all threads."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / _TICK


def memory(pid: int) -> dict[str, float]:
    """C{VmRSS} and C{VmHWM} (peak RSS) of C{pid}, in MiB."""
    result = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(("VmRSS:", "VmHWM:")):
                name, value = line.split(":", 1)
                result[name] = int(value.split()[0]) / 1024.0
    return result
