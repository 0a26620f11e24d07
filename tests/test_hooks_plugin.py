"""
End to end: C{twist tus --hooks-plugin NAME} finding a hook handler through
Twisted's plugin system, in a module written to a temporary
C{twisted/plugins/} directory put on C{PYTHONPATH}: its answers, its
failures (raising, hanging, garbage), coroutines written for asyncio under
the asyncio reactor, and an unknown name at the command line.
"""

from __future__ import annotations

import base64
import subprocess

import pytest

from faultkit import TwistProcess, call, create, patch

PLUGIN = '''
import asyncio, json, os
from twisted.internet.defer import Deferred
from twisted.plugin import IPlugin
from zope.interface import implementer
from txtus.interfaces import IHookHandler, IHookPlugin


@implementer(IHookHandler)
class Handler:
    def __init__(self, reactor):
        self.reactor = reactor

    def invoke_hook(self, request):
        with open(os.environ["HOOK_LOG"], "a") as log:
            log.write(json.dumps(request.to_dict()) + "\\n")
        mode = request.upload.metadata.get("mode", "")
        if mode == "reject":
            return {"RejectUpload": True, "HTTPResponse": {"StatusCode": 451, "Body": "plugin says no"}}
        if mode == "raise":
            raise ValueError("plugin bug")
        if mode == "hang":
            return Deferred()
        if mode == "garbage":
            return 42
        if mode == "asyncio":
            return self.asyncio_answer()
        return None

    async def asyncio_answer(self):
        # Only an asyncio task can await this.
        await asyncio.sleep(0.01)
        return {"RejectUpload": True, "HTTPResponse": {"StatusCode": 409, "Body": "asyncio"}}


@implementer(IPlugin, IHookPlugin)
class Maker:
    name = "test-hooks"

    def hook_handler(self, reactor):
        return Handler(reactor)


maker = Maker()
'''


@pytest.fixture(scope="module")
def plugin_path(tmp_path_factory):
    base = tmp_path_factory.mktemp("plugin")
    plugins = base / "twisted" / "plugins"
    plugins.mkdir(parents=True)
    (plugins / "txtus_test_hooks.py").write_text(PLUGIN)
    return base


@pytest.fixture(scope="module")
def plugged(plugin_path, tmp_path_factory):
    servers = []

    def start(*twist_args):
        base = tmp_path_factory.mktemp("plugged")
        with pytest.MonkeyPatch.context() as env:
            env.setenv("PYTHONPATH", str(plugin_path))
            env.setenv("HOOK_LOG", str(base / "hooks.jsonl"))
            server = TwistProcess(base / "uploads", base, "--hooks-plugin", "test-hooks", "--hooks-timeout", "1s",
                                  "--hooks-enabled-events", "pre-create,pre-finish", twist_args=twist_args)
        servers.append(server)
        return server
    yield start
    for server in servers:
        server.stop()


def post(server, mode):
    return call(server.port, b"POST", b"/files/",
                {b"Upload-Length": b"5", b"Upload-Metadata": b"mode " + base64.b64encode(mode.encode())})


@pytest.fixture(scope="module")
def server(plugged):
    return plugged()


@pytest.mark.parametrize("mode, status, start", [
    ("reject", 451, b"plugin says no"),
    ("raise", 500, b"ERR_HOOK_FAILED: the pre-create hook failed"),
    ("hang", 500, b"ERR_HOOK_TIMEOUT: the pre-create hook did not answer within 1 s"),
    ("garbage", 500, b"ERR_HOOK_INVALID_RESPONSE: "),
])
def test_plugin_answers_and_failures(server, mode, status, start):
    reply = post(server, mode)
    assert reply.status == status and reply.body.startswith(start), reply
    assert list(server.path.iterdir()) == []


def test_plugin_sees_events_and_keeps_data_on_failure(server):
    reply = post(server, "ok")
    assert reply.status == 201
    upload_id = reply.header(b"location").rsplit(b"/", 1)[1].decode()
    assert patch(server.port, upload_id, 0, b"hello").status == 204
    log = (server.log_dir / "hooks.jsonl").read_text()
    assert '"Type": "pre-finish"' in log and upload_id in log
    assert "plugin bug" in server.log_text()  # the raising hook's traceback was logged


def test_coroutines_for_asyncio_under_the_asyncio_reactor(plugged):
    server = plugged("--reactor", "asyncio")
    reply = post(server, "asyncio")
    assert (reply.status, reply.body) == (409, b"asyncio")
    other = create(server.port, 5)
    assert patch(server.port, other, 0, b"hello").status == 204


def test_unknown_plugin_is_a_one_line_error(plugin_path, tmp_path):
    from test_e2e_twist import twist_command, twist_env
    env = twist_env()
    env["PYTHONPATH"] = f"{plugin_path}:{env['PYTHONPATH']}"
    result = subprocess.run(twist_command("--path", str(tmp_path / "u"), "--hooks-plugin", "nope"),
                            env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode != 0
    assert "no hook plugin named 'nope' (found: test-hooks)" in result.stderr
    assert "Traceback" not in result.stderr
