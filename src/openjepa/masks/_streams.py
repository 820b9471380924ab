"""Random streams and call checks shared by the video mask samplers (``multiblock3d``, ``tube``).

The numbers come from the 2-D sampler's row streams (``masks/multiblock.py``: ``SeedSequence([seed,
step, salt, kind, attempt])`` feeding PCG64, one row per sample, sparse rows reached with
``PCG64.advance``), so every sampler of the package shares one, tested, determinism mechanism. What this
module adds is a *kind code* that also names the sampler family and the generator's ``stream``: two
generators of one batch, or a video and an image sampler with the same seed, never read the same numbers.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from openjepa.masks.multiblock import _rows_for, _uniform_rows

__all__ = ["FAMILY_MULTIBLOCK3D", "FAMILY_TUBE", "MAX_STREAM", "check_call", "kind_code", "rows", "table"]

# Sampler families. The 2-D sampler uses kind codes 0..5, so every code below is far above them.
FAMILY_MULTIBLOCK3D = 1
FAMILY_TUBE = 2
MAX_STREAM = (1 << 16) - 2  # keeps (stream + 1) inside its 16 bits of the code


def kind_code(family: int, kind: int, stream: int | None) -> int:
    """One integer naming (family, stream, kind) for the ``kind`` slot of the row streams.

    Args:
        family: ``FAMILY_*`` constant.
        kind: the draw within the family (sizes, positions, subset keys...), ``0 <= kind < 256``.
        stream: the generator's stream; ``None`` for a stream every generator of a batch shares (the
            faithful video sampler's size draw, where the reference shares it too).
    """
    if not 0 <= kind < 256:
        raise ValueError(f"kind must be in [0, 256), got {kind}")
    slot = 0 if stream is None else stream + 1
    return (family << 24) | (slot << 8) | kind


def table(seed: int, step: int, code: int, attempt: int, n_rows: int, cols: int) -> np.ndarray:
    """Uniforms ``[n_rows, cols]`` in [0, 1); row ``i`` depends only on the key and ``i``."""
    return _uniform_rows(seed, step, code, attempt, n_rows, cols)


def rows(slots: np.ndarray, seed: int, step: int, code: int, attempt: int, cols: int) -> np.ndarray:
    """The rows of :func:`table` that belong to ``slots`` (``[len(slots), cols]``)."""
    return _rows_for(slots, seed, step, code, attempt, cols)


def check_call(step: int, slots: Sequence[int], global_batch: int) -> np.ndarray:
    """Validates the ``(step, slots, global_batch)`` of a sampler call; returns the slots as int64.

    Raises:
        ValueError: a negative step, no slots, or a slot outside ``[0, global_batch)``.
    """
    slot_arr = np.asarray(list(slots), dtype=np.int64).reshape(-1)
    if step < 0:
        raise ValueError(f"step must be >= 0, got {step}")
    if slot_arr.size == 0:
        raise ValueError("slots is empty: ask for at least one sample")
    if slot_arr.min() < 0 or slot_arr.max() >= global_batch:
        raise ValueError(f"slots must lie in [0, global_batch={global_batch}), got {slot_arr.tolist()}")
    return slot_arr
