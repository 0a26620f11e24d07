"""
C{twist tus --locker}: the memory locker by default (one process: no
descriptor or syscalls per lock), the file locker on request for several
processes sharing an upload directory, the Redis locker for processes on
several machines.
"""

from __future__ import annotations

import pytest
from twisted.internet.task import Clock
from twisted.python import usage

from txtus.lockers.file import FileLocker
from txtus.lockers.memory import MemoryLocker
from txtus.lockers.redis import RedisLocker
from txtus.service import make_service
from txtus.tap import Options, build_config

from redisserver import free_port


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
        Options().parseOptions(["--path", str(tmp_path), "--locker", "etcd"])


def test_redis_locker_on_request(tmp_path, redis_server):
    config = _config(tmp_path, "--locker", "redis", "--redis-url", redis_server.url, "--acquire-lock-timeout", "7",
                     "--redis-lock-lease", "4.5", "--redis-key-prefix", "app1:")
    locker = config.composer.locker
    assert isinstance(locker, RedisLocker)
    assert (locker.url, locker.acquire_timeout, locker.lease, locker.key_prefix) == (
        redis_server.url, 7, 4.5, "app1:")
    # make_service starts it (connects) first and stops it last.
    service = make_service(config, [])
    assert list(service)[0] is locker


@pytest.mark.parametrize("args, message", [
    (["--redis-url", "http://127.0.0.1"], "not a redis:// URL"),
    (["--redis-url", "redis://127.0.0.1:{free}/0"], "cannot reach Redis at 127.0.0.1"),
    (["--redis-url", "{url}/100000"], "refused SELECT"),
    (["--redis-lock-lease", "0"], "--redis-lock-lease"),
])
def test_bad_redis_options(tmp_path, redis_server, args, message):
    args = [a.format(free=free_port(), url=redis_server.url.rsplit("/", 1)[0]) for a in args]
    with pytest.raises(usage.UsageError, match=message):
        Options().parseOptions(["--path", str(tmp_path), "--locker", "redis", *args])
