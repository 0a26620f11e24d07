"""
A damaged or hand-edited C{.info} file: the upload it belongs to answers a
clear error with a stable code on every verb and is logged; every other
upload, the expiration cleaner and concatenation carry on.
"""

from __future__ import annotations

import json

import pytest
import pytest_twisted
import treq
from twisted.internet.task import Clock
from twisted.logger import globalLogPublisher

from tushttp import OCTET, TUS, create, expect_error, head, header, patch, upload_id
from txtus import FileStore, StoreComposer, TusConfig
from txtus.expiration import ExpirationCleaner
from txtus.info import UploadInfo

CODE = "ERR_UPLOAD_INFO_CORRUPT"

# Each edit of an otherwise valid document, and what it breaks.
DAMAGE = {
    "negative size": {"Size": -5},
    "size above 2^63-1": {"Size": 2 ** 63},
    "size overflowing a float": "1e999",
    "fractional size": {"Size": 2.5},
    "size as text": {"Size": "10"},
    "negative offset": {"Offset": -1},
    "expiry beyond any date": {"Expires": 1e300},
    "expiry not a number": {"Expires": "soon"},
    "deferred flag not a boolean": {"SizeIsDeferred": "false"},
    "metadata value not text": {"MetaData": {"filename": 5}},
    "partial IDs not IDs": {"IsFinal": True, "PartialUploads": [5]},
    "not an object": [],
    "not JSON": "{nope",
}


def damage(path, how) -> None:
    if isinstance(how, str):
        if how == "1e999":
            document = json.loads(path.read_text())
            text = json.dumps(document).replace('"Size": 10', '"Size": 1e999')
            assert "1e999" in text
            path.write_text(text)
        else:
            path.write_text(how)
    elif isinstance(how, dict):
        document = json.loads(path.read_text())
        document.update(how)
        path.write_text(json.dumps(document))
    else:
        path.write_text(json.dumps(how))


@pytest.mark.parametrize("how", list(DAMAGE.values()), ids=list(DAMAGE))
def test_from_json_refuses(how, tmp_path):
    path = tmp_path / "x.info"
    path.write_text(UploadInfo(id="x", size=10, expires=1.0).to_json().decode())
    damage(path, how)
    with pytest.raises(ValueError):
        UploadInfo.from_json(path.read_bytes())


def test_from_json_accepts_what_tusd_and_txtus_write():
    info = UploadInfo(id="x", size=2 ** 63 - 1, metadata={"k": "v"}, is_final=True, partial_uploads=["a", "b"],
                      storage={"Type": "filestore"}, expires=1_700_000_000.5)
    assert UploadInfo.from_json(info.to_json()) == info
    deferred = UploadInfo.from_json(b'{"ID": "x", "Size": 0, "SizeIsDeferred": true, "Offset": 0,'
                                    b' "MetaData": null, "PartialUploads": null, "Storage": null}')
    assert deferred.size is None and deferred.metadata == {}


@pytest.mark.parametrize("how", list(DAMAGE.values()), ids=list(DAMAGE))
@pytest_twisted.ensureDeferred
async def test_damaged_info_answers_a_stable_error_and_spares_the_others(how, server, upload_dir):
    broken = await create(server, 10, b"hello")
    healthy = await create(server, 10, b"hello")
    damage(upload_dir / f"{upload_id(broken)}.info", how)
    logged = []
    globalLogPublisher.addObserver(logged.append)
    try:
        assert (await head(broken)).code == 500  # a HEAD answer has no body to carry the code
        await expect_error(await patch(broken, 5, b"world"), 500, CODE)
        await expect_error(await treq.get(broken), 500, CODE)
        await expect_error(await treq.delete(broken, headers=TUS), 500, CODE)
        final = await treq.post(server.url, headers={**TUS, "Upload-Concat": f"final;{broken}"})
        await expect_error(final, 500, CODE)
    finally:
        globalLogPublisher.removeObserver(logged.append)
    assert any(event.get("upload_id") == upload_id(broken) and "corrupt" in event.get("log_format", "")
               for event in logged)
    response = await patch(healthy, 5, b"world")
    assert response.code == 204
    response = await head(healthy)
    assert (response.code, header(response, "upload-offset")) == (200, "10")
    assert await (await treq.get(healthy)).content() == b"helloworld"


@pytest_twisted.ensureDeferred
async def test_cleaner_passes_over_a_damaged_info(tmp_path):
    clock = Clock()
    clock.advance(1_700_000_000)
    composer = StoreComposer()
    store = FileStore(str(tmp_path))
    store.use_in(composer)
    config = TusConfig(composer=composer, expire_after=100, cleanup_interval=10, reactor=clock, clock=clock)
    broken = await store.new_upload(UploadInfo(size=10, expires=clock.seconds() + 100))
    expired = await store.new_upload(UploadInfo(size=10, expires=clock.seconds() + 100))
    damage(tmp_path / f"{broken.id}.info", {"Expires": 1e300})
    clock.advance(200)
    assert await ExpirationCleaner(config).sweep() == [expired.id]
    assert (tmp_path / f"{broken.id}.info").exists()
