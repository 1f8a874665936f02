"""ParseError: the one exception the wire layer raises on untrusted input."""

from __future__ import annotations


class ParseError(ValueError):
    """Invalid input. ``reason`` is a short snake_case code (``ipv6_truncated``)
    that the core counts as the drop reason ``parse_<reason>``."""

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason

    def __eq__(self, other: object) -> bool:
        return isinstance(other, ParseError) and other.reason == self.reason

    def __hash__(self) -> int:
        return hash(self.reason)
