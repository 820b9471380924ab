"""Pure metrics shared by the training loop (online monitors) and the frozen evaluators.

They live here, outside both ``train`` and ``eval``, so that neither has to import the other.
"""

from __future__ import annotations

import math

import torch


def rankme(embeddings: torch.Tensor, eps: float = 1e-7) -> float:
    """Effective rank of an embedding matrix (RankMe, Garrido et al. 2023).

    With singular values ``σ_k`` of ``embeddings``, ``p_k = σ_k / ||σ||_1 + eps`` and
    ``RankMe = exp(-Σ_k p_k log p_k)``. It lies between about 1 (all embeddings on one line: collapse)
    and ``min(N, D)`` (a flat spectrum). It is invariant to a global rescaling of the embeddings. The
    matrix is *not* centred, as in the paper.

    Args:
        embeddings: ``[N, D]`` matrix, one embedding per row (any float dtype; any device but MPS, whose
            lack of float64 sends the computation to the CPU).
        eps: the small constant added to every ``p_k`` so that ``log`` stays finite.

    Returns:
        The effective rank as a Python float; ``nan`` when the matrix holds a NaN or an infinity, so
        that a diverged run shows up as such in the logs instead of raising inside the SVD.
    """
    if embeddings.ndim != 2:
        raise ValueError(f"rankme expects a [N, D] matrix, got shape {tuple(embeddings.shape)}")
    z = embeddings.detach()
    if z.device.type == "mps":
        z = z.cpu()
    # float64: the small singular values decide the tail of the entropy, and bf16/fp16 features would
    # round them away.
    z = z.to(torch.float64)
    if not bool(torch.isfinite(z).all()):
        return math.nan
    s = torch.linalg.svdvals(z)
    # An all-zero matrix has ||σ||_1 = 0; clamping gives p_k = eps, i.e. a rank of about 1 (collapse).
    p = s / s.sum().clamp_min(torch.finfo(torch.float64).tiny) + eps
    return float(torch.exp(-(p * p.log()).sum()))
