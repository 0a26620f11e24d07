"""
tus-js-client 4 and Uppy 6's tus plugin, in headless Chromium, on a page
served from another origin (another loopback port) than C{twist tus}: CORS
end to end.  Each client uploads in chunks, in parallel (concatenation),
resumes after a page reload from the fingerprint it stored in localStorage,
and shows a user the server's refusal of a file above C{--max-size}.  With
C{--cors-origin} naming one origin, the browser refuses a page from another
and nothing is stored.

The page is C{tests/browser_pages/clients.html}; the options go in its
query string.  Tests with the same server options share one server.  "Mid-upload" is a point the test names: the page reloads
itself once the server has accepted that many bytes of a chunked upload.
"""

from __future__ import annotations

from urllib.parse import urlencode

import pytest

from browserkit import random_file

MiB = 1024 * 1024
CLIENTS = ["tusjs", "uppy"]
# What each client tells its user when the browser refused a response.
NETWORK_ERROR = {"tusjs": "tus: failed to create upload", "uppy": "This looks like a network error"}


def open_page(context, origin, server, client, **options):
    page = context.new_page()
    query = urlencode({"client": client, "endpoint": server.url, **options})
    page.goto(f"{origin}/clients.html?{query}")
    page.wait_for_function("window.outcome && window.outcome.ready")
    return page


def outcome(page):
    """What the upload came to: its URL, or the error the user is shown."""
    page.wait_for_function("window.outcome.url || window.outcome.error")
    return page.evaluate("window.outcome")


def upload_id(url):
    return url.rstrip("/").rsplit("/", 1)[1]


@pytest.mark.parametrize("client", CLIENTS)
def test_chunked_upload_from_another_origin(client, twist_tus, static_site, context, tmp_path):
    server = twist_tus()
    page_origin = static_site.origins[0]
    assert page_origin != server.origin
    source = random_file(tmp_path, f"report-{client}.pdf", 2 * MiB + 123)
    page = open_page(context, page_origin, server, client, chunkSize=256 * 1024)
    page.set_input_files("#file", source)
    result = outcome(page)
    assert "error" not in result, result
    [stored_id] = server.uploads(named=source.name)
    assert upload_id(result["url"]) == stored_id
    assert server.stored(stored_id) == source.read_bytes()


@pytest.mark.parametrize("client", CLIENTS)
def test_parallel_uploads_are_concatenated(client, twist_tus, static_site, context, tmp_path):
    server = twist_tus()
    source = random_file(tmp_path, f"video-{client}.bin", 3 * MiB + 7)
    before = set(server.uploads())
    page = open_page(context, static_site.origins[0], server, client, parallelUploads=3)
    page.set_input_files("#file", source)
    result = outcome(page)
    assert "error" not in result, result
    final_id = upload_id(result["url"])
    uploads = server.uploads()
    final = uploads[final_id]
    assert final["IsFinal"] and len(final["PartialUploads"]) == 3
    assert set(uploads) - before == {final_id, *final["PartialUploads"]}
    assert all(uploads[part]["IsPartial"] for part in final["PartialUploads"])
    assert server.stored(final_id) == source.read_bytes()


@pytest.mark.parametrize("client", CLIENTS)
def test_resume_after_page_reload(client, twist_tus, static_site, context, tmp_path):
    server = twist_tus()
    source = random_file(tmp_path, f"backup-{client}.tar", 3 * MiB)
    page = open_page(context, static_site.origins[0], server, client,
                     chunkSize=256 * 1024, reloadAt=1 * MiB)
    with page.expect_event("load"):
        page.set_input_files("#file", source)
    page.wait_for_function("window.outcome && window.outcome.ready")
    [first_id] = server.uploads(named=source.name)
    assert int(page.evaluate("sessionStorage.getItem('reloaded')")) >= 1 * MiB
    assert server.stored_size(first_id) < 3 * MiB

    # The client finds the upload by the file's fingerprint and resumes it.
    page.set_input_files("#file", source)
    result = outcome(page)
    assert "error" not in result, result
    if client == "tusjs":
        assert result["resumed"] == result["url"]
    assert list(server.uploads(named=source.name)) == [first_id] == [upload_id(result["url"])]
    assert server.stored(first_id) == source.read_bytes()


@pytest.mark.parametrize("client", CLIENTS)
def test_user_sees_the_max_size_refusal(client, twist_tus, static_site, context, tmp_path):
    server = twist_tus("--max-size", "1MB")
    before = server.uploads()
    page = open_page(context, static_site.origins[0], server, client)
    page.set_input_files("#file", random_file(tmp_path, "too-big.iso", 2 * 1000 * 1000))
    result = outcome(page)
    assert "url" not in result
    # The server's reason reaches the page through CORS.
    assert "response code: 413" in result["error"], result
    assert "ERR_MAX_SIZE_EXCEEDED: maximum size exceeded" in result["error"], result
    assert server.uploads() == before


@pytest.mark.parametrize("client", CLIENTS)
def test_origin_not_allowed_is_refused_by_the_browser(client, twist_tus, static_site, context, tmp_path):
    allowed, other = static_site.origins
    server = twist_tus("--cors-origin", allowed)
    source = random_file(tmp_path, "photo.jpg", 100_000)
    before = server.uploads()

    page = open_page(context, other, server, client)
    # The browser's console says why.
    with page.expect_console_message(lambda message: "blocked by CORS policy" in message.text):
        page.set_input_files("#file", source)
    result = outcome(page)
    assert "url" not in result
    assert NETWORK_ERROR[client] in result["error"], result
    assert server.uploads() == before

    # The same page from the allowed origin uploads: it was CORS that refused.
    page = open_page(context, allowed, server, client)
    page.set_input_files("#file", source)
    result = outcome(page)
    assert "error" not in result, result
    assert server.stored(upload_id(result["url"])) == source.read_bytes()
