"""
Property-based and example tests for L{txtus.protocol.headers}, the one place raw
header bytes become Python values.

The properties say what must hold for any input a client can send: a parser
either returns a clean value or raises the L{txtus.errors.TusError} it
documents (anything else would be a 500), valid values round-trip, and no
value that reaches a response header or a path can carry CR, LF, NUL, a
slash or other characters that could inject a header or leave a directory.
The examples mirror tusd's C{TestParseMetadataHeader} and
C{TestFilterContentType} where txtus agrees, and pin where it is stricter.
"""

from __future__ import annotations

import base64
import os
import re
import string
from urllib.parse import urlsplit

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from txtus import errors
from txtus.protocol import headers

# No per-example deadline: these are pure functions, and a loaded CI machine
# should not turn a slow example into a failure.
props = settings(deadline=None)

MAX = headers.MAX_INTEGER

# Characters that must never reach a Location, a Content-Type or a path.
_INJECTION = set("\r\n\x00 \t/\\@?#\"',;<>") | {chr(c) for c in range(0x20)} | {"\x7f"}

metadata_keys = st.text(
    alphabet=st.characters(min_codepoint=0x21, max_codepoint=0x7E, exclude_characters=","),
    min_size=1, max_size=20)
header_bytes = st.one_of(
    st.binary(max_size=200),
    st.text(max_size=100).map(lambda t: t.encode("utf-8")),
    st.text(alphabet=string.printable, max_size=100).map(str.encode),
)


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


# parse_non_negative ----------------------------------------------------------

@props
@given(st.integers(min_value=0, max_value=MAX))
@example(0)
@example(MAX)
def test_non_negative_round_trip(number):
    assert headers.parse_non_negative(str(number).encode(), errors.InvalidOffset) == number


@props
@given(st.integers(min_value=MAX + 1, max_value=10**40))
@example(MAX + 1)
@example(10**19)
def test_non_negative_rejects_overflow(number):
    with pytest.raises(errors.InvalidUploadLength):
        headers.parse_non_negative(str(number).encode(), errors.InvalidUploadLength)


@pytest.mark.parametrize("raw", [
    None, b"", b"+5", b"-5", b"-0", b" 5", b"5 ", b"5\r\n", b"0x10", b"1e3", b"1_000",
    b"5.0", b"\xd9\xa3", "\u0663".encode(), b"\x00", b"12 34", b"0" * 20,
])
def test_non_negative_rejects(raw):
    with pytest.raises(errors.InvalidOffset):
        headers.parse_non_negative(raw, errors.InvalidOffset)


@props
@given(header_bytes)
def test_non_negative_any_input(raw):
    try:
        number = headers.parse_non_negative(raw, errors.InvalidOffset)
    except errors.InvalidOffset:
        assert not (raw.isdigit() and raw.isascii() and len(raw) <= 19 and int(raw) <= MAX)
    else:
        assert re.fullmatch(rb"[0-9]+", raw)
        assert 0 <= number <= MAX and number == int(raw)


# parse_creation_length -------------------------------------------------------

@props
@given(st.integers(min_value=0, max_value=MAX), st.sampled_from([b"", b" ", b"\t"]))
def test_creation_length_round_trip(number, pad):
    raw = pad + str(number).encode() + pad
    assert headers.parse_creation_length(raw, None) == number


def test_creation_length_defer():
    assert headers.parse_creation_length(None, b"1") is None
    with pytest.raises(errors.InvalidUploadLengthDefer):
        headers.parse_creation_length(None, b"0")
    with pytest.raises(errors.AmbiguousUploadLength):
        headers.parse_creation_length(b"5", b"1")
    with pytest.raises(errors.AmbiguousUploadLength):
        headers.parse_creation_length(None, None)
    with pytest.raises(errors.InvalidUploadLength):
        headers.parse_creation_length(b"-1", None)


@props
@given(st.one_of(st.none(), header_bytes), st.one_of(st.none(), header_bytes))
def test_creation_length_any_input(length, defer):
    try:
        result = headers.parse_creation_length(length, defer)
    except (errors.AmbiguousUploadLength, errors.InvalidUploadLengthDefer, errors.InvalidUploadLength):
        return
    if result is None:
        assert length is None and defer.strip() == b"1"
    else:
        assert defer is None and 0 <= result <= MAX


# Upload-Metadata -------------------------------------------------------------

@props
@given(st.dictionaries(metadata_keys, st.binary(max_size=64), max_size=8))
def test_metadata_round_trip_bytes(values):
    """Any bytes survive, as UTF-8 text or through surrogate escapes."""
    raw = ",".join(f"{k} {b64(v)}" for k, v in values.items()).encode("ascii")
    parsed = headers.parse_metadata(raw)
    assert {k: v.encode("utf-8", "surrogateescape") for k, v in parsed.items()} == values
    assert headers.parse_metadata(headers.encode_metadata(parsed)) == parsed


@props
@given(st.dictionaries(metadata_keys, st.text(max_size=32), max_size=8))
def test_metadata_round_trip_text(values):
    encoded = headers.encode_metadata(values)
    assert encoded.isascii() and b"\r" not in encoded and b"\n" not in encoded
    assert headers.parse_metadata(encoded) == values


@props
@given(st.dictionaries(metadata_keys, st.binary(max_size=16), min_size=1, max_size=5),
       st.sampled_from([" ", "  ", "\t", " \t "]))
def test_metadata_tolerates_spacing_and_blank_pairs(values, space):
    raw = ("," + space).join(f"{k} {b64(v)}" for k, v in values.items()) + ",,"
    parsed = headers.parse_metadata((space + raw + space).encode("ascii"))
    assert {k: v.encode("utf-8", "surrogateescape") for k, v in parsed.items()} == values


@props
@given(header_bytes)
@example(b"k1 INVALID")
@example(b"k\xff dGVzdA==")
@example("k d\u00e9Q=".encode())
@example(b"k dGVzdA==\x00")
def test_metadata_garbage_only_invalid_metadata(raw):
    try:
        parsed = headers.parse_metadata(raw)
    except errors.InvalidMetadata as e:
        assert e.status == 400
        assert e.body().startswith(b"ERR_INVALID_METADATA: ")
        return
    for key in parsed:
        assert re.fullmatch(r"[!-+\--~]+", key)
    assert headers.parse_metadata(headers.encode_metadata(parsed)) == parsed


@props
@given(metadata_keys, st.binary(max_size=8), st.binary(max_size=8))
def test_metadata_duplicate_keys_rejected(key, first, second):
    raw = f"{key} {b64(first)},{key} {b64(second)}".encode("ascii")
    with pytest.raises(errors.InvalidMetadata):
        headers.parse_metadata(raw)


# tusd TestParseMetadataHeader, where txtus agrees.
@pytest.mark.parametrize("raw, expected", [
    (None, {}),
    (b"", {}),
    (b"k1 aGVsbG8=", {"k1": "hello"}),
    (b"k1 aGVsbG8=, k2, k3 , k4 d29ybGQ=", {"k1": "hello", "k2": "", "k3": "", "k4": "world"}),
    (b"k1 aGVsbG8=,", {"k1": "hello"}),
])
def test_metadata_tusd_examples(raw, expected):
    assert headers.parse_metadata(raw) == expected


# Where tusd silently drops or overwrites, txtus answers 400.
@pytest.mark.parametrize("raw", [
    b"k1 INVALID",              # tusd: {}
    b"k1 aGVsbG8=,k1 d29ybGQ=",  # tusd: the last one wins
    b"k1 aGVsbG8",              # missing padding
    b"k1 aGVs bG8=",            # a space inside the value
    "k\u00e9 aGVsbG8=".encode(),
])
def test_metadata_stricter_than_tusd(raw):
    with pytest.raises(errors.InvalidMetadata):
        headers.parse_metadata(raw)


def test_encode_metadata_empty_value_keeps_key():
    assert headers.encode_metadata({"a": "", "b": "hi"}) == b"a,b aGk="


# Upload-Concat ---------------------------------------------------------------

upload_ids = st.text(alphabet=string.ascii_letters + string.digits + "_-", min_size=1, max_size=40)


@props
@given(st.lists(upload_ids, min_size=1, max_size=5), st.sampled_from(["", "http://example.org"]))
def test_concat_final_round_trip(ids, origin):
    urls = [f"{origin}/files/{i}" for i in ids]
    assert headers.parse_concat(("final;" + " ".join(urls)).encode()) == ("final", urls)


def test_concat_examples():
    assert headers.parse_concat(None) is None
    assert headers.parse_concat(b"partial") == ("partial", [])
    assert headers.parse_concat(b" partial ") == ("partial", [])
    assert headers.parse_concat(b"final; /files/a  /files/b") == ("final", ["/files/a", "/files/b"])
    for raw in [b"", b"final", b"final;", b"final; ", b"Partial", b"partial;x", b"FINAL;/files/a",
                b"final;http://[::1", "final;http://a\uff03b/".encode("utf-8"), b"final;/files/\x00a",
                b"final;/files/\xe9"]:
        with pytest.raises(errors.InvalidConcat):
            headers.parse_concat(raw)


@props
@given(header_bytes.map(lambda b: b"final;" + b))
@example(b"final;http://[::1")
@example(b"final;http://[")
def test_concat_any_input(raw):
    try:
        result = headers.parse_concat(raw)
    except errors.InvalidConcat:
        return
    kind, urls = result
    assert kind == "final" and urls
    for url in urls:
        assert re.fullmatch(r"[!-~]+", url)
        urlsplit(url)  # must not raise: handlers split every URL


@props
@given(header_bytes)
def test_concat_any_header(raw):
    try:
        result = headers.parse_concat(raw)
    except errors.InvalidConcat:
        return
    assert result is None or result[0] in ("partial", "final")


# Upload-Checksum -------------------------------------------------------------

SUPPORTED = frozenset({"sha1", "sha256", "md5", "crc32"})


@props
@given(st.sampled_from(sorted(SUPPORTED)), st.binary(min_size=1, max_size=64))
def test_checksum_round_trip(algorithm, digest):
    raw = f"{algorithm} {b64(digest)}".encode("ascii")
    assert headers.parse_checksum(raw, SUPPORTED) == (algorithm, digest)


def test_checksum_examples():
    with pytest.raises(errors.UnsupportedChecksumAlgorithm):
        headers.parse_checksum(b"sha3 aGk=", SUPPORTED)
    for raw in [b"", b"sha1", b"sha1 ", b"sha1 not base64!", b"SHA1 aGk=", b"sha1  aGk=",
                b"sha1\taGk=", b"sha1 aGk", b"\xffsha1 aGk="]:
        with pytest.raises(errors.InvalidChecksum):
            headers.parse_checksum(raw, SUPPORTED)


@props
@given(header_bytes)
def test_checksum_any_input(raw):
    try:
        algorithm, digest = headers.parse_checksum(raw, SUPPORTED)
    except (errors.InvalidChecksum, errors.UnsupportedChecksumAlgorithm) as e:
        assert e.status == 400
        return
    assert algorithm in SUPPORTED and isinstance(digest, bytes)


# Hosts and Forwarded ---------------------------------------------------------

def assert_safe_host(host):
    assert host.isascii() and host.isprintable()
    assert not (set(host) & _INJECTION), host
    # It must be read back as exactly this host[:port] inside a URL.
    assert urlsplit(f"http://{host}/files/").netloc == host


@props
@given(st.text(max_size=60))
@example("example.com\r\nX-Evil: 1")
@example("evil.com/path")
@example("user@evil.com")
@example("evil.com:80 x")
@example("evil.com\n")
@example("[::1]/x")
@example("evil.com#")
@example("evil.com?")
@example("\u212a.com")  # KELVIN SIGN, folds to k
def test_clean_host_never_returns_injection(host):
    cleaned = headers.clean_host(host)
    if cleaned is not None:
        assert cleaned == host
        assert_safe_host(cleaned)


@pytest.mark.parametrize("host", ["example.com", "example.com:8080", "127.0.0.1:1080", "[::1]", "[::1]:1080",
                                  "localhost"])
def test_clean_host_accepts(host):
    assert headers.clean_host(host) == host


forwarded_values = st.one_of(
    st.none(),
    header_bytes,
    st.lists(st.sampled_from([
        "host=", "host=\"", "proto=", "for=", ";", ",", " ", "\"", "http", "https", "ftp", "example.org",
        ":8080", "/", "@", "\r\n", "\x00", "[::1]", "evil", "HOST=", "Proto=", "javascript:",
    ]), max_size=12).map(lambda parts: "".join(parts).encode("latin-1")),
)


@props
@given(forwarded_values, forwarded_values, forwarded_values)
def test_forwarded_origin_never_returns_injection(forwarded, x_host, x_proto):
    host, scheme = headers.forwarded_origin(forwarded, x_host, x_proto)
    assert scheme in (None, "http", "https")
    if host is not None:
        assert_safe_host(host)


@pytest.mark.parametrize("forwarded, x_host, x_proto, expected", [
    (b"for=192.0.2.60;proto=https;host=example.org", None, None, ("example.org", "https")),
    (b'host="example.org:8443";proto=HTTPS', None, None, ("example.org:8443", "https")),
    (b"host=a.example, host=b.example", None, None, ("a.example", None)),
    (None, b"x.example, y.example", b"https", ("x.example", "https")),
    (b"host=f.example", b"x.example", b"http", ("f.example", "http")),
    (b"proto=ftp", None, b"javascript", (None, None)),
    (b"host=evil.com/path", None, None, (None, None)),
    (b'host="evil.com x";proto=https', None, None, (None, "https")),
    (b'host="[::1]:8080"', None, None, ("[::1]:8080", None)),
    (b'host="evil.com\r\nX-Injected: 1"', None, None, (None, None)),
    (b"host=user@evil.com", b"good.example", None, ("good.example", None)),
    (None, b"evil.com/x", None, (None, None)),
])
def test_forwarded_origin_examples(forwarded, x_host, x_proto, expected):
    assert headers.forwarded_origin(forwarded, x_host, x_proto) == expected


@props
@given(st.text(alphabet=string.ascii_lowercase + ".", min_size=1, max_size=20),
       st.sampled_from(["http", "https"]), st.sampled_from(["", ":80", ":443", ":8080"]))
def test_strip_default_port(name, scheme, port):
    stripped = headers.strip_default_port(name + port, scheme)
    default = {"http": ":80", "https": ":443"}[scheme]
    assert stripped == (name if port == default else name + port)


# Downloads -------------------------------------------------------------------

_DISPOSITION = re.compile(
    r"(inline|attachment)"
    r'(;filename="(?:[ !#-\[\]-~]|\\["\\])*"'
    r"(;filename\*=UTF-8''[A-Za-z0-9%._~-]*)?)?")

filetypes = st.one_of(
    st.text(max_size=60),
    st.sampled_from(sorted(headers.INLINE_MEDIA_TYPES) + ["text/html", "image/svg+xml", "application/zip"]),
    st.tuples(
        st.sampled_from(sorted(headers.INLINE_MEDIA_TYPES) + ["Text/HTML", "application/xhtml+xml"]),
        st.lists(st.tuples(st.sampled_from(["charset", "codecs", "q", "CHARSET"]),
                           st.one_of(st.text(max_size=10), st.sampled_from(["utf-8", '"a b"', '"\\""']))),
                 max_size=3),
    ).map(lambda t: t[0] + "".join(f"; {k}={v}" for k, v in t[1])),
)


@props
@given(st.fixed_dictionaries({}, optional={"filetype": filetypes, "filename": st.text(max_size=60)}))
@example({"filetype": 'text/plain; charset="\u00e9"'})
@example({"filetype": "text/plain\r\nX-Evil: 1"})
@example({"filetype": "text/html", "filename": 'a"\r\n;b\\.html'})
@example({"filename": "\udcff\u2028\x85\x00evil"})
def test_download_headers_safe(metadata):
    content_type, disposition = headers.download_headers(metadata)
    for value in (content_type, disposition):
        assert value.isascii()
        assert not set(value) & {0, 10, 13}
        assert all(32 <= c < 127 for c in value)
    assert _DISPOSITION.fullmatch(disposition.decode()), disposition
    base = content_type.split(b";")[0].decode()
    assert base == base.lower()
    if disposition.startswith(b"inline"):
        assert base in headers.INLINE_MEDIA_TYPES
    else:
        assert base not in headers.INLINE_MEDIA_TYPES
    if content_type != b"application/octet-stream":
        assert metadata["filetype"].split(";")[0].strip().lower() == base
    assert (b";filename=" in disposition) == ("filename" in metadata)


# tusd TestFilterContentType.
@pytest.mark.parametrize("metadata, content_type, disposition", [
    ({}, b"application/octet-stream", b"attachment"),
    ({"filetype": "image/png"}, b"image/png", b"inline"),
    ({"filetype": "application/zip"}, b"application/zip", b"attachment"),
    ({"filetype": "audio/ogg; codecs=opus"}, b"audio/ogg; codecs=opus", b"inline"),
    ({"filetype": "text/plain; invalid-param"}, b"application/octet-stream", b"attachment"),
    ({"filetype": "text/plain; charset=utf-8; charset=us-ascii"}, b"application/octet-stream", b"attachment"),
    ({"filetype": "invalid-mime-type"}, b"application/octet-stream", b"attachment"),
    ({"filetype": "text/html"}, b"text/html", b"attachment"),
    ({"filetype": "image/svg+xml"}, b"image/svg+xml", b"attachment"),
    ({"filetype": "Image/PNG"}, b"image/png", b"inline"),
    ({"filename": "pet.jpg"}, b"application/octet-stream", b'attachment;filename="pet.jpg"'),
    ({"filetype": "image/jpeg", "filename": "pet.jpg"}, b"image/jpeg", b'inline;filename="pet.jpg"'),
    ({"filename": 'a"b\\c'}, b"application/octet-stream", b'attachment;filename="a\\"b\\\\c"'),
    ({"filename": "caf\u00e9.txt"}, b"application/octet-stream",
     b"attachment;filename=\"caf?.txt\";filename*=UTF-8''caf%C3%A9.txt"),
    ({"filename": "a\r\nSet-Cookie: x"}, b"application/octet-stream", b'attachment;filename="aSet-Cookie: x"'),
])
def test_download_headers_tusd_examples(metadata, content_type, disposition):
    assert headers.download_headers(metadata) == (content_type, disposition)


# Upload IDs and media types --------------------------------------------------

@props
@given(st.one_of(st.text(max_size=140), upload_ids, st.binary(max_size=50).map(lambda b: b.decode("latin-1"))))
@example("..")
@example("a/../b")
@example("a\x00")
@example("%2e%2e")
@example("x" * 129)
@example("a\n")
@example("\uff41")  # FULLWIDTH a
def test_upload_id_cannot_leave_directory(upload_id):
    valid = headers.is_valid_upload_id(upload_id)
    assert valid == bool(re.fullmatch(r"[A-Za-z0-9_-]{1,128}", upload_id, re.ASCII))
    if valid:
        assert not set(upload_id) & set("./\\%\x00\r\n ")
        base = os.path.abspath("uploads")
        path = os.path.join(base, upload_id)
        assert os.path.dirname(os.path.normpath(path)) == base
        assert os.path.basename(path) == upload_id


@pytest.mark.parametrize("raw, expected", [
    (None, b""), (b"application/offset+octet-stream", headers.OFFSET_OCTET_STREAM),
    (b"Application/Offset+Octet-Stream ; charset=x", headers.OFFSET_OCTET_STREAM),
    (b"application/octet-stream", b"application/octet-stream"),
])
def test_media_type(raw, expected):
    assert headers.media_type(raw) == expected


# IETF draft: RFC 8941 structured fields and Content-Disposition --------------

sf_keys = st.from_regex(r"[a-z*][a-z0-9_.*-]{0,10}", fullmatch=True)


@props
@given(header_bytes)
@example(b"(")
@example(b"a=(1 2")
@example(b"a=:YWJj")
@example(b'"unterminated')
@example(b"-")
@example(b"1.")
@example(b"1234567890123456")
@example(b"a=1,")
def test_sf_parsers_only_raise_structured_field_error(raw):
    for parse in (headers.parse_sf_item, headers.parse_sf_dictionary):
        try:
            parse(raw)
        except headers.StructuredFieldError:
            pass


@props
@given(st.dictionaries(sf_keys, st.one_of(st.booleans(), st.integers(-(10**15) + 1, 10**15 - 1)), max_size=6))
def test_sf_dictionary_round_trip(members):
    parsed = headers.parse_sf_dictionary(headers.format_sf_dictionary(members))
    assert {key: value for key, (value, params) in parsed.items()} == members
    assert all(type(parsed[k][0]) is type(v) for k, v in members.items())


@props
@given(st.integers(min_value=0, max_value=10**15 - 1))
def test_sf_non_negative_round_trip(number):
    assert headers.parse_sf_non_negative([b"%d" % number], errors.InvalidOffset) == number


@pytest.mark.parametrize("raw", [b"-1", b"?1", b"1.5", b"1000000000000000", b"abc", b'"5"', b"5,6", b""])
def test_sf_non_negative_rejects(raw):
    with pytest.raises(errors.InvalidOffset):
        headers.parse_sf_non_negative([raw], errors.InvalidOffset)


@props
@given(st.one_of(st.none(), header_bytes))
def test_sf_boolean_and_interop_version_any_input(raw):
    version = headers.parse_interop_version(raw)
    assert version is None or version in headers.IETF_INTEROP_VERSIONS
    try:
        value = headers.parse_sf_boolean(None if raw is None else [raw], "Upload-Complete")
    except errors.InvalidRequest as e:
        assert e.status == 400
    else:
        assert value is None if raw is None else isinstance(value, bool)


def test_sf_boolean_examples():
    assert headers.parse_sf_boolean([b"?1"], "Upload-Complete") is True
    assert headers.parse_sf_boolean([b"?0"], "Upload-Complete") is False
    assert headers.parse_sf_boolean(None, "Upload-Complete") is None
    for raw in [b"?2", b"1", b"true", b"?1, ?0"]:
        with pytest.raises(errors.InvalidRequest):
            headers.parse_sf_boolean([raw], "Upload-Complete")


@props
@given(st.one_of(st.none(), header_bytes))
@example(b'attachment; filename="a')
@example(b"attachment; filename*=UTF-8''%ff")
@example(b"attachment; filename*=UTF-8''%")
def test_content_disposition_filename_any_input(raw):
    name = headers.content_disposition_filename(raw)
    assert name is None or isinstance(name, str)


@props
@given(st.text(min_size=1, max_size=40))
def test_content_disposition_filename_round_trip(name):
    from urllib.parse import quote
    raw = f"attachment; filename=\"x\"; filename*=UTF-8''{quote(name.encode('utf-8', 'surrogatepass'), safe='')}"
    expected = name if not any("\ud800" <= c <= "\udfff" for c in name) else None
    result = headers.content_disposition_filename(raw.encode("ascii"))
    assert result == (expected if expected is not None else "x")


# encode_metadata must never fail on what a hook or an old .info may hold.
@props
@given(st.dictionaries(metadata_keys, st.text(alphabet=st.characters(min_codepoint=0xD800, max_codepoint=0xDFFF)
                                                | st.characters(), max_size=10), max_size=5))
def test_encode_metadata_any_text(values):
    encoded = headers.encode_metadata(values)
    assert encoded.isascii() and not set(encoded) & {0, 10, 13}
    assert set(headers.parse_metadata(encoded)) == set(values)


def test_encode_metadata_skips_keys_it_cannot_represent():
    assert headers.encode_metadata({"ok": "a", "bad key": "b", "k,": "c", "\u00e9": "d", "x\r\ny": "e"}) == b"ok YQ=="
