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

import redisserver
from faultkit import TwistProcess, create, head, patch
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


@pytest.mark.parametrize("query, message", [
    ("?ssl_ca_certs={missing}", "--redis-url: cannot read ssl_ca_certs .*missing.pem.: No such file"),
    ("?ssl_ca_certs={stranger}", "--redis-url: TLS with Redis at 127.0.0.1:[0-9]+ failed: CERTIFICATE_VERIFY_FAILED"),
    ("?ssl_ca_certs={ca}&ssl_verify=no", "--redis-url: unknown parameter 'ssl_verify'"),
    ("", "--redis-url: TLS with Redis at 127.0.0.1:[0-9]+ failed: CERTIFICATE_VERIFY_FAILED"),  # system trust
])
def test_bad_rediss_options(tmp_path, redis_tls_server, query, message):
    stranger = redisserver.make_ca(tmp_path, "stranger")
    url = redis_tls_server.url.split("?")[0] + query.format(
        missing=tmp_path / "missing.pem", stranger=stranger.cert_file, ca=redis_tls_server.ca_file)
    with pytest.raises(usage.UsageError, match=message):
        Options().parseOptions(["--path", str(tmp_path), "--locker", "redis", "--redis-url", url])


def test_plain_redis_url_for_a_tls_port_says_so(tmp_path, redis_tls_server):
    url = redis_tls_server.url.split("?")[0].replace("rediss://", "redis://")
    with pytest.raises(usage.UsageError, match="--redis-url: .*use rediss://"):
        Options().parseOptions(["--path", str(tmp_path), "--locker", "redis", "--redis-url", url])


def test_twist_tus_with_rediss_serves_uploads(tmp_path, redis_tls_server, redis_prefix):
    """The server listens for TLS only: the locks and their release channel go over TLS."""
    (tmp_path / "logs").mkdir()
    server = TwistProcess(tmp_path / "uploads", tmp_path / "logs", "--locker", "redis",
                          "--redis-url", redis_tls_server.url, "--redis-key-prefix", redis_prefix)
    try:
        data = b"over TLS" * 1000
        upload_id = create(server.port, len(data))
        reply = patch(server.port, upload_id, 0, data[:3000])
        assert reply.status == 204 and reply.offset == 3000, reply
        reply = patch(server.port, upload_id, 3000, data[3000:])
        assert reply.status == 204 and reply.offset == len(data), reply
        assert head(server.port, upload_id).offset == len(data)
        assert server.stored(upload_id) == data
    finally:
        server.stop()
    server.assert_clean_log()
