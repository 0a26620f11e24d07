"""
C{twist tus}: command-line options and the service they describe.  Options
are plain values checked in C{postOptions}; L{makeService} builds the store,
locker and configuration with the same functions embedders use.
"""

from __future__ import annotations

import os
import re
import resource as rlimit
from typing import Any
from urllib.parse import urlsplit

from prometheus_client import ProcessCollector
from twisted.python import usage

from txtus.composer import StoreComposer
from txtus.hooks.directory import DirectoryHooks
from txtus.hooks.events import DEFAULT_EVENTS, parse_events
from txtus.hooks.http import HttpHooks
from txtus.hooks.plugin import find_plugin, plugin_hooks
from txtus.interfaces import IHookHandler
from txtus.config import CorsConfig, TusConfig
from txtus.stores.file import FSYNC_POLICIES, FileStore
from txtus.lockers.file import FileLocker
from txtus.lockers.memory import MemoryLocker
from txtus.lockers.redis import DEFAULT_URL, RedisLocker, probe
from txtus.metrics import PrometheusMetrics
from txtus.logs import EVENTS, LOG_FORMATS
from txtus.service import make_service
from txtus.shutdown import ShutdownSignals
from txtus.web.demo import DemoPage

_SIZE = re.compile(r"([0-9]+)\s*([KMGT]i?B?|B)?", re.IGNORECASE)
_UNITS = {"": 1, "B": 1, "K": 1000, "M": 1000**2, "G": 1000**3, "T": 1000**4,
          "KI": 1024, "MI": 1024**2, "GI": 1024**3, "TI": 1024**4}


_DURATION = re.compile(r"([0-9]+(?:\.[0-9]+)?)\s*(ms|s|m|h|d)?")
_SECONDS = {None: 1.0, "ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}


def parse_duration(text: str) -> float:
    """C{"90"}, C{"90s"}, C{"30m"}, C{"24h"}, C{"7d"} -> seconds."""
    match = _DURATION.fullmatch(text.strip())
    if not match:
        raise ValueError(f"not a duration: {text!r}")
    return float(match.group(1)) * _SECONDS[match.group(2)]


LOCKERS = ("file", "memory", "redis")


def parse_size(text: str) -> int:
    """C{"1048576"}, C{"100MB"}, C{"1GiB"} -> bytes."""
    match = _SIZE.fullmatch(text.strip())
    if not match:
        raise ValueError(f"not a size: {text!r}")
    unit = (match.group(2) or "").upper().rstrip("B")
    return int(match.group(1)) * _UNITS[unit]


class Options(usage.Options):
    synopsis = "[options]"
    longdesc = "Serve tus resumable uploads (https://tus.io) into a directory or an S3 bucket."

    optParameters = [
        ["path", None, "./uploads", "Directory to store uploads in (created if missing)."],
        ["base-path", None, "/files/", "URL path of the upload endpoint, or an absolute URL used for Location."],
        ["max-size", None, "0", "Largest upload accepted, in bytes (suffixes KB, MB, GiB... allowed); 0 for no limit."],
        ["network-timeout", None, "60", "Seconds without a byte of request body before the request is cut."],
        ["min-upload-rate", None, "0", "Bytes per second a request body must average over each --network-timeout window (e.g. 1KB); 0 for no minimum."],
        ["cors-origin", None, ".*", "Allowed CORS origins: a regular expression, or a comma-separated list of origins."],
        ["fsync", None, "finish", "When to fsync upload data: never, finish (on completion) or chunk (every PATCH)."],
        ["acquire-lock-timeout", None, "20", "Seconds a request waits for an upload's lock."],
        ["lock-release-after", None, "0.5", "Seconds a PATCH's client must have been silent before another request for the upload interrupts it."],
        ["locker", None, "memory", "Upload locks: memory (this process only), file (flock in --lock-dir: several processes on one machine) or redis (processes on several machines; see --redis-url)."],
        ["lock-dir", None, None, "Directory of the lock files of --locker file, shared by the processes; default --path (required with --s3-bucket)."],
        ["redis-url", None, DEFAULT_URL, "Redis server of --locker redis: redis://[[user]:password@]host[:port][/db], or rediss://... for TLS (?ssl_ca_certs=ca.pem, &ssl_certfile=, &ssl_keyfile= for client certificates)."],
        ["redis-lock-lease", None, "10", "Seconds an upload stays locked after the process holding it died (--locker redis); renewed every third of it while held."],
        ["redis-key-prefix", None, "txtus:", "Prefix of the Redis keys and channels of --locker redis (to share one Redis between deployments)."],
        ["expire-after", None, None, "Remove unfinished uploads this long after creation or their last PATCH (e.g. 24h, 30m, 3600)."],
        ["cleanup-interval", None, "60s", "How often the cleaner looks for expired uploads."],
        ["s3-bucket", None, None, "Store uploads in this S3 bucket (tusd's s3store layout) instead of --path."],
        ["s3-endpoint", None, None, "URL of an S3-compatible service (path-style), e.g. http://127.0.0.1:9000; default AWS."],
        ["s3-prefix", None, "", "Prefix of every object key in the bucket (e.g. uploads/)."],
        ["s3-region", None, None, "S3 region; default $AWS_REGION, $AWS_DEFAULT_REGION or us-east-1."],
        ["s3-part-size", None, "8MiB", "Bytes per S3 part (at least 5MiB). Memory per active upload is at most (--s3-concurrency + 1) x this (buffer mode)."],
        ["s3-concurrency", None, "2", "Part uploads in flight at once per upload (more helps a distant S3, costs a part of memory each; see docs/s3.md)."],
        ["s3-spool-dir", None, None, "Buffered S3 parts wait in nameless files in this directory instead of memory (memory per upload near a socket buffer; disk per upload up to (--s3-concurrency + 1) x --s3-part-size). See docs/s3.md."],
        ["s3-part-mode", None, "buffer", "buffer: fill each part in memory, then PUT it (retried; nothing received is lost when a client disconnects). pipe: PUT a part while its bytes arrive, when the request's Content-Length covers it (memory near a socket buffer; a client that disconnects mid-part resends that part). See docs/s3.md."],
        ["hooks-http", None, None, "URL to POST hook events to, as JSON in tusd's shape (see docs/hooks.md)."],
        ["hooks-http-timeout", None, "15s", "How long one attempt of an HTTP hook may take."],
        ["hooks-http-retry", None, "3", "Retries of an HTTP hook after a 5xx answer or a network failure."],
        ["hooks-http-backoff", None, "1s", "Wait before the first retry of an HTTP hook; doubled for each next one."],
        ["hooks-http-size-limit", None, "5120", "Largest HTTP hook answer accepted, in bytes."],
        ["hooks-http-forward-headers", None, "", "Comma-separated client request headers sent along with each HTTP hook request."],
        ["hooks-dir", None, None, "Directory of hook executables named after the events (JSON on stdin and stdout)."],
        ["hooks-plugin", None, None, "Name of a hook handler plugin (twisted.plugin, interface txtus.interfaces.IHookPlugin)."],
        ["hooks-enabled-events", None, ",".join(sorted(DEFAULT_EVENTS)), "Comma-separated hook events to send; empty for all (also pre-request, pre-finish, pre-terminate)."],
        ["hooks-timeout", None, "30s", "How long any hook may take before the request gets 500 ERR_HOOK_TIMEOUT; 0 for no limit."],
        ["progress-hooks-interval", None, "1s", "Least time between two post-receive hook events of one upload."],
        ["metrics-path", None, "/metrics", "URL path of the Prometheus metrics."],
        ["shutdown-timeout", None, "10", "Seconds requests in flight get to finish on SIGTERM/SIGINT before their bodies are cut (keeping what they stored)."],
        ["log-format", None, "text", "Log lines as text or json (one JSON object per line); replaces twist's own --log-format."],
    ]
    optFlags = [
        ["behind-proxy", None, "Trust Forwarded / X-Forwarded-Host / X-Forwarded-Proto / X-Forwarded-Prefix for Location."],
        ["relative-location", None, "Answer Location with the upload's path only (no scheme nor host)."],
        ["disable-metrics", None, "Serve no Prometheus metrics."],
        ["disable-cors", None, "Send no CORS headers."],
        ["disable-demo", None, "Serve a one-line greeting at / instead of the demo upload page."],
        ["disable-download", None, "Refuse GET downloads of uploads."],
        ["disable-termination", None, "Refuse DELETE (the termination extension)."],
        ["disable-concatenation", None, "Refuse Upload-Concat (the concatenation extension)."],
        ["enable-ietf-draft", None, "Speak the IETF resumable-uploads draft (interop versions 3-8) to requests that ask for it (the default)."],
        ["disable-ietf-draft", None, "Handle requests carrying Upload-Draft-Interop-Version as plain tus 1.0."],
    ]

    def __init__(self) -> None:
        super().__init__()
        self["port"] = []

    def opt_port(self, description: str) -> None:
        """Endpoint to listen on (tcp:1080, ssl:443:privateKey=k.pem:certKey=c.pem, unix:/path). Repeatable; default tcp:1080."""
        self["port"].append(description)

    opt_p = opt_port

    def postOptions(self) -> None:
        if not self["port"]:
            self["port"] = ["tcp:1080"]
        try:
            self["max-size"] = parse_size(self["max-size"])
        except ValueError as e:
            raise usage.UsageError(f"--max-size: {e}")
        try:
            self["min-upload-rate"] = parse_size(self["min-upload-rate"])
        except ValueError as e:
            raise usage.UsageError(f"--min-upload-rate: {e}")
        for name in ("network-timeout", "acquire-lock-timeout", "redis-lock-lease", "shutdown-timeout",
                     "lock-release-after"):
            try:
                value = float(self[name])
            except ValueError:
                raise usage.UsageError(f"--{name}: not a number of seconds: {self[name]!r}")
            if value < 0:
                raise usage.UsageError(f"--{name} must not be negative")
            self[name] = value
        for name in ("expire-after", "cleanup-interval"):
            if self[name] is None:
                continue
            try:
                self[name] = parse_duration(self[name])
            except ValueError as e:
                raise usage.UsageError(f"--{name}: {e}")
            if self[name] <= 0:
                raise usage.UsageError(f"--{name} must be positive")
        self._check_hooks()
        if self["enable-ietf-draft"] and self["disable-ietf-draft"]:
            raise usage.UsageError("--enable-ietf-draft and --disable-ietf-draft contradict each other")
        if self["locker"] not in LOCKERS:
            raise usage.UsageError(f"--locker must be one of: {', '.join(LOCKERS)}")
        if self["redis-lock-lease"] <= 0:
            raise usage.UsageError("--redis-lock-lease must be positive")
        if self["locker"] == "redis":
            # Checked now, blocking, before the reactor runs: a wrong URL
            # or an unreachable server is a one-line error at start-up, not
            # a 503 at the first upload.
            try:
                probe(self["redis-url"])
            except ValueError as e:
                raise usage.UsageError(f"--redis-url: {e}")
        if self["fsync"] not in FSYNC_POLICIES:
            raise usage.UsageError(f"--fsync must be one of: {', '.join(FSYNC_POLICIES)}")
        if self["log-format"] not in LOG_FORMATS:
            raise usage.UsageError(f"--log-format must be one of: {', '.join(LOG_FORMATS)}")
        # twist builds its log observer from its own options after
        # makeService, and picks JSON whenever the log is not a terminal:
        # the choice made here replaces that one.
        parent = getattr(self, "parent", None)
        if parent is not None and "fileLogObserverFactory" in parent:
            parent["fileLogObserverFactory"] = LOG_FORMATS[self["log-format"]]
            parent["logFormat"] = self["log-format"]
        origin = self["cors-origin"]
        if "," in origin or origin.startswith(("http://", "https://")):
            origin = "|".join(re.escape(o.strip()) for o in origin.split(",") if o.strip())
        try:
            re.compile(origin)
        except re.error as e:
            raise usage.UsageError(f"--cors-origin is not a valid regular expression: {e}")
        self["cors-origin"] = origin
        if not self["base-path"].strip("/") and not self["base-path"].startswith(("http://", "https://")):
            raise usage.UsageError("--base-path must not be /")
        if not self["disable-metrics"]:
            metrics = "/" + self["metrics-path"].strip("/")
            tus = "/" + urlsplit(self["base-path"]).path.strip("/")
            if metrics in ("/", tus) or metrics.startswith(tus + "/"):
                raise usage.UsageError("--metrics-path must be a path of its own, not / nor under --base-path")
            self["metrics-path"] = metrics
        if self["lock-dir"] is not None:
            if self["locker"] != "file":
                raise usage.UsageError("--lock-dir is for --locker file")
            try:
                os.makedirs(self["lock-dir"], exist_ok=True)
            except OSError as e:
                raise usage.UsageError(f"--lock-dir {self['lock-dir']!r} is not a usable directory: {e.strerror or e}")
            if not os.access(self["lock-dir"], os.W_OK | os.X_OK):
                raise usage.UsageError(f"--lock-dir {self['lock-dir']!r} is not writable")
        if self["s3-bucket"] is not None:
            self._check_s3()
            return
        try:
            FileStore(self["path"], fsync=self["fsync"])
        except OSError as e:
            raise usage.UsageError(f"--path {self['path']!r} is not a usable directory: {e.strerror or e}")

    def _check_s3(self) -> None:
        from txtus.stores.s3 import config as s3config
        from txtus.stores.s3.store import MIN_PART_SIZE, PART_MODES
        if self["locker"] == "file" and self["lock-dir"] is None:
            raise usage.UsageError("--locker file with --s3-bucket needs --lock-dir, a directory all processes on this machine share (several machines: --locker redis)")
        try:
            self["s3-part-size"] = parse_size(self["s3-part-size"])
        except ValueError as e:
            raise usage.UsageError(f"--s3-part-size: {e}")
        if not MIN_PART_SIZE <= self["s3-part-size"] <= 5 * 1024**3:
            raise usage.UsageError("--s3-part-size must be between 5MiB and 5GiB (S3's limits)")
        try:
            self["s3-concurrency"] = int(self["s3-concurrency"])
        except ValueError:
            raise usage.UsageError(f"--s3-concurrency: not a number: {self['s3-concurrency']!r}")
        if not 1 <= self["s3-concurrency"] <= 64:
            raise usage.UsageError("--s3-concurrency must be between 1 and 64")
        if self["s3-part-mode"] not in PART_MODES:
            raise usage.UsageError(f"--s3-part-mode must be one of: {', '.join(PART_MODES)}")
        if self["s3-spool-dir"] is not None:
            from txtus.stores.s3.parts import check_spool_dir
            try:
                check_spool_dir(self["s3-spool-dir"])
            except OSError as e:
                raise usage.UsageError(f"--s3-spool-dir {self['s3-spool-dir']!r} cannot hold spooled parts: "
                                       f"{e.strerror or e}")
        try:
            self["s3-region"] = s3config.find_region(self["s3-region"])
            self["s3-credentials"] = s3config.find_credentials()
            s3config.check_bucket(self["s3-bucket"], self["s3-credentials"], self["s3-region"], self["s3-endpoint"])
        except s3config.S3ConfigError as e:
            raise usage.UsageError(str(e))

    def _check_hooks(self) -> None:
        transports = [name for name in ("hooks-http", "hooks-dir", "hooks-plugin") if self[name]]
        if len(transports) > 1:
            raise usage.UsageError(f"use one hook transport at a time, not --{' and --'.join(transports)}")
        for name in ("hooks-http-timeout", "hooks-http-backoff", "hooks-timeout", "progress-hooks-interval"):
            try:
                self[name] = parse_duration(self[name])
            except ValueError as e:
                raise usage.UsageError(f"--{name}: {e}")
        if self["progress-hooks-interval"] <= 0:
            raise usage.UsageError("--progress-hooks-interval must be positive")
        for name in ("hooks-http-retry", "hooks-http-size-limit"):
            try:
                self[name] = int(self[name])
            except ValueError:
                raise usage.UsageError(f"--{name}: not a whole number: {self[name]!r}")
            if self[name] < 0:
                raise usage.UsageError(f"--{name} must not be negative")
        try:
            self["hooks-enabled-events"] = parse_events(self["hooks-enabled-events"])
        except ValueError as e:
            raise usage.UsageError(f"--hooks-enabled-events: {e}")
        url = self["hooks-http"]
        if url is not None and not url.startswith(("http://", "https://")):
            raise usage.UsageError(f"--hooks-http must be an http:// or https:// URL, not {url!r}")
        if self["hooks-dir"] is not None and not os.path.isdir(self["hooks-dir"]):
            raise usage.UsageError(f"--hooks-dir {self['hooks-dir']!r} is not a directory")
        if self["hooks-plugin"] is not None:
            try:
                find_plugin(self["hooks-plugin"])
            except LookupError as e:
                raise usage.UsageError(f"--hooks-plugin: {e}")


def _s3_store(options: Options, reactor: Any) -> Any:
    from txtus.stores.s3.client import S3Client
    from txtus.stores.s3.store import S3Store
    client = S3Client(options["s3-bucket"], options["s3-credentials"], options["s3-region"],
                      options["s3-endpoint"], reactor=reactor)
    return S3Store(client, prefix=options["s3-prefix"], part_size=options["s3-part-size"],
                   concurrency=options["s3-concurrency"], part_mode=options["s3-part-mode"],
                   spool_dir=options["s3-spool-dir"])


def build_hooks(options: Options, reactor: Any) -> IHookHandler | None:
    """The hook handler the options name, if any."""
    if reactor is None:
        from twisted.internet import reactor
    if options["hooks-http"]:
        return HttpHooks(options["hooks-http"], reactor, timeout=options["hooks-http-timeout"],
                         retries=options["hooks-http-retry"], backoff=options["hooks-http-backoff"],
                         size_limit=options["hooks-http-size-limit"],
                         forward_headers=tuple(options["hooks-http-forward-headers"].split(",")))
    if options["hooks-dir"]:
        return DirectoryHooks(options["hooks-dir"], reactor)
    if options["hooks-plugin"]:
        return plugin_hooks(options["hooks-plugin"], reactor)
    return None


def build_config(options: Options, reactor: Any = None) -> TusConfig:
    composer = StoreComposer()
    if options["s3-bucket"] is not None:
        _s3_store(options, reactor).use_in(composer)
    else:
        FileStore(options["path"], fsync=options["fsync"]).use_in(composer)
    timeout = options["acquire-lock-timeout"]
    if options["locker"] == "memory":
        MemoryLocker(acquire_timeout=timeout, reactor=reactor).use_in(composer)
    elif options["locker"] == "redis":
        RedisLocker(options["redis-url"], acquire_timeout=timeout, lease=options["redis-lock-lease"],
                    key_prefix=options["redis-key-prefix"], reactor=reactor).use_in(composer)
    else:
        FileLocker(options["lock-dir"] or options["path"], acquire_timeout=timeout, reactor=reactor).use_in(composer)
    return TusConfig(
        composer=composer,
        base_path=options["base-path"],
        max_size=options["max-size"],
        network_timeout=options["network-timeout"],
        min_upload_rate=options["min-upload-rate"],
        behind_proxy=options["behind-proxy"],
        relative_location=options["relative-location"],
        cors=CorsConfig(enabled=not options["disable-cors"], allow_origin=options["cors-origin"]),
        disable_download=options["disable-download"],
        disable_termination=options["disable-termination"],
        disable_concatenation=options["disable-concatenation"],
        expire_after=options["expire-after"],
        cleanup_interval=options["cleanup-interval"],
        enable_ietf_draft=not options["disable-ietf-draft"],
        metrics=None if options["disable-metrics"] else _metrics(),
        metrics_path=options["metrics-path"],
        shutdown_timeout=options["shutdown-timeout"],
        lock_release_after=options["lock-release-after"],
        reactor=reactor,
        hooks=build_hooks(options, reactor),
        hook_events=options["hooks-enabled-events"],
        hook_timeout=options["hooks-timeout"],
        progress_hooks_interval=options["progress-hooks-interval"],
    )


def _metrics() -> PrometheusMetrics:
    metrics = PrometheusMetrics()
    # A process of its own: its CPU, memory and open files belong here.
    ProcessCollector(registry=metrics.registry)
    return metrics


def _raise_open_file_limit() -> None:
    # Each upload in flight holds a socket and a file open.
    soft, hard = rlimit.getrlimit(rlimit.RLIMIT_NOFILE)
    if hard == rlimit.RLIM_INFINITY or soft < hard:
        try:
            rlimit.setrlimit(rlimit.RLIMIT_NOFILE, (hard if hard != rlimit.RLIM_INFINITY else max(soft, 65536), hard))
        except (ValueError, OSError):
            pass


def _route_upload_events(options: Options) -> None:
    """
    Under C{twist}, txtus's events go straight to an observer of the chosen
    format on twist's log file, filtered by C{twist --log-level}: the lines
    are the same, without the global publisher and level filter on the way
    (see L{txtus.logs}).  Twisted's own events still take that way.
    """
    parent = getattr(options, "parent", None)
    if parent is None or "logFile" not in parent or "logLevel" not in parent:
        return
    EVENTS.direct(LOG_FORMATS[options["log-format"]](parent["logFile"]), parent["logLevel"])


def makeService(options: Options, reactor: Any = None) -> Any:
    _raise_open_file_limit()
    _route_upload_events(options)
    config = build_config(options, reactor)
    root = None if options["disable-demo"] else DemoPage(config)
    service = make_service(config, options["port"], root)
    ShutdownSignals(config.reactor, service.cut_now).setServiceParent(service)
    return service
