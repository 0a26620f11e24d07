"""
C{twist tus --locker}: the memory locker by default (one process: no
descriptor or syscalls per lock), the file locker on request for several
processes sharing an upload directory.
"""

from __future__ import annotations

import pytest
from twisted.internet.task import Clock
from twisted.python import usage

from txtus.lockers.file import FileLocker
from txtus.lockers.memory import MemoryLocker
from txtus.tap import Options, build_config


def _config(tmp_path, *args):
    options = Options()
    options.parseOptions(["--path", str(tmp_path), *args])
    return build_config(options, reactor=Clock())


def test_file_locker_on_request(tmp_path):
    locker = _config(tmp_path, "--locker", "file", "--acquire-lock-timeout", "7").composer.locker
    assert isinstance(locker, FileLocker)
    assert locker.path == str(tmp_path)
    assert locker.acquire_timeout == 7


def test_memory_locker_is_the_default(tmp_path):
    locker = _config(tmp_path, "--acquire-lock-timeout", "3").composer.locker
    assert isinstance(locker, MemoryLocker)
    assert locker.acquire_timeout == 3


def test_unknown_locker_is_refused(tmp_path):
    with pytest.raises(usage.UsageError, match="--locker"):
        Options().parseOptions(["--path", str(tmp_path), "--locker", "redis"])
