"""Values for an expanding ``IN (...)`` parameter, in a few list lengths only.

Each length of such a list is a different SQL text. SQLite prepares every text it is given and
keeps it in the connection's statement cache (128 of them), and the re-read of the ERP (a join
with a sub-select) costs tens of KB there. Lists whose length followed the data (a batch's
recnos, customer codes, letter ids) filled those caches with statements run once or twice,
and a run's memory grew with the number of lengths it met: over a 100k-título ladder run,
226 texts and up to 16.0 MB held by SQLite, against 95 texts and 8.3 MB padded
(docs/benchmarks.md). Padded to a power of two, a list up to 512 long has one of ten lengths.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TypeVar

T = TypeVar("T")


def in_values(values: Iterable[T]) -> list[T]:
    """``values`` padded to the next power of two by repeating the last one.

    ``x IN (a, b, b)`` selects exactly what ``x IN (a, b)`` does, so the padding changes no
    result; an empty list stays empty.
    """
    padded = list(values)
    if padded:
        padded += padded[-1:] * ((1 << (len(padded) - 1).bit_length()) - len(padded))
    return padded
