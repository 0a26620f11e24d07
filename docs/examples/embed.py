"""
An existing Twisted application that also serves tus uploads.

One reactor runs:
  - a web site on WEB (default tcp:8080:interface=127.0.0.1): a plain
    "hello" page at / and tus uploads at /files/;
  - an unrelated protocol, an echo server, on ECHO (default
    tcp:8081:interface=127.0.0.1).

Both are services under one MultiService, the way a .tac file or a twist
plugin would hold them.  Run it with:

    python docs/examples/embed.py [--uploads DIR] [--web ENDPOINT] [--echo ENDPOINT]
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from twisted.application import strports
from twisted.application.service import MultiService
from twisted.internet.protocol import Factory, Protocol
from twisted.logger import globalLogBeginner, textFileLogObserver
from twisted.web.resource import Resource

import txtus


class Hello(Resource):
    """Stands for the application's existing web pages."""

    isLeaf = True

    def render_GET(self, request: Any) -> bytes:
        request.setHeader(b"content-type", b"text/plain; charset=utf-8")
        return b"hello\n"


class Echo(Protocol):
    """Stands for whatever the application already speaks."""

    def dataReceived(self, data: bytes) -> None:
        self.transport.write(data)


def build_service(uploads: str, web: str, echo: str, reactor: Any = None) -> MultiService:
    """
    The whole application as one C{IService}: start it with
    C{startService()} (or give it to twistd / twist) and stop it with
    C{stopService()}.
    """
    # The application's own web resources...
    root = Resource()
    root.putChild(b"", Hello())

    # ...and tus beside them: a store, a locker, one config.
    composer = txtus.StoreComposer()
    txtus.FileStore(uploads).use_in(composer)
    txtus.MemoryLocker(reactor=reactor).use_in(composer)
    config = txtus.TusConfig(composer=composer, base_path="/files/", max_size=100 * 1024**2,
                             reactor=reactor)

    # make_site mounts the tus resource at config.base_path under root and
    # returns a TusSite, so upload bodies stream into the store.  (With a
    # Site of your own: txtus.mount(root, "/files/", txtus.TusResource(config))
    # and Site(root, requestFactory=txtus.TusRequest).)
    site = txtus.make_site(config, root)

    application = MultiService()
    strports.service(web, site, reactor=reactor).setServiceParent(application)
    strports.service(echo, Factory.forProtocol(Echo), reactor=reactor).setServiceParent(application)
    return application


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[1])
    parser.add_argument("--uploads", default="./uploads")
    parser.add_argument("--web", default="tcp:8080:interface=127.0.0.1")
    parser.add_argument("--echo", default="tcp:8081:interface=127.0.0.1")
    args = parser.parse_args(argv)

    from twisted.internet import reactor

    globalLogBeginner.beginLoggingTo([textFileLogObserver(sys.stdout)])
    application = build_service(args.uploads, args.web, args.echo, reactor)
    application.startService()
    reactor.addSystemEventTrigger("before", "shutdown", application.stopService)
    reactor.run()


if __name__ == "__main__":
    main()
