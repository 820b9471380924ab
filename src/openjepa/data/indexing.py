"""Item indices of the built-in generators (``scenes``, ``sprites``): Python's rules, clear errors."""

from __future__ import annotations

import operator


def item_index(i: int, size: int, what: str) -> int:
    """``i`` as a non-negative index into a dataset of ``size`` items (negative counts from the end).

    Raises:
        IndexError: out of range (plain iteration over a dataset relies on it to stop).
    """
    i = operator.index(i)
    if i < 0:
        i += size
    if not 0 <= i < size:
        raise IndexError(f"{what} index {i} out of range for a dataset of size {size}")
    return i
