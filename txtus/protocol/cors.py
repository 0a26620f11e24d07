"""
CORS, as tusd does it by default: only when the request has an C{Origin};
preflights (OPTIONS) get the allow lists, other responses the expose list,
and an origin that does not match is refused with 403.
"""

from __future__ import annotations

import re
from typing import Any

from txtus import errors
from txtus.config import CorsConfig

ALLOW_METHODS = ("POST", "HEAD", "PATCH", "OPTIONS", "GET", "DELETE")
ALLOW_HEADERS = (
    "Authorization", "Origin", "X-Requested-With", "X-Request-ID",
    "X-HTTP-Method-Override", "Content-Type", "Upload-Length", "Upload-Offset",
    "Tus-Resumable", "Upload-Metadata", "Upload-Defer-Length", "Upload-Concat",
    "Upload-Checksum", "Upload-Incomplete", "Upload-Complete",
    "Upload-Draft-Interop-Version",
)
EXPOSE_HEADERS = (
    "Upload-Offset", "Location", "Upload-Length", "Tus-Version", "Tus-Resumable",
    "Tus-Max-Size", "Tus-Extension", "Tus-Checksum-Algorithm", "Upload-Metadata",
    "Upload-Defer-Length", "Upload-Concat", "Upload-Expires", "Upload-Incomplete",
    "Upload-Complete", "Upload-Draft-Interop-Version", "Upload-Limit",
)

_VISIBLE_ASCII = re.compile(rb"[!-~]+")


class Cors:
    """Applies one L{CorsConfig}; header values are joined once, up front."""

    def __init__(self, config: CorsConfig) -> None:
        self.config = config
        join = lambda base, extra: ", ".join(base + tuple(extra)).encode("ascii")
        self._methods = join(ALLOW_METHODS, config.extra_allow_methods)
        self._headers = join(ALLOW_HEADERS, config.extra_allow_headers)
        self._expose = join(EXPOSE_HEADERS, config.extra_expose_headers)
        self._max_age = str(config.max_age).encode("ascii")

    def _allowed(self, origin: bytes) -> bool:
        # The origin is echoed back in Access-Control-Allow-Origin, so only
        # visible ASCII (what a serialized origin is made of) may match,
        # whatever the pattern: never reflect NULs or raw non-ASCII bytes.
        return (_VISIBLE_ASCII.fullmatch(origin) is not None
                and self.config.origin_pattern.fullmatch(origin.decode("latin-1")) is not None)

    def check(self, request: Any) -> None:
        """Refuse a request from an origin that is not allowed."""
        origin = request.getHeader(b"origin")
        if origin is None or not self.config.enabled:
            return
        if not self._allowed(origin):
            raise errors.OriginNotAllowed()

    def apply(self, request: Any, preflight: bool) -> None:
        """Add the CORS headers for an allowed origin to the response."""
        origin = request.getHeader(b"origin")
        if origin is None or not self.config.enabled:
            return
        if not self._allowed(origin):
            return
        add = request.responseHeaders.addRawHeader
        add(b"access-control-allow-origin", origin)
        add(b"vary", b"Origin")
        if self.config.allow_credentials:
            add(b"access-control-allow-credentials", b"true")
        if preflight:
            add(b"access-control-allow-methods", self._methods)
            add(b"access-control-allow-headers", self._headers)
            add(b"access-control-max-age", self._max_age)
        else:
            add(b"access-control-expose-headers", self._expose)
