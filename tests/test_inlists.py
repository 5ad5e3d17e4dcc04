"""in_values: IN-list values padded to a few lengths, with nothing added but repeats."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from cobranca.inlists import in_values


@given(st.lists(st.integers(), max_size=600))
def test_padded_to_a_power_of_two_with_the_same_values_in_the_same_order(
    items: list[int],
) -> None:
    padded = in_values(iter(items))
    assert padded[: len(items)] == items
    assert set(padded) == set(items)
    if items:
        assert len(padded) & (len(padded) - 1) == 0  # a power of two
        assert len(items) <= len(padded) < 2 * len(items)
    else:
        assert padded == []
