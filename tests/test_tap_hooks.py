"""
C{twist tus}'s hook options: checked in C{postOptions} (one clear usage
error each), and turned into the right hook handler and configuration.
"""

import pytest
from twisted.internet import reactor
from twisted.python import usage

from txtus.hooks.directory import DirectoryHooks
from txtus.hooks.events import ALL_EVENTS, DEFAULT_EVENTS
from txtus.hooks.http import HttpHooks
from txtus.tap import Options, build_config


def parse(tmp_path, *args):
    options = Options()
    options.parseOptions(["--path", str(tmp_path / "uploads"), *args])
    return options


def test_no_hooks_by_default(tmp_path):
    config = build_config(parse(tmp_path), reactor)
    assert config.hooks is None
    assert config.hook_events == DEFAULT_EVENTS
    assert (config.hook_timeout, config.progress_hooks_interval) == (30.0, 1.0)


def test_http_hooks(tmp_path):
    options = parse(tmp_path, "--hooks-http", "http://127.0.0.1:9/h", "--hooks-http-timeout", "2s",
                    "--hooks-http-retry", "5", "--hooks-http-backoff", "250ms", "--hooks-http-size-limit", "100",
                    "--hooks-http-forward-headers", "authorization,x-tenant", "--hooks-enabled-events", "",
                    "--hooks-timeout", "1m", "--progress-hooks-interval", "5s")
    config = build_config(options, reactor)
    hooks = config.hooks
    assert isinstance(hooks, HttpHooks)
    assert (hooks.timeout, hooks.retries, hooks.backoff, hooks.size_limit) == (2.0, 5, 0.25, 100)
    assert hooks.forward_headers == ("Authorization", "X-Tenant")
    assert config.hook_events == set(ALL_EVENTS)
    assert (config.hook_timeout, config.progress_hooks_interval) == (60.0, 5.0)


def test_directory_hooks(tmp_path):
    config = build_config(parse(tmp_path, "--hooks-dir", str(tmp_path)), reactor)
    assert isinstance(config.hooks, DirectoryHooks) and config.hooks.directory == str(tmp_path)


@pytest.mark.parametrize("args, message", [
    (("--hooks-http", "http://x/", "--hooks-dir", "."), "one hook transport at a time"),
    (("--hooks-http", "ftp://x/"), "--hooks-http must be an http"),
    (("--hooks-dir", "/nonexistent/hooks"), "is not a directory"),
    (("--hooks-plugin", "no-such-plugin"), "no hook plugin named 'no-such-plugin'"),
    (("--hooks-enabled-events", "pre-create,post-upload"), "unknown hook event 'post-upload'"),
    (("--hooks-http-retry", "-1"), "--hooks-http-retry must not be negative"),
    (("--hooks-http-size-limit", "lots"), "--hooks-http-size-limit: not a whole number"),
    (("--hooks-timeout", "soon"), "--hooks-timeout: not a duration"),
    (("--progress-hooks-interval", "0"), "--progress-hooks-interval must be positive"),
])
def test_bad_hook_options(tmp_path, args, message):
    with pytest.raises(usage.UsageError, match=message):
        parse(tmp_path, *args)
