"""
Building blocks for running txtus: a site with the tus resource mounted at
the configured base path, and an C{IService} that listens on endpoint
strings.  The CLI (L{txtus.tap}) and embedders use the same functions.
"""

from __future__ import annotations

import re
from typing import Any, Iterable
from urllib.parse import urlsplit

from twisted.application import strports
from twisted.application.service import IService, MultiService, Service
from twisted.internet.defer import Deferred, gatherResults, maybeDeferred
from twisted.web.pages import notFound
from twisted.web.resource import Resource

from txtus.config import TusConfig
from txtus.shutdown import Drain
from txtus.metrics import MetricsResource, PrometheusMetrics
from txtus.web.resource import TusResource
from txtus.web.streaming import TusSite


class _Root(Resource):
    """C{/}: a one-line greeting, like tusd's, so operators see it is up."""

    def render_GET(self, request: Any) -> bytes:
        request.setHeader(b"content-type", b"text/plain; charset=utf-8")
        return b"txtus: a tus resumable-upload server\n"

    def render_HEAD(self, request: Any) -> bytes:
        return self.render_GET(request)

    def getChild(self, path: bytes, request: Any) -> Resource:
        # "/" arrives as the child b"" of the root; serve the greeting there.
        if path == b"" and not request.postpath:
            return self
        return notFound()


def mount(root: Resource, path: str, resource: Resource) -> None:
    """Put C{resource} at C{path} (e.g. C{/files/}) below C{root}."""
    segments = [s.encode("utf-8") for s in path.strip("/").split("/") if s]
    if not segments:
        raise ValueError("the tus resource cannot be mounted at /")
    parent = root
    for segment in segments[:-1]:
        child = parent.children.get(segment)
        if child is None:
            child = Resource()
            parent.putChild(segment, child)
        parent = child
    parent.putChild(segments[-1], resource)


def make_site(config: TusConfig, root: Resource | None = None) -> TusSite:
    """
    A L{TusSite} serving a L{TusResource} at C{config.base_path} (the path
    part, when it is an absolute URL).  Pass C{root} to serve other
    resources beside it; without one, C{/} answers a one-line greeting.
    C{twist tus} passes a L{txtus.web.demo.DemoPage} as the root instead.
    """
    if root is None:
        root = _Root()
    path = urlsplit(config.base_path).path if config.absolute_base else config.base_path
    mount(root, path, TusResource(config))
    if isinstance(config.metrics, PrometheusMetrics):
        mount(root, config.metrics_path, MetricsResource(config.metrics.registry))
    site = TusSite(root, timeout=config.network_timeout or None, reactor=config.reactor,
                   header_timeout=config.network_timeout or None)
    config.metrics.watch_connections(lambda: site.open_connections)
    return site


# Twisted listens with a backlog of 50.  When more clients than that
# connect at once (a page starting 200 uploads, a burst after a restart),
# Linux drops the extra SYNs and those clients retry only after a second:
# a second-long tail on a few requests.  tusd (Go) asks for the kernel's
# maximum, @tus/server (Node) for 511; Linux caps it at net.core.somaxconn.
LISTEN_BACKLOG = 1024
_BACKLOG_KINDS = frozenset({"tcp", "tcp6", "ssl", "unix"})
_HAS_BACKLOG = re.compile(r"(?<!\\):backlog=", re.IGNORECASE)


def with_backlog(description: str, backlog: int = LISTEN_BACKLOG) -> str:
    """
    The endpoint string C{description}, listening with C{backlog} pending
    connections unless it names a backlog of its own (or is a kind of
    endpoint without one).
    """
    kind = description.split(":", 1)[0].strip().lower()
    if kind not in _BACKLOG_KINDS or _HAS_BACKLOG.search(description) or description.endswith("\\"):
        return description
    return f"{description}:backlog={backlog}"


class TusService(MultiService):
    """
    The listening ports of one site, and the services it needs (a locker
    holding connections, the expiration cleaner).  C{stopService} shuts
    down gracefully: it stops listening, waits for the requests in flight
    (cutting their bodies after C{config.shutdown_timeout} seconds, see
    L{txtus.shutdown}), and only then stops the other services, which
    those requests may still need to release their locks.
    """

    def __init__(self, site: TusSite, config: TusConfig) -> None:
        super().__init__()
        self.site = site
        self.config = config
        self.listeners: list[IService] = []
        self._drain: Drain | None = None
        self._cut_early = False

    def listen(self, description: str) -> None:
        """Listen on the endpoint string C{description} while running."""
        listener = strports.service(with_backlog(description), self.site, reactor=self.config.reactor)
        listener.setServiceParent(self)
        self.listeners.append(listener)

    def stopService(self) -> Deferred:
        Service.stopService(self)
        stopped = [maybeDeferred(listener.stopService) for listener in self.listeners]
        self._drain = Drain(self.site, self.config.shutdown_timeout, self.config.reactor)
        if self._cut_early:
            self._drain.cut()
        d = gatherResults([*stopped, self._drain.done])
        d.addCallback(lambda _: self._stop_the_rest())
        return d

    def _stop_the_rest(self) -> Deferred:
        rest = [maybeDeferred(child.stopService) for child in reversed(list(self))
                if child not in self.listeners and child.running]
        return gatherResults(rest).addCallback(lambda _: None)

    def cut_now(self) -> None:
        """End the grace period: cut every body in flight now."""
        if self._drain is None:
            self._cut_early = True
        else:
            self._drain.cut()


def make_service(config: TusConfig, ports: Iterable[str], root: Resource | None = None) -> TusService:
    """
    An C{IService} listening on each endpoint string in C{ports} (such as
    C{tcp:1080:interface=127.0.0.1} or C{unix:/run/tus.sock}), with the
    expiration cleaner when uploads expire.  A store or locker that is
    itself an C{IService} (one holding connections, like the Redis locker)
    is started first and stopped last.  Stream endpoints without a
    C{backlog} parameter get L{LISTEN_BACKLOG}.
    """
    site = make_site(config, root)
    service = TusService(site, config)
    for part in config.composer.parts():
        if IService.providedBy(part):
            part.setServiceParent(service)
    if config.expires_uploads:
        from txtus.expiration import ExpirationCleaner
        ExpirationCleaner(config).setServiceParent(service)
    for description in ports:
        service.listen(description)
    return service
