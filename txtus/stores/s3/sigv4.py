"""
AWS Signature Version 4 for S3 requests, in the header form.

Our own small signer rather than botocore's: botocore's plain C{SigV4Auth}
encodes an already encoded key a second time (keys with spaces or C{%}),
and C{S3SigV4Auth} overwrites C{X-Amz-Content-SHA256} with the hash of the
request's in-memory body, which for a part streamed from a socket is the
hash of nothing.  Reaching around either needs private API.  The algorithm
itself is short, and is checked against AWS's published examples and
against the test servers (see docs/s3.md).

The payload is never hashed here: the caller passes its hash, or
L{UNSIGNED_PAYLOAD} for a body streamed as it arrives.
"""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass
from datetime import datetime, timezone
from urllib.parse import quote

UNSIGNED_PAYLOAD = "UNSIGNED-PAYLOAD"
EMPTY_SHA256 = hashlib.sha256(b"").hexdigest()
_ALGORITHM = "AWS4-HMAC-SHA256"


@dataclass(frozen=True)
class Credentials:
    access_key: str
    secret_key: str
    session_token: str | None = None

    def __repr__(self) -> str:
        # Never print a secret into a log line or a traceback.
        return f"Credentials(access_key={self.access_key!r})"


def uri_encode(value: str, keep_slash: bool = False) -> str:
    """
    S3's URI encoding: every byte but C{A-Z a-z 0-9 - _ . ~} as C{%XX}
    (upper-case hex), and C{/} too unless C{keep_slash} (object keys in
    paths keep theirs).
    """
    return quote(value, safe="-_.~/" if keep_slash else "-_.~")


def canonical_query(query: list[tuple[str, str]]) -> str:
    """The query string as signed, and as sent: encoded, sorted."""
    return "&".join(f"{k}={v}" for k, v in sorted((uri_encode(k), uri_encode(v)) for k, v in query))


def _hmac(key: bytes, message: str) -> bytes:
    return hmac.new(key, message.encode("utf-8"), hashlib.sha256).digest()


def signing_key(secret_key: str, day: str, region: str, service: str) -> bytes:
    key = _hmac(("AWS4" + secret_key).encode("utf-8"), day)
    for part in (region, service, "aws4_request"):
        key = _hmac(key, part)
    return key


def sign(method: str, path: str, query: list[tuple[str, str]], headers: dict[str, str],
         payload_hash: str, credentials: Credentials, region: str, service: str = "s3",
         now: datetime | None = None) -> dict[str, str]:
    """
    Sign a request.

    @param path: the path exactly as it will be sent, already encoded with
        L{uri_encode} (S3 signs the path as sent, without normalising it).
    @param query: the query parameters, unencoded; send them as
        L{canonical_query} gives them.
    @param headers: every header to sign, C{Host} included.
    @return: the headers to add to the request: C{Authorization},
        C{X-Amz-Date}, C{X-Amz-Content-SHA256} and, with temporary
        credentials, C{X-Amz-Security-Token}.
    """
    when = (now or datetime.now(timezone.utc)).astimezone(timezone.utc)
    stamp = when.strftime("%Y%m%dT%H%M%SZ")
    day = stamp[:8]
    added = {"X-Amz-Date": stamp, "X-Amz-Content-SHA256": payload_hash}
    if credentials.session_token:
        added["X-Amz-Security-Token"] = credentials.session_token
    signed: dict[str, str] = {}
    for name, value in list(headers.items()) + list(added.items()):
        # Values are trimmed and inner runs of spaces folded, as specified.
        signed[name.lower()] = " ".join(str(value).split())
    names = sorted(signed)
    signed_headers = ";".join(names)
    canonical = "\n".join([
        method.upper(), path, canonical_query(query),
        "".join(f"{name}:{signed[name]}\n" for name in names),
        signed_headers, payload_hash,
    ])
    scope = f"{day}/{region}/{service}/aws4_request"
    to_sign = "\n".join([_ALGORITHM, stamp, scope, hashlib.sha256(canonical.encode("utf-8")).hexdigest()])
    signature = hmac.new(signing_key(credentials.secret_key, day, region, service),
                         to_sign.encode("utf-8"), hashlib.sha256).hexdigest()
    added["Authorization"] = (f"{_ALGORITHM} Credential={credentials.access_key}/{scope}, "
                              f"SignedHeaders={signed_headers}, Signature={signature}")
    return added
