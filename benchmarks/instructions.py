"""
Instructions per upload: each server runs under valgrind's callgrind,
counting from the moment it listens (instrumentation is off while it
starts, which keeps start-up bearable), a fixed number of uploads is driven
through it by the benchmark's load generator, and the instructions it
executed are divided by the uploads.  Unlike CPU seconds, the count
barely changes with what else runs on the machine, so it is what to compare
when judging an optimisation on a shared machine.

    python benchmarks/instructions.py [--peers txtus-default,twisted] [--count 300] [--scenario c]

Valgrind slows a server down about fifty times: keep the count small.  The
callgrind output files are kept with C{--keep DIR} (read them with
C{callgrind_annotate}).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
if HERE not in sys.path:
    sys.path.insert(0, HERE)

import peers  # noqa: E402
import run  # noqa: E402


def _totals(path: str) -> int:
    with open(path) as f:
        for line in f:
            if line.startswith(("totals:", "summary:")):
                return int(line.split()[1])
    raise RuntimeError(f"no totals in {path}")


async def _control(*args: str) -> None:
    process = await asyncio.create_subprocess_exec("callgrind_control", *args, stdout=subprocess.DEVNULL,
                                                   stderr=subprocess.DEVNULL)
    await process.wait()


async def measure(peer: peers.Peer, scenario: run.Scenario, workdir: str, loadgen: str) -> tuple[int, int]:
    """(instructions, uploads) of one server over one scenario."""
    out = os.path.join(workdir, f"callgrind.{peer.name}")
    traced = peers.Peer(peer.name, ["valgrind", "--tool=callgrind", "--instr-atstart=no",
                                    f"--callgrind-out-file={out}.%p"] + peer.command, peer.stores, peer.env, peer.cwd)
    server = await peers.start(traced, os.path.join(workdir, "data", peer.name), workdir, timeout=1800)
    try:
        await _control("--instr=on", str(server.pid))
        spec = {"host": "127.0.0.1", "port": server.port, "base_path": "/files/", "mode": scenario.mode,
                "first": 0, "count": scenario.count, "concurrency": scenario.concurrency, "size": scenario.size,
                "chunk": scenario.chunk, "creation_with_upload": scenario.creation_with_upload,
                "interval": 0, "length": 0}
        process = await asyncio.create_subprocess_exec(
            sys.executable, loadgen, json.dumps(spec), stdin=subprocess.PIPE, stdout=subprocess.PIPE,
            limit=256 << 20, cwd=HERE)
        await run._expect(process, "ready", 60)
        run._tell(process, "go")
        result = json.loads(await asyncio.wait_for(process.stdout.readline(), 3600))
        process.stdin.close()
        await process.wait()
        await _control("-d", str(server.pid))
        if result["error_count"]:
            raise RuntimeError(f"{peer.name}: {result['error_count']} errors, e.g. {result['errors'][:2]}")
    finally:
        await peers.stop(server, grace=60)
    dumps = sorted(name for name in os.listdir(workdir) if name.startswith(f"callgrind.{peer.name}.")
                   and name.endswith(".1"))
    return _totals(os.path.join(workdir, dumps[-1])), len(result["uploads"])


async def main(args: argparse.Namespace) -> int:
    if not shutil.which("valgrind") or not shutil.which("callgrind_control"):
        raise SystemExit("valgrind (with callgrind_control) is needed")
    scenario = run.replace(run.FULL[args.scenario], count=args.count, concurrency=args.concurrency)
    available = peers.python_peers()
    workdir = args.keep or tempfile.mkdtemp(prefix="txtus-instr-", dir="/dev/shm" if os.access("/dev/shm", os.W_OK)
                                            else None)
    os.makedirs(workdir, exist_ok=True)
    print(f"scenario {scenario.name}: {scenario.count} uploads x {scenario.size} bytes, {scenario.concurrency} "
          f"at a time, under callgrind", flush=True)
    try:
        for name in args.peers.split(","):
            instructions, uploads = await measure(available[name], scenario, workdir, args.loadgen)
            print(f"  {name:<14} {instructions / uploads / 1e6:8.3f} M instructions per upload "
                  f"({instructions:,} for {uploads})", flush=True)
    finally:
        if not args.keep:
            shutil.rmtree(workdir, ignore_errors=True)
    return 0


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--peers", default="txtus-default,twisted", help="Python servers to measure")
    parser.add_argument("--scenario", default="c", choices=("a", "c"))
    parser.add_argument("--count", type=int, default=300, help="uploads (default 300)")
    parser.add_argument("--concurrency", type=int, default=30, help="uploads at a time (default 30)")
    parser.add_argument("--loadgen", default=os.path.join(HERE, "loadgen.py"), help="load generator script")
    parser.add_argument("--keep", help="keep the callgrind files in this folder")
    return parser.parse_args(argv)


if __name__ == "__main__":
    sys.exit(asyncio.run(main(parse_args())))
