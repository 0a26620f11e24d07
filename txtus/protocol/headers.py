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
from typing import Any
from urllib.parse import quote, unquote_to_bytes, urlsplit

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
    The C{Upload-Metadata} form of C{metadata}.  An empty value is written
    as the bare key (the spec allows omitting the space; tusd's trailing
    space would end the header value in whitespace, which HTTP forbids).
    """
    pairs = []
    for key, value in metadata.items():
        if not _METADATA_KEY.fullmatch(key):
            continue  # not representable (only a hook could have set it)
        try:
            raw = value.encode("utf-8", "surrogateescape")
        except UnicodeEncodeError:
            # A lone surrogate that no header ever produced (a hook's or an
            # old .info file's value): answer with a stand-in, not a 500.
            raw = value.encode("utf-8", "replace")
        encoded = base64.b64encode(raw).decode("ascii")
        pairs.append(f"{key} {encoded}" if encoded else key)
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

def content_type(request: Any) -> bytes | None:
    """
    The request's one C{Content-Type} value, or L{None}.

    @raise InvalidRequest: it was sent more than once.  Readers that take
        the first and readers that take the last would disagree about
        such a request (and did, before this was the one place that reads
        it), so it is refused rather than guessed at.
    """
    values = request.requestHeaders.getRawHeaders(b"content-type")
    if not values:
        return None
    if len(values) > 1:
        raise errors.InvalidRequest("more than one Content-Type header")
    return values[0]


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


_PREFIX = re.compile(r"(/[A-Za-z0-9._~-]+)*/?")


def forwarded_prefix(x_prefix: bytes | None) -> str:
    """
    The path prefix a reverse proxy removed before forwarding
    (C{X-Forwarded-Prefix: /uploads}), without a trailing slash; C{""}
    when there is none, or when it is anything but plain path segments.
    """
    if not x_prefix:
        return ""
    prefix = x_prefix.decode("latin-1").split(",")[0].strip()
    if not _PREFIX.fullmatch(prefix) or any(s in (".", "..") for s in prefix.split("/")):
        return ""
    return prefix.rstrip("/")


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


_RANGE = re.compile(rb"bytes[ \t]*=[ \t]*([0-9]{0,19})[ \t]*-[ \t]*([0-9]{0,19})", re.IGNORECASE)


def parse_range(raw: bytes | None, size: int) -> tuple[int, int] | None:
    """
    The single byte range a GET asks for, as tusd serves them through Go's
    C{http.ServeContent}: C{bytes=a-b}, C{bytes=a-} or C{bytes=-n} (the
    last C{n} bytes), the end clipped to C{size}.

    @return: C{(start, length)}, or L{None} to serve the whole upload: no
        C{Range}, or one this server does not do (several ranges, another
        unit, a malformed or backwards range), which RFC 9110 lets a
        server ignore.
    @raise RangeNotSatisfiable: a well-formed range that starts at or past
        C{size} (or asks for the last 0 bytes); 416 with
        C{Content-Range: bytes */size}.
    """
    if raw is None:
        return None
    match = _RANGE.fullmatch(raw.strip())
    if match is None:
        return None
    first, last = match.groups()
    if first:
        start = int(first)
        if last and int(last) < start:
            return None
        if start >= size:
            raise errors.RangeNotSatisfiable(headers={"Content-Range": f"bytes */{size}"})
        end = min(int(last), size - 1) if last else size - 1
        return start, end - start + 1
    if not last:
        return None
    suffix = int(last)
    if suffix == 0 or size == 0:
        raise errors.RangeNotSatisfiable(headers={"Content-Range": f"bytes */{size}"})
    start = max(0, size - suffix)
    return start, size - start


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


# IETF resumable uploads draft: structured fields (RFC 8941) ---------------

PARTIAL_UPLOAD = b"application/partial-upload"
IETF_INTEROP_VERSIONS = range(3, 9)

_SF_KEY_START = frozenset("abcdefghijklmnopqrstuvwxyz*")
_SF_KEY_CHARS = _SF_KEY_START | frozenset("0123456789_-.")
_SF_TCHARS = frozenset("!#$%&'*+-.^_`|~:/0123456789"
                       "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ")
_SF_ALPHA = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ")
_SF_BASE64 = re.compile(r"[A-Za-z0-9+/=]*")


class StructuredFieldError(ValueError):
    """A value that is not a valid RFC 8941 structured field."""


class SFToken(str):
    """An RFC 8941 Token (distinct from a String)."""


class _SFParser:
    """
    The parsing algorithms of RFC 8941 section 4.2, over one field value.
    Each method consumes what it parses from C{self.text} at C{self.pos}.
    """

    def __init__(self, raw: bytes) -> None:
        try:
            self.text = raw.decode("ascii")
        except UnicodeDecodeError:
            raise StructuredFieldError("structured fields are ASCII") from None
        self.pos = 0
        self._skip(" ")

    def _peek(self) -> str:
        return self.text[self.pos] if self.pos < len(self.text) else ""

    def _skip(self, chars: str) -> None:
        while self._peek() and self._peek() in chars:
            self.pos += 1

    def end(self) -> None:
        self._skip(" ")
        if self.pos != len(self.text):
            raise StructuredFieldError(f"unexpected {self.text[self.pos:self.pos + 20]!r}")

    def item(self) -> tuple[Any, dict[str, Any]]:
        return self.bare_item(), self.parameters()

    def item_or_inner_list(self) -> tuple[Any, dict[str, Any]]:
        if self._peek() != "(":
            return self.item()
        self.pos += 1
        items = []
        while True:
            self._skip(" ")
            if self._peek() == ")":
                self.pos += 1
                return items, self.parameters()
            items.append(self.item())
            if self._peek() not in (" ", ")"):
                raise StructuredFieldError("malformed inner list")

    def parameters(self) -> dict[str, Any]:
        params: dict[str, Any] = {}
        while self._peek() == ";":
            self.pos += 1
            self._skip(" ")
            key = self.key()
            value: Any = True
            if self._peek() == "=":
                self.pos += 1
                value = self.bare_item()
            params[key] = value
        return params

    def key(self) -> str:
        start = self.pos
        if self._peek() == "" or self._peek() not in _SF_KEY_START:
            raise StructuredFieldError("malformed key")
        while self._peek() and self._peek() in _SF_KEY_CHARS:
            self.pos += 1
        return self.text[start:self.pos]

    def bare_item(self) -> Any:
        first = self._peek()
        if first == "-" or first.isdigit():
            return self._number()
        if first == '"':
            return self._string()
        if first == "*" or (first and first in _SF_ALPHA):
            start = self.pos
            self.pos += 1
            while self._peek() and self._peek() in _SF_TCHARS:
                self.pos += 1
            return SFToken(self.text[start:self.pos])
        if first == ":":
            end = self.text.find(":", self.pos + 1)
            encoded = self.text[self.pos + 1:end] if end >= 0 else None
            if encoded is None or not _SF_BASE64.fullmatch(encoded):
                raise StructuredFieldError("malformed byte sequence")
            self.pos = end + 1
            try:
                return base64.b64decode(encoded + "=" * (-len(encoded) % 4))
            except (binascii.Error, ValueError):
                raise StructuredFieldError("malformed byte sequence") from None
        if first == "?":
            value = self.text[self.pos + 1:self.pos + 2]
            if value not in ("0", "1"):
                raise StructuredFieldError("malformed boolean")
            self.pos += 2
            return value == "1"
        raise StructuredFieldError("malformed item")

    def _number(self) -> int | float:
        start = self.pos
        if self._peek() == "-":
            self.pos += 1
        digits_start = self.pos
        while self._peek().isdigit() or (self._peek() == "." and "." not in self.text[digits_start:self.pos]):
            self.pos += 1
        number = self.text[digits_start:self.pos]
        if not number or not number[0].isdigit():
            raise StructuredFieldError("malformed number")
        sign = -1 if self.pos > digits_start and self.text[start] == "-" else 1
        if "." not in number:
            if len(number) > 15:
                raise StructuredFieldError("integer too long")
            return sign * int(number)
        whole, _, fraction = number.partition(".")
        if len(whole) > 12 or not 1 <= len(fraction) <= 3:
            raise StructuredFieldError("malformed decimal")
        return sign * float(number)

    def _string(self) -> str:
        self.pos += 1
        out = []
        while True:
            char = self._peek()
            if char == "":
                raise StructuredFieldError("unterminated string")
            self.pos += 1
            if char == '"':
                return "".join(out)
            if char == "\\":
                escaped = self._peek()
                if escaped not in ('"', "\\") or escaped == "":
                    raise StructuredFieldError("bad escape in string")
                self.pos += 1
                out.append(escaped)
            elif " " <= char <= "~":
                out.append(char)
            else:
                raise StructuredFieldError("bad character in string")


def _joined(values: list[bytes] | bytes) -> bytes:
    # Several field lines of one structured field are one comma-joined value.
    return b", ".join(values) if isinstance(values, list) else values


def parse_sf_item(values: list[bytes] | bytes) -> tuple[Any, dict[str, Any]]:
    """
    Parse an RFC 8941 Item field: C{(bare value, parameters)}.  Integers
    are L{int}, booleans L{bool}, tokens L{SFToken}.

    @raise StructuredFieldError: not a valid Item.
    """
    parser = _SFParser(_joined(values))
    result = parser.item()
    parser.end()
    return result


def parse_sf_dictionary(values: list[bytes] | bytes) -> dict[str, tuple[Any, dict[str, Any]]]:
    """
    Parse an RFC 8941 Dictionary field (such as C{Upload-Limit}):
    C{{key: (value, parameters)}}, where a value is a bare item or, for an
    inner list, a list of C{(item, parameters)}.

    @raise StructuredFieldError: not a valid Dictionary.
    """
    parser = _SFParser(_joined(values))
    members: dict[str, tuple[Any, dict[str, Any]]] = {}
    while parser.pos < len(parser.text):
        key = parser.key()
        if parser._peek() == "=":
            parser.pos += 1
            members[key] = parser.item_or_inner_list()
        else:
            members[key] = (True, parser.parameters())
        parser._skip(" \t")
        if parser.pos == len(parser.text):
            break
        if parser._peek() != ",":
            raise StructuredFieldError("expected a comma between dictionary members")
        parser.pos += 1
        parser._skip(" \t")
        if parser.pos == len(parser.text):
            raise StructuredFieldError("trailing comma")
    return members


def format_sf_dictionary(members: dict[str, int | bool]) -> bytes:
    """Serialise a Dictionary of integers and booleans (RFC 8941 4.1.2)."""
    parts = []
    for key, value in members.items():
        if not key or key[0] not in _SF_KEY_START or any(c not in _SF_KEY_CHARS for c in key):
            raise ValueError(f"not a structured field key: {key!r}")
        if value is True:
            parts.append(key)
        elif isinstance(value, bool):
            parts.append(f"{key}=?0")
        else:
            if abs(value) >= 10**15:
                raise ValueError("integer out of range for a structured field")
            parts.append(f"{key}={int(value)}")
    return ", ".join(parts).encode("ascii")


def sf_boolean(value: bool) -> bytes:
    return b"?1" if value else b"?0"


def parse_sf_boolean(values: list[bytes] | None, name: str) -> bool | None:
    """
    An SF Boolean field such as C{Upload-Complete}: L{None} when absent.

    @raise InvalidRequest: present but not exactly a Boolean (the draft
        says to ignore such a field; for a field the request needs,
        ignoring it and refusing the request come to the same, and a
        precise message helps).
    """
    if values is None:
        return None
    try:
        value, _ = parse_sf_item(values)
    except StructuredFieldError as e:
        raise errors.InvalidRequest(f"invalid {name} header: {e}") from None
    if not isinstance(value, bool):
        raise errors.InvalidRequest(f"invalid {name} header: not ?0 or ?1")
    return value


def parse_sf_non_negative(values: list[bytes] | None, error: type[errors.TusError]) -> int | None:
    """
    A non-negative SF Integer field (C{Upload-Offset}, C{Upload-Length}):
    L{None} when absent.

    @raise error: present but not a non-negative Integer.
    """
    if values is None:
        return None
    try:
        value, _ = parse_sf_item(values)
    except StructuredFieldError:
        raise error() from None
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise error()
    return value


def parse_interop_version(raw: bytes | None) -> int | None:
    """
    The supported C{Upload-Draft-Interop-Version} of a request, or L{None}
    when it is absent or names a version we do not speak (such requests
    are handled as tus 1.0, as tusd does).
    """
    if raw is None:
        return None
    try:
        value, params = parse_sf_item(raw)
    except StructuredFieldError:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value not in IETF_INTEROP_VERSIONS:
        return None
    return value


_DISPOSITION_PARAM = re.compile(
    r';[ \t]*([!#$%&\'*+.^_`|~0-9A-Za-z-]+)[ \t]*=[ \t]*("(?:[^"\\]|\\.)*"|[^;" \t]*)[ \t]*')
_EXT_VALUE = re.compile(r"(UTF-8|ISO-8859-1)'[A-Za-z0-9-]*'((?:%[0-9A-Fa-f]{2}|[!#$&+.^_`|~0-9A-Za-z-])*)",
                        re.IGNORECASE)


def content_disposition_filename(raw: bytes | None) -> str | None:
    """
    The file name a C{Content-Disposition} value carries (RFC 6266):
    C{filename*} preferred, then C{filename}; L{None} when there is none or
    the value does not parse (it is only a hint for the upload's metadata).
    """
    if raw is None:
        return None
    text = raw.decode("latin-1").strip()
    kind, sep, rest = text.partition(";")
    if not kind.strip() or not re.fullmatch(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+", kind.strip()):
        return None
    params: dict[str, str] = {}
    rest = sep + rest
    position = 0
    while position < len(rest):
        match = _DISPOSITION_PARAM.match(rest, position)
        if match is None:
            return None
        params.setdefault(match.group(1).lower(), match.group(2))
        position = match.end()
    extended = params.get("filename*")
    if extended is not None:
        match = _EXT_VALUE.fullmatch(extended)
        if match is not None:
            charset = "utf-8" if match.group(1).upper() == "UTF-8" else "latin-1"
            try:
                return unquote_to_bytes(match.group(2)).decode(charset)
            except UnicodeDecodeError:
                pass
    plain = params.get("filename")
    if plain is None:
        return None
    if plain.startswith('"'):
        return re.sub(r"\\(.)", r"\1", plain[1:-1])
    return plain
