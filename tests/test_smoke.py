import pytest_twisted
import treq

TUS = {"Tus-Resumable": "1.0.0"}


@pytest_twisted.ensureDeferred
async def test_create_patch_head(server):
    response = await treq.post(server.url, headers={**TUS, "Upload-Length": "5"})
    assert response.code == 201
    location = response.headers.getRawHeaders("location")[0]
    response = await treq.patch(location, b"hello", headers={
        **TUS, "Upload-Offset": "0", "Content-Type": "application/offset+octet-stream"})
    assert response.code == 204
    assert response.headers.getRawHeaders("upload-offset") == ["5"]
    response = await treq.head(location, headers=TUS)
    assert response.headers.getRawHeaders("upload-offset") == ["5"]
    upload_id = location.rsplit("/", 1)[1]
    assert (server.store.data_path(upload_id) and open(server.store.data_path(upload_id), "rb").read()) == b"hello"
