"""
The SigV4 signer against AWS's published examples ("Signature Calculations
for the Authorization Header" in the S3 API reference: the GET Object, PUT
Object, GET Bucket Lifecycle and List Objects examples).  The expected
values are the ones printed in that documentation.
"""

from __future__ import annotations

import hashlib
from datetime import datetime, timezone

from txtus.stores.s3.sigv4 import EMPTY_SHA256, Credentials, canonical_query, sign, uri_encode

EXAMPLE = Credentials("AKIAIOSFODNN7EXAMPLE", "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY")
WHEN = datetime(2013, 5, 24, tzinfo=timezone.utc)
HOST = "examplebucket.s3.amazonaws.com"


def signature(headers: dict[str, str]) -> str:
    return headers["Authorization"].rsplit("Signature=", 1)[1]


def test_get_object_with_range():
    added = sign("GET", "/test.txt", [], {"Host": HOST, "Range": "bytes=0-9"}, EMPTY_SHA256, EXAMPLE,
                 "us-east-1", now=WHEN)
    assert added["X-Amz-Date"] == "20130524T000000Z"
    assert added["Authorization"] == (
        "AWS4-HMAC-SHA256 Credential=AKIAIOSFODNN7EXAMPLE/20130524/us-east-1/s3/aws4_request, "
        "SignedHeaders=host;range;x-amz-content-sha256;x-amz-date, "
        "Signature=f0e8bdb87c964420e857bd35b5d6ed310bd44f0170aba48dd91039c6036bdb41")


def test_put_object_with_a_key_that_needs_encoding():
    payload = hashlib.sha256(b"Welcome to Amazon S3.").hexdigest()
    assert payload == "44ce7dd67c959e0d3524ffac1771dfbba87d2b6b4b4e99e42034a8b803f8b072"
    path = "/" + uri_encode("test$file.text", keep_slash=True)
    assert path == "/test%24file.text"
    added = sign("PUT", path, [], {"Host": HOST, "Date": "Fri, 24 May 2013 00:00:00 GMT",
                                   "x-amz-storage-class": "REDUCED_REDUNDANCY"},
                 payload, EXAMPLE, "us-east-1", now=WHEN)
    assert "SignedHeaders=date;host;x-amz-content-sha256;x-amz-date;x-amz-storage-class," in added["Authorization"]
    assert signature(added) == "98ad721746da40c64f1a55b78f14c238d841ea1380cd77a1b5971af0ece108bd"


def test_query_without_value_and_sorted_query():
    lifecycle = sign("GET", "/", [("lifecycle", "")], {"Host": HOST}, EMPTY_SHA256, EXAMPLE, "us-east-1", now=WHEN)
    assert signature(lifecycle) == "fea454ca298b7da1c68078a5d1bdbfbbe0d65c699e0f91ac7a200a0136783543"
    listing = sign("GET", "/", [("prefix", "J"), ("max-keys", "2")], {"Host": HOST}, EMPTY_SHA256, EXAMPLE,
                   "us-east-1", now=WHEN)
    assert signature(listing) == "34b48302e7b5fa45bde8084f4b7868a86f0a534bc59db6670ed5711ef69dc6f7"


def test_encoding_rules():
    # Spaces and percent signs are encoded once, slashes kept only in paths.
    assert uri_encode("a b%c/d", keep_slash=True) == "a%20b%25c/d"
    assert uri_encode("a b%c/d") == "a%20b%25c%2Fd"
    assert uri_encode("x+y~z") == "x%2By~z"
    assert canonical_query([("uploadId", "a+b/c"), ("partNumber", "2")]) == "partNumber=2&uploadId=a%2Bb%2Fc"


def test_session_token_is_signed_and_secrets_stay_out_of_repr():
    creds = Credentials("AKID", "secret", "token")
    added = sign("GET", "/", [], {"Host": HOST}, EMPTY_SHA256, creds, "us-east-1", now=WHEN)
    assert added["X-Amz-Security-Token"] == "token"
    assert "x-amz-security-token" in added["Authorization"]
    assert "secret" not in repr(creds)
