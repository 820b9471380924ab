"""Fixed sin-cos position embeddings (not trained), 1-D, 2-D and 3-D.

The 2-D table gives half of the channels to the row coordinate and half to the column, each a 1-D
sin-cos code with frequencies 1 / 10000^(2i/d). The 3-D table (video tubelets) splits channels over
(time, row, column). Tables are computed on the fly for any grid, so an encoder trained at one
resolution can be evaluated at another.
"""

from __future__ import annotations

import torch


def sincos_1d(dim: int, positions: torch.Tensor) -> torch.Tensor:
    """Sin-cos code of shape ``[len(positions), dim]`` (``dim`` even)."""
    if dim % 2:
        raise ValueError(f"sin-cos embedding needs an even dimension, got {dim}")
    omega = torch.arange(dim // 2, dtype=torch.float64) / (dim / 2.0)
    omega = 1.0 / 10000**omega
    angles = positions.reshape(-1).to(torch.float64)[:, None] * omega[None, :]
    return torch.cat([torch.sin(angles), torch.cos(angles)], dim=1).float()


def sincos_2d(dim: int, grid: tuple[int, int]) -> torch.Tensor:
    """Table ``[H*W, dim]`` for a grid of ``H x W`` patches in raster order (``dim`` divisible by 4)."""
    if dim % 4:
        raise ValueError(f"2-D sin-cos embedding needs a dimension divisible by 4, got {dim}")
    h, w = grid
    rows, cols = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
    return torch.cat([sincos_1d(dim // 2, rows), sincos_1d(dim // 2, cols)], dim=1)


def sincos_3d(dim: int, grid: tuple[int, int, int]) -> torch.Tensor:
    """Table ``[T*H*W, dim]`` for a grid of tubelets (time-major raster order).

    Channels: a quarter for time, three eighths each for rows and columns, rounded to even sizes.
    """
    t, h, w = grid
    d_t = (dim // 4) // 2 * 2
    d_hw = (dim - d_t) // 2 // 2 * 2
    d_t = dim - 2 * d_hw
    tt, rows, cols = torch.meshgrid(torch.arange(t), torch.arange(h), torch.arange(w), indexing="ij")
    return torch.cat([sincos_1d(d_t, tt), sincos_1d(d_hw, rows), sincos_1d(d_hw, cols)], dim=1)


def position_table(dim: int, grid: tuple[int, ...]) -> torch.Tensor:
    """The fixed sin-cos table ``[prod(grid), dim]`` for a 2-D patch grid ``(H, W)`` or a 3-D tubelet grid
    ``(T, H, W)``: the one place that picks between :func:`sincos_2d` and :func:`sincos_3d`."""
    if len(grid) == 2:
        return sincos_2d(dim, grid)  # type: ignore[arg-type]
    if len(grid) == 3:
        return sincos_3d(dim, grid)  # type: ignore[arg-type]
    raise ValueError(f"position tables exist for 2-D and 3-D token grids, got grid {tuple(grid)}")
