from __future__ import annotations

import pytest

from allset.core.errors import InvalidInput, InvalidName
from allset.core.paths import ROOT, decode_utf8, normalise_name, parse_path
from allset.core.units import format_size, parse_deadline, parse_duration, parse_rate, parse_size


@pytest.mark.parametrize(
    ("bad", "why"),
    [
        ("", "empty"),
        (".", "reserved"),
        ("..", "reserved"),
        ("a\x00b", "NUL"),
        ("a/b", "'/'"),
        ("é" * 128, "255 bytes"),
    ],
)
def test_bad_names(bad: str, why: str) -> None:
    with pytest.raises(InvalidName, match=why):
        normalise_name(bad)


def test_nfd_becomes_nfc() -> None:
    assert normalise_name("e\u0301t\u00e9") == "\u00e9t\u00e9"
    assert parse_path("/Caf\u0065\u0301//x/") == parse_path("Café/x")


def test_path_limits_and_root() -> None:
    assert parse_path("/") == ROOT and ROOT.is_root
    with pytest.raises(InvalidName, match="4096"):
        parse_path("/".join(["a" * 200] * 25))
    p = parse_path("/a/b/c")
    assert str(p.parent) == "/a/b" and p.name == "c" and p.is_within(parse_path("/a"))


def test_invalid_utf8() -> None:
    with pytest.raises(InvalidName, match="UTF-8"):
        decode_utf8(b"\xff\xfe")


def test_units() -> None:
    assert parse_size("10GiB") == 10 * 2**30
    assert parse_size("500MB") == 500_000_000
    assert parse_size("1048576") == 1048576
    assert parse_rate("100Mbit") == 12_500_000
    assert parse_rate("12.5MB") == 12_500_000
    assert parse_duration("7d").days == 7
    assert parse_deadline("2026-12-31T18:00:00+01:00").hour == 18
    assert format_size(1536) == "1.5 KiB"
    for bad in ("ten", "5 parsecs"):
        with pytest.raises(InvalidInput):
            parse_size(bad)
    with pytest.raises(InvalidInput, match="time zone"):
        parse_deadline("2026-12-31T18:00:00")
