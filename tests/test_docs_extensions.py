"""
docs/extensions/ promises one page per tus extension txtus advertises, with
sessions that were really run: these tests keep the pages in step with what
C{twist tus} advertises, with the options C{txtus/tap.py} accepts and with
the error catalogue.
"""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest

from txtus import errors
from txtus.tap import Options, build_config

ROOT = Path(__file__).resolve().parent.parent
PAGES_DIR = ROOT / "docs" / "extensions"
PAGES = sorted(p for p in PAGES_DIR.glob("*.md") if p.name != "README.md")
INDEX = PAGES_DIR / "README.md"
_FENCE = re.compile(r"^```.*?^```", re.MULTILINE | re.DOTALL)


def _advertised(tmp_path: Path, *args: str) -> list[str]:
    """The Tus-Extension list of C{twist tus <args>}, from the same config it serves."""
    options = Options()
    options.parseOptions(["--path", str(tmp_path / "uploads"), *args])
    return build_config(options).extensions()


def _long_options() -> set[str]:
    options = Options()
    names = {p[0] for p in options.optParameters} | {f[0] for f in options.optFlags}
    names |= {name[len("opt_"):].replace("_", "-") for name in dir(options)
              if name.startswith("opt_") and len(name) > len("opt_x")}
    return names


def _covers(page: Path, extension: str) -> bool:
    """A page covers an extension named by its file name or in its title."""
    title = page.read_text().split("\n", 1)[0]
    return page.stem == extension or extension in re.findall(r"[a-z][a-z-]*[a-z]", title)


def _twist_commands(page: Path) -> list[list[str]]:
    return [shlex.split(line[2:]) for line in page.read_text().splitlines()
            if line.startswith("$ twist tus")]


@pytest.mark.parametrize("args", [(), ("--expire-after", "1h")], ids=["default", "expire-after"])
def test_every_advertised_extension_has_a_page(tmp_path, args):
    extensions = _advertised(tmp_path, *args)
    assert "creation" in extensions
    missing = [name for name in extensions if not any(_covers(page, name) for page in PAGES)]
    assert missing == []


def test_expiration_is_among_the_documented_extensions(tmp_path):
    # The default does not advertise expiration, so the parametrised test
    # above would miss its page if --expire-after stopped turning it on.
    assert "expiration" not in _advertised(tmp_path)
    assert "expiration" in _advertised(tmp_path, "--expire-after", "1h")


def test_index_lists_every_extension_with_its_page(tmp_path):
    rows = dict(re.findall(r"^\| `([a-z-]+)` \| \[[^]]+\]\(([\w.-]+\.md)\)", INDEX.read_text(), re.MULTILINE))
    for name in _advertised(tmp_path, "--expire-after", "1h"):
        assert name in rows, f"{name} is not in docs/extensions/README.md"
        assert _covers(PAGES_DIR / rows[name], name), f"{rows[name]} does not cover {name}"


@pytest.mark.parametrize("page", PAGES + [INDEX], ids=lambda p: p.name)
def test_twist_commands_use_only_real_options(tmp_path, page):
    commands = _twist_commands(page)
    assert commands, f"{page.name} shows no twist tus command"
    known = _long_options()
    for command in commands:
        assert command[:2] == ["twist", "tus"]
        args = command[2:]
        used = {arg[2:].split("=", 1)[0] for arg in args if arg.startswith("--")}
        assert used <= known, f"{page.name}: unknown options {sorted(used - known)}"
        # And they parse: the values are ones postOptions accepts.
        if "--path" in args:
            args[args.index("--path") + 1] = str(tmp_path / "uploads")
        Options().parseOptions(args)


@pytest.mark.parametrize("page", PAGES + [INDEX], ids=lambda p: p.name)
def test_options_named_in_the_text_exist(page):
    prose = _FENCE.sub("", page.read_text())
    named = set()
    for span in re.findall(r"`([^`\n]+)`", prose):
        named |= set(re.findall(r"(?<![\w-])--([a-z][a-z-]*)", span))
    assert named <= _long_options(), f"{page.name}: {sorted(named - _long_options())}"


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_each_page_shows_a_real_curl_session(page):
    text = page.read_text()
    assert re.search(r"^\$ curl ", text, re.MULTILINE)
    assert re.search(r"^HTTP/1\.1 [0-9]{3} ", text, re.MULTILINE)
    assert not re.search(r"^(Date|Server): ", text, re.MULTILINE | re.IGNORECASE)


def test_error_codes_named_exist():
    catalogue = {value.code for value in vars(errors).values()
                 if isinstance(value, type) and issubclass(value, errors.TusError)}
    for page in PAGES + [INDEX]:
        named = set(re.findall(r"\bERR_[A-Z_]+\b", page.read_text()))
        assert named <= catalogue, f"{page.name}: {sorted(named - catalogue)}"


def test_links_resolve():
    for page in PAGES + [INDEX]:
        for target in re.findall(r"\]\(([\w./-]+\.md)\)", page.read_text()):
            assert (page.parent / target).resolve().is_file(), f"{page.name} links to missing {target}"
