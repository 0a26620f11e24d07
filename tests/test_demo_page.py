"""
The demo page as a resource, over real HTTP without a browser: what
C{twist tus} serves at C{/} with and without C{--disable-demo}, the headers
that keep the page to its own files, and a L{DemoPage} an embedder mounts
below C{/}.  (What the page does in a browser: L{test_browser_demo}.)
"""

from __future__ import annotations

import pytest_twisted
import treq
from twisted.internet import reactor
from twisted.web.resource import Resource

from txtus import DemoPage, FileStore, StoreComposer, TusConfig, make_site
from txtus.tap import Options, makeService


async def _get(site, *paths, method="GET"):
    port = reactor.listenTCP(0, site, interface="127.0.0.1")
    try:
        replies = []
        for path in paths:
            response = await treq.request(method, f"http://127.0.0.1:{port.getHost().port}{path}",
                                          allow_redirects=False)
            replies.append((response, await response.content()))
        return replies
    finally:
        await port.stopListening()


def _twist_site(tmp_path, *args):
    options = Options()
    options.parseOptions(["--path", str(tmp_path), *args])
    return makeService(options, reactor=reactor).site


def _header(response, name):
    return response.headers.getRawHeaders(name, [None])[0]


@pytest_twisted.ensureDeferred
async def test_twist_tus_serves_the_demo_page(tmp_path):
    [(page, html), (script, js), (style, _), (missing, _), (listing, _)] = await _get(
        _twist_site(tmp_path), "/", "/_demo/demo.js", "/_demo/demo.css", "/_demo/nothing", "/_demo/")
    assert page.code == 200 and _header(page, "content-type") == "text/html; charset=utf-8"
    assert b'data-endpoint="/files/"' in html and b'data-download="on"' in html
    csp = _header(page, "content-security-policy")
    assert "default-src 'none'" in csp and "script-src 'self'" in csp and "connect-src 'self';" in csp
    assert _header(page, "x-content-type-options") == "nosniff"
    assert script.code == 200 and _header(script, "content-type") == "text/javascript; charset=utf-8"
    assert b"Tus-Resumable" in js
    assert style.code == 200 and _header(style, "content-type") == "text/css; charset=utf-8"
    assert missing.code == listing.code == 404


@pytest_twisted.ensureDeferred
async def test_head_of_the_page_has_no_body(tmp_path):
    [(page, body)] = await _get(_twist_site(tmp_path), "/", method="HEAD")
    assert page.code == 200 and body == b""
    assert int(_header(page, "content-length")) > 1000


@pytest_twisted.ensureDeferred
async def test_disable_demo_serves_the_greeting(tmp_path):
    [(page, body), (script, _)] = await _get(_twist_site(tmp_path, "--disable-demo"), "/", "/_demo/demo.js")
    assert body == b"txtus: a tus resumable-upload server\n"
    assert script.code == 404


@pytest_twisted.ensureDeferred
async def test_download_switch_reaches_the_page(tmp_path):
    [(_, html)] = await _get(_twist_site(tmp_path, "--disable-download"), "/")
    assert b'data-download=""' in html


def _config(tmp_path, base_path="/files/"):
    composer = StoreComposer()
    FileStore(str(tmp_path)).use_in(composer)
    return TusConfig(composer=composer, base_path=base_path, reactor=reactor)


@pytest_twisted.ensureDeferred
async def test_embedder_mounts_the_page_below_the_root(tmp_path):
    config = _config(tmp_path)
    root = Resource()
    root.putChild(b"upload", DemoPage(config))
    [(bare, _), (page, html), (style, _), (tus, _)] = await _get(
        make_site(config, root), "/upload", "/upload/", "/upload/_demo/demo.css", "/files/")
    # Its links are relative: it is served with the trailing slash.
    assert bare.code == 302 and _header(bare, "location") == "/upload/"
    assert page.code == 200 and b'href="_demo/demo.css"' in html
    assert style.code == 200
    assert tus.code != 404


@pytest_twisted.ensureDeferred
async def test_absolute_base_path_is_the_endpoint_the_page_may_reach(tmp_path):
    config = _config(tmp_path, "https://uploads.example/tus/")
    [(page, html)] = await _get(make_site(config, DemoPage(config)), "/")
    assert b'data-endpoint="https://uploads.example/tus/"' in html
    assert "connect-src 'self' https://uploads.example;" in _header(page, "content-security-policy")
