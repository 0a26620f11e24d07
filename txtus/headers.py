"""
Parsing and validation of every tus header, in one place.

Handlers never look at raw header bytes themselves: they call these
functions, which either return clean Python values or raise the matching
L{txtus.errors.TusError}.  Everything here is pure (no I/O, no Twisted), so
it is tested exhaustively, including with hypothesis.
"""

from __future__ import annotations

import base64
import binascii
import re
import time
from email.utils import formatdate
from urllib.parse import quote, urlsplit

from txtus import errors

TUS_VERSION = "1.0.0"
OFFSET_OCTET_STREAM = b"application/offset+octet-stream"

# 2**63 - 1: the largest length any tus implementation (Go's int64) handles.
MAX_INTEGER = 2**63 - 1
_DIGITS = re.compile(rb"[0-9]{1,19}")


def parse_non_negative(value: bytes | None, error: type[errors.TusError]) -> int:
    """
    Parse a header holding a non-negative decimal integer, strictly: no
    sign, no spaces, no hex, at most 2**63 - 1.

    @raise error: the value is missing or malformed.
    """
    if value is None or not _DIGITS.fullmatch(value):
        raise error()
    number = int(value)
    if number > MAX_INTEGER:
        raise error()
    return number


def parse_creation_length(length: bytes | None, defer: bytes | None) -> int | None:
    """
    Read C{Upload-Length} / C{Upload-Defer-Length} of a creation request.

    @return: the length, or L{None} when the client defers it.
    """
    if length is not None and defer is not None:
        raise errors.AmbiguousUploadLength()
    if defer is not None:
        if defer.strip() != b"1":
            raise errors.InvalidUploadLengthDefer()
        return None
    if length is None:
        raise errors.AmbiguousUploadLength()
    return parse_non_negative(length.strip(), errors.InvalidUploadLength)


# Upload-Metadata -----------------------------------------------------------

_METADATA_KEY = re.compile(r"[!-+\--~]+")  # visible ASCII except ','


def parse_metadata(raw: bytes | None) -> dict[str, str]:
    """
    Decode C{Upload-Metadata}: comma-separated C{key base64value} pairs.

    Stricter than tusd, as the spec asks: a value that is not Base64, a key
    with odd characters or a repeated key is a 400 rather than silently
    dropped.  Blank pairs (a trailing comma) and spaces around pairs are
    tolerated.  Values are decoded from UTF-8; bytes that are not UTF-8
    survive the round trip through surrogate escapes.
    """
    metadata: dict[str, str] = {}
    if raw is None:
        return metadata
    try:
        text = raw.decode("ascii")
    except UnicodeDecodeError:
        raise errors.InvalidMetadata("Upload-Metadata must be ASCII") from None
    for pair in text.split(","):
        pair = pair.strip(" \t")
        if not pair:
            continue
        key, sep, value = pair.partition(" ")
        if not _METADATA_KEY.fullmatch(key):
            raise errors.InvalidMetadata(f"invalid Upload-Metadata key {key[:64]!r}")
        if key in metadata:
            raise errors.InvalidMetadata(f"duplicate Upload-Metadata key {key[:64]!r}")
        if " " in value:
            raise errors.InvalidMetadata(f"Upload-Metadata value for {key[:64]!r} holds a space")
        try:
            decoded = base64.b64decode(value, validate=True)
        except (binascii.Error, ValueError):
            raise errors.InvalidMetadata(f"Upload-Metadata value for {key[:64]!r} is not Base64") from None
        metadata[key] = decoded.decode("utf-8", "surrogateescape")
    return metadata


def encode_metadata(metadata: dict[str, str]) -> bytes:
    """
    The C{Upload-Metadata} form of C{metadata}; an empty value keeps its key
    followed by a space, as tusd writes it.
    """
    pairs = []
    for key, value in metadata.items():
        encoded = base64.b64encode(value.encode("utf-8", "surrogateescape")).decode("ascii")
        pairs.append(f"{key} {encoded}")
    return ",".join(pairs).encode("ascii")


# Upload-Concat -------------------------------------------------------------

_URL = re.compile(r"[!-~]+")  # visible ASCII


def parse_concat(raw: bytes | None) -> tuple[str, list[str]] | None:
    """
    Parse C{Upload-Concat}.

    @return: L{None} when absent, C{("partial", [])}, or
        C{("final", [url, ...])}.
    """
    if raw is None:
        return None
    text = raw.decode("latin-1").strip()
    if text == "partial":
        return ("partial", [])
    if text.startswith("final;"):
        urls = text[len("final;"):].split()
        if not urls:
            raise errors.InvalidConcat("Upload-Concat final lists no uploads")
        for url in urls:
            # Handlers split these with urlsplit, which raises ValueError on
            # some inputs ("http://[::1"); refuse them here as a 400.
            if not _URL.fullmatch(url):
                raise errors.InvalidConcat(f"invalid URL in Upload-Concat: {url[:200]!r}")
            try:
                urlsplit(url)
            except ValueError:
                raise errors.InvalidConcat(f"invalid URL in Upload-Concat: {url[:200]!r}") from None
        return ("final", urls)
    raise errors.InvalidConcat()


# Upload-Checksum -----------------------------------------------------------

_ALGORITHM = re.compile(r"[a-z0-9-]{1,32}")


def parse_checksum(raw: bytes, supported: frozenset[str] | set[str]) -> tuple[str, bytes]:
    """
    Parse C{Upload-Checksum: <algorithm> <base64 digest>}.

    @raise UnsupportedChecksumAlgorithm: well formed, but not one we compute.
    @raise InvalidChecksum: malformed.
    """
    try:
        text = raw.decode("ascii")
    except UnicodeDecodeError:
        raise errors.InvalidChecksum() from None
    algorithm, sep, encoded = text.strip().partition(" ")
    if not sep or not _ALGORITHM.fullmatch(algorithm) or not encoded:
        raise errors.InvalidChecksum()
    if algorithm not in supported:
        raise errors.UnsupportedChecksumAlgorithm(f"unsupported checksum algorithm {algorithm!r}")
    try:
        digest = base64.b64decode(encoded, validate=True)
    except (binascii.Error, ValueError):
        raise errors.InvalidChecksum("checksum is not Base64") from None
    return algorithm, digest


# Content types -------------------------------------------------------------

def media_type(raw: bytes | None) -> bytes:
    """
    The lower-cased media type of a Content-Type value, without parameters.
    """
    if raw is None:
        return b""
    return raw.split(b";", 1)[0].strip().lower()


# Upload IDs ----------------------------------------------------------------

_UPLOAD_ID = re.compile(r"[A-Za-z0-9_-]{1,128}")


def is_valid_upload_id(upload_id: str) -> bool:
    """
    Whether C{upload_id} may name an upload.  Deliberately narrow (no dots,
    slashes, percent signs or NULs), so no ID can step outside a store's
    directory or bucket prefix.
    """
    return _UPLOAD_ID.fullmatch(upload_id) is not None


# Forwarded / X-Forwarded-* -------------------------------------------------

_HOST = re.compile(r"[A-Za-z0-9.\-]+(:[0-9]{1,5})?|\[[0-9A-Fa-f:.]+\](:[0-9]{1,5})?")
# A quoted host is taken whole (up to its closing quote), so that
# host="evil.com x" is refused rather than read as evil.com.
_FORWARDED_HOST = re.compile(r'(?:^|[;,\s])host=(?:"([^"]*)"|([^";,\s]*))', re.IGNORECASE)
_FORWARDED_PROTO = re.compile(r'(?:^|[;,\s])proto="?(https?)"?(?:$|[;,\s])', re.IGNORECASE)


def clean_host(host: str) -> str | None:
    """
    C{host} if it is a plausible host[:port], else L{None}: a host header
    ends up in C{Location}, so anything odd is refused.
    """
    return host if _HOST.fullmatch(host) else None


def forwarded_origin(forwarded: bytes | None, x_host: bytes | None,
                     x_proto: bytes | None) -> tuple[str | None, str | None]:
    """
    The (host, scheme) a reverse proxy reports, C{Forwarded} taking
    precedence over C{X-Forwarded-Host} / C{X-Forwarded-Proto}; either may
    be L{None}.  Only C{http} and C{https} are accepted as schemes.
    """
    host = scheme = None
    if x_host:
        host = clean_host(x_host.decode("latin-1").split(",")[0].strip())
    if x_proto:
        candidate = x_proto.decode("latin-1").split(",")[0].strip().lower()
        if candidate in ("http", "https"):
            scheme = candidate
    if forwarded:
        first = forwarded.decode("latin-1").split(",")[0]
        match = _FORWARDED_HOST.search(first)
        if match:
            candidate = clean_host(match.group(1) if match.group(1) is not None else match.group(2))
            if candidate:
                host = candidate
        match = _FORWARDED_PROTO.search(first)
        if match:
            scheme = match.group(1).lower()
    return host, scheme


def strip_default_port(host: str, scheme: str) -> str:
    if scheme == "http" and host.endswith(":80"):
        return host[:-3]
    if scheme == "https" and host.endswith(":443"):
        return host[:-4]
    return host


# Downloads -----------------------------------------------------------------

INLINE_MEDIA_TYPES = frozenset({
    "text/plain", "image/png", "image/jpeg", "image/gif", "image/bmp",
    "image/webp", "audio/wave", "audio/wav", "audio/x-wav", "audio/x-pn-wav",
    "audio/webm", "audio/ogg", "video/mp4", "video/webm", "video/ogg",
    "application/ogg",
})
_TOKEN = r"[!#$%&'*+.^_`|~0-9A-Za-z-]+"
_MEDIA_TYPE = re.compile(rf"({_TOKEN})/({_TOKEN})")
# Quoted strings are held to visible ASCII and spaces: the Content-Type we
# send must be ASCII, so a non-ASCII parameter makes the type unparseable.
_PARAMETER = re.compile(rf'[ \t]*({_TOKEN})=({_TOKEN}|"(?:[ !#-\[\]-~]|\\[ -~])*")[ \t]*')


def download_headers(metadata: dict[str, str]) -> tuple[bytes, bytes]:
    """
    The C{Content-Type} and C{Content-Disposition} for downloading an upload
    with C{metadata}.  Uploaded media types are only shown C{inline} when
    they cannot run script in a browser (the tusd allow-list); anything
    unparseable becomes C{application/octet-stream}; the file name is
    sanitised so no header can be injected through it.
    """
    content_type = "application/octet-stream"
    disposition = "attachment"
    filetype = metadata.get("filetype", "")
    parts = filetype.split(";")
    match = _MEDIA_TYPE.fullmatch(parts[0].strip())
    if match:
        seen = set()
        params = []
        for param in parts[1:]:
            pm = _PARAMETER.fullmatch(param)
            if not pm or pm.group(1).lower() in seen:
                match = None
                break
            seen.add(pm.group(1).lower())
            params.append(f"{pm.group(1)}={pm.group(2)}")
    if match:
        base = f"{match.group(1)}/{match.group(2)}".lower()
        content_type = "; ".join([base] + params)
        if base in INLINE_MEDIA_TYPES:
            disposition = "inline"
    filename = metadata.get("filename")
    if filename is not None:
        disposition += _filename_parameter(filename)
    return content_type.encode("ascii"), disposition.encode("ascii")


def _filename_parameter(filename: str) -> str:
    cleaned = "".join(c for c in filename if c.isprintable())
    ascii_name = cleaned.encode("ascii", "replace").decode("ascii")
    escaped = ascii_name.replace("\\", "\\\\").replace('"', '\\"')
    parameter = f';filename="{escaped}"'
    if ascii_name != cleaned:
        utf8 = quote(cleaned.encode("utf-8", "replace"), safe="")
        parameter += f";filename*=UTF-8''{utf8}"
    return parameter


# Dates ---------------------------------------------------------------------

def http_date(when: float | None = None) -> bytes:
    """An IMF-fixdate, as C{Upload-Expires} needs."""
    return formatdate(time.time() if when is None else when, usegmt=True).encode("ascii")
