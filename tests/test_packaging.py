"""
The wheel is what users install, so build one and look inside it: the twist
plugin must ship (or C{twist tus} does not exist), while C{dropin.cache} and
any C{__init__.py} under C{twisted/} must not (they would shadow or corrupt
Twisted's own package in the user's site-packages).

Then install the wheel, alone, into a fresh venv and run C{twist tus --help}
there.  To stay offline (CI reaches package registries, but a test should
not depend on them) the venv gets its dependencies from the running test
environment through a C{.pth} line.  A C{.pth} line only adds a directory to
C{sys.path}; it does not process the C{.pth} files inside it, so the editable
install of txtus in the test environment stays invisible there and the only
txtus the venv can import is the one from the wheel (checked below).

Bounded: every subprocess has a timeout and the whole module takes well
under 90 seconds on a 2-core machine.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import sys
import sysconfig
import venv
import zipfile
from pathlib import Path

import pytest

pytestmark = pytest.mark.packaging

ROOT = Path(__file__).resolve().parent.parent
STEP_TIMEOUT = 60


def _run(args: list[str], **kwargs) -> subprocess.CompletedProcess:
    env = {**os.environ, "PIP_DISABLE_PIP_VERSION_CHECK": "1", "PYTHONDONTWRITEBYTECODE": "1"}
    env.pop("PYTHONPATH", None)
    result = subprocess.run(args, capture_output=True, text=True, timeout=STEP_TIMEOUT,
                            stdin=subprocess.DEVNULL, env=env, **kwargs)
    assert result.returncode == 0, f"{args} failed:\n{result.stdout}\n{result.stderr}"
    return result


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    """
    A wheel built from a copy of the project that deliberately contains a
    C{dropin.cache} and C{__pycache__} directories, as a developer's checkout
    does after running C{twist}.
    """
    source = tmp_path_factory.mktemp("source")
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, source / name)
    for package in ("txtus", "twisted"):
        shutil.copytree(ROOT / package, source / package,
                        ignore=shutil.ignore_patterns("dropin.cache", "__pycache__"))
    plugins = source / "twisted" / "plugins"
    (plugins / "dropin.cache").write_bytes(b"stale cache")
    (plugins / "__pycache__").mkdir()
    (plugins / "__pycache__" / "tus_plugin.cpython-311.pyc").write_bytes(b"stale")

    out = tmp_path_factory.mktemp("dist")
    command = [sys.executable, "-m", "pip", "wheel", "--no-deps", "--wheel-dir", str(out), str(source)]
    if importlib.util.find_spec("hatchling") is not None:
        # The build backend is installed (it is in the test extra): build
        # without fetching it again.
        command.insert(4, "--no-build-isolation")
    _run(command)
    wheels = list(out.glob("txtus-*.whl"))
    assert len(wheels) == 1, wheels
    return wheels[0]


def test_wheel_contents(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    assert "twisted/plugins/tus_plugin.py" in names
    assert "txtus/__init__.py" in names
    assert "txtus/tap.py" in names
    # The demo page's files are data, not modules: they must ship too.
    assert {"txtus/web/demo/index.html", "txtus/web/demo/demo.js", "txtus/web/demo/demo.css"} <= names
    assert not [n for n in names if n.endswith("dropin.cache")]
    assert not [n for n in names if "__pycache__" in n or n.endswith(".pyc")]
    assert "twisted/__init__.py" not in names
    assert "twisted/plugins/__init__.py" not in names
    assert {n.split("/")[0] for n in names if not n.startswith("txtus-")} == {"txtus", "twisted"}


def test_wheel_installs_and_twist_finds_plugin(wheel, tmp_path):
    target = tmp_path / "venv"
    venv.EnvBuilder(with_pip=False).create(target)
    python = target / "bin" / "python"
    purelib = Path(_run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"])
                   .stdout.strip())
    # Install the wheel alone, with this environment's pip, into the venv.
    _run([sys.executable, "-m", "pip", "install", "--no-deps", "--no-index", "--no-compile", "--ignore-installed",
          "--prefix", str(target), str(wheel)])
    assert (purelib / "twisted" / "plugins" / "tus_plugin.py").is_file()
    assert not (purelib / "twisted" / "__init__.py").exists()
    # Dependencies (Twisted, treq, zope.interface...) from this environment.
    here = {sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]}
    (purelib / "zz_test_dependencies.pth").write_text("\n".join(sorted(here)) + "\n")

    where = _run([str(python), "-c",
                  "import txtus, twisted.plugins.tus_plugin as p; print(txtus.__file__); print(p.__file__)"],
                 cwd=tmp_path).stdout.split()
    assert all(Path(path).is_relative_to(purelib) for path in where), where

    # What the `twist` script runs; the venv has no script of its own
    # because Twisted itself was not installed into it.
    help_text = _run([str(python), "-m", "twisted", "tus", "--help"], cwd=tmp_path).stdout
    for option in ("--port", "--path", "--base-path", "--max-size", "--network-timeout",
                   "--behind-proxy", "--disable-download", "--disable-termination", "--disable-demo"):
        assert option in help_text, help_text

    # The installed package finds the demo page's files.
    page = _run([str(python), "-c", "import txtus; c = txtus.StoreComposer(); txtus.MemoryStore().use_in(c); "
                 "print(txtus.DemoPage(txtus.TusConfig(composer=c))._page.decode())"],
                cwd=tmp_path).stdout
    assert 'data-endpoint="/files/"' in page and "_demo/demo.js" in page
