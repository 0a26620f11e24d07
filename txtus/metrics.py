"""
Prometheus metrics for a tus server, and the no-op stand-in used when
metrics are off.

Each L{PrometheusMetrics} has its own C{CollectorRegistry}, never the
process-wide default: an embedder may run two servers in one process, and
tests stay independent.  The server reaches it only through
L{txtus.interfaces.IMetrics}, so the hot path pays a method call per event
and nothing when metrics are off (L{NO_METRICS}).

Store operations are timed by wrapping the composer the handler uses
(L{PrometheusMetrics.instrument}); the same wrappers count uploads created,
finished and terminated, chunk writers open (active uploads) and the bytes
they stored, so no protocol code has to remember to count.
"""

from __future__ import annotations

import time
from typing import Any, Callable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.exposition import choose_encoder
from twisted.internet.defer import Deferred, maybeDeferred
from twisted.web.resource import Resource
from zope.interface import directlyProvides, implementer, providedBy

from txtus.composer import StoreComposer
from txtus.interfaces import IMetrics

# Request durations run from milliseconds (HEAD) to minutes (a large PATCH).
REQUEST_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
                   30.0, 60.0, 300.0, float("inf"))
# Store operations on a local disk take microseconds; remote stores, more.
STORE_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
                 1.0, 2.5, 5.0, 10.0, float("inf"))
# What PrometheusMetrics.instrument times, by the label it reports.
STORE_OPERATIONS = ("new_upload", "get_upload", "get_info", "open_chunk", "commit", "rollback",
                    "finish", "terminate", "concat_uploads", "declare_length", "lock")


@implementer(IMetrics)
class NullMetrics:
    """Metrics off: every event is dropped and the composer is used as is."""

    def request_done(self, method: bytes, status: int, seconds: float) -> None:
        pass

    def error(self, code: str) -> None:
        pass

    def hook_called(self, event: str) -> None:
        pass

    def hook_failed(self, event: str) -> None:
        pass

    def watch_connections(self, count: Callable[[], int]) -> None:
        pass

    def instrument(self, composer: StoreComposer) -> StoreComposer:
        return composer


NO_METRICS = NullMetrics()


@implementer(IMetrics)
class PrometheusMetrics:
    """
    The metrics of one server, in a registry of their own (C{registry}),
    served by L{MetricsResource}.

    @param registry: where to register; a new C{CollectorRegistry} if
        L{None}.
    """

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry = registry if registry is not None else CollectorRegistry()
        self.requests = Counter("txtus_requests", "tus requests answered, by method and status.",
                                ["method", "status"], registry=registry)
        self.errors = Counter("txtus_errors", "Error responses, by tus error code.", ["code"], registry=registry)
        self.bytes_received = Counter("txtus_bytes_received", "Upload bytes received and stored.",
                                      registry=registry)
        self.uploads_created = Counter("txtus_uploads_created", "Uploads created.", registry=registry)
        self.uploads_finished = Counter("txtus_uploads_finished", "Uploads that received their last byte.",
                                        registry=registry)
        self.uploads_terminated = Counter("txtus_uploads_terminated", "Uploads terminated (DELETE).",
                                          registry=registry)
        self.open_connections = Gauge("txtus_open_connections", "Open HTTP connections.", registry=registry)
        self.active_uploads = Gauge("txtus_active_uploads", "Request bodies being stored right now.",
                                    registry=registry)
        self.hook_calls = Counter("txtus_hook_calls", "Hook calls, by event.", ["event"], registry=registry)
        self.hook_failures = Counter("txtus_hook_failures", "Hook calls that failed, by event.", ["event"],
                                     registry=registry)
        self.request_duration = Histogram("txtus_request_duration_seconds",
                                          "Time from a request's headers to its response being decided.",
                                          ["method"], buckets=REQUEST_BUCKETS, registry=registry)
        self.store_duration = Histogram("txtus_store_operation_duration_seconds",
                                        "Time store and locker operations take, by operation.",
                                        ["operation"], buckets=STORE_BUCKETS, registry=registry)
        # Label children bound once: labels() takes a lock and a lookup.
        self._store_ops = {name: self.store_duration.labels(name).observe for name in STORE_OPERATIONS}
        self._methods: dict[bytes, Any] = {}

    # IMetrics ------------------------------------------------------------

    def request_done(self, method: bytes, status: int, seconds: float) -> None:
        name = method.decode("latin-1")
        self.requests.labels(name, str(status)).inc()
        observe = self._methods.get(method)
        if observe is None:
            observe = self._methods[method] = self.request_duration.labels(name).observe
        observe(seconds)

    def error(self, code: str) -> None:
        self.errors.labels(code).inc()

    def hook_called(self, event: str) -> None:
        self.hook_calls.labels(event).inc()

    def hook_failed(self, event: str) -> None:
        self.hook_failures.labels(event).inc()

    def watch_connections(self, count: Callable[[], int]) -> None:
        self.open_connections.set_function(count)

    def instrument(self, composer: StoreComposer) -> StoreComposer:
        timed = StoreComposer()
        if composer.core is not None:
            timed.core = _wrap(_TimedStore(composer.core, self), composer.core)
        for slot, cls in (("terminater", _TimedTerminater), ("concater", _TimedConcater),
                          ("length_deferrer", _TimedDeferrer), ("locker", _TimedLocker),
                          ("stager", _TimedStager)):
            target = getattr(composer, slot)
            if target is not None:
                setattr(timed, slot, _wrap(cls(target, self), target))
        if composer.reader is not None:
            # Not timed: a download lasts as long as the client reads.
            timed.reader = _wrap(_UntimedReader(composer.reader, self), composer.reader)
        timed.lister = composer.lister
        return timed

    # For the wrappers ------------------------------------------------------

    def timed(self, operation: str, call: Callable[..., Any], *args: Any) -> Deferred:
        observe = self._store_ops[operation]
        start = time.perf_counter()

        def done(result: Any) -> Any:
            observe(time.perf_counter() - start)
            return result

        return maybeDeferred(call, *args).addBoth(done)


class MetricsResource(Resource):
    """
    C{GET} a registry's metrics, as Prometheus scrapes them: in the format
    the scraper's C{Accept} asks for (OpenMetrics or Prometheus text).
    """

    isLeaf = True

    def __init__(self, registry: CollectorRegistry) -> None:
        super().__init__()
        self.registry = registry

    def render_GET(self, request: Any) -> bytes:
        accept = request.getHeader(b"accept")
        encode, content_type = choose_encoder(accept.decode("latin-1") if accept else "")
        request.setHeader(b"content-type", content_type.encode("ascii"))
        request.setHeader(b"cache-control", b"no-store")
        return encode(self.registry)

    def render_HEAD(self, request: Any) -> bytes:
        return self.render_GET(request)


# The composer wrappers -------------------------------------------------------
#
# Each forwards everything to its target and times the operations listed in
# STORE_OPERATIONS.  Uploads handed out are wrapped too, and unwrapped again
# when passed back to the store, which may rely on its own upload type.

def _wrap(proxy: Any, target: Any) -> Any:
    directlyProvides(proxy, providedBy(target))
    return proxy


def _unwrap(upload: Any) -> Any:
    return upload._target if isinstance(upload, _TimedUpload) else upload


class _Timed:
    def __init__(self, target: Any, metrics: PrometheusMetrics) -> None:
        self._target = target
        self._metrics = metrics

    def __getattr__(self, name: str) -> Any:
        return getattr(self._target, name)


class _TimedStore(_Timed):
    def new_upload(self, info: Any) -> Deferred:
        d = self._metrics.timed("new_upload", self._target.new_upload, info)
        return d.addCallback(self._created)

    def get_upload(self, upload_id: str) -> Deferred:
        return self._metrics.timed("get_upload", self._target.get_upload, upload_id).addCallback(self._upload)

    def _created(self, upload: Any) -> Any:
        self._metrics.uploads_created.inc()
        return self._upload(upload)

    def _upload(self, upload: Any) -> Any:
        return _wrap(_TimedUpload(upload, self._metrics), upload)


class _TimedUpload(_Timed):
    def get_info(self) -> Deferred:
        return self._metrics.timed("get_info", self._target.get_info)

    def open_chunk(self, offset: int) -> Deferred:
        d = self._metrics.timed("open_chunk", self._target.open_chunk, offset)
        return d.addCallback(_TimedWriter.around, self._metrics, offset)

    def finish(self) -> Deferred:
        d = self._metrics.timed("finish", self._target.finish)
        return d.addCallback(_count, self._metrics.uploads_finished)


class _TimedWriter(_Timed):
    """Open from C{open_chunk} to C{commit} or C{rollback}: an active upload."""

    def __init__(self, target: Any, metrics: PrometheusMetrics, offset: int) -> None:
        super().__init__(target, metrics)
        self._offset = offset
        self._active = True
        metrics.active_uploads.inc()

    @classmethod
    def around(cls, writer: Any, metrics: PrometheusMetrics, offset: int) -> Any:
        return _wrap(cls(writer, metrics, offset), writer)

    def commit(self) -> Deferred:
        return self._metrics.timed("commit", self._target.commit).addBoth(self._committed)

    def rollback(self) -> Deferred:
        return self._metrics.timed("rollback", self._target.rollback).addBoth(self._ended)

    def abort(self) -> Deferred:
        return self._target.abort().addBoth(self._ended)

    def _committed(self, result: Any) -> Any:
        if isinstance(result, int) and result > self._offset:
            self._metrics.bytes_received.inc(result - self._offset)
        return self._ended(result)

    def _ended(self, result: Any) -> Any:
        if self._active:
            self._active = False
            self._metrics.active_uploads.dec()
        return result


class _TimedTerminater(_Timed):
    def terminate(self, upload: Any) -> Deferred:
        d = self._metrics.timed("terminate", self._target.terminate, _unwrap(upload))
        return d.addCallback(_count, self._metrics.uploads_terminated)


class _TimedConcater(_Timed):
    def concat_uploads(self, final: Any, partials: list[Any]) -> Deferred:
        return self._metrics.timed("concat_uploads", self._target.concat_uploads, _unwrap(final),
                                   [_unwrap(p) for p in partials])


class _TimedDeferrer(_Timed):
    def declare_length(self, upload: Any, length: int) -> Deferred:
        return self._metrics.timed("declare_length", self._target.declare_length, _unwrap(upload), length)


class _TimedStager(_Timed):
    def open_staged_chunk(self, upload: Any, offset: int) -> Deferred:
        d = self._metrics.timed("open_chunk", self._target.open_staged_chunk, _unwrap(upload), offset)
        return d.addCallback(_TimedWriter.around, self._metrics, offset)


class _UntimedReader(_Timed):
    def send_content(self, upload: Any, consumer: Any, start: int, length: int) -> Deferred:
        return self._target.send_content(_unwrap(upload), consumer, start, length)


class _TimedLocker(_Timed):
    """Times how long taking a lock waits, which is what operators tune."""

    def lock(self, upload_id: str, release_requested: Callable[[], None]) -> Deferred:
        return self._metrics.timed("lock", self._target.lock, upload_id, release_requested)


def _count(result: Any, counter: Counter) -> Any:
    counter.inc()
    return result
