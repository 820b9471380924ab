"""Rotary position embeddings (RoPE) for 2-D ``(H, W)`` and 3-D ``(T, H, W)`` token grids, in V-JEPA 2's layout.

Instead of adding a position table to the tokens, every attention layer rotates its queries and keys by
angles proportional to each token's grid coordinates, so a query-key score depends on the *offset* between
two tokens, not on where they are. The layout is V-JEPA 2's (facebookresearch/vjepa2,
``src/models/utils/modules.py``), so its weights give the same outputs here:

- **Head split.** Each head's ``head_dim`` channels are cut into three equal, even-sized segments of
  ``d = 2 * ((head_dim // 3) // 2)`` channels, in the order time (depth), height, width; the last
  ``head_dim - 3d`` channels are not rotated (64 -> 20 + 20 + 20 + 4).
- **Frequencies.** Within a segment of ``d`` channels, ``omega_j = 1 / 10000 ** (j / (d / 2))`` for
  ``j < d / 2``; the angle is ``coordinate * omega``.
- **Pairs.** Adjacent channels ``(2i, 2i + 1)`` rotate together (interleaved, not half-split):
  ``y[2i] = x[2i] cos - x[2i+1] sin``, ``y[2i+1] = x[2i+1] cos + x[2i] sin``.
- **Coordinates.** A token's raster index ``n`` in a ``(T, H, W)`` grid gives ``t = n // (H W)``,
  ``h = (n mod H W) // W``, ``w = n mod W``, as integers (no rescaling to a reference grid). A 2-D grid is a
  grid with one frame: ``t = 0``, so the time channels of image tokens are not rotated. After ``keep``
  gathers a subset of the tokens, the kept tokens' own indices are used.

Two variants differ only in which frequency each channel of a pair gets:

- ``"rope"`` (openjepa's default): both channels of pair ``i`` use ``omega_i``, a true rotation, so norms
  are preserved and scores depend only on offsets. This is the fix proposed for V-JEPA 2 in its pull
  request 15 (and used by V-JEPA 2.1).
- ``"rope_vjepa2"``: the released V-JEPA 2 weights were trained with the frequency vector *tiled* instead
  of repeated per pair (channel ``c`` of a segment uses ``omega_{c mod d/2}``), so the two channels of a
  pair turn by different angles: not a rotation, and scores are not exactly offset-only. Use it only to run
  V-JEPA 2 checkpoints (the converter picks it); train new models with ``"rope"``.
"""

from __future__ import annotations

import torch
from torch import nn

ROPE_VARIANTS = ("rope", "rope_vjepa2")


def axis_dim(head_dim: int) -> int:
    """Channels per grid axis (time, height, width) of a head: ``2 * ((head_dim // 3) // 2)``."""
    return 2 * ((head_dim // 3) // 2)


def grid_coordinates(index: torch.Tensor, grid: tuple[int, ...]) -> torch.Tensor:
    """The ``(t, h, w)`` coordinates ``[..., N, 3]`` (float32) of raster indices ``index: [..., N]``.

    Args:
        index: token indices in time-major raster order of ``grid``.
        grid: ``(H, W)`` for images (``t = 0``) or ``(T, H, W)`` for video.
    """
    if len(grid) == 2:
        height, width = grid
    elif len(grid) == 3:
        _, height, width = grid
    else:
        raise ValueError(f"rotary positions exist for 2-D and 3-D token grids, got grid {tuple(grid)}")
    per_frame = height * width
    t = index // per_frame
    rest = index - t * per_frame
    h = rest // width
    w = rest - h * width
    return torch.stack([t, h, w], dim=-1).to(torch.float32)


def rotate_pairs(x: torch.Tensor) -> torch.Tensor:
    """``(x0, x1, x2, x3, ...) -> (-x1, x0, -x3, x2, ...)``: the partner term of an interleaved rotation."""
    pairs = x.unflatten(-1, (-1, 2))
    return torch.stack([-pairs[..., 1], pairs[..., 0]], dim=-1).flatten(-2)


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotates queries or keys ``x: [B, heads, N, head_dim]`` by per-token tables from :class:`RotaryEmbedding`."""
    return x * cos.to(x.dtype) + rotate_pairs(x) * sin.to(x.dtype)


class RotaryEmbedding(nn.Module):
    """Per-token rotation tables ``(cos, sin)`` for one head size; see the module docstring for the layout.

    The module holds no weights (its buffers are not saved). Call it once per forward pass and hand the
    tables to every attention layer.

    Args:
        head_dim: channels per attention head (even, at least 6).
        variant: ``"rope"`` (a true rotation) or ``"rope_vjepa2"`` (the released V-JEPA 2 weights' tiling).
    """

    def __init__(self, head_dim: int, variant: str = "rope"):
        super().__init__()
        if variant not in ROPE_VARIANTS:
            raise ValueError(f"rotary variant {variant!r}: choose one of {', '.join(ROPE_VARIANTS)}")
        d = axis_dim(head_dim)
        if d == 0 or head_dim % 2:
            raise ValueError(
                f"rotary positions need an even head size of at least 6 channels, got {head_dim}: "
                "choose embed_dim / num_heads accordingly"
            )
        self.head_dim = head_dim
        self.variant = variant
        half = d // 2
        # Same float32 operations as V-JEPA 2, so converted weights match to rounding.
        omega = torch.arange(half, dtype=torch.float32)
        omega /= half
        omega = 1.0 / 10000**omega
        slot = torch.arange(d) // 2 if variant == "rope" else torch.arange(d) % half
        rest = head_dim - 3 * d
        # Channel c turns by coords[axis[c]] * freq[c]; unrotated tail channels have frequency 0 (angle 0).
        freq = torch.cat([omega[slot].repeat(3), torch.zeros(rest)])
        axis = torch.cat([torch.arange(3).repeat_interleave(d), torch.zeros(rest, dtype=torch.long)])
        self.register_buffer("freq", freq, persistent=False)
        self.register_buffer("axis", axis, persistent=False)

    def extra_repr(self) -> str:
        return f"head_dim={self.head_dim}, variant={self.variant!r}"

    def forward(self, index: torch.Tensor, grid: tuple[int, ...]) -> tuple[torch.Tensor, torch.Tensor]:
        """Tables for the tokens at raster indices ``index`` (``[N]`` or ``[B, N]``) of ``grid``.

        Returns:
            ``(cos, sin)``, each ``[1, N, head_dim]`` or ``[B, 1, N, head_dim]`` (float32): they broadcast over
            the heads of ``[B, heads, N, head_dim]`` queries and keys.
        """
        coords = grid_coordinates(index, grid)
        angles = coords[..., self.axis] * self.freq
        return angles.cos().unsqueeze(-3), angles.sin().unsqueeze(-3)


def identity_tables(like: tuple[torch.Tensor, torch.Tensor], count: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``(cos, sin) = (1, 0)`` tables for ``count`` tokens without a grid position (e.g. caption tokens)."""
    cos, _ = like
    shape = (*cos.shape[:-2], count, cos.shape[-1])
    return cos.new_ones(shape), cos.new_zeros(shape)


def concat_tables(*tables: tuple[torch.Tensor, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """Joins per-token tables along the token axis (the sequence's order)."""
    return torch.cat([t[0] for t in tables], dim=-2), torch.cat([t[1] for t in tables], dim=-2)
