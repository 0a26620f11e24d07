"""
The demo page that C{twist tus} serves at C{/}: what the server is, its tus
endpoint and what it advertises, and an upload form (drag and drop, a
progress bar, pause, resume, cancel, resumption after a page reload) written
in plain JavaScript.  Its files live beside this module in C{demo/} and are
served from memory: they are small, and the page must work offline, so
nothing is fetched from anywhere else.  The page lists only the uploads this
browser made (it keeps their URLs in C{localStorage}); the server has no
listing to offer, so nobody sees anybody else's uploads.
"""

from __future__ import annotations

from html import escape
from importlib import metadata, resources
from urllib.parse import urlsplit

from twisted.web.iweb import IRequest
from twisted.web.pages import notFound
from twisted.web.resource import Resource
from twisted.web.util import redirectTo

from txtus.config import TusConfig

ASSETS = b"_demo"
_TYPES = {".js": b"text/javascript; charset=utf-8", ".css": b"text/css; charset=utf-8"}


def _version() -> str:
    try:
        return metadata.version("txtus")
    except metadata.PackageNotFoundError:
        return "(not installed)"


def _read(name: str) -> bytes:
    return resources.files("txtus.web").joinpath("demo", name).read_bytes()


def _protect(request: IRequest, content_type: bytes) -> None:
    # Only our own files run on the page; uploads go to the tus endpoint.
    request.setHeader(b"content-type", content_type)
    request.setHeader(b"x-content-type-options", b"nosniff")
    request.setHeader(b"cache-control", b"no-cache")


class _Asset(Resource):
    isLeaf = True

    def __init__(self, name: str) -> None:
        super().__init__()
        self._body = _read(name)
        self._type = _TYPES[name[name.rindex("."):]]

    def render_GET(self, request: IRequest) -> bytes:
        _protect(request, self._type)
        return self._body

    def render_HEAD(self, request: IRequest) -> bytes:
        return self.render_GET(request)


class _Assets(Resource):
    """C{_demo/}: the page's own files, and nothing else (no listing)."""

    def __init__(self) -> None:
        super().__init__()
        for name in ("demo.js", "demo.css"):
            self.putChild(name.encode("ascii"), _Asset(name))

    def getChild(self, path: bytes, request: IRequest) -> Resource:
        return notFound()

    def render(self, request: IRequest) -> bytes:
        return notFound().render(request)


class DemoPage(Resource):
    """
    The demo page for the tus endpoint of C{config}.  C{twist tus} uses it
    as the root of its site (C{--disable-demo} puts the one-line greeting
    there instead); embedders may pass it as C{make_site}'s C{root}, or put
    it at any path (C{/upload/}) of their own site.
    """

    def __init__(self, config: TusConfig) -> None:
        super().__init__()
        endpoint = config.base_path
        connect = "'self'"
        if config.absolute_base:
            parts = urlsplit(endpoint)
            connect += f" {parts.scheme}://{parts.netloc}"
        self._csp = (f"default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
                     f"connect-src {connect}; base-uri 'none'; form-action 'none'; "
                     f"frame-ancestors 'none'").encode("ascii")
        page = _read("index.html").decode("utf-8")
        for name, value in (("endpoint", endpoint), ("version", _version()),
                            ("download", "" if config.disable_download else "on")):
            page = page.replace("{{" + name + "}}", escape(value, quote=True))
        self._page = page.encode("utf-8")
        self.putChild(ASSETS, _Assets())

    def getChild(self, path: bytes, request: IRequest) -> Resource:
        # The page itself arrives as the child b"" of this resource.
        if path == b"" and not request.postpath:
            return self
        return notFound()

    def render_GET(self, request: IRequest) -> bytes:
        if not request.path.endswith(b"/"):
            # The page's links are relative: mounted at /upload, serve it as
            # /upload/ so that they resolve below it.
            return redirectTo(request.path + b"/", request)
        _protect(request, b"text/html; charset=utf-8")
        request.setHeader(b"content-security-policy", self._csp)
        request.setHeader(b"referrer-policy", b"no-referrer")
        return self._page

    def render_HEAD(self, request: IRequest) -> bytes:
        return self.render_GET(request)
