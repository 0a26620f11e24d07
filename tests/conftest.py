"""
Shared fixtures: a real txtus server on a loopback port per test, and a
minimal raw-socket HTTP client for what treq cannot express (cut bodies,
chunked trailers, pipelining); and the browser tests' fixtures
(L{browserkit}).
"""

from __future__ import annotations

import pytest
import pytest_twisted
from twisted.internet import reactor

from txtus.testing import start_server

from redisserver import redis_prefix, redis_server, redis_tls_server  # noqa: F401  (fixtures)
# Session-wide (one Chromium, one npm install, one static site): defined
# here once, so that every module shares them.
from browserkit import browser, context, page_files, static_site, twist_tus  # noqa: F401,E402


@pytest.fixture
def upload_dir(tmp_path):
    path = tmp_path / "uploads"
    path.mkdir()
    return path


@pytest.fixture
def server_factory(upload_dir):
    """Call with TusConfig overrides; servers are stopped after the test."""
    started = []

    def start(**kwargs):
        d = start_server(str(upload_dir), reactor=reactor, **kwargs)
        d.addCallback(lambda s: started.append(s) or s)
        return d

    yield start
    for server in started:
        pytest_twisted.blockon(server.stop())


@pytest.fixture
def server(server_factory):
    return pytest_twisted.blockon(server_factory())


# Real S3 servers (moto, rclone), started once per session when first asked for.
from tests.s3servers import moto_server, s3_server, s3_servers  # noqa: E402,F401
