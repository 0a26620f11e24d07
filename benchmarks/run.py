"""
txtus benchmark: one command that starts each server, drives the
scenarios of issues 4 and 10 against it from separate load-generator processes,
verifies every stored byte, and prints throughput, latency percentiles,
peak server RSS, server CPU seconds, the ratios to the other servers and
PASS/FAIL for each target.

    python benchmarks/run.py [--quick] [--scenarios a,b,c,d] [--peers txtus-default,twisted,...]

Scenarios (MiB = 2^20):
  a  200 uploads x 1 MiB, 50 at a time, POST then one PATCH each
  b  8 uploads x 256 MiB, 4 at a time, 8 MiB PATCHes
  c  2000 uploads x 10 KiB, 200 at a time, creation-with-upload POST then HEAD
  d  10,000 uploads open at once, each trickling 1 byte every few seconds,
     while a separate probe HEADs other uploads and the server's RSS is read

The exit status is 0 when every upload completed and every stored byte
matched what was sent, 1 otherwise (with --strict, also 1 when a
performance target is missed).  Performance figures never change the exit
status by default: the machine may be shared and noisy.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import platform
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, replace
from typing import Any

HERE = os.path.dirname(os.path.abspath(__file__))
if HERE not in sys.path:
    sys.path.insert(0, HERE)

import content  # noqa: E402
import peers  # noqa: E402

KiB, MiB = 1 << 10, 1 << 20
RSS_LIMIT_MIB = 64
D_RSS_LIMIT_MIB = 400
D_HEAD_P99_MS = 50.0


@dataclass(frozen=True)
class Scenario:
    name: str
    title: str
    mode: str  # "uploads" or "trickle"
    count: int
    size: int = 0
    chunk: int = 0
    concurrency: int = 0
    creation_with_upload: bool = False
    interval: float = 0.0  # trickle: seconds between bytes
    length: int = 0  # trickle: bytes per upload

    @property
    def unit(self) -> str:
        return "uploads/s" if self.creation_with_upload else "MiB/s"


FULL = {
    "a": Scenario("a", "200 uploads x 1 MiB, 50 at a time, one PATCH each", "uploads", 200, MiB, MiB, 50),
    "b": Scenario("b", "8 uploads x 256 MiB, 4 at a time, 8 MiB PATCHes", "uploads", 8, 256 * MiB, 8 * MiB, 4),
    "c": Scenario("c", "2000 uploads x 10 KiB, 200 at a time, creation-with-upload then HEAD", "uploads",
                  2000, 10 * KiB, 0, 200, creation_with_upload=True),
    "d": Scenario("d", "10,000 uploads open at once, 1 byte every 5 s each, HEAD probe meanwhile", "trickle",
                  10_000, interval=5.0, length=9),
}
QUICK = {
    "a": replace(FULL["a"], title="40 uploads x 1 MiB, 10 at a time, one PATCH each", count=40, concurrency=10),
    "b": replace(FULL["b"], title="4 uploads x 32 MiB, 2 at a time, 8 MiB PATCHes", count=4, size=32 * MiB,
                 concurrency=2),
    "c": replace(FULL["c"], title="300 uploads x 10 KiB, 50 at a time, creation-with-upload then HEAD",
                 count=300, concurrency=50),
    "d": replace(FULL["d"], title="300 uploads open at once, 1 byte every 1 s each, HEAD probe meanwhile",
                 count=300, interval=1.0, length=4),
}


def say(text: str = "") -> None:
    print(text, flush=True)


# Open-file limits ----------------------------------------------------------

def raise_open_file_limit(wanted: int) -> int:
    """Raise RLIMIT_NOFILE (inherited by every child) towards C{wanted}; the soft limit reached."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard < wanted:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, wanted))  # works as root
            return wanted
        except (ValueError, OSError):
            pass
    target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
    if soft < target:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def fit_trickle(scenario: Scenario, clients: int) -> Scenario:
    """Scale scenario d down, with a printed note, when the machine cannot hold it."""
    n = scenario.count
    # The server holds a socket and a file per upload; each client a socket.
    limit = raise_open_file_limit(max(2 * n + 1000, n // clients + 1000, 4096))
    fit = min(n, (limit - 500) // 2)
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range") as f:
            low, high = map(int, f.read().split())
        fit = min(fit, high - low - 2000)
    except (OSError, ValueError):
        pass
    if fit < n:
        say(f"NOTE: scenario d scaled down from {n} to {fit} uploads: only {limit} open files "
            f"(RLIMIT_NOFILE) or too few local ports for {n} sockets")
        return replace(scenario, count=max(fit, 1), title=scenario.title.replace(f"{n:,}", f"{fit:,}"))
    return scenario


# One measured run ------------------------------------------------------------

@dataclass
class Measured:
    scenario: str
    peer: str
    ok: bool = True
    wall: float = 0.0
    bytes: int = 0
    uploads: int = 0
    latencies: dict | None = None
    rss_peak: float = 0.0
    rss_idle: float = 0.0
    rss_hold: float = 0.0
    cpu: float = 0.0
    client_cpu: float = 0.0
    errors: int = 0
    error_samples: list | None = None
    verified: int = 0
    verify_failures: list | None = None
    note: str = ""

    def throughput(self, unit: str) -> float:
        if not self.wall:
            return 0.0
        return self.uploads / self.wall if unit == "uploads/s" else self.bytes / MiB / self.wall


def split(total: int, parts: int) -> list[int]:
    return [total // parts + (1 if i < total % parts else 0) for i in range(parts)]


async def _spawn(spec: dict) -> Any:
    return await asyncio.create_subprocess_exec(
        sys.executable, os.path.join(HERE, "loadgen.py"), json.dumps(spec),
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, limit=256 * MiB, cwd=HERE)


async def _expect(process: Any, word: str, timeout: float) -> None:
    line = await asyncio.wait_for(process.stdout.readline(), timeout)
    if line.strip().decode() != word:
        raise RuntimeError(f"load generator said {line[:300]!r}, expected {word!r}")


def _tell(process: Any, word: str) -> None:
    process.stdin.write(word.encode() + b"\n")


async def measure(scenario: Scenario, peer: peers.Peer, workdir: str, clients: int, run: int,
                  profile: str | None = None) -> Measured:
    directory = os.path.join(workdir, "data", f"{peer.name}-{scenario.name}-{run}")
    result = Measured(scenario.name, peer.name)
    server = await peers.start(peer, directory, workdir)
    pid = server.pid
    profiler = None
    if profile and peer.name.startswith("txtus"):
        profiler = await _start_profiler(pid, os.path.join(profile, f"{peer.name}-{scenario.name}-{run + 1}.txt"))
    workers: list[Any] = []
    probe = None
    sampling = True
    rss_seen = [0.0]

    async def sample() -> None:
        while sampling:
            try:
                rss_seen[0] = max(rss_seen[0], peers.memory(pid)["VmRSS"])
            except (OSError, KeyError):
                return
            await asyncio.sleep(0.2)

    try:
        result.rss_idle = peers.memory(pid)["VmRSS"]
        base = {"host": "127.0.0.1", "port": server.port, "base_path": "/files/"}
        lanes = min(clients, scenario.concurrency or clients, scenario.count)
        first = 0
        for count, concurrency in zip(split(scenario.count, lanes), split(scenario.concurrency or lanes, lanes)):
            spec = {**base, "mode": scenario.mode, "first": first, "count": count, "concurrency": concurrency,
                    "size": scenario.size, "chunk": scenario.chunk,
                    "creation_with_upload": scenario.creation_with_upload,
                    "interval": scenario.interval, "length": scenario.length}
            workers.append(await _spawn(spec))
            first += count
        if scenario.mode == "trickle":
            probe = await _spawn({**base, "mode": "probe", "first": 10_000_000, "count": 20, "pause": 0.02})
        for process in workers + ([probe] if probe else []):
            await _expect(process, "ready", 60)
        cpu_before = peers.cpu_seconds(pid)
        sampler = asyncio.ensure_future(sample())
        for process in workers:
            _tell(process, "go")
        if probe is not None:
            for process in workers:
                await _expect(process, "holding", 600)
            _tell(probe, "go")
            await asyncio.sleep(min(2.0, scenario.interval))
            result.rss_hold = peers.memory(pid)["VmRSS"]
            releasing = [asyncio.ensure_future(_expect(p, "releasing", 600)) for p in workers]
            await asyncio.wait(releasing, return_when=asyncio.FIRST_COMPLETED)
            result.rss_hold = max(result.rss_hold, peers.memory(pid)["VmRSS"])
            _tell(probe, "stop")
            await asyncio.gather(*releasing)
        outputs = []
        for process in workers + ([probe] if probe else []):
            line = await asyncio.wait_for(process.stdout.readline(), 900)
            while line.strip() in (b"holding", b"releasing"):
                line = await asyncio.wait_for(process.stdout.readline(), 900)
            outputs.append(json.loads(line))
        result.cpu = peers.cpu_seconds(pid) - cpu_before
        if profiler is not None:
            await _stop_profiler(profiler)
            profiler = None
        sampling = False
        await sampler
        memory = peers.memory(pid)
        result.rss_peak = memory["VmHWM"]
    finally:
        sampling = False
        if profiler is not None:
            await _stop_profiler(profiler)
        for process in workers + ([probe] if probe else []):
            if process.returncode is None:
                try:
                    process.stdin.close()
                except (OSError, RuntimeError):
                    pass
                try:
                    await asyncio.wait_for(process.wait(), 10)
                except asyncio.TimeoutError:
                    process.kill()
                    await process.wait()
        exit_note = ""
        if server.process.returncode is not None:
            exit_note = f"server exited with {server.process.returncode} during the run"
        await peers.stop(server)
    load = outputs[:len(workers)]
    result.wall = max(o["ended"] for o in load) - min(o["started"] for o in load)
    result.bytes = sum(o["bytes"] for o in load)
    result.uploads = sum(len(o["uploads"]) for o in load)
    result.client_cpu = sum(o["cpu_seconds"] for o in outputs)
    result.errors = sum(o["error_count"] for o in outputs)
    result.error_samples = [e for o in outputs for e in o["errors"]][:5]
    latencies: dict[str, list[float]] = {}
    for o in (outputs[-1:] if probe else load):
        for kind, values in o["latencies"].items():
            latencies.setdefault(kind, []).extend(values)
    if probe:
        latencies["PATCH-end"] = [v for o in load for v in o["latencies"].get("PATCH", [])]
    result.latencies = latencies
    if exit_note:
        result.note = exit_note
    if result.uploads != scenario.count or result.errors:
        result.ok = False
    if peer.stores:
        failures = []
        for o in outputs:
            for upload, upload_id, size in o["uploads"]:
                problem = content.verify_file(os.path.join(directory, upload_id), upload, size)
                if problem:
                    failures.append(f"upload {upload} ({upload_id}): {problem}")
                else:
                    result.verified += 1
        result.verify_failures = failures[:5]
        if failures:
            result.ok = False
            result.note = (result.note + "; " if result.note else "") + f"{len(failures)} uploads stored wrongly"
    shutil.rmtree(directory, ignore_errors=True)
    if server.process.returncode not in (0, -15, None) and not result.note:
        result.note = f"server exit status {server.process.returncode}"
    return result


async def _start_profiler(pid: int, output: str) -> Any:
    """py-spy, attached to the server, writing collapsed stacks (C{--profile})."""
    spy = shutil.which("py-spy") or os.path.join(os.path.dirname(sys.executable), "py-spy")
    os.makedirs(os.path.dirname(output), exist_ok=True)
    process = await asyncio.create_subprocess_exec(
        spy, "record", "--pid", str(pid), "--rate", "500", "--format", "raw", "--output", output,
        "--nonblocking", stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    await asyncio.sleep(0.5)  # attached before the load starts
    return process


async def _stop_profiler(process: Any) -> None:
    if process.returncode is None:
        process.send_signal(2)  # SIGINT: py-spy writes its output and exits
        try:
            await asyncio.wait_for(process.wait(), 30)
        except asyncio.TimeoutError:
            process.kill()
            await process.wait()


# Reporting ---------------------------------------------------------------------

def percentile(values: list[float], p: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[max(0, math.ceil(p / 100.0 * len(ordered)) - 1)]


def request_latencies(m: Measured) -> list[float]:
    if m.scenario == "d":
        return (m.latencies or {}).get("HEAD", [])
    return [v for kind, values in (m.latencies or {}).items() for v in values]


@dataclass
class Summary:
    scenario: Scenario
    peer: str
    runs: list[Measured]

    def median(self, f: Any) -> float:
        return statistics.median(f(m) for m in self.runs)

    @property
    def throughput(self) -> float:
        return self.median(lambda m: m.throughput(self.scenario.unit))

    def latency(self, p: float) -> float:
        return self.median(lambda m: percentile(request_latencies(m), p))

    @property
    def rss_peak(self) -> float:
        return max(m.rss_peak for m in self.runs)

    @property
    def ok(self) -> bool:
        return all(m.ok for m in self.runs)


def print_table(summaries: list[Summary]) -> None:
    scenario = summaries[0].scenario
    trickle = scenario.mode == "trickle"
    say()
    say(f"scenario {scenario.name}: {scenario.title}")
    lat = "HEAD probe ms" if trickle else "request ms"
    say(f"  {'server':<14} {'throughput':>16} {lat + ' p50/p90/p99':>26} {'peak RSS':>10} {'server CPU':>11} "
        f"{'client CPU':>11}  result")
    for s in summaries:
        if trickle:
            held = statistics.median(m.uploads for m in s.runs)
            rate = f"{held:,.0f} held"
        else:
            rate = f"{s.throughput:,.1f} {s.scenario.unit}"
        lats = f"{s.latency(50):.2f}/{s.latency(90):.2f}/{s.latency(99):.2f}"
        verdict = "ok" if s.ok else "FAILED"
        verified = sum(m.verified for m in s.runs)
        if s.runs[0].peer != "discard":
            verdict += f", {verified} uploads verified"
        errors = sum(m.errors for m in s.runs)
        if errors:
            verdict += f", {errors} request errors"
        say(f"  {s.peer:<14} {rate:>16} {lats:>26} {s.rss_peak:>7.1f} MiB {s.median(lambda m: m.cpu):>9.2f} s "
            f"{s.median(lambda m: m.client_cpu):>9.2f} s  {verdict}")
        for m in s.runs:
            for text in (m.error_samples or []) + (m.verify_failures or []) + ([m.note] if m.note else []):
                say(f"      ! {text}")
        if not trickle:
            kinds = ", ".join(f"{kind} {kind_latency(s, kind, 50):.1f}/{kind_latency(s, kind, 99):.1f}"
                              for kind in ("POST", "PATCH", "HEAD") if any(kind in (m.latencies or {}) for m in s.runs))
            say(f"      p50/p99 ms: {kinds}; server CPU {cpu_per_upload(s):.3f} ms per upload")
        if trickle:
            m = s.runs[0]
            per_upload = (m.rss_hold - m.rss_idle) * 1024 / max(m.uploads, 1)
            patch_end = percentile((m.latencies or {}).get("PATCH-end", []), 99)
            say(f"      idle RSS {m.rss_idle:.1f} MiB, RSS while holding {m.rss_hold:.1f} MiB "
                f"(~{per_upload:.1f} KiB per open upload); last byte -> 204 p99 {patch_end:.1f} ms")
    if len(summaries[0].runs) > 1:
        say(f"  (median of {len(summaries[0].runs)} runs; peak RSS is the highest of the runs)")


def ratio(a: Summary | None, b: Summary | None) -> float | None:
    if a is None or b is None or not b.throughput:
        return None
    return a.throughput / b.throughput


def kind_latency(summary: Summary, kind: str, p: float) -> float:
    """Median over runs of one request kind's C{p}th percentile latency, in ms."""
    return summary.median(lambda m: percentile((m.latencies or {}).get(kind, []), p))


def cpu_per_upload(summary: Summary) -> float:
    """Median server CPU milliseconds per upload."""
    return summary.median(lambda m: 1000.0 * m.cpu / max(m.uploads, 1))


# The targets of issue 10: (scenario, peer, at least this many times its throughput).
THROUGHPUT_TARGETS = (("a", "tus-node", 2.5), ("a", "twisted", 0.75), ("b", "tus-node", 2.0),
                      ("b", "twisted", 1.0), ("c", "tus-node", 2.0), ("c", "twisted", 0.5))
PEER_LABELS = {"tus-node": "@tus/server", "twisted": "the twisted.web ceiling", "asyncio": "the asyncio server",
               "discard": "discard"}
TAIL_RATIO = 3.0


def judge(results: dict[tuple[str, str], Summary], scenarios: list[str]) -> list[tuple[str, bool | None, str]]:
    """The targets of issue 10, for each txtus flavour measured (ratios within the same run)."""
    verdicts: list[tuple[str, bool | None, str]] = []
    for flavour in ("txtus-default", "txtus"):
        if not any(key[1] == flavour for key in results):
            continue
        for name, other, wanted in THROUGHPUT_TARGETS:
            if name not in scenarios:
                continue
            r = ratio(results.get((name, flavour)), results.get((name, other)))
            if r is not None:
                verdicts.append((f"{flavour} {name}: >= {wanted}x {PEER_LABELS[other]}", r >= wanted, f"{r:.2f}x"))
        mine, ceiling = results.get(("c", flavour)), results.get(("c", "twisted"))
        if mine is not None and ceiling is not None and cpu_per_upload(ceiling):
            r = cpu_per_upload(mine) / cpu_per_upload(ceiling)
            verdicts.append((f"{flavour} c: server CPU per upload <= 2x the twisted.web ceiling's", r <= 2.0,
                             f"{cpu_per_upload(mine):.2f} ms = {r:.2f}x"))
        if mine is not None:
            for kind in ("POST", "HEAD"):
                p50, p99 = kind_latency(mine, kind, 50), kind_latency(mine, kind, 99)
                verdicts.append((f"{flavour} c: {kind} p99 <= {TAIL_RATIO:.0f}x p50", p99 <= TAIL_RATIO * p50,
                                 f"{p50:.1f} / {p99:.1f} ms = {p99 / p50:.1f}x"))
        peaks = [s.rss_peak for (name, flavour_), s in results.items() if flavour_ == flavour and name in "abc"]
        if peaks:
            verdicts.append((f"{flavour} a-c: peak RSS < {RSS_LIMIT_MIB} MiB", max(peaks) < RSS_LIMIT_MIB,
                             f"{max(peaks):.1f} MiB"))
        d = results.get(("d", flavour))
        if d is not None:
            m = d.runs[0]
            verdicts.append((f"{flavour} d: {d.scenario.count:,} uploads held, no errors",
                             m.ok and m.uploads == d.scenario.count, f"{m.uploads:,} held, {m.errors} errors"))
            verdicts.append((f"{flavour} d: peak RSS < {D_RSS_LIMIT_MIB} MiB", d.rss_peak < D_RSS_LIMIT_MIB,
                             f"{d.rss_peak:.1f} MiB"))
            p99 = d.latency(99)
            verdicts.append((f"{flavour} d: HEAD p99 < {D_HEAD_P99_MS:.0f} ms", p99 < D_HEAD_P99_MS, f"{p99:.2f} ms"))
    return verdicts


def print_ratios(results: dict[tuple[str, str], Summary], scenarios: list[str]) -> None:
    say()
    say("ratios (throughput, same run):")
    for name in scenarios:
        if name == "d":
            continue
        for flavour in ("txtus-default", "txtus"):
            mine = results.get((name, flavour))
            if mine is None:
                continue
            parts = []
            for other, label in (("tus-node", "@tus/server"), ("twisted", "twisted.web ceiling"),
                                 ("asyncio", "asyncio"), ("discard", "discard")):
                r = ratio(mine, results.get((name, other)))
                if r is not None:
                    parts.append(f"{label} {r:.2f}x")
            say(f"  {name}: {flavour} / " + (", ".join(parts) or "(no other server measured)"))
        hooks = ratio(results.get((name, "txtus-hooks")), results.get((name, "txtus")))
        if hooks is not None:
            say(f"  {name}: hooks on (no-op, every event) / off: {hooks:.2f}x")
    say()
    say("load generator check (it must outrun every server):")
    for name in scenarios:
        if name == "d":
            continue
        discard = results.get((name, "discard"))
        measured = [s for (n, p), s in results.items() if n == name and p != "discard"]
        if discard is None or not measured:
            continue
        fastest = max(measured, key=lambda s: s.throughput)
        headroom = discard.throughput / fastest.throughput if fastest.throughput else float("inf")
        say(f"  {name}: against the discard server {discard.throughput:,.1f} {discard.scenario.unit}, "
            f"{headroom:.2f}x the fastest server measured ({fastest.peer})"
            + ("" if headroom >= 1.2 else "  <- the generator may limit this scenario"))


def machine() -> str:
    import twisted
    parts = [f"nproc {os.cpu_count()}", f"python {platform.python_version()}", f"twisted {twisted.__version__}",
             f"{platform.system()} {platform.release()}"]
    node = shutil.which("node")
    if node:
        parts.append("node " + subprocess.run([node, "--version"], capture_output=True, text=True).stdout.strip())
    return ", ".join(parts)


# Main ------------------------------------------------------------------------

async def main(args: argparse.Namespace) -> int:
    table = QUICK if args.quick else FULL
    scenarios = [s.strip() for s in args.scenarios.split(",") if s.strip()]
    unknown = [s for s in scenarios if s not in table]
    if unknown:
        raise SystemExit(f"unknown scenarios: {', '.join(unknown)}")
    wanted = [p.strip() for p in args.peers.split(",") if p.strip()]
    unknown = [p for p in wanted if p not in peers.ALL + peers.EXTRA]
    if unknown:
        raise SystemExit(f"unknown peers: {', '.join(unknown)} (known: {', '.join(peers.ALL + peers.EXTRA)})")
    runs = args.runs or (1 if args.quick else 3)
    say(f"txtus benchmark ({'quick' if args.quick else 'full'} mode), {machine()}")
    say("figures depend on the machine and on what else runs on it; compare servers within one run")

    root = args.workdir or ("/dev/shm" if os.access("/dev/shm", os.W_OK) else None)
    workdir = tempfile.mkdtemp(prefix="txtus-bench-", dir=root)
    say(f"store directories under {workdir}" + ("" if workdir.startswith("/dev/shm") else " (not tmpfs)"))
    available: dict[str, peers.Peer] = {}
    python = peers.python_peers()
    for name in wanted:
        if name in python:
            available[name] = python[name]
        elif name == "tus-node":
            peer, why = await asyncio.to_thread(peers.install_tus_node, workdir)
            if peer is None:
                say(f"skipping @tus/server: {why}")
            else:
                available[name] = peer
                say(f"peer: {why}")
    if "d" in scenarios:
        table = {**table, "d": fit_trickle(table["d"], args.clients)}
    else:
        raise_open_file_limit(4096)

    results: dict[tuple[str, str], Summary] = {}
    failed = False
    try:
        order = list(available)
        for run in range(runs):
            rotated = order[run % len(order):] + order[:run % len(order)] if order else []
            for name in [s for s in scenarios if s != "d"]:
                for peer_name in rotated:
                    failed |= not await _one(table[name], available[peer_name], workdir, args, run, results, runs)
        if "d" in scenarios:
            for peer_name in [p for p in available if p in ("txtus", "txtus-default", "twisted", "tus-node")] or list(available)[:1]:
                failed |= not await _one(table["d"], available[peer_name], workdir, args, 0, results, 1)
    finally:
        if not args.keep:
            shutil.rmtree(workdir, ignore_errors=True)

    for name in scenarios:
        rows = [results[(name, p)] for p in available if (name, p) in results]
        if rows:
            print_table(rows)
    print_ratios(results, scenarios)
    verdicts = judge(results, scenarios)
    if verdicts:
        say()
        say("targets (issue 10, ratios within this run):")
        for text, passed, figure in verdicts:
            say(f"  {'PASS' if passed else 'FAIL'}  {text}: {figure}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"machine": machine(), "quick": args.quick, "results": [
                {"scenario": k[0], "peer": k[1], "runs": [m.__dict__ for m in s.runs]} for k, s in results.items()]},
                f)
    correct = not failed and all(s.ok for s in results.values())
    say()
    say("correctness: " + ("every upload completed and every stored byte matched" if correct
                           else "FAILED (see ! lines above)"))
    if not correct:
        return 1
    if args.strict and any(passed is False for _, passed, _ in verdicts):
        return 1
    return 0


async def _one(scenario: Scenario, peer: peers.Peer, workdir: str, args: argparse.Namespace, run: int,
               results: dict[tuple[str, str], Summary], runs: int) -> bool:
    started = time.monotonic()
    try:
        measured = await measure(scenario, peer, workdir, args.clients, run, args.profile)
    except Exception as e:  # a server that crashed or never started: report, go on
        say(f"  {scenario.name} x {peer.name} run {run + 1}: FAILED: {type(e).__name__}: {e}")
        return False
    summary = results.setdefault((scenario.name, peer.name), Summary(scenario, peer.name, []))
    summary.runs.append(measured)
    figure = (f"{measured.uploads:,} held" if scenario.mode == "trickle"
              else f"{measured.throughput(scenario.unit):,.1f} {scenario.unit}")
    say(f"  {scenario.name} x {peer.name:<14} run {run + 1}/{runs}: {figure}"
        f" ({time.monotonic() - started:.1f} s){'' if measured.ok else '  FAILED'}")
    return measured.ok


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="small scenarios, one run: a smoke test (< 60 s)")
    parser.add_argument("--scenarios", default="a,b,c,d", help="comma-separated subset of a,b,c,d")
    parser.add_argument("--peers", default=",".join(peers.ALL),
                        help=f"comma-separated servers to measure (default: {','.join(peers.ALL)}; "
                        f"also: {','.join(peers.EXTRA)})")
    parser.add_argument("--runs", type=int, default=0, help="runs per scenario and server (default 3, quick 1)")
    parser.add_argument("--clients", type=int, default=2, help="load-generator processes (default 2)")
    parser.add_argument("--workdir", help="where store directories go (default: a new folder in /dev/shm)")
    parser.add_argument("--keep", action="store_true", help="keep the work folder (logs) afterwards")
    parser.add_argument("--json", help="also write every measurement to this file")
    parser.add_argument("--profile", help="record py-spy profiles of the txtus servers into this folder "
                        "(collapsed stacks; needs py-spy, perturbs the figures)")
    parser.add_argument("--strict", action="store_true", help="exit 1 when a performance target is missed")
    return parser.parse_args(argv)


if __name__ == "__main__":
    sys.exit(asyncio.run(main(parse_args())))
