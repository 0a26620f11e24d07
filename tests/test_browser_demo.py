"""
The demo page `twist tus` serves at C{/}, driven in headless Chromium: a
file of several MiB is uploaded, paused and resumed, survives a page reload
mid-upload and finishes with the stored bytes equal to the file's; a
cancelled upload is removed; a dropped file is uploaded; a browser lists
its own uploads only.

The page sends PATCHes of 256 KiB here (its C{?chunk_size=} option), so
that "mid-upload" is a point the test can name: a script watching the
progress bar presses Pause (or reloads the page) once the bar passes it.
"""

from __future__ import annotations

import urllib.request

from browserkit import WAIT_MS, random_file, save_artefact, wait_for_script

MiB = 1024 * 1024
CHUNK = 256 * 1024

# Runs in the page: once the progress bar of the upload passes `limit`
# bytes, press its Pause button, or reload the page, from inside the
# page's own event handling (so the upload is certainly unfinished).
WHEN_PAST = """([limit, action]) => {
  const watch = new MutationObserver(() => {
    const row = document.querySelector('li.transfer');
    const bar = row && row.querySelector('progress');
    if (!bar || bar.value < limit) return;
    watch.disconnect();
    window.passedAt = bar.value;
    if (action === 'pause') [...row.querySelectorAll('button')].find((b) => b.textContent === 'Pause').click();
    else location.reload();
  });
  watch.observe(document.getElementById('transfers'),
                { subtree: true, childList: true, attributes: true, attributeFilter: ['value'] });
}"""


def open_demo(context, server, query=f"?chunk_size={CHUNK}"):
    page = context.new_page()
    page.goto(server.origin + "/" + query)
    # The page has asked the server what it offers.
    wait_for_script(page, "document.getElementById('tus-version').textContent === '1.0.0'")
    return page


def transfer(page, state):
    return page.wait_for_selector(f'li.transfer[data-state="{state}"]')


def test_demo_page_upload_pause_resume_reload(twist_tus, context, tmp_path):
    server = twist_tus()
    source = random_file(tmp_path, "holiday.bin", 6 * MiB)
    page = open_demo(context, server)
    elsewhere = []
    page.on("request", lambda r: r.url.startswith(server.origin) or elsewhere.append(r.url))
    extensions = page.inner_text("#tus-extensions")
    assert "creation" in extensions and "termination" in extensions
    assert page.inner_text("#endpoint") == server.url

    # Pause once 1 MiB is through.
    page.evaluate(WHEN_PAST, [1 * MiB, "pause"])
    page.set_input_files("#file", source)
    row = transfer(page, "paused")
    assert "paused at" in row.inner_text()
    [(upload_id, info)] = server.uploads(named="holiday.bin").items()
    assert info["Size"] == 6 * MiB
    assert server.stored_size(upload_id) < 6 * MiB

    # Resume; reload the page once 3 MiB are through.
    page.evaluate(WHEN_PAST, [3 * MiB, "reload"])
    with page.expect_event("load"):
        page.click("li.transfer >> text=Resume")
    interrupted = page.wait_for_selector("#uploads li.interrupted")
    assert "choose the same file to resume" in interrupted.inner_text()
    assert server.stored_size(upload_id) < 6 * MiB

    # Choosing the same file again resumes the same upload.
    page.set_input_files("#file", source)
    transfer(page, "done")
    assert list(server.uploads(named="holiday.bin")) == [upload_id]
    assert server.stored(upload_id) == source.read_bytes()

    # This browser's uploads, with a download link to the stored bytes.
    link = page.wait_for_selector("#uploads li.done a")
    assert link.get_attribute("download") == "holiday.bin"
    href = link.get_attribute("href")
    assert href == f"{server.origin}/files/{upload_id}"
    with urllib.request.urlopen(href, timeout=10) as response:
        assert response.read() == source.read_bytes()
    assert elsewhere == [], "the demo page must work offline"

    screenshot = tmp_path / "demo-page.png"
    page.screenshot(path=str(screenshot), full_page=True)
    assert screenshot.read_bytes().startswith(b"\x89PNG")
    print(f"\nscreenshot of the demo page after an upload: {save_artefact(screenshot)}")


def test_demo_page_cancel_removes_the_upload(twist_tus, context, tmp_path):
    server = twist_tus()
    source = random_file(tmp_path, "mistake.bin", 3 * MiB)
    page = open_demo(context, server)
    page.evaluate(WHEN_PAST, [1 * MiB, "pause"])
    page.set_input_files("#file", source)
    transfer(page, "paused")
    assert len(server.uploads(named="mistake.bin")) == 1
    page.click("li.transfer >> text=Cancel")
    page.wait_for_selector("li.transfer", state="detached")
    # The page forgets the upload once the server answered its DELETE.
    wait_for_script(page, "Object.values(localStorage).join('') === '[]'")
    assert server.uploads(named="mistake.bin") == {}
    assert page.is_visible("#none")


def test_demo_page_lists_this_browsers_uploads_only(twist_tus, browser, tmp_path):
    server = twist_tus()
    # Someone else's upload, straight to the endpoint.
    other = urllib.request.Request(server.url, method="POST", data=b"theirs", headers={
        "Tus-Resumable": "1.0.0", "Upload-Length": "6",
        "Content-Type": "application/offset+octet-stream"})
    urllib.request.urlopen(other, timeout=10).close()

    mine, theirs = browser.new_context(), browser.new_context()
    for each in (mine, theirs):
        each.set_default_timeout(WAIT_MS)
    try:
        page = open_demo(mine, server, query="")
        # Dropped on the drop zone, as a file dragged from the desktop is.
        dropped = page.evaluate_handle("""() => {
            const files = new DataTransfer();
            files.items.add(new File(['dropped on the page'], 'mine.txt', { type: 'text/plain' }));
            return files;
        }""")
        page.dispatch_event("#dropzone", "drop", {"dataTransfer": dropped})
        transfer(page, "done")
        page.reload()
        page.wait_for_selector("#uploads li.done")
        assert [li.inner_text().split(" ")[0] for li in page.query_selector_all("#uploads li")] == ["mine.txt"]
        [(upload_id, info)] = server.uploads(named="mine.txt").items()
        assert info["MetaData"] == {"filename": "mine.txt", "filetype": "text/plain"}
        assert server.stored(upload_id) == b"dropped on the page"

        stranger = open_demo(theirs, server, query="")
        assert stranger.query_selector_all("#uploads li") == []
        assert stranger.is_visible("#none")
    finally:
        mine.close()
        theirs.close()


def test_demo_page_says_when_cors_origin_leaves_it_out(twist_tus, context):
    # Browsers send Origin with the page's own POST, PATCH and OPTIONS too.
    server = twist_tus("--cors-origin", "https://app.example")
    page = context.new_page()
    page.goto(server.origin + "/")
    wait_for_script(page, "document.getElementById('tus-version').textContent.includes('refused')")
    assert page.inner_text("#tus-version") == (
        "the server refused this page: 403 ERR_ORIGIN_NOT_ALLOWED: request origin is not allowed"
        f" (is {server.origin} in its --cors-origin?)")
