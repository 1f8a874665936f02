"""Address text: ``fmt`` answers from a cache for bytes and is unchanged in what it gives."""

from __future__ import annotations

import pytest

from stack.wire.addr import fmt


@pytest.mark.parametrize(("raw", "text"), [
    (bytes(16), "::"),
    (bytes(15) + b"\x01", "::1"),
    (bytes.fromhex("20010db8000100000000000000000002"), "2001:db8:1::2"),
    (bytes.fromhex("fe8000000000000000000000000000ff"), "fe80::ff"),
    (bytes([192, 0, 2, 1]), "192.0.2.1"),
])
def test_fmt_gives_canonical_text_first_and_from_the_cache(raw: bytes, text: str) -> None:
    assert fmt(raw) == text
    assert fmt(raw) == text


def test_fmt_still_rejects_a_bad_length() -> None:
    with pytest.raises(ValueError, match="not an IP address"):
        fmt(b"abc")
    with pytest.raises(ValueError, match="not an IP address"):
        fmt(b"abc")
