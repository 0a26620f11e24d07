"""
The S3 client against the real test servers: signatures over keys that need
encoding, ranges, multipart uploads, server-side copy (moto only: rclone
answers UploadPartCopy with an empty part) and errors parsed from S3's XML.
"""

import pytest
import pytest_twisted
from twisted.internet import reactor

from txtus.stores.s3.client import S3Client, S3Error


@pytest_twisted.ensureDeferred
async def test_object_round_trip(s3_server):
    c = S3Client(s3_server.bucket, s3_server.credentials, s3_server.region, s3_server.endpoint, reactor=reactor, retries=0)
    try:
        await c.head_bucket()
        await c.put_object("a b%c+d.info", b"hello", {"Content-Type": "text/plain"})
        assert await c.get_object("a b%c+d.info") == b"hello"
        assert await c.get_object("a b%c+d.info", 1, 3) == b"el"
        assert (await c.head_object("a b%c+d.info")).getRawHeaders("content-length") == ["5"]
        assert await c.head_object("missing") is None
        assert [o.key for o in await c.list_objects("a ")] == ["a b%c+d.info"]
        await c.delete_objects(["a b%c+d.info", "nothere"])
        assert await c.list_objects("a ") == []
        with pytest.raises(S3Error) as caught:
            await c.get_object("a b%c+d.info")
        assert caught.value.code == "NoSuchKey" and caught.value.not_found
    finally:
        await c.close()


@pytest_twisted.ensureDeferred
async def test_multipart_upload(s3_server):
    c = S3Client(s3_server.bucket, s3_server.credentials, s3_server.region, s3_server.endpoint, reactor=reactor, retries=0)
    try:
        uid = await c.create_multipart_upload("x/obj+1", {"Content-Type": "application/pdf"})
        await c.upload_part("x/obj+1", uid, 1, [b"a" * (5 << 20)])
        await c.upload_part("x/obj+1", uid, 2, [b"b" * 10, b"c"])
        parts = await c.list_parts("x/obj+1", uid)
        assert [(p.number, p.size) for p in parts] == [(1, 5 << 20), (2, 11)]
        await c.complete_multipart_upload("x/obj+1", uid, parts)
        data = await c.get_object("x/obj+1", (5 << 20) - 2, (5 << 20) + 11)
        assert data == b"aa" + b"b" * 10 + b"c", data
        assert (await c.head_object("x/obj+1")).getRawHeaders("content-type") == ["application/pdf"]
        with pytest.raises(S3Error) as caught:
            await c.list_parts("x/obj+1", uid)
        assert caught.value.code == "NoSuchUpload" and caught.value.not_found
        uid = await c.create_multipart_upload("x/ab")
        await c.abort_multipart_upload("x/ab", uid)
        await c.abort_multipart_upload("x/ab", uid)  # gone already: fine
        await c.delete_object("x/obj+1")
    finally:
        await c.close()


@pytest_twisted.ensureDeferred
async def test_upload_part_copy(moto_server):
    s3_server = moto_server
    c = S3Client(s3_server.bucket, s3_server.credentials, s3_server.region, s3_server.endpoint, reactor=reactor, retries=0)
    try:
        await c.put_object("x/obj+1", [b"a" * (5 << 20), b"b" * 10 + b"c"])
        uid = await c.create_multipart_upload("x/copy")
        await c.upload_part_copy("x/copy", uid, 1, "x/obj+1", 0, 5 << 20)
        await c.upload_part_copy("x/copy", uid, 2, "x/obj+1", 5 << 20, (5 << 20) + 11)
        await c.complete_multipart_upload("x/copy", uid, await c.list_parts("x/copy", uid))
        assert await c.get_object("x/copy", (5 << 20) - 1, (5 << 20) + 11) == b"a" + b"b" * 10 + b"c"
        await c.delete_objects(["x/obj+1", "x/copy"])
    finally:
        await c.close()


def test_a_sent_part_is_not_kept_by_its_producer():
    """
    Twisted's pooled connections keep their last request, and with it the
    body producer: a producer that kept its part once sent made every idle
    connection hold a part (peak RSS grew with the upload).
    """
    from txtus.stores.s3.client import PiecesProducer

    class Consumer:
        def __init__(self):
            self.data = []

        def write(self, data):
            self.data.append(data)

    producer = PiecesProducer([b"a" * 1000, b"b" * 1000])
    consumer = Consumer()
    done = producer.startProducing(consumer)
    assert done.called and b"".join(consumer.data) == b"a" * 1000 + b"b" * 1000
    assert producer.length == 2000
    held = [value for value in vars(producer).values() if isinstance(value, (bytes, list)) and value]
    assert held == []
