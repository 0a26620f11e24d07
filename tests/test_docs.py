"""
The README and docs promise things the code must keep: every command-line
option is documented, the test command is the one CI runs, and the files the
docs point to exist.
"""

from __future__ import annotations

import re
from pathlib import Path

from txtus.tap import Options

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text()
TEST_COMMAND = "python3 -m venv .venv && .venv/bin/pip install -e '.[test]' && .venv/bin/python -m pytest"
RUN_COMMAND = "python3 -m venv .venv && .venv/bin/pip install . && .venv/bin/twist tus"


def _long_options() -> list[str]:
    options = Options()
    names = [p[0] for p in options.optParameters] + [f[0] for f in options.optFlags]
    names += [name[len("opt_"):].replace("_", "-") for name in dir(options)
              if name.startswith("opt_") and len(name) > len("opt_x")
              and name not in ("opt_help", "opt_version")]
    return sorted(set(names))


def test_every_cli_option_is_in_the_readme_table():
    table = README.split("## Command-line options", 1)[1].split("\n## ", 1)[0]
    documented = set(re.findall(r"^\| `--([a-z0-9-]+)`", table, re.MULTILINE))
    assert documented == set(_long_options())


def test_readme_commands_are_the_ones_ci_and_users_run():
    assert TEST_COMMAND in README
    assert RUN_COMMAND in README
    ci = (ROOT / ".ci" / "run").read_text()
    for part in TEST_COMMAND.split(" && "):
        assert re.search(r"^" + re.escape(part), ci, re.MULTILINE), part


def test_documents_linked_from_the_readme_exist():
    docs = [ROOT / "README.md"] + sorted((ROOT / "docs").glob("*.md"))
    for doc in docs:
        for target in re.findall(r"\]\(((?:docs/|examples/|\.\./)?[\w./-]+\.(?:md|py))\)", doc.read_text()):
            assert (doc.parent / target).resolve().is_file(), f"{doc.name} links to missing {target}"
