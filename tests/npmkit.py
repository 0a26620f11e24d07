"""
npm packages the tests drive for real (tus-js-client, Uppy, esbuild),
installed once per test session into a temporary directory.  Where Node or
npm is missing, or the registry cannot be reached, the tests that need them
are skipped, saying why.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

INSTALL_TIMEOUT = 120


def npm_install(directory: Path, *packages: str) -> str:
    """Install C{packages} into C{directory}; the path of C{node}."""
    node, npm = shutil.which("node"), shutil.which("npm")
    if node is None or npm is None:
        pytest.skip("node and npm are needed to install " + " ".join(packages))
    (directory / "package.json").write_text('{"name": "txtus-e2e", "private": true}')
    try:
        result = subprocess.run(
            [npm, "install", "--no-audit", "--no-fund", "--loglevel=error", *packages],
            cwd=directory, capture_output=True, text=True, timeout=INSTALL_TIMEOUT)
    except subprocess.TimeoutExpired:
        pytest.skip(f"npm install {' '.join(packages)} took more than {INSTALL_TIMEOUT} s")
    if result.returncode != 0:
        pytest.skip(f"npm install {' '.join(packages)} failed: {result.stderr.strip()[-500:]}")
    return node
