"""
A small S3 client over treq: the dozen calls the S3 store needs, signed
with L{txtus.stores.s3.sigv4}, with request bodies given as producers so a
part is never copied into one big string, and responses that can be large
(GetObject) handed back unread so they can be streamed.

Errors come back from S3 as XML; they become L{S3Error}s with S3's code, so
the store can tell "no such upload" from "access denied" from "the service
is down".  Requests that failed with a 5xx answer or a broken connection
are retried with exponential backoff a bounded number of times; each try
gets a fresh body producer.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any, Callable, Iterable
from urllib.parse import urlsplit
from xml.etree import ElementTree

import treq
from treq.client import HTTPClient
from twisted.internet.defer import Deferred
from twisted.internet.error import ConnectError, ConnectionLost, DNSLookupError, TimeoutError
from twisted.internet.interfaces import IConsumer
from twisted.internet.task import deferLater
from txtus.logs import Logger
from twisted.web.client import Agent, HTTPConnectionPool, RequestTransmissionFailed, ResponseFailed
from twisted.web.http_headers import Headers
from twisted.web.iweb import UNKNOWN_LENGTH, IBodyProducer
from zope.interface import implementer

from txtus.stores.s3.parts import MemoryPart, PiecesProducer, SpooledPart
from txtus.stores.s3.sigv4 import EMPTY_SHA256, UNSIGNED_PAYLOAD, Credentials, canonical_query, sign, uri_encode

log = Logger()

_MAX_ERROR_BODY = 64 * 1024
_MAX_XML_BODY = 16 * 1024 * 1024


class S3Error(Exception):
    """
    S3 refused a request.  C{code} is S3's error code (C{NoSuchKey},
    C{NoSuchUpload}, C{AccessDenied}, ...) or C{HTTP<status>} when the
    answer carried none.
    """

    def __init__(self, status: int, code: str, message: str = "", operation: str = "") -> None:
        self.status = status
        self.code = code
        self.message = message
        self.operation = operation
        super().__init__(f"{operation}: {status} {code}" + (f": {message}" if message else ""))

    @property
    def retryable(self) -> bool:
        return self.status >= 500 or self.code in ("SlowDown", "RequestTimeout", "InternalError")

    @property
    def not_found(self) -> bool:
        return self.status == 404 or self.code in ("NoSuchKey", "NoSuchUpload", "NotFound")


class S3Unavailable(Exception):
    """The endpoint could not be reached (after the retries)."""


_NETWORK_ERRORS = (ConnectError, ConnectionLost, DNSLookupError, TimeoutError, ResponseFailed,
                   RequestTransmissionFailed)


@dataclass(frozen=True)
class Part:
    number: int
    size: int
    etag: str


@dataclass(frozen=True)
class ObjectInfo:
    key: str
    size: int


def _text(element: ElementTree.Element | None, name: str) -> str:
    if element is None:
        return ""
    for child in element:
        if child.tag.rsplit("}", 1)[-1] == name:
            return child.text or ""
    return ""


def _children(element: ElementTree.Element, name: str) -> list[ElementTree.Element]:
    return [child for child in element if child.tag.rsplit("}", 1)[-1] == name]


def _parse_xml(body: bytes, operation: str) -> ElementTree.Element:
    try:
        return ElementTree.fromstring(body)
    except ElementTree.ParseError:
        raise S3Error(502, "MalformedResponse", "the answer is not XML", operation) from None


def parse_error(status: int, body: bytes, operation: str) -> S3Error:
    code, message = f"HTTP{status}", ""
    if body.lstrip().startswith(b"<"):
        try:
            root = ElementTree.fromstring(body)
            code = _text(root, "Code") or code
            message = _text(root, "Message")
        except ElementTree.ParseError:
            pass
    return S3Error(status, code, message, operation)


Body = Callable[[], IBodyProducer] | bytes | None


class S3Client:
    """
    @param endpoint: C{http(s)://host[:port]} of an S3-compatible service,
        addressed path-style (C{/bucket/key}); L{None} for AWS itself,
        addressed virtual-host style.
    @param retries: how many times a request that failed with a 5xx answer
        or a network error is tried again, with C{backoff}, 4 x C{backoff},
        ... seconds in between.
    """

    def __init__(self, bucket: str, credentials: Credentials, region: str = "us-east-1",
                 endpoint: str | None = None, reactor: Any = None, retries: int = 4,
                 backoff: float = 0.2, connections: int = 32) -> None:
        if reactor is None:
            from twisted.internet import reactor as global_reactor
            reactor = global_reactor
        self.reactor = reactor
        self.bucket = bucket
        self.credentials = credentials
        self.region = region
        self.retries = retries
        self.backoff = backoff
        if endpoint is None:
            self._base = f"https://{bucket}.s3.{region}.amazonaws.com"
            self._prefix = "/"
        else:
            self._base = endpoint.rstrip("/")
            self._prefix = urlsplit(self._base).path + "/" + uri_encode(bucket) + "/"
            self._base = self._base[: len(self._base) - len(urlsplit(self._base).path)]
        self._host = urlsplit(self._base).netloc
        self.pool = HTTPConnectionPool(reactor, persistent=True)
        self.pool.maxPersistentPerHost = connections
        self._http = HTTPClient(Agent(reactor, pool=self.pool))

    def close(self) -> Deferred:
        return self.pool.closeCachedConnections()

    # The one place requests are made ---------------------------------------

    async def request(self, operation: str, method: str, key: str | None, query: list[tuple[str, str]] = (),
                      headers: dict[str, str] | None = None, body: Body = None,
                      payload_hash: str | None = None, ok: Iterable[int] = (200,), stream: bool = False,
                      retry: bool = True) -> Any:
        """
        Send a signed request, retrying failures that may pass.

        @param key: the object key, or L{None} for the bucket itself.
        @param body: bytes, or a callable giving a fresh L{IBodyProducer}
            per try (signed as C{UNSIGNED-PAYLOAD} unless C{payload_hash}).
        @param stream: hand back the response unread (the caller reads or
            discards its body); else its body is read and returned.
        @param retry: L{False} for a body that cannot be sent twice (a part
            piped from a client's socket): one try only.
        @return: C{(response, body bytes)}, or the response if C{stream}.
        @raise S3Error: S3 refused (after the retries, if it was a 5xx).
        @raise S3Unavailable: the endpoint could not be reached.
        """
        attempt = 0
        while True:
            try:
                response = await self._send(method, key, list(query), dict(headers or {}), body, payload_hash)
                if response.code in ok:
                    if stream:
                        return response
                    content = await treq.content(response)
                    return response, content
                error = parse_error(response.code, await _read_limited(response, _MAX_ERROR_BODY), operation)
                if not error.retryable:
                    raise error
                failure: Exception = error
            except _NETWORK_ERRORS as e:
                failure = S3Unavailable(f"{operation}: {e.__class__.__name__}")
            if attempt >= self.retries or not retry:
                raise failure
            delay = self.backoff * (4 ** attempt)
            attempt += 1
            log.warn("S3 {operation} failed ({failure}); retry {attempt} of {retries} in {delay:.2f}s",
                     operation=operation, failure=failure, attempt=attempt, retries=self.retries, delay=delay)
            await deferLater(self.reactor, delay, lambda: None)

    def _send(self, method: str, key: str | None, query: list[tuple[str, str]], headers: dict[str, str],
              body: Body, payload_hash: str | None) -> Deferred:
        path = self._prefix + (uri_encode(key, keep_slash=True) if key else "")
        if key is None and self._prefix != "/":
            path = self._prefix.rstrip("/")
        producer: Any = None
        if callable(body):
            producer = body()
            payload = payload_hash or UNSIGNED_PAYLOAD
            if producer.length is not UNKNOWN_LENGTH:
                headers["Content-Length"] = str(producer.length)
        elif body is not None:
            payload = payload_hash or hashlib.sha256(body).hexdigest()
            headers["Content-Length"] = str(len(body))
            producer = PiecesProducer([body])
        else:
            payload = EMPTY_SHA256
        headers["Host"] = self._host
        headers.update(sign(method, path, query, headers, payload, self.credentials, self.region))
        query_string = canonical_query(query)
        url = self._base + path + ("?" + query_string if query_string else "")
        # Content-Length comes from the producer; Host from the URL.
        sent = Headers({name: [value] for name, value in headers.items()
                        if name not in ("Content-Length", "Host")})
        return self._http.request(method, url, headers=sent, data=producer)

    # Buckets -----------------------------------------------------------------

    async def head_bucket(self) -> None:
        """@raise S3Error: the bucket is missing (404) or not ours (403)."""
        await self.request("HeadBucket", "HEAD", None)

    async def create_bucket(self) -> None:
        body = b""
        if self.region != "us-east-1":
            body = (b'<CreateBucketConfiguration xmlns="http://s3.amazonaws.com/doc/2006-03-01/">'
                    b"<LocationConstraint>%s</LocationConstraint></CreateBucketConfiguration>"
                    % self.region.encode("ascii"))
        await self.request("CreateBucket", "PUT", None, body=body)

    # Objects -----------------------------------------------------------------

    async def put_object(self, key: str, data: bytes | list[bytes] | MemoryPart | SpooledPart,
                         headers: dict[str, str] | None = None) -> None:
        part = _as_part(data)
        headers = {**(headers or {}), "Content-MD5": part.md5_base64()}
        await self.request("PutObject", "PUT", key, headers=headers, body=part.producer)

    async def get_object(self, key: str, start: int | None = None, end: int | None = None) -> bytes:
        """A small object (or a range of one), read whole: C{.info}, C{.part}."""
        headers = {} if start is None else {"Range": f"bytes={start}-{'' if end is None else end - 1}"}
        response, content = await self.request("GetObject", "GET", key, headers=headers, ok=(200, 206))
        return content

    async def open_object(self, key: str, start: int, end: int) -> Any:
        """
        Bytes C{start} to C{end} (exclusive) of an object, as an unread
        treq response whose body the caller streams.
        """
        return await self.request("GetObject", "GET", key, headers={"Range": f"bytes={start}-{end - 1}"},
                                  ok=(200, 206), stream=True)

    async def head_object(self, key: str) -> Headers | None:
        """The object's headers, or L{None} if it does not exist."""
        try:
            response, _ = await self.request("HeadObject", "HEAD", key)
        except S3Error as e:
            if e.status == 404:
                return None
            raise
        return response.headers

    async def delete_object(self, key: str) -> None:
        await self.request("DeleteObject", "DELETE", key, ok=(200, 204))

    async def delete_objects(self, keys: list[str]) -> None:
        """Delete up to 1000 keys per request; a key already gone is fine."""
        for start in range(0, len(keys), 1000):
            batch = keys[start:start + 1000]
            objects = "".join(f"<Object><Key>{_xml_escape(k)}</Key></Object>" for k in batch)
            body = f'<Delete xmlns="http://s3.amazonaws.com/doc/2006-03-01/"><Quiet>true</Quiet>{objects}</Delete>'
            data = body.encode("utf-8")
            _, content = await self.request("DeleteObjects", "POST", None, query=[("delete", "")],
                                            headers={"Content-MD5": MemoryPart([data]).md5_base64()}, body=data)
            root = _parse_xml(content, "DeleteObjects")
            for error in _children(root, "Error"):
                if _text(error, "Code") != "NoSuchKey":
                    raise S3Error(500, _text(error, "Code"), _text(error, "Message"), "DeleteObjects")

    async def list_objects(self, prefix: str) -> list[ObjectInfo]:
        """Every object under C{prefix} (ListObjectsV2, every page)."""
        found: list[ObjectInfo] = []
        token: str | None = None
        while True:
            query = [("list-type", "2"), ("prefix", prefix)]
            if token:
                query.append(("continuation-token", token))
            _, content = await self.request("ListObjectsV2", "GET", None, query=query)
            root = _parse_xml(content, "ListObjectsV2")
            for item in _children(root, "Contents"):
                found.append(ObjectInfo(_text(item, "Key"), int(_text(item, "Size") or 0)))
            token = _text(root, "NextContinuationToken")
            if _text(root, "IsTruncated") != "true" or not token:
                return found

    # Multipart uploads -------------------------------------------------------

    async def create_multipart_upload(self, key: str, headers: dict[str, str] | None = None) -> str:
        _, content = await self.request("CreateMultipartUpload", "POST", key, query=[("uploads", "")],
                                        headers=headers, body=b"")
        upload_id = _text(_parse_xml(content, "CreateMultipartUpload"), "UploadId")
        if not upload_id:
            raise S3Error(502, "MalformedResponse", "no UploadId", "CreateMultipartUpload")
        return upload_id

    async def upload_part(self, key: str, upload_id: str, number: int,
                          pieces: list[bytes] | MemoryPart | SpooledPart) -> str:
        """
        Upload one part from byte strings in memory or a buffered part
        (in memory or spooled), each try sending the same bytes again.

        @return: the part's ETag.
        """
        part = _as_part(pieces)
        response, _ = await self.request("UploadPart", "PUT", key,
                                         query=[("partNumber", str(number)), ("uploadId", upload_id)],
                                         headers={"Content-MD5": part.md5_base64()}, body=part.producer)
        return _etag(response)

    async def upload_part_streamed(self, key: str, upload_id: str, number: int,
                                   producer: IBodyProducer) -> tuple[str, bool]:
        """
        Upload one part whose bytes are still arriving: C{producer} (of a
        known C{length}) writes them as they come.  Sent once, never
        retried (the bytes are gone once sent), signed C{UNSIGNED-PAYLOAD}
        and without C{Content-MD5} (unknown until the last byte): the
        caller checks the ETag against the MD5 of what it sent.

        @return: the part's ETag, and whether it is the MD5 of the part's
            bytes: not when S3 encrypted the part with a KMS key or a key
            of the client's (SSE-KMS, DSSE-KMS, SSE-C), whose ETags are not.
        """
        response, _ = await self.request("UploadPart", "PUT", key,
                                         query=[("partNumber", str(number)), ("uploadId", upload_id)],
                                         body=lambda: producer, retry=False)
        encryption = (response.headers.getRawHeaders("x-amz-server-side-encryption") or [""])[0].lower()
        customer_key = response.headers.hasHeader("x-amz-server-side-encryption-customer-algorithm")
        return _etag(response), not (encryption.startswith("aws:kms") or customer_key)

    async def upload_part_copy(self, key: str, upload_id: str, number: int, source_key: str,
                               start: int, end: int) -> str:
        """Copy bytes C{start} to C{end} (exclusive) of an object into a part."""
        source = "/" + uri_encode(self.bucket) + "/" + uri_encode(source_key, keep_slash=True)
        headers = {"x-amz-copy-source": source, "x-amz-copy-source-range": f"bytes={start}-{end - 1}"}
        _, content = await self.request("UploadPartCopy", "PUT", key,
                                        query=[("partNumber", str(number)), ("uploadId", upload_id)],
                                        headers=headers)
        root = _parse_xml(content, "UploadPartCopy")
        if root.tag.rsplit("}", 1)[-1] == "Error":
            raise S3Error(500, _text(root, "Code"), _text(root, "Message"), "UploadPartCopy")
        return _text(root, "ETag")

    async def list_parts(self, key: str, upload_id: str) -> list[Part]:
        """Every part of a multipart upload, every page, by part number."""
        parts: list[Part] = []
        marker = "0"
        while True:
            query = [("uploadId", upload_id), ("part-number-marker", marker)]
            _, content = await self.request("ListParts", "GET", key, query=query)
            root = _parse_xml(content, "ListParts")
            for item in _children(root, "Part"):
                parts.append(Part(int(_text(item, "PartNumber")), int(_text(item, "Size")), _text(item, "ETag")))
            marker = _text(root, "NextPartNumberMarker")
            if _text(root, "IsTruncated") != "true" or not marker:
                return sorted(parts, key=lambda p: p.number)

    async def complete_multipart_upload(self, key: str, upload_id: str, parts: list[Part]) -> None:
        listed = "".join(f"<Part><PartNumber>{p.number}</PartNumber><ETag>{_xml_escape(p.etag)}</ETag></Part>"
                         for p in parts)
        body = f'<CompleteMultipartUpload xmlns="http://s3.amazonaws.com/doc/2006-03-01/">{listed}</CompleteMultipartUpload>'
        _, content = await self.request("CompleteMultipartUpload", "POST", key, query=[("uploadId", upload_id)],
                                        body=body.encode("utf-8"))
        # S3 may answer 200 and put the error in the body.
        if content.strip():
            root = _parse_xml(content, "CompleteMultipartUpload")
            if root.tag.rsplit("}", 1)[-1] == "Error":
                error = S3Error(500, _text(root, "Code"), _text(root, "Message"), "CompleteMultipartUpload")
                raise error

    async def abort_multipart_upload(self, key: str, upload_id: str) -> None:
        """Abort; an upload already gone is fine."""
        try:
            await self.request("AbortMultipartUpload", "DELETE", key, query=[("uploadId", upload_id)], ok=(200, 204))
        except S3Error as e:
            if not e.not_found:
                raise


def _etag(response: Any) -> str:
    values = response.headers.getRawHeaders("etag") or [""]
    return values[0]


def _as_part(data: bytes | list[bytes] | MemoryPart | SpooledPart) -> MemoryPart | SpooledPart:
    """A body given as byte strings, as the buffered part it then is."""
    if isinstance(data, (MemoryPart, SpooledPart)):
        return data
    return MemoryPart([data] if isinstance(data, bytes) else data)


def _xml_escape(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;").replace('"', "&quot;")


async def _read_limited(response: Any, limit: int) -> bytes:
    """Read at most C{limit} bytes of an error body; drop the rest."""
    pieces: list[bytes] = []
    size = 0

    def collect(data: bytes) -> None:
        nonlocal size
        if size < limit:
            pieces.append(data[: limit - size])
        size += len(data)

    try:
        await treq.collect(response, collect)
    except Exception:
        pass
    return b"".join(pieces)
