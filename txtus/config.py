"""
L{TusConfig}: everything a L{txtus.web.resource.TusResource} needs, in one plain
object that the CLI, embedders and tests build the same way.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from txtus.composer import StoreComposer
from txtus.hooks.events import DEFAULT_EVENTS
from txtus.interfaces import IHookHandler, IMetrics


@dataclass
class CorsConfig:
    """
    CORS as tusd does it by default.  C{allow_origin} is a regular
    expression matched against the whole C{Origin}; C{enabled=False} sends
    no CORS headers at all.
    """

    enabled: bool = True
    allow_origin: str = ".*"
    allow_credentials: bool = False
    extra_allow_headers: tuple[str, ...] = ()
    extra_allow_methods: tuple[str, ...] = ()
    extra_expose_headers: tuple[str, ...] = ()
    max_age: int = 86400

    def __post_init__(self) -> None:
        self.origin_pattern = re.compile(self.allow_origin)


@dataclass
class TusConfig:
    """
    @ivar base_path: where the CLI mounts the resource.  An absolute URL
        (C{https://uploads.example/files/}) is used verbatim as the prefix
        of C{Location} (for proxies that rewrite paths); otherwise locations
        are built from the request and the path the resource is mounted at.
    @ivar max_size: largest upload in bytes; 0 for no limit.
    @ivar network_timeout: seconds without a byte of request body before
        the request is cut (keeping what arrived).
    @ivar expire_after: seconds after creation, or after the end of its
        latest PATCH (sliding expiry, with a store that provides
        L{txtus.interfaces.IExpiryRenewer}), when an unfinished upload
        expires (answers 410, then is removed by the cleaner); L{None} for
        never.
    @ivar cleanup_interval: seconds between two sweeps of the cleaner.
    @ivar min_upload_rate: bytes per second a request body must average
        over each C{network_timeout} window, or be cut (keeping what
        arrived); 0 to accept any pace that keeps making progress.
    @ivar behind_proxy: trust C{Forwarded} / C{X-Forwarded-Host},
        C{-Proto} and C{-Prefix} for C{Location}; without it they are
        ignored.
    @ivar relative_location: answer C{Location} (and C{Upload-Concat})
        with the upload's path alone, no scheme nor host.
    @ivar reactor: the reactor to use; L{None} for the global one.
    @ivar clock: what tells the time for expiration (an C{IReactorTime});
        the reactor unless given.
    @ivar metrics: where the server reports requests, errors, uploads and
        store timings (an L{txtus.interfaces.IMetrics}); L{None} for none.
        A L{txtus.metrics.PrometheusMetrics} is also served by L{make_site}
        at C{metrics_path}.
    @ivar metrics_path: the URL path of the Prometheus metrics, when
        C{metrics} is a L{txtus.metrics.PrometheusMetrics}.
    @ivar shutdown_timeout: seconds requests in flight get to finish when
        the service stops, before their bodies are cut (keeping what they
        stored).
    @ivar enable_ietf_draft: also speak the IETF resumable-uploads draft
        (L{txtus.protocol.ietf}) to requests that carry a supported
        C{Upload-Draft-Interop-Version}.  On by default: tus 1.0 clients
        never send that header, so they cannot be affected.
    @ivar hooks: the L{IHookHandler} that receives hook events
        (L{txtus.hooks}), or L{None} for no hooks.
    @ivar hook_events: the event names sent to C{hooks}; tusd's default
        set unless given (C{pre-request}, C{pre-finish} and
        C{pre-terminate} are off by default, as in tusd).
    @ivar hook_timeout: seconds a hook may take before the request gets
        500 C{ERR_HOOK_TIMEOUT}; 0 for no limit.
    @ivar progress_hooks_interval: least seconds between two
        C{post-receive} events of one upload.
    @ivar lock_release_after: seconds a PATCH's client must have sent
        nothing before another request for the same upload interrupts it
        (lock release is for clients that are gone; an upload whose bytes
        still flow is waited for instead).
    """

    composer: StoreComposer
    base_path: str = "/files/"
    max_size: int = 0
    network_timeout: float = 60.0
    min_upload_rate: float = 0.0
    behind_proxy: bool = False
    relative_location: bool = False
    cors: CorsConfig = field(default_factory=CorsConfig)
    disable_download: bool = False
    disable_termination: bool = False
    disable_concatenation: bool = False
    expire_after: float | None = None
    cleanup_interval: float = 60.0
    reactor: Any = None
    clock: Any = None
    enable_ietf_draft: bool = True
    hooks: IHookHandler | None = None
    hook_events: frozenset[str] = DEFAULT_EVENTS
    hook_timeout: float = 30.0
    progress_hooks_interval: float = 1.0
    metrics: Any = None
    shutdown_timeout: float = 10.0
    metrics_path: str = "/metrics"
    lock_release_after: float = 0.5

    def __post_init__(self) -> None:
        if self.composer is None or self.composer.core is None:
            raise ValueError("TusConfig needs a StoreComposer with a core data store")
        if self.max_size < 0:
            raise ValueError("max_size must not be negative")
        if self.expire_after is not None and self.expire_after <= 0:
            raise ValueError("expire_after must be positive")
        if self.cleanup_interval <= 0:
            raise ValueError("cleanup_interval must be positive")
        if self.min_upload_rate < 0:
            raise ValueError("min_upload_rate must not be negative")
        if self.shutdown_timeout < 0:
            raise ValueError("shutdown_timeout must not be negative")
        if self.network_timeout < 0:
            raise ValueError("network_timeout must not be negative")
        if self.hook_timeout < 0:
            raise ValueError("hook_timeout must not be negative")
        if self.progress_hooks_interval <= 0:
            raise ValueError("progress_hooks_interval must be positive")
        if self.hooks is not None and not IHookHandler.providedBy(self.hooks):
            raise TypeError("hooks must provide txtus.interfaces.IHookHandler")
        if self.lock_release_after < 0:
            raise ValueError("lock_release_after must not be negative")
        if not self.base_path.startswith(("http://", "https://")):
            self.base_path = "/" + self.base_path.strip("/") + "/"
            self.base_path = self.base_path.replace("//", "/")
        elif not self.base_path.endswith("/"):
            self.base_path += "/"
        if self.reactor is None:
            from twisted.internet import reactor
            self.reactor = reactor
        if self.clock is None:
            self.clock = self.reactor
        if self.metrics is None:
            from txtus.metrics import NO_METRICS
            self.metrics = NO_METRICS
        elif not IMetrics.providedBy(self.metrics):
            raise TypeError(f"{self.metrics!r} does not provide txtus.interfaces.IMetrics")

    @property
    def expires_uploads(self) -> bool:
        """
        Whether uploads expire: C{expire_after} is set and the composer can
        find (lister) and remove (terminater) expired uploads.  Without
        both, promising expiry would leave uploads answering 410 forever.
        """
        return (self.expire_after is not None and self.composer.terminater is not None
                and self.composer.lister is not None)

    @property
    def absolute_base(self) -> bool:
        return self.base_path.startswith(("http://", "https://"))

    def extensions(self) -> list[str]:
        """
        The C{Tus-Extension} list, derived from the composer alone (and the
        switches that turn a capability off).
        """
        composer = self.composer
        names = ["creation", "creation-with-upload"]
        if composer.terminater is not None and not self.disable_termination:
            names.append("termination")
        if composer.concater is not None and not self.disable_concatenation:
            names += ["concatenation", "concatenation-unfinished"]
        if composer.length_deferrer is not None:
            names.append("creation-defer-length")
        if self.expires_uploads:
            names.append("expiration")
        # A checksummed chunk must stay apart from the upload until its
        # digest matched: only a store that can stage chunks offers it.
        if composer.stager is not None:
            names += ["checksum", "checksum-trailer"]
        return names
