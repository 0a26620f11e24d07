"""
Helpers for the hook end-to-end tests: a tusd-style HTTP hook receiver
(twisted.web, in the test process's reactor, on loopback) whose answers a
test programs per event, and C{twist tus} subprocesses that are stopped
after the test.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import pytest
from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET, Site

from faultkit import TwistProcess


@dataclass
class Answer:
    """What the receiver sends back: C{status}, C{content_type}, C{body}."""

    body: bytes = b"{}"
    status: int = 200
    content_type: bytes = b"application/json"


def answer(document: dict) -> Answer:
    return Answer(json.dumps(document).encode())


HANG = object()  # a policy result: never answer


class Receiver(Resource):
    """
    Records every hook request (the parsed JSON, and the HTTP headers it
    came with) and answers with C{policy(event)}: an L{Answer}, a dict
    (sent as JSON), L{None} (C{{}}) or L{HANG}.
    """

    isLeaf = True

    def __init__(self) -> None:
        super().__init__()
        self.events: list[dict] = []
        self.headers: list[Any] = []
        self.policy: Callable[[dict], Any] = lambda event: None
        self.url = ""
        self._hanging: list[Any] = []

    def render_POST(self, request: Any) -> Any:
        event = json.loads(request.content.read())
        self.events.append(event)
        self.headers.append(request.requestHeaders)
        result = self.policy(event)
        if result is HANG:
            self._hanging.append(request)
            return NOT_DONE_YET
        if result is None or isinstance(result, dict):
            result = answer(result or {})
        request.setResponseCode(result.status)
        if result.content_type:
            request.setHeader(b"content-type", result.content_type)
        return result.body

    def of_type(self, event_type: str) -> list[dict]:
        return [event for event in self.events if event["Type"] == event_type]

    def stop_hanging(self) -> None:
        for request in self._hanging:
            if not request.finished and not request._disconnected:
                request.loseConnection()
        self._hanging = []


@pytest.fixture
def receiver() -> Any:
    resource = Receiver()
    port = reactor.listenTCP(0, Site(resource), interface="127.0.0.1")
    resource.url = f"http://127.0.0.1:{port.getHost().port}/hooks"
    yield resource
    resource.stop_hanging()
    port.stopListening()


@pytest.fixture
def twist(tmp_path: Path) -> Any:
    """Call with C{twist tus} options; the processes are stopped after the test."""
    started: list[TwistProcess] = []

    def start(*args: str, twist_args: tuple[str, ...] = ()) -> TwistProcess:
        base = tmp_path / f"twist-{len(started)}"
        base.mkdir()
        server = TwistProcess(base / "uploads", base, *args, twist_args=twist_args)
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()


class Address:
    """What L{tushttp.connect} needs of a server."""

    def __init__(self, server: TwistProcess) -> None:
        self.port_number = server.port


def wait_for_events(receiver: Receiver, event_type: str, count: int = 1) -> Deferred:
    from tushttp import wait_for

    async def arrived() -> bool:
        return len(receiver.of_type(event_type)) >= count
    return Deferred.fromCoroutine(wait_for(arrived))
