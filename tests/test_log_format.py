"""
C{twist tus --log-format text|json}: text lines by default (also when the
log is a file, where twist alone would pick its JSON), one JSON object per
line when asked, and every line about an upload carries its ID.
"""

from __future__ import annotations

import http.client
import io
import json
import os
import re
import subprocess
import sys
from pathlib import Path

from twisted.logger import LogLevel, Logger
from twisted.python.failure import Failure

from faultkit import REPO, wait_until
from txtus.logs import json_observer, text_observer

_PORT = re.compile(r"starting on ([0-9]+)")


def _run_twist(tmp_path: Path, *args: str) -> tuple[subprocess.Popen, Path, int]:
    log = tmp_path / "server.log"
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])))
    process = subprocess.Popen(
        [sys.executable, "-m", "twisted", "--log-file", str(log), "tus", "--path", str(tmp_path / "uploads"),
         "--port", "tcp:0:interface=127.0.0.1", *args],
        cwd=tmp_path, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def port() -> int | None:
        assert process.poll() is None, f"twist tus exited with {process.returncode}"
        match = _PORT.search(log.read_text() if log.exists() else "")
        return int(match.group(1)) if match else None

    return process, log, wait_until(port, "twist tus to listen", timeout=60)


def _upload_and_delete(port: int) -> str:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    conn.request("POST", "/files/", body=b"hello", headers={
        "Tus-Resumable": "1.0.0", "Upload-Length": "5", "Content-Type": "application/offset+octet-stream"})
    response = conn.getresponse()
    response.read()
    assert response.status == 201
    upload_id = response.getheader("Location").rsplit("/", 1)[1]
    conn.request("DELETE", f"/files/{upload_id}", headers={"Tus-Resumable": "1.0.0"})
    response = conn.getresponse()
    response.read()
    assert response.status == 204
    conn.request("HEAD", f"/files/{upload_id}", headers={"Tus-Resumable": "1.0.0"})
    response = conn.getresponse()
    response.read()
    assert response.status == 404
    conn.close()
    return upload_id


def _stop(process: subprocess.Popen) -> None:
    process.terminate()
    process.wait(10)


def test_text_lines_by_default_even_into_a_file(tmp_path: Path) -> None:
    process, log, port = _run_twist(tmp_path)
    try:
        upload_id = _upload_and_delete(port)
        wait_until(lambda: "terminated" in log.read_text(), "the termination to be logged")
    finally:
        _stop(process)
    text = log.read_text()
    assert "\x1e" not in text and not text.lstrip().startswith("{"), text[:300]
    prefix = r"^\S+ \[txtus\.protocol\.handler#info\] upload " + upload_id
    assert re.search(prefix + r" created \(length 5\)$", text, re.M), text
    assert re.search(prefix + r" finished$", text, re.M), text
    assert re.search(prefix + r" terminated$", text, re.M), text
    assert re.search(r"\[txtus\.web\.resource#info\] HEAD " + upload_id + r": 404 ERR_UPLOAD_NOT_FOUND$", text, re.M)


def test_json_lines_when_asked(tmp_path: Path) -> None:
    process, log, port = _run_twist(tmp_path, "--log-format", "json")
    try:
        upload_id = _upload_and_delete(port)
        wait_until(lambda: "terminated" in log.read_text(), "the termination to be logged")
    finally:
        _stop(process)
    records = [json.loads(line) for line in log.read_text().splitlines()]
    about = [r for r in records if r.get("upload_id") == upload_id]
    assert [r["msg"] for r in about] == [
        f"upload {upload_id} created (length 5)", f"upload {upload_id} finished",
        f"upload {upload_id} terminated", f"HEAD {upload_id}: 404 ERR_UPLOAD_NOT_FOUND"]
    assert about[0]["size"] == 5 and about[0]["level"] == "info"
    assert about[-1]["status"] == 404 and about[-1]["code"] == "ERR_UPLOAD_NOT_FOUND"
    assert all(r["time"] and r["namespace"] for r in about)


def test_bad_log_format_is_one_line(tmp_path: Path) -> None:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])))
    result = subprocess.run([sys.executable, "-m", "twisted", "tus", "--path", str(tmp_path), "--log-format", "xml"],
                            capture_output=True, text=True, env=env, timeout=120)
    assert result.returncode != 0
    assert "--log-format must be one of: text, json" in result.stdout + result.stderr


def _events(observer_factory) -> io.StringIO:
    out = io.StringIO()
    log = Logger(namespace="test", observer=observer_factory(out))
    log.info("upload {upload_id} made by {who.name}", upload_id="abc", who=LogLevel.warn)
    log.info("Twisted's own syntax: {value()}", value=lambda: "called")
    try:
        1 / 0
    except ZeroDivisionError:
        log.failure("upload {upload_id} broke", Failure(), upload_id="def")
    return out


def test_text_observer_formats_like_twisted() -> None:
    lines = _events(text_observer).getvalue()
    assert re.search(r"^\S+ \[test#info\] upload abc made by warn$", lines, re.M), lines
    assert "Twisted's own syntax: called" in lines
    assert re.search(r"\[test#critical\] upload def broke\nTraceback", lines), lines
    assert "ZeroDivisionError" in lines


def test_json_observer_writes_one_object_per_line() -> None:
    records = [json.loads(line) for line in _events(json_observer).getvalue().splitlines()]
    assert [r["msg"] for r in records] == ["upload abc made by warn", "Twisted's own syntax: called", "upload def broke"]
    assert records[0]["upload_id"] == "abc" and "who" not in records[0]
    assert records[2]["upload_id"] == "def" and "ZeroDivisionError" in records[2]["error"]


def test_txtus_events_reach_the_global_publisher_by_default() -> None:
    """An application embedding txtus sees its events like any others."""
    from twisted.logger import globalLogPublisher

    from txtus.logs import Logger as TxtusLogger

    seen: list[dict] = []
    globalLogPublisher.addObserver(seen.append)
    try:
        TxtusLogger(namespace="txtus.test").info("upload {upload_id} created", upload_id="abc")
    finally:
        globalLogPublisher.removeObserver(seen.append)
    assert [(e["log_namespace"], e["upload_id"], e["log_level"]) for e in seen] == [("txtus.test", "abc", LogLevel.info)]


def test_a_direct_route_filters_by_level_and_skips_the_publisher() -> None:
    from twisted.logger import globalLogPublisher

    from txtus.logs import EVENTS, Logger as TxtusLogger

    published: list[dict] = []
    out = io.StringIO()
    globalLogPublisher.addObserver(published.append)
    EVENTS.direct(text_observer(out), LogLevel.warn)
    try:
        log = TxtusLogger(namespace="txtus.test")
        log.info("upload {upload_id} quiet", upload_id="abc")
        log.warn("upload {upload_id} loud", upload_id="abc")
    finally:
        EVENTS.reset()
        globalLogPublisher.removeObserver(published.append)
    assert published == []
    assert out.getvalue().endswith("[txtus.test#warn] upload abc loud\n")
    assert "quiet" not in out.getvalue()


def test_a_broken_log_does_not_fail_the_caller() -> None:
    from txtus.logs import EVENTS, Logger as TxtusLogger

    class Closed(io.StringIO):
        def write(self, text: str) -> int:
            raise OSError("the log's pipe is closed")

    EVENTS.direct(text_observer(Closed()), LogLevel.info)
    try:
        TxtusLogger(namespace="txtus.test").info("upload {upload_id} created", upload_id="abc")
    finally:
        EVENTS.reset()
