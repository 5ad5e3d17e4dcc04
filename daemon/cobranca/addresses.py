"""E-mail addresses as Protheus stores them: one A1_EMAIL field, several addresses in it.

Finance types ";", "," or spaces between addresses, and sometimes junk. Each entry is checked
on its own: the valid ones are used, the invalid ones are reported, none is ever passed to a
mail header unchecked (no display names, no control characters, nothing to inject).
"""

from __future__ import annotations

import re

_SEPARATORS = re.compile(r"[;,]")
# Deliberately narrower than RFC 5322: plain local@domain.tld, ASCII, no quoting, no comments.
_ADDRESS = re.compile(
    r"^[A-Za-z0-9.!#$%&'*+/=?^_`{|}~-]+@(?:[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.)+"
    r"[A-Za-z]{2,63}$"
)


def is_valid_address(address: str) -> bool:
    local = address.split("@", 1)[0]
    return (
        bool(_ADDRESS.fullmatch(address))
        and len(address) <= 254
        and not local.startswith(".")
        and not local.endswith(".")
        and ".." not in local
    )


def split_addresses(raw: str | None) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """A1_EMAIL → (valid addresses, lower-cased and de-duplicated in order; invalid entries)."""
    valid: list[str] = []
    invalid: list[str] = []
    for entry in _SEPARATORS.split(raw or ""):
        entry = " ".join(entry.split())
        if not entry:
            continue
        # Spaces separate addresses only when every piece is one ("a@x.com b@y.com");
        # otherwise the entry is text like "ver com Adriana" and is reported whole.
        pieces = [p.strip("<>") for p in entry.split(" ")]
        if not all(is_valid_address(p) for p in pieces):
            invalid.append(entry)
            continue
        for piece in pieces:
            normalised = piece.lower()
            if normalised not in valid:
                valid.append(normalised)
    return tuple(valid), tuple(invalid)
