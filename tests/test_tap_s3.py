"""
C{twist tus --s3-bucket}: options checked at start-up against the real test
server (moto, signatures checked), so a missing bucket, a wrong key or an
unreachable endpoint is a one-line error before the server listens.
"""

from __future__ import annotations

import subprocess
import sys

import pytest
from twisted.internet.task import Clock
from twisted.python import usage

from txtus.stores.s3.config import find_credentials
from txtus.stores.s3.store import S3Store
from txtus.tap import Options, build_config


@pytest.fixture
def aws_env(monkeypatch, moto_server, tmp_path):
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", moto_server.credentials.access_key)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", moto_server.credentials.secret_key)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    monkeypatch.delenv("AWS_SESSION_TOKEN", raising=False)
    return moto_server


def _parse(*args):
    options = Options()
    options.parseOptions(list(args))
    return options


def test_s3_options_build_an_s3_store(aws_env):
    options = _parse("--s3-bucket", aws_env.bucket, "--s3-endpoint", aws_env.endpoint, "--s3-prefix", "up/",
                     "--s3-part-size", "6MiB", "--s3-concurrency", "3", "--s3-part-mode", "pipe")
    store = build_config(options, reactor=Clock()).composer.core
    assert isinstance(store, S3Store)
    assert (store.prefix, store.part_size, store.concurrency, store.part_mode) == ("up/", 6 * 1024 * 1024, 3, "pipe")
    assert store.client.region == "us-east-1"
    assert store.spool_dir is None


def test_spool_dir_option(aws_env, tmp_path):
    options = _parse("--s3-bucket", aws_env.bucket, "--s3-endpoint", aws_env.endpoint,
                     "--s3-spool-dir", str(tmp_path))
    store = build_config(options, reactor=Clock()).composer.core
    assert store.spool_dir == str(tmp_path)
    assert list(tmp_path.iterdir()) == []  # the start-up probe leaves nothing


@pytest.mark.parametrize("make, message", [
    (lambda tmp: tmp / "missing", "cannot hold spooled parts: no such directory"),
    (lambda tmp: (tmp / "file").write_text("x") and tmp / "file", "cannot hold spooled parts: not a directory"),
])
def test_bad_spool_dir_is_a_one_line_error(aws_env, tmp_path, make, message):
    with pytest.raises(usage.UsageError) as caught:
        _parse("--s3-bucket", aws_env.bucket, "--s3-endpoint", aws_env.endpoint, "--s3-spool-dir", str(make(tmp_path)))
    assert message in str(caught.value) and "\n" not in str(caught.value)


@pytest.mark.parametrize("args, message", [
    (["--s3-bucket", "no-such-bucket"], "S3 bucket 'no-such-bucket' does not exist"),
    (["--s3-part-size", "1MiB"], "--s3-part-size must be between 5MiB and 5GiB"),
    (["--s3-concurrency", "0"], "--s3-concurrency must be between 1 and 64"),
    (["--s3-part-mode", "stream"], "--s3-part-mode must be one of: buffer, pipe"),
    (["--locker", "file"], "--locker file with --s3-bucket needs --lock-dir"),
    (["--locker", "memory", "--lock-dir", "/tmp"], "--lock-dir is for --locker file"),
])
def test_bad_s3_options_are_one_line_errors(aws_env, args, message):
    base = ["--s3-bucket", aws_env.bucket, "--s3-endpoint", aws_env.endpoint]
    with pytest.raises(usage.UsageError) as caught:
        _parse(*base, *args)
    assert message in str(caught.value) and "\n" not in str(caught.value)


def test_wrong_secret_is_refused_at_start_up(aws_env, monkeypatch):
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "not-the-secret")
    with pytest.raises(usage.UsageError, match="refuses these credentials"):
        _parse("--s3-bucket", aws_env.bucket, "--s3-endpoint", aws_env.endpoint)


def test_unreachable_endpoint(aws_env):
    with pytest.raises(usage.UsageError, match="cannot reach S3"):
        _parse("--s3-bucket", "b", "--s3-endpoint", "http://127.0.0.1:9")


def test_credentials_from_the_shared_file(tmp_path):
    path = tmp_path / "credentials"
    path.write_text("[default]\naws_access_key_id = A\naws_secret_access_key = B\n"
                    "[other]\naws_access_key_id = C\naws_secret_access_key = D\naws_session_token = T\n")
    env = {"AWS_SHARED_CREDENTIALS_FILE": str(path)}
    assert find_credentials(env).access_key == "A"
    other = find_credentials({**env, "AWS_PROFILE": "other"})
    assert (other.access_key, other.secret_key, other.session_token) == ("C", "D", "T")


def test_twist_prints_one_line_for_a_missing_bucket(aws_env):
    result = subprocess.run([sys.executable, "-m", "twisted", "tus", "--s3-bucket", "absent",
                             "--s3-endpoint", aws_env.endpoint, "--port", "tcp:0:interface=127.0.0.1"],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode != 0
    assert "S3 bucket 'absent' does not exist" in result.stdout + result.stderr
    assert "Traceback" not in result.stdout + result.stderr
