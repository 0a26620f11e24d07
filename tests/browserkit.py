"""
Helpers for the browser end-to-end tests: headless Chromium (Debian's
C{chromium}, driven by Playwright's Python package, never a downloaded
browser), C{twist tus} in a subprocess, and a second C{twisted.web} server
on two other loopback ports serving the cross-origin test page with
tus-js-client and Uppy, installed with npm by the set-up.

Tests skip, saying why, only where Chromium, Playwright, Node or the npm
registry is missing.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Any

import pytest

from faultkit import TwistProcess, wait_until
from npmkit import npm_install

PAGES = Path(__file__).resolve().parent / "browser_pages"
CHROMIUM = "/usr/bin/chromium"
# Without these, Chromium's start-up reaches for the network (component
# updates, sync, field trials) and its sandbox needs privileges CI lacks.
CHROMIUM_ARGS = [
    "--no-sandbox", "--disable-background-networking", "--disable-component-update",
    "--disable-sync", "--disable-gpu", "--disable-quic", "--no-first-run",
]
WAIT_MS = 30_000  # the longest any one browser step may take


def wait_for_script(page: Any, expression: str) -> Any:
    """
    Poll a JavaScript C{expression} on C{page} until it is true.  Not
    Playwright's C{wait_for_function}: that polls by C{eval} inside the
    page, which a page with a Content-Security-Policy (the demo page) refuses
    whenever the expression is not already true on the first try.
    C{page.evaluate} goes through the debugger, which CSP does not govern.
    """
    return wait_until(lambda: page.evaluate(expression), expression, timeout=WAIT_MS / 1000)

UPPY_ENTRY = """\
import Uppy from '@uppy/core';
import Tus from '@uppy/tus';
window.Uppy = Uppy;
window.UppyTus = Tus;
"""


@pytest.fixture(scope="session")
def browser():
    """Headless Chromium with a fresh profile, shared by the session."""
    chromium = CHROMIUM if os.access(CHROMIUM, os.X_OK) else shutil.which("chromium")
    if chromium is None:
        pytest.skip("Debian's chromium is needed for the browser tests (.ci/system-packages)")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.skip("Playwright's Python package is needed for the browser tests (pip install -e '.[test]')")
    playwright = sync_playwright().start()
    try:
        # Playwright starts Chromium on a fresh temporary profile
        # (--user-data-dir); each test gets its own context (and storage).
        browser = playwright.chromium.launch(executable_path=chromium, headless=True, args=CHROMIUM_ARGS)
        yield browser
        browser.close()
    finally:
        playwright.stop()


@pytest.fixture
def context(browser):
    """A browser context of its own (its own localStorage) for one test."""
    context = browser.new_context()
    context.set_default_timeout(WAIT_MS)
    yield context
    context.close()


@pytest.fixture(scope="session")
def page_files(tmp_path_factory) -> Path:
    """
    The cross-origin test page, with tus-js-client's prebuilt browser
    bundle (C{dist/tus.min.js}) beside it, and Uppy bundled with esbuild
    (C{@uppy/core} and C{@uppy/tus} ship ES modules only).
    """
    modules = tmp_path_factory.mktemp("npm")
    npm_install(modules, "tus-js-client@^4", "@uppy/core@^6", "@uppy/tus@^6", "esbuild")
    site = tmp_path_factory.mktemp("pages")
    for page in PAGES.iterdir():
        shutil.copy(page, site / page.name)
    shutil.copy(modules / "node_modules" / "tus-js-client" / "dist" / "tus.min.js", site / "tus.min.js")
    (modules / "entry.js").write_text(UPPY_ENTRY)
    result = subprocess.run(
        [str(modules / "node_modules" / ".bin" / "esbuild"), "entry.js", "--bundle",
         "--format=iife", f"--outfile={site / 'uppy.js'}", "--log-level=warning"],
        cwd=modules, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    return site


class StaticSite(TwistProcess):
    """C{twist web} serving a directory on two loopback ports (two origins)."""

    def plugin_args(self) -> list[str]:
        listen = "tcp:0:interface=127.0.0.1"
        return ["web", "--path", str(self.path), "--listen", listen, "--listen", listen]

    @property
    def origins(self) -> list[str]:
        def ports() -> list[str] | None:
            found = re.findall(r"starting on ([0-9]+)", self.log.read_text())
            return found if len(found) == 2 else None

        return [f"http://127.0.0.1:{port}" for port in wait_until(ports, "twist web to listen twice")]


@pytest.fixture(scope="session")
def static_site(page_files, tmp_path_factory):
    logs = tmp_path_factory.mktemp("static-site")
    site = StaticSite(page_files, logs)
    yield site
    site.stop()


class TusServer(TwistProcess):
    """C{twist tus} on a loopback port, with the store read directly."""

    @property
    def origin(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def uploads(self, named: str | None = None) -> dict[str, dict[str, Any]]:
        """
        The uploads in the store (only those whose C{filename} metadata is
        C{named}, if given): their IDs and C{.info} documents.
        """
        if not self.path.exists():
            return {}
        found = {info.stem: json.loads(info.read_text()) for info in self.path.glob("*.info")}
        return {i: u for i, u in found.items()
                if named is None or (u.get("MetaData") or {}).get("filename") == named}


@pytest.fixture(scope="session")
def twist_tus(tmp_path_factory):
    """
    Call with C{twist tus} options for a server started with them.  Tests
    that ask for the same options share one server (starting one is what
    takes time here), so a test tells its uploads apart by their file
    names, or by comparing the store before and after.
    """
    started: dict[tuple[str, ...], TusServer] = {}

    def start(*args: str) -> TusServer:
        if args not in started:
            directory = tmp_path_factory.mktemp("twist-tus")
            started[args] = TusServer(directory / "uploads", directory, *args)
        return started[args]

    yield start
    for server in started.values():
        server.stop()
    for server in started.values():
        server.assert_clean_log()


def random_file(directory: Path, name: str, size: int) -> Path:
    path = directory / name
    path.write_bytes(os.urandom(size))
    return path


def save_artefact(source: Path) -> Path:
    """
    Copy a test artefact (a screenshot) to C{$TXTUS_ARTEFACTS} (CI can
    collect it), else to the system's temporary directory; where it went.
    """
    directory = Path(os.environ.get("TXTUS_ARTEFACTS") or tempfile.gettempdir())
    directory.mkdir(parents=True, exist_ok=True)
    target = directory / f"txtus-{source.name}"
    shutil.copy(source, target)
    return target
