"""Contrastive image-text losses (CLIP's softmax InfoNCE, SigLIP's pairwise sigmoid) and the cross-rank gather.

Everything here is a pure function of L2-normalized embeddings ``img, txt: [n, d]`` where pair ``i`` is
``(img[i], txt[i])``. Pairs can be switched off with ``valid: bool[n]`` (an image without a caption):
the loss then equals the loss computed on the valid subset alone, without boolean indexing, so shapes stay
fixed (no host synchronization, no recompilation) and a batch with no valid pair gives an exact zero that
is still connected to the graph.

Distributed training: :func:`gather_pairs` concatenates every rank's pairs *with gradient*, and each rank
then computes the **global** loss on the concatenated batch. Why this is exact under DDP: the backward of
the all-gather sums, over ranks, the gradients each rank's loss sends to a rank's slice; every rank holds the
same global loss ``L``, so a rank's features receive ``world * dL/dx_local``. DDP then averages parameter
gradients over ranks, which divides by ``world`` again: parameters get exactly ``dL/dtheta`` of one process on
the whole batch. Parameters used by the loss directly (temperature, bias) receive the same ``dL/dt`` on every
rank, which averaging leaves unchanged. (The cheaper "local rows" variant of open_clip is also exact, but
each rank's loss value is then not the global one; the global ``[n, n]`` logits cost nothing next to the ViT.)
"""

from __future__ import annotations

import torch
import torch.distributed as dist
import torch.nn.functional as F

__all__ = [
    "clip_loss",
    "clip_loss_from_logits",
    "contrastive_logits",
    "gather_pairs",
    "i2t_accuracy",
    "siglip_loss",
    "siglip_loss_from_logits",
]

# Logit given to pairs that involve an excluded image or caption. Finite (unlike -inf) so that a row with no
# valid entry still has a finite softmax and finite gradients; exp(-1e9 - max) is exactly 0 in float32, so
# valid rows are unaffected. The losses are computed in float32 (autocast disabled by the caller).
_MASKED_LOGIT = -1e9


def _pair_valid(valid: torch.Tensor | None, n: int, device: torch.device) -> torch.Tensor:
    if valid is None:
        return torch.ones(n, dtype=torch.bool, device=device)
    if valid.shape != (n,):
        raise ValueError(f"valid must have shape [{n}] (one flag per pair), got {tuple(valid.shape)}")
    return valid.to(device=device, dtype=torch.bool)


def contrastive_logits(
    img: torch.Tensor, txt: torch.Tensor, scale: torch.Tensor, bias: torch.Tensor | None = None
) -> torch.Tensor:
    """``scale * img @ txt.T (+ bias)``: row ``i`` scores image ``i`` against every caption.

    Args:
        img: ``[n, d]`` image embeddings (L2-normalized).
        txt: ``[n, d]`` text embeddings (L2-normalized).
        scale: scalar multiplier (the exponentiated learnable temperature).
        bias: optional scalar bias (SigLIP).

    Returns:
        ``[n, n]`` logits.
    """
    logits = scale * img @ txt.t()
    return logits if bias is None else logits + bias


def _mask(logits: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    pair = valid[:, None] & valid[None, :]
    return logits.masked_fill(~pair, _MASKED_LOGIT)


def clip_loss_from_logits(logits: torch.Tensor, valid: torch.Tensor | None = None) -> torch.Tensor:
    """Symmetric InfoNCE on precomputed ``[n, n]`` logits (see :func:`clip_loss`)."""
    n = logits.shape[0]
    valid = _pair_valid(valid, n, logits.device)
    logits = _mask(logits, valid)
    labels = torch.arange(n, device=logits.device)
    per_image = F.cross_entropy(logits, labels, reduction="none")  # image i -> its caption among all captions
    per_text = F.cross_entropy(logits.t(), labels, reduction="none")  # caption i -> its image among all images
    w = valid.to(logits.dtype)
    count = w.sum().clamp(min=1.0)  # no valid pair: 0 / 1 = an exact zero, still attached to the graph
    return ((per_image * w).sum() / count + (per_text * w).sum() / count) / 2


def clip_loss(
    img: torch.Tensor, txt: torch.Tensor, logit_scale: torch.Tensor, valid: torch.Tensor | None = None
) -> torch.Tensor:
    """CLIP's symmetric contrastive loss (Radford et al., 2021).

    ``logits = logit_scale * img @ txt.T``, ``labels = [0..n)``,
    ``loss = (CE(logits, labels) + CE(logits.T, labels)) / 2`` with each cross-entropy averaged over the
    valid pairs. Excluded pairs are removed from both the rows (their own term) and the columns (they are not
    negatives for anybody), so the value equals the loss on the valid subset.

    Args:
        img: ``[n, d]`` L2-normalized image embeddings.
        txt: ``[n, d]`` L2-normalized text embeddings; pair ``i`` is ``(img[i], txt[i])``.
        logit_scale: scalar multiplier, already exponentiated (CLIP learns its log, init ``log(1/0.07)``).
        valid: optional ``bool[n]``; False excludes pair ``i``.

    Returns:
        A 0-d tensor; exactly 0 when no pair is valid.
    """
    return clip_loss_from_logits(contrastive_logits(img, txt, logit_scale), valid)


def siglip_loss_from_logits(logits: torch.Tensor, valid: torch.Tensor | None = None) -> torch.Tensor:
    """Pairwise sigmoid loss on precomputed ``[n, n]`` logits that already include ``t`` and ``b``."""
    n = logits.shape[0]
    valid = _pair_valid(valid, n, logits.device)
    z = 2 * torch.eye(n, device=logits.device, dtype=logits.dtype) - 1  # +1 on the diagonal, -1 elsewhere
    pair = (valid[:, None] & valid[None, :]).to(logits.dtype)
    count = valid.to(logits.dtype).sum().clamp(min=1.0)
    return -(F.logsigmoid(z * logits) * pair).sum() / count


def siglip_loss(
    img: torch.Tensor,
    txt: torch.Tensor,
    t: torch.Tensor,
    b: torch.Tensor,
    valid: torch.Tensor | None = None,
) -> torch.Tensor:
    """SigLIP's sigmoid loss (Zhai et al., 2023), exactly the paper's definition.

    ``loss = -(1/|B|) * sum_i sum_j log sigmoid(z_ij * (t * img_i . txt_j + b))`` with ``z_ij = 1`` when
    ``i == j`` and ``-1`` otherwise. The normalization is by the batch size ``|B|`` (the number of valid
    images), **not** by the number of pairs ``|B|^2``: each image contributes one positive and ``|B| - 1``
    negative binary terms. Excluded pairs drop out of both sums and of ``|B|``.

    Args:
        img: ``[n, d]`` L2-normalized image embeddings.
        txt: ``[n, d]`` L2-normalized text embeddings.
        t: scalar temperature multiplier, already exponentiated (SigLIP learns ``t'``, ``t = exp(t')``,
            init ``t' = log 10``).
        b: scalar bias (init -10).
        valid: optional ``bool[n]``; False excludes pair ``i``.

    Returns:
        A 0-d tensor; exactly 0 when no pair is valid.
    """
    return siglip_loss_from_logits(contrastive_logits(img, txt, t, b), valid)


@torch.no_grad()
def i2t_accuracy(logits: torch.Tensor, valid: torch.Tensor | None = None) -> torch.Tensor:
    """Top-1 image-to-text retrieval accuracy over valid pairs (0 when none is valid); detached."""
    n = logits.shape[0]
    valid = _pair_valid(valid, n, logits.device)
    hit = (_mask(logits, valid).argmax(1) == torch.arange(n, device=logits.device)) & valid
    return hit.to(logits.dtype).sum() / valid.to(logits.dtype).sum().clamp(min=1.0)


def _world_size() -> int:
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def gather_pairs(
    img: torch.Tensor, txt: torch.Tensor, valid: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Every rank's pairs, concatenated in rank order, with gradient flowing back to the local slice.

    Without an initialized process group of more than one rank this returns its inputs. All ranks must
    pass the same local batch size (the training loop's batch plan guarantees it).

    Args:
        img: ``[b, d]`` local image embeddings.
        txt: ``[b, d]`` local text embeddings.
        valid: ``bool[b]`` local pair flags.

    Returns:
        ``img [world*b, d]``, ``txt [world*b, d]``, ``valid bool[world*b]``.
    """
    if _world_size() == 1:
        return img, txt, valid
    from torch.distributed.nn.functional import all_gather

    d = img.shape[1]
    # One collective instead of three: the flag column carries no gradient and is split off again.
    packed = torch.cat([img, txt.to(img.dtype), valid.to(img.dtype)[:, None]], dim=1)
    full = torch.cat(all_gather(packed), dim=0)
    return full[:, :d], full[:, d : 2 * d], full[:, 2 * d] > 0.5
