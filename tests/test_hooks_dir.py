"""
End to end: C{twist tus --hooks-dir} with small Python scripts as hooks,
as tusd's file hooks: JSON on stdin, C{TUS_*} in the environment, the
answer on stdout; a missing script is ignored; a failing, hanging (killed
at the timeout) or babbling script is a clear 500 that keeps the data.
"""

from __future__ import annotations

import base64
import json
import os
import sys
from pathlib import Path

import pytest

from faultkit import OCTET, TwistProcess, call, create, head, patch, target, wait_until

# Every script appends what it was given to events.jsonl, then acts as its
# upload's "mode" metadata says.
SCRIPT = """\
#!{python}
import json, os, sys, time
event = json.load(sys.stdin)
with open(os.path.join(os.path.dirname(__file__), "events.jsonl"), "a") as log:
    env = {{k: v for k, v in os.environ.items() if k.startswith("TUS_")}}
    log.write(json.dumps({{"event": event, "env": env, "cwd": os.getcwd()}}) + "\\n")
mode = event["Event"]["Upload"]["MetaData"].get("mode", "")
if mode == "reject":
    print(json.dumps({{"RejectUpload": True, "HTTPResponse": {{"StatusCode": 403, "Body": "rejected by script"}}}}))
elif mode == "rename":
    print(json.dumps({{"ChangeFileInfo": {{"ID": "from-script"}}}}))
elif mode == "fail":
    print("something went wrong", file=sys.stderr)
    sys.exit(3)
elif mode == "garbage":
    print("this is not json")
elif mode == "hang":
    with open(os.path.join(os.path.dirname(__file__), "hanging.pid"), "w") as f:
        f.write(str(os.getpid()))
    time.sleep(60)
"""


def metadata(mode: str) -> bytes:
    return b"mode " + base64.b64encode(mode.encode())


def events(hooks: Path) -> list[dict]:
    path = hooks / "events.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


@pytest.fixture(scope="module")
def hooked(tmp_path_factory):
    base = tmp_path_factory.mktemp("dirhooks")
    hooks = base / "hooks"
    hooks.mkdir()
    for name in ("pre-create", "post-create", "post-receive", "pre-finish", "post-finish", "pre-terminate"):
        script = hooks / name
        script.write_text(SCRIPT.format(python=sys.executable))
        script.chmod(0o755)
    server = TwistProcess(base / "uploads", base, "--hooks-dir", str(hooks), "--hooks-timeout", "2s",
                          "--hooks-enabled-events", "pre-create,post-create,post-receive,pre-finish,post-finish,"
                          "pre-terminate,post-terminate")
    yield server, hooks
    server.stop()


def test_scripts_get_the_event_and_answer(hooked):
    server, hooks = hooked
    reply = call(server.port, b"POST", b"/files/", {b"Upload-Length": b"5", b"Upload-Metadata": metadata("ok"),
                                                    b"Content-Type": OCTET}, b"hello")
    assert reply.status == 201
    upload_id = reply.header(b"location").rsplit(b"/", 1)[1].decode()

    def seen(kind):
        return [e for e in events(hooks) if e["event"]["Type"] == kind and e["event"]["Event"]["Upload"]["ID"] == upload_id]
    wait_until(lambda: seen("post-finish") and seen("post-receive") and seen("post-create"), "the post hooks")
    finish = seen("pre-finish")[0]
    assert finish["env"] == {"TUS_ID": upload_id, "TUS_SIZE": "5", "TUS_OFFSET": "5"}
    assert finish["cwd"] == str(hooks)
    assert finish["event"]["Event"]["HTTPRequest"]["Method"] == "POST"
    # post-terminate has no script: ignored.
    reply = call(server.port, b"DELETE", target(upload_id))
    assert reply.status == 204
    assert not (server.path / upload_id).exists()


@pytest.mark.parametrize("mode, status, start", [
    ("reject", 403, b"rejected by script"),
    ("fail", 500, b"ERR_HOOK_FAILED: the pre-create hook exited with status 3"),
    ("garbage", 500, b"ERR_HOOK_INVALID_RESPONSE: "),
])
def test_pre_create_answers_and_failures(hooked, mode, status, start):
    server, hooks = hooked
    before = set(os.listdir(server.path))
    reply = call(server.port, b"POST", b"/files/", {b"Upload-Length": b"5", b"Upload-Metadata": metadata(mode)})
    assert reply.status == status and reply.body.startswith(start), reply
    assert set(os.listdir(server.path)) == before


def test_pre_create_renames(hooked):
    server, hooks = hooked
    reply = call(server.port, b"POST", b"/files/", {b"Upload-Length": b"5", b"Upload-Metadata": metadata("rename")})
    assert reply.status == 201 and reply.header(b"location").endswith(b"/files/from-script")


def test_failing_script_keeps_the_data_and_is_logged(hooked):
    server, hooks = hooked
    upload_id = create(server.port, 5)
    # The upload's metadata is "ok" for pre-create, so only pre-finish fails.
    (hooks / "pre-finish").write_text("#!/bin/sh\necho 'broken' >&2\nexit 1\n")
    try:
        reply = patch(server.port, upload_id, 0, b"hello")
    finally:
        (hooks / "pre-finish").write_text(SCRIPT.format(python=sys.executable))
    assert reply.status == 500 and reply.body.startswith(b"ERR_HOOK_FAILED: the pre-finish hook exited with status 1")
    assert server.stored(upload_id) == b"hello" and head(server.port, upload_id).offset == 5
    log = server.log_text()
    assert f"pre-finish hook for upload {upload_id} failed: ERR_HOOK_FAILED" in log
    assert f"pre-finish hook for upload {upload_id}: broken" in log


def test_hanging_script_is_killed_at_the_timeout(hooked):
    server, hooks = hooked
    pid_file = hooks / "hanging.pid"
    reply = call(server.port, b"POST", b"/files/", {b"Upload-Length": b"5", b"Upload-Metadata": metadata("hang")})
    assert reply.status == 500 and reply.body.startswith(b"ERR_HOOK_TIMEOUT: "), reply
    pid = int(pid_file.read_text())

    def gone() -> bool:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        return False
    wait_until(gone, "the hanging hook to be killed")
    server.assert_clean_log()


def test_unusable_hooks_dir_is_a_one_line_error(tmp_path):
    from test_e2e_twist import twist_command, twist_env
    import subprocess
    result = subprocess.run(twist_command("--path", str(tmp_path / "u"), "--hooks-dir", str(tmp_path / "nope")),
                            env=twist_env(), capture_output=True, text=True, timeout=60)
    assert result.returncode != 0
    assert "--hooks-dir" in result.stderr and "Traceback" not in result.stderr
