"""
Prometheus metrics for a tus server, and the no-op stand-in used when
metrics are off.

Each L{PrometheusMetrics} has its own C{CollectorRegistry}, never the
process-wide default: an embedder may run two servers in one process, and
tests stay independent.  The server reaches it only through
L{txtus.interfaces.IMetrics}, so the hot path pays a method call per event
and nothing when metrics are off (L{NO_METRICS}).

Store operations are timed by wrapping the composer the handler uses
(L{PrometheusMetrics.instrument}): the store, and the uploads it hands out.
Uploads created, finished and terminated, bodies being stored and the bytes
they stored are reported by the handler, where it logs those events, and a
chunk's commit is timed there too: wrapping every chunk writer as well cost
about 3% of a small upload's CPU, more than all the counting.
"""

from __future__ import annotations

import time
from bisect import bisect_left
from typing import Any, Callable

from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.exposition import choose_encoder
from prometheus_client.utils import floatToGoString
from twisted.internet.defer import Deferred
from twisted.python.failure import Failure
from twisted.web.resource import Resource
from zope.interface import classImplements, directlyProvides, implementedBy, implementer, providedBy

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

    def upload_created(self) -> None:
        pass

    def upload_finished(self) -> None:
        pass

    def upload_terminated(self) -> None:
        pass

    def chunk_began(self) -> None:
        pass

    def chunk_ended(self, stored: int) -> None:
        pass

    def store_operation(self, operation: str, seconds: float) -> None:
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
        self.requests = _Counter(registry, "txtus_requests", "tus requests answered, by method and status.",
                                 "method", "status")
        self.errors = _Counter(registry, "txtus_errors", "Error responses, by tus error code.", "code")
        self.bytes_received = _Counter(registry, "txtus_bytes_received", "Upload bytes received and stored.")
        self.uploads_created = _Counter(registry, "txtus_uploads_created", "Uploads created.")
        self.uploads_finished = _Counter(registry, "txtus_uploads_finished", "Uploads that received their last byte.")
        self.uploads_terminated = _Counter(registry, "txtus_uploads_terminated", "Uploads terminated (DELETE).")
        self.open_connections = _Gauge(registry, "txtus_open_connections", "Open HTTP connections.")
        self.active_uploads = _Gauge(registry, "txtus_active_uploads", "Request bodies being stored right now.")
        self.hook_calls = _Counter(registry, "txtus_hook_calls", "Hook calls, by event.", "event")
        self.hook_failures = _Counter(registry, "txtus_hook_failures", "Hook calls that failed, by event.", "event")
        self.request_duration = _Histogram(
            registry, "txtus_request_duration_seconds",
            "Time from a request's headers to its response being decided.", "method", REQUEST_BUCKETS)
        self.store_duration = _Histogram(
            registry, "txtus_store_operation_duration_seconds",
            "Time store and locker operations take, by operation.", "operation", STORE_BUCKETS)
        self._store_ops = {name: self.store_duration.series(name) for name in STORE_OPERATIONS}
        self._methods: dict[bytes, Callable[[float], None]] = {}

    # IMetrics ------------------------------------------------------------

    def request_done(self, method: bytes, status: int, seconds: float) -> None:
        observe = self._methods.get(method)
        if observe is None:
            observe = self._methods[method] = self.request_duration.series(method.decode("latin-1"))
        observe(seconds)
        self.requests.inc((method.decode("latin-1"), status))

    def error(self, code: str) -> None:
        self.errors.inc((code,))

    def hook_called(self, event: str) -> None:
        self.hook_calls.inc((event,))

    def hook_failed(self, event: str) -> None:
        self.hook_failures.inc((event,))

    def watch_connections(self, count: Callable[[], int]) -> None:
        self.open_connections.read = count

    def upload_created(self) -> None:
        self.uploads_created.values[()] += 1

    def upload_finished(self) -> None:
        self.uploads_finished.values[()] += 1

    def upload_terminated(self) -> None:
        self.uploads_terminated.values[()] += 1

    def chunk_began(self) -> None:
        self.active_uploads.value += 1

    def chunk_ended(self, stored: int) -> None:
        self.active_uploads.value -= 1
        if stored > 0:
            self.bytes_received.values[()] += stored

    def store_operation(self, operation: str, seconds: float) -> None:
        self._store_ops[operation](seconds)

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
        timed.expiry_renewer = composer.expiry_renewer
        return timed

    # For the wrappers ------------------------------------------------------

    def timed(self, operation: str, started: float, d: Deferred,
              then: Callable[..., Any] | None = None, *args: Any) -> Deferred:
        """
        Observe how long C{operation}, which began at C{started}
        (C{time.perf_counter()}) and returned C{d}, takes; on success, pass
        its result through C{then(result, *args)} if given.
        """
        observe = self._store_ops[operation]
        if d.called:
            # Most local operations are done already: skip a callback.
            observe(time.perf_counter() - started)
            return d if then is None else d.addCallback(then, *args)

        def done(result: Any) -> Any:
            observe(time.perf_counter() - started)
            if then is None or isinstance(result, Failure):
                return result
            return then(result, *args)

        return d.addBoth(done)


# The metrics themselves ------------------------------------------------------
#
# prometheus-client's own metric classes take a lock on every update (they
# are made for threads); txtus updates and collects on the reactor thread
# only, so these keep plain numbers and hand them to the client as metric
# families when scraped.  That makes an update a dict or list increment.

class _Counter:
    """A counter, by label values (a tuple; C{()} when it has no labels)."""

    def __init__(self, registry: CollectorRegistry, name: str, documentation: str, *labels: str) -> None:
        self.name, self.documentation, self.labels = name, documentation, labels
        self.values: dict[tuple, float] = {} if labels else {(): 0.0}
        registry.register(self)

    def inc(self, labels: tuple = (), amount: float = 1) -> None:
        self.values[labels] = self.values.get(labels, 0.0) + amount

    def collect(self) -> Any:
        family = CounterMetricFamily(self.name, self.documentation, labels=self.labels)
        for labels, value in self.values.items():
            family.add_metric([str(label) for label in labels], value)
        yield family


class _Gauge:
    """A gauge moved by C{inc}/C{dec}, or C{read} when scraped if set."""

    def __init__(self, registry: CollectorRegistry, name: str, documentation: str) -> None:
        self.name, self.documentation = name, documentation
        self.value = 0
        self.read: Callable[[], float] | None = None
        registry.register(self)

    def inc(self) -> None:
        self.value += 1

    def dec(self) -> None:
        self.value -= 1

    def collect(self) -> Any:
        yield GaugeMetricFamily(self.name, self.documentation, value=self.read() if self.read else self.value)


class _Histogram:
    """A histogram with one label; C{series(value)} is its fast C{observe}."""

    def __init__(self, registry: CollectorRegistry, name: str, documentation: str, label: str,
                 buckets: tuple[float, ...]) -> None:
        self.name, self.documentation, self.label = name, documentation, label
        self.bounds = [bound for bound in buckets if bound != float("inf")]
        self.counts: dict[str, tuple[list[int], list[float]]] = {}
        registry.register(self)

    def series(self, value: str) -> Callable[[float], None]:
        counts, total = self.counts.setdefault(value, ([0] * (len(self.bounds) + 1), [0.0]))
        bounds = self.bounds

        def observe(seconds: float) -> None:
            counts[bisect_left(bounds, seconds)] += 1
            total[0] += seconds

        return observe

    def collect(self) -> Any:
        family = HistogramMetricFamily(self.name, self.documentation, labels=[self.label])
        for value, (counts, total) in self.counts.items():
            if not any(counts):
                continue  # a series bound in advance that saw nothing yet
            cumulative, buckets = 0, []
            for bound, count in zip([*self.bounds, float("inf")], counts):
                cumulative += count
                buckets.append((floatToGoString(bound), cumulative))
            family.add_metric([value], buckets, total[0])
        yield family


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


_PROXY_CLASSES: dict[tuple[type, type], type] = {}


def _proxy(cls: type, target: Any, *args: Any) -> Any:
    """
    A C{cls} wrapping C{target} and declaring the interfaces its class
    implements: one subclass per (wrapper, target class), made once, as
    declaring interfaces per object costs more than the rest of the
    wrapping (uploads and writers are wrapped on every request).
    """
    key = (cls, type(target))
    proxy_class = _PROXY_CLASSES.get(key)
    if proxy_class is None:
        proxy_class = _PROXY_CLASSES[key] = type(cls.__name__, (cls,), {})
        classImplements(proxy_class, *implementedBy(type(target)))
    return proxy_class(target, *args)


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
        return self._metrics.timed("new_upload", time.perf_counter(), self._target.new_upload(info),
                                   _open_upload, self._metrics)

    def get_upload(self, upload_id: str) -> Deferred:
        return self._metrics.timed("get_upload", time.perf_counter(), self._target.get_upload(upload_id),
                                   _open_upload, self._metrics)


class _TimedUpload(_Timed):
    def get_info(self) -> Deferred:
        return self._metrics.timed("get_info", time.perf_counter(), self._target.get_info())

    def open_chunk(self, offset: int) -> Deferred:
        return self._metrics.timed("open_chunk", time.perf_counter(), self._target.open_chunk(offset))

    def finish(self) -> Deferred:
        return self._metrics.timed("finish", time.perf_counter(), self._target.finish())


def _open_upload(upload: Any, metrics: PrometheusMetrics) -> Any:
    return _proxy(_TimedUpload, upload, metrics)


class _TimedTerminater(_Timed):
    def terminate(self, upload: Any) -> Deferred:
        return self._metrics.timed("terminate", time.perf_counter(), self._target.terminate(_unwrap(upload)))


class _TimedConcater(_Timed):
    def concat_uploads(self, final: Any, partials: list[Any]) -> Deferred:
        return self._metrics.timed("concat_uploads", time.perf_counter(), self._target.concat_uploads(
            _unwrap(final), [_unwrap(p) for p in partials]))


class _TimedDeferrer(_Timed):
    def declare_length(self, upload: Any, length: int) -> Deferred:
        return self._metrics.timed("declare_length", time.perf_counter(),
                                   self._target.declare_length(_unwrap(upload), length))


class _TimedStager(_Timed):
    def open_staged_chunk(self, upload: Any, offset: int) -> Deferred:
        return self._metrics.timed("open_chunk", time.perf_counter(),
                                   self._target.open_staged_chunk(_unwrap(upload), offset))


class _UntimedReader(_Timed):
    def send_content(self, upload: Any, consumer: Any, start: int, length: int) -> Deferred:
        return self._target.send_content(_unwrap(upload), consumer, start, length)


class _TimedLocker(_Timed):
    """Times how long taking a lock waits, which is what operators tune."""

    def lock(self, upload_id: str, release_requested: Callable[[], None]) -> Deferred:
        return self._metrics.timed("lock", time.perf_counter(), self._target.lock(upload_id, release_requested))

