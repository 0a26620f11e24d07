"""
The benchmark still runs end to end: C{benchmarks/run.py --quick} against
a real C{twist tus} subprocess, with byte verification.  No timing is
asserted; only that it completes, verifies every upload and prints figures.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_quick_benchmark_runs_and_verifies(tmp_path):
    result = subprocess.run(
        [sys.executable, os.path.join(REPO, "benchmarks", "run.py"), "--quick", "--scenarios", "a,c",
         "--peers", "txtus", "--workdir", str(tmp_path)],
        capture_output=True, text=True, timeout=90, cwd=REPO)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert re.search(r"^  txtus +[0-9.,]+ MiB/s ", result.stdout, re.M), output
    assert re.search(r"^  txtus +[0-9.,]+ uploads/s ", result.stdout, re.M), output
    assert "40 uploads verified" in result.stdout, output
    assert "300 uploads verified" in result.stdout, output
    assert "every stored byte matched" in result.stdout, output
    assert not os.listdir(tmp_path), "the work folder is removed afterwards"


def _content():
    sys.path.insert(0, os.path.join(REPO, "benchmarks"))
    try:
        import content
    finally:
        sys.path.pop(0)
    return content


def test_verifier_rejects_wrong_bytes(tmp_path):
    content = _content()
    size = (1 << 20) + 1000
    good = content.make(7, 0, size)
    assert good == content.make(7, 0, 5000) + content.make(7, 5000, size)
    assert good != content.make(8, 0, size), "uploads differ from each other"
    path = tmp_path / "upload"
    path.write_bytes(good)
    assert content.verify_file(str(path), 7, size) is None
    assert content.verify_file(str(path), 8, size) is not None
    path.write_bytes(good[:-1])
    assert content.verify_file(str(path), 7, size) is not None
    path.write_bytes(good + b"x")
    assert "longer" in content.verify_file(str(path), 7, size)
    flipped = bytearray(good)
    flipped[size // 2] ^= 1
    path.write_bytes(bytes(flipped))
    assert content.verify_file(str(path), 7, size) is not None
    assert content.verify_file(str(tmp_path / "missing"), 7, size) is not None


def test_s3_benchmark_runs_and_verifies():
    """benchmarks/s3.py against rclone serve s3, txtus only, shrunk."""
    result = subprocess.run(
        [sys.executable, os.path.join(REPO, "benchmarks", "s3.py"), "--peers", "txtus", "--uploads", "2",
         "--size", "6MiB", "--patch", "4MiB", "--parallel", "2"],
        capture_output=True, text=True, timeout=120, cwd=REPO)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert re.search(r"^s +txtus +[0-9.]+ MiB/s +peak RSS +[0-9.]+ MiB .* 0 failures", result.stdout, re.M), output
