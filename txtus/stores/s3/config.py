"""
S3 settings the way AWS tools find them, and the start-up check of
C{twist tus --s3-bucket}.

Credentials come from C{AWS_ACCESS_KEY_ID} / C{AWS_SECRET_ACCESS_KEY} (and
C{AWS_SESSION_TOKEN}), else from the shared credentials file
(C{AWS_SHARED_CREDENTIALS_FILE}, default C{~/.aws/credentials}, profile
C{AWS_PROFILE} or C{default}).  The region: the option, else C{AWS_REGION},
C{AWS_DEFAULT_REGION}, else C{us-east-1}.

The check is one blocking signed C{HeadBucket} made before the reactor
runs, so a missing bucket or a wrong key is a one-line error when the
server starts rather than a 500 at the first upload.
"""

from __future__ import annotations

import configparser
import os
import urllib.error
import urllib.request
from typing import Mapping
from urllib.parse import urlsplit

from txtus.stores.s3.sigv4 import EMPTY_SHA256, Credentials, canonical_query, sign, uri_encode


class S3ConfigError(Exception):
    """A one-line explanation of what is wrong with the S3 settings."""


def find_credentials(environ: Mapping[str, str] | None = None) -> Credentials:
    """@raise S3ConfigError: no credentials anywhere."""
    env = os.environ if environ is None else environ
    key, secret = env.get("AWS_ACCESS_KEY_ID"), env.get("AWS_SECRET_ACCESS_KEY")
    if key and secret:
        return Credentials(key, secret, env.get("AWS_SESSION_TOKEN") or None)
    path = env.get("AWS_SHARED_CREDENTIALS_FILE") or os.path.join(os.path.expanduser("~"), ".aws", "credentials")
    profile = env.get("AWS_PROFILE") or "default"
    parser = configparser.ConfigParser()
    try:
        parser.read(path, encoding="utf-8")
    except (configparser.Error, OSError, UnicodeDecodeError) as e:
        raise S3ConfigError(f"cannot read AWS credentials file {path}: {e}") from None
    if parser.has_section(profile):
        section = parser[profile]
        key, secret = section.get("aws_access_key_id"), section.get("aws_secret_access_key")
        if key and secret:
            return Credentials(key, secret, section.get("aws_session_token") or None)
    raise S3ConfigError("no S3 credentials: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, "
                        f"or profile {profile!r} in {path}")


def find_region(option: str | None, environ: Mapping[str, str] | None = None) -> str:
    env = os.environ if environ is None else environ
    return option or env.get("AWS_REGION") or env.get("AWS_DEFAULT_REGION") or "us-east-1"


def blocking_request(base: str, method: str, path: str, credentials: Credentials, region: str,
                     service: str = "s3", query: list[tuple[str, str]] = (), body: bytes = b"",
                     headers: dict[str, str] | None = None, timeout: float = 15) -> bytes:
    """
    One signed request with urllib, for use before the reactor runs.

    @param path: already encoded (L{uri_encode}).
    @raise urllib.error.HTTPError: a non-2xx answer.
    """
    import hashlib
    headers = dict(headers or {})
    headers["Host"] = urlsplit(base).netloc
    payload = hashlib.sha256(body).hexdigest() if body else EMPTY_SHA256
    headers.update(sign(method, path, list(query), headers, payload, credentials, region, service))
    query_string = canonical_query(list(query))
    request = urllib.request.Request(base + path + (f"?{query_string}" if query_string else ""),
                                     data=body or None, method=method, headers=headers)
    with urllib.request.urlopen(request, timeout=timeout) as response:
        return response.read()


def check_bucket(bucket: str, credentials: Credentials, region: str, endpoint: str | None) -> None:
    """
    @raise S3ConfigError: the bucket cannot be used, with the reason.
    """
    if endpoint is None:
        base, path = f"https://{bucket}.s3.{region}.amazonaws.com", "/"
    else:
        parts = urlsplit(endpoint)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise S3ConfigError(f"--s3-endpoint must be an http:// or https:// URL, not {endpoint!r}")
        base = f"{parts.scheme}://{parts.netloc}"
        path = parts.path.rstrip("/") + "/" + uri_encode(bucket)
    try:
        blocking_request(base, "HEAD", path, credentials, region)
    except urllib.error.HTTPError as e:
        reasons = {404: "does not exist", 403: "refuses these credentials (access denied or wrong key)",
                   301: f"is in another region than {region} (set --s3-region)",
                   400: "refused the request (wrong --s3-region?)"}
        reason = reasons.get(e.code, f"answered HTTP {e.code}")
        raise S3ConfigError(f"S3 bucket {bucket!r} {reason}") from None
    except (urllib.error.URLError, OSError) as e:
        reason = getattr(e, "reason", e)
        raise S3ConfigError(f"cannot reach S3 at {base}: {reason}") from None
