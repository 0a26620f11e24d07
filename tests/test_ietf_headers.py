"""
The IETF draft's header parsing in txtus.protocol.headers: RFC 8941 structured
fields (examples from the RFC, strictness, round trips with hypothesis),
Content-Disposition file names, interop versions; and the CLI switches.
"""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st
from twisted.internet.task import Clock
from twisted.python import usage

from txtus import errors
from txtus.protocol import headers as h
from txtus.tap import Options, build_config


@pytest.mark.parametrize("raw,expected", [
    (b"?1", True), (b"?0", False), (b"  ?1  ", True), (b"?1;a=1;b", True), ([b"?0"], False),
])
def test_booleans(raw, expected):
    assert h.parse_sf_boolean(raw if isinstance(raw, list) else [raw], "X") is expected


@pytest.mark.parametrize("raw", [b"?", b"?2", b"1", b"true", b"?1,?1", b"?1 x", b"\xff", b"?1;", b'"?1"', b""])
def test_malformed_booleans(raw):
    with pytest.raises(errors.InvalidRequest):
        h.parse_sf_boolean([raw], "Upload-Complete")


def test_two_field_lines_are_one_list_and_not_a_boolean():
    with pytest.raises(errors.InvalidRequest):
        h.parse_sf_boolean([b"?1", b"?1"], "Upload-Complete")


def test_absent_boolean():
    assert h.parse_sf_boolean(None, "Upload-Complete") is None


@pytest.mark.parametrize("raw,expected", [
    (b"0", 0), (b"42", 42), (b"999999999999999", 999999999999999), (b"7;x=?1", 7),
])
def test_non_negative_integers(raw, expected):
    assert h.parse_sf_non_negative([raw], errors.InvalidOffset) == expected


@pytest.mark.parametrize("raw", [b"-1", b"1.0", b"1000000000000000", b"0x10", b"+1", b"?1", b"1 2", b"abc", b""])
def test_malformed_integers(raw):
    with pytest.raises(errors.InvalidOffset):
        h.parse_sf_non_negative([raw], errors.InvalidOffset)


def test_rfc_8941_dictionary_examples():
    assert h.parse_sf_dictionary(b'en="Applepie", da=:w4ZibGV0w6ZydGU=:') == {
        "en": ("Applepie", {}), "da": ("Æbletærte".encode(), {})}
    assert h.parse_sf_dictionary(b"a=?0, b, c; foo=bar") == {
        "a": (False, {}), "b": (True, {}), "c": (True, {"foo": "bar"})}
    assert h.parse_sf_dictionary(b"rating=1.5, feelings=(joy sadness)") == {
        "rating": (1.5, {}), "feelings": ([("joy", {}), ("sadness", {})], {})}
    assert h.parse_sf_dictionary([b"a=1", b"b=2"]) == {"a": (1, {}), "b": (2, {})}


@pytest.mark.parametrize("raw", [b"a=1,", b"a=1 b=2", b"A=1", b"a=(1", b'a="x', b"a=1.2345", b",a=1", b"a=@1"])
def test_malformed_dictionaries(raw):
    with pytest.raises(h.StructuredFieldError):
        h.parse_sf_dictionary(raw)


@given(st.dictionaries(
    st.from_regex(r"[a-z*][a-z0-9_.*-]{0,10}", fullmatch=True),
    st.one_of(st.booleans(), st.integers(min_value=-(10**15) + 1, max_value=10**15 - 1)),
    max_size=6))
def test_dictionary_round_trip(members):
    parsed = h.parse_sf_dictionary(h.format_sf_dictionary(members))
    assert {key: value for key, (value, params) in parsed.items()} == members
    assert all(type(parsed[key][0]) is type(value) for key, value in members.items())


@given(st.binary(max_size=40))
def test_parsers_only_raise_structured_field_errors(raw):
    for parse in (h.parse_sf_dictionary, h.parse_sf_item):
        try:
            parse(raw)
        except h.StructuredFieldError:
            pass


@pytest.mark.parametrize("raw,expected", [
    (b"3", 3), (b"8", 8), (b"2", None), (b"9", None), (b"abc", None), (b"8.0", None),
    (b"-8", None), (b"?1", None), (None, None), (b" 6 ", 6),
])
def test_interop_versions(raw, expected):
    assert h.parse_interop_version(raw) == expected


@pytest.mark.parametrize("raw,expected", [
    (b'inline; filename="file name.jpg"', "file name.jpg"),
    (b"attachment; filename=report.pdf", "report.pdf"),
    (b"inline; filename=\"a.txt\"; filename*=UTF-8''%C3%A4.txt", "ä.txt"),
    (b"inline; filename*=iso-8859-1'en'%E4.txt", "ä.txt"),
    (b'inline; filename="quo\\"te.txt"', 'quo"te.txt'),
    (b"inline; filename*=UTF-8''%FF; filename=fallback.txt", "fallback.txt"),
    (b"inline", None),
    (None, None),
    (b"; filename=x", None),
    (b"inline; filename", None),
    (b'inline; filename="unterminated', None),
])
def test_content_disposition_filename(raw, expected):
    assert h.content_disposition_filename(raw) == expected


def _config(tmp_path, *args):
    options = Options()
    options.parseOptions(["--path", str(tmp_path), *args])
    return build_config(options, reactor=Clock())


def test_cli_switches(tmp_path):
    assert _config(tmp_path).enable_ietf_draft is True
    assert _config(tmp_path, "--enable-ietf-draft").enable_ietf_draft is True
    assert _config(tmp_path, "--disable-ietf-draft").enable_ietf_draft is False
    with pytest.raises(usage.UsageError):
        _config(tmp_path, "--enable-ietf-draft", "--disable-ietf-draft")
