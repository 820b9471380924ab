"""The pixel decoder of MAE / VideoMAE / V-Pixel, and the pixel targets it is trained on.

:class:`PixelDecoder` maps the encoder's context tokens to the pixels of masked patches (images) or
tubelets (video). It is the narrow predictor of :mod:`openjepa.models.predictor` with two differences:

- its output is ``tubelet * patch * patch * channels`` pixel values per token instead of features;
- every target position of a sample goes into **one** sequence (context tokens + one mask token per
  masked position, as in MAE's decoder), instead of one sequence per target block. The target blocks of a
  mask generator (``tgt_idx [B, T, Kt]``) are flattened into ``T * Kt`` mask tokens; V-JEPA's 3-D masks
  and tube masks already give one block (``T = 1``).

Positions are the fixed sin-cos table of the token grid (:func:`~openjepa.models.pos_embed.position_table`),
added to the embedded context tokens and to the mask tokens, as MAE and VideoMAE do; the decoder adds its
own table even when the encoder uses rotary positions (its tokens then carry no absolute position).

:func:`patchify` cuts an input into the per-token pixel vectors, in the encoder's token order;
:func:`pixel_targets` gathers the rows of the masked tokens and normalizes each per token and channel.
"""

from __future__ import annotations

import torch

from openjepa.config import Config
from openjepa.models.predictor import Predictor

__all__ = ["PixelDecoder", "build_decoder", "patchify", "pixel_targets"]

# Added to the per-token standard deviation: flat patches (a uniform background) would divide by zero.
NORM_EPS = 1e-6


def patchify(x: torch.Tensor, patch: int, tubelet: int = 1) -> torch.Tensor:
    """The pixels of each token: ``[B, N, tubelet * patch * patch * C]``.

    Tokens are in the encoder's order (time-major raster: ``t * H' * W' + h * W' + w``, as the strided
    convolutions of :class:`~openjepa.models.layers.PatchEmbed2D` / ``PatchEmbed3D`` flatten them); inside a
    token the values are laid out ``(frame, row, column, channel)``, channel last (MAE / VideoMAE).

    Args:
        x: images ``[B, C, H, W]`` or clips ``[B, C, T, H, W]``.
        patch: patch side in pixels (``model.patch_size``).
        tubelet: frames per tubelet (``model.tubelet_size``; ignored for images).

    Raises:
        ValueError: a size not divisible by the patch / tubelet.
    """
    if x.ndim == 4:
        x, tubelet = x.unsqueeze(2), 1  # an image is a one-frame clip with one-frame tubelets
    if x.ndim != 5:
        raise ValueError(f"patchify takes [B, C, H, W] images or [B, C, T, H, W] clips, got {tuple(x.shape)}")
    b, c, t, h, w = x.shape
    if t % tubelet or h % patch or w % patch:
        raise ValueError(f"input {tuple(x.shape)} is not divisible into {tubelet}x{patch}x{patch} tubelets")
    x = x.reshape(b, c, t // tubelet, tubelet, h // patch, patch, w // patch, patch)
    x = x.permute(0, 2, 4, 6, 3, 5, 7, 1)  # [B, T', H', W', tubelet, patch, patch, C]
    return x.reshape(b, (t // tubelet) * (h // patch) * (w // patch), tubelet * patch * patch * c)


def pixel_targets(patches: torch.Tensor, idx: torch.Tensor, norm: bool = True, channels: int = 3) -> torch.Tensor:
    """The pixels of the tokens ``idx``, normalized per token and channel: ``[*idx.shape, P]``.

    With ``norm`` each channel of each token is centred on its mean and divided by its standard deviation
    plus 1e-6 (SALT's V-Pixel; VideoMAE's ``norm_pix_loss``). The standard deviation is the **unbiased**
    one (divisor ``n - 1``, ``n = tubelet * patch * patch`` values per channel), as in VideoMAE's code.
    Computed in float32 whatever the input dtype.

    Args:
        patches: per-token pixels from :func:`patchify`, ``[B, N, P]`` with ``P = n * channels``.
        idx: token indices ``[B, ...]`` (e.g. ``tgt_idx [B, T, Kt]``).
        norm: normalize (``decoder.norm_pixels``); False returns the raw pixels.
        channels: the image channels (the last, fastest axis of a token's values).
    """
    b, _, p = patches.shape
    rows = torch.gather(patches, 1, idx.reshape(b, -1, 1).expand(-1, -1, p)).float()
    if norm:
        if p % channels or p // channels < 2:
            raise ValueError(f"{p} values per token cannot be normalized per channel over {channels} channels")
        per_channel = rows.reshape(b, -1, p // channels, channels)
        mean = per_channel.mean(dim=2, keepdim=True)
        std = per_channel.std(dim=2, keepdim=True, correction=1)  # unbiased
        rows = ((per_channel - mean) / (std + NORM_EPS)).reshape(b, -1, p)
    return rows.reshape(*idx.shape, p)


class PixelDecoder(Predictor):
    """MAE-style pixel decoder: context tokens + mask tokens at the masked positions -> their pixels.

    Args:
        grid_size: the encoder's token grid ``(H, W)`` or ``(T, H, W)``.
        embed_dim: encoder width (input of the decoder).
        pixels_per_token: output values per token (``tubelet * patch * patch * channels``).
        dim, depth, num_heads: the decoder transformer (``decoder.dim``, ``decoder.depth``, ``decoder.heads``;
            VideoMAE's ViT-L decoder: 512 wide, 4 blocks).
        mlp_ratio, qkv_bias: block shape.
        num_mask_tokens: learned mask tokens, one per mask generator (as V-JEPA's predictor), initialized
            truncated-normal (std 0.02).
    """

    def __init__(
        self,
        grid_size: tuple[int, ...],
        embed_dim: int,
        pixels_per_token: int,
        dim: int = 512,
        depth: int = 4,
        num_heads: int = 16,
        mlp_ratio: float = 4.0,
        qkv_bias: bool = True,
        num_mask_tokens: int = 1,
    ):
        super().__init__(
            grid_size, embed_dim, pred_dim=dim, depth=depth, num_heads=num_heads, mlp_ratio=mlp_ratio,
            qkv_bias=qkv_bias, num_mask_tokens=num_mask_tokens, out_dim=pixels_per_token, pos="sincos",
        )

    def forward(  # type: ignore[override]
        self, ctx: torch.Tensor, ctx_idx: torch.Tensor, tgt_idx: torch.Tensor, mask_index: int = 0
    ) -> torch.Tensor:
        """Predicts the pixels of the masked tokens.

        Args:
            ctx: context-encoder tokens ``[B, Kc, D]``.
            ctx_idx: their token indices ``[B, Kc]``.
            tgt_idx: masked token indices ``[B, T, Kt]``; all ``T * Kt`` of a sample are decoded together.
            mask_index: which learned mask token (the index of the mask generator that made ``tgt_idx``).

        Returns:
            Pixels ``[B, T, Kt, pixels_per_token]``.
        """
        b, t, kt = tgt_idx.shape
        out = super().forward(ctx, ctx_idx, tgt_idx.reshape(b, 1, t * kt), mask_index=mask_index)
        return out.reshape(b, t, kt, self.out_dim)  # type: ignore[union-attr]


def build_decoder(cfg: Config, grid_size: tuple[int, ...], embed_dim: int, num_mask_tokens: int = 1) -> PixelDecoder:
    """The pixel decoder of ``cfg.decoder`` for an encoder of width ``embed_dim`` on ``grid_size``."""
    tubelet = cfg.model.tubelet_size if cfg.data.num_frames > 1 else 1
    pixels = tubelet * cfg.model.patch_size**2 * 3
    d = cfg.decoder
    return PixelDecoder(
        grid_size, embed_dim, pixels, dim=d.dim, depth=d.depth, num_heads=d.heads, qkv_bias=cfg.model.qkv_bias,
        num_mask_tokens=num_mask_tokens,
    )
