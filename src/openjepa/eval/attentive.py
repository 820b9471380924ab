"""The attentive probe: a learned query cross-attends over all frozen tokens, then a linear head.

Average pooling throws away *where* things are and which token carries what; an attentive probe reads
the tokens themselves. It is V-JEPA's frozen-evaluation protocol, written here from the published
description (V-JEPA 2's ``AttentiveClassifier``, MIT-licensed; facts checked against its source):

- ``depth - 1`` ordinary pre-norm self-attention blocks over the tokens (V-JEPA 2 probes use depth 4;
  V-JEPA uses depth 1), then
- one cross-attention block: a learned query (truncated normal, std 0.02) attends over the
  LayerNorm-ed tokens (multi-head; the query enters the projection un-normalized), residual; then
  ``query + MLP(LayerNorm(query))`` (GELU, ratio 4);
- a linear head on the pooled query. Multi-clip video: the head's class probabilities (softmax) are
  averaged over a video's clips.

Differences from V-JEPA 2, each for a stated reason: the head starts at zero (as the linear probe's);
the cross-attention has an output projection (the standard multi-head layout; V-JEPA 2 drops it, which
only removes a linear map the MLP can absorb); there is no key bias (it adds the same score to every token,
and the softmax ignores it).

**Cost.** With a single learned query, attention need not project every token: the query is folded into
the key projection (``q_h . W_k,h x = (W_k,h^T q_h) . x``) and the value projection is applied after the
attention-weighted average (``sum_k a_k W_v x_k = W_v sum_k a_k x_k``). This is the same function with the
same parameters, at ``O(heads * K * D + D^2)`` per sample instead of ``O(K * D^2)`` (the test checks the
equivalence against the textbook form). Self-attention blocks (``depth > 1``) have no such shortcut.

**Protocol.** The same as :func:`~openjepa.eval.probes.linear_probe`, so the two columns are comparable:
tokens standardized per channel with *train* statistics (over all train tokens), AdamW with a cosine
decay to zero and no warmup, one probe per learning rate of the sweep, all trained on the same
mini-batches from the same initialization, scored once on val after the last epoch, and the best
*validation* accuracy over the sweep reported (optimistic by the sweep, as for the linear probe; the
per-lr accuracies are returned). With ``eval_every`` the probes are also scored every few epochs and the
best score over those epochs counts (DINO's linear evaluation reports its "max accuracy so far" the same
way): a long schedule then serves tasks that need it (speed on ``sprites`` escapes its plateau only after
~60 epochs) without over-fitting the ones that peak early (direction); the per-epoch curves are returned.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from openjepa.eval.probes import DEFAULT_LRS, check_labels, single_cpu_thread, standardization_stats
from openjepa.models.layers import Block, Mlp, init_weights

__all__ = [
    "AttentiveClassifier",
    "AttentivePooler",
    "QueryCrossAttention",
    "StackedProbes",
    "attentive_probe",
    "attentive_probes",
    "default_heads",
    "score_epochs",
]

# Samples per forward pass when predicting (bounds the float32 copy of float16 tokens).
_PREDICT_CHUNK = 1024


def default_heads(dim: int) -> int:
    """Heads for a probe of width ``dim``: the most (up to 16) whose width is at least 32 and divides ``dim``."""
    for heads in (16, 12, 8, 6, 4, 3, 2):
        if dim % heads == 0 and dim // heads >= 32:
            return heads
    return 1


class QueryCrossAttention(nn.Module):
    """Multi-head attention of learned queries ``[Q, D]`` (shared by the batch) over tokens ``[B, K, D]``.

    Holds the usual ``q``, ``k``, ``v`` and ``proj`` linear maps; computes the attention on the raw
    tokens (see the module docstring), which is exact and much cheaper when ``Q`` is small.

    Args:
        dim: token width.
        num_heads: attention heads (must divide ``dim``).
        qkv_bias: biases on the query and value projections.
    """

    def __init__(self, dim: int, num_heads: int, qkv_bias: bool = True):
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"attentive probe: width {dim} is not divisible by {num_heads} heads")
        self.num_heads = num_heads
        self.q = nn.Linear(dim, dim, bias=qkv_bias)
        self.k = nn.Linear(dim, dim, bias=False)  # a key bias shifts every score of a head equally: no effect
        self.v = nn.Linear(dim, dim, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)

    def forward(self, queries: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """``queries [Q, D]``, ``x [B, K, D]`` -> ``[B, Q, D]``."""
        b, _, d = x.shape
        h = self.num_heads
        dh = d // h
        q = self.q(queries).view(-1, h, dh)  # [Q, H, dh]
        # The query read through the key projection: scores are then dot products with the raw tokens.
        q_in_x = torch.einsum("qhe,hed->qhd", q, self.k.weight.view(h, dh, d)) * dh**-0.5
        attn = torch.einsum("bkd,qhd->bqhk", x, q_in_x).softmax(-1)
        pooled = torch.einsum("bqhk,bkd->bqhd", attn, x)  # per head, the attention-weighted token average
        out = torch.einsum("bqhd,hed->bqhe", pooled, self.v.weight.view(h, dh, d)).reshape(b, -1, d)
        if self.v.bias is not None:
            out = out + self.v.bias  # the weights sum to one, so the bias passes through unchanged
        return self.proj(out)


class AttentivePooler(nn.Module):
    """``depth - 1`` self-attention blocks, then a cross-attention block with learned queries.

    Args:
        dim: token width.
        num_heads: attention heads; default :func:`default_heads`.
        depth: blocks in all (1: the cross-attention block alone).
        mlp_ratio: hidden width of the MLPs over ``dim``.
        num_queries: learned queries (1 for classification).
    """

    def __init__(
        self,
        dim: int,
        num_heads: int | None = None,
        depth: int = 1,
        mlp_ratio: float = 4.0,
        num_queries: int = 1,
    ):
        super().__init__()
        if depth < 1:
            raise ValueError(f"attentive probe depth={depth} must be >= 1")
        heads = default_heads(dim) if num_heads is None else num_heads
        self.blocks = nn.ModuleList(Block(dim=dim, num_heads=heads, mlp_ratio=mlp_ratio) for _ in range(depth - 1))
        self.query = nn.Parameter(torch.zeros(num_queries, dim))
        self.norm_x = nn.LayerNorm(dim, eps=1e-6)
        self.xattn = QueryCrossAttention(dim, heads)
        self.norm_q = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))
        self.apply(init_weights)
        nn.init.trunc_normal_(self.query, std=0.02, a=-0.04, b=0.04)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x [B, K, D]`` -> ``[B, num_queries, D]``."""
        for blk in self.blocks:
            x = blk(x)
        q = self.query + self.xattn(self.query, self.norm_x(x))
        return q + self.mlp(self.norm_q(q))


class AttentiveClassifier(nn.Module):
    """An :class:`AttentivePooler` with one query and a zero-initialized linear head.

    Args:
        dim: token width.
        num_classes: classes of the task.
        num_heads, depth, mlp_ratio: as in :class:`AttentivePooler`.
    """

    def __init__(
        self, dim: int, num_classes: int, num_heads: int | None = None, depth: int = 1, mlp_ratio: float = 4.0
    ):
        super().__init__()
        self.pooler = AttentivePooler(dim, num_heads, depth, mlp_ratio)
        self.head = nn.Linear(dim, num_classes)
        nn.init.zeros_(self.head.weight)
        nn.init.zeros_(self.head.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x [B, K, D]`` -> logits ``[B, num_classes]``."""
        return self.head(self.pooler(x)[:, 0])


# ----------------------------------------------------------------------------- depth 1, many probes at once

# Bound on the elements of the largest activations of one group of stacked probes (float32), so that a
# sweep over many tasks and learning rates on long video token sequences stays within a few hundred MB.
_STACK_ELEMENTS = 1 << 25


def _linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    """Stacked ``nn.Linear``: ``x [S, B, in]``, ``weight [S, out, in]``, ``bias [S, out]`` -> ``[S, B, out]``."""
    return torch.baddbmm(bias[:, None], x, weight.transpose(1, 2))


class StackedProbes:
    """S depth-1 :class:`AttentiveClassifier` s evaluated together as batched tensor operations.

    A sweep trains one probe per (task, learning rate); running them as S separate modules is dominated by
    per-operation overhead on the CPU. Stacking their parameters along a leading dimension turns the S
    forward passes into a few batched products (3x faster than ``torch.func.vmap`` measured on 2 CPU cores,
    because the shared token normalization is computed once and never copied S times). The math is the
    module's (the tests check it against :class:`AttentiveClassifier`): the LayerNorm's bias adds the same
    amount to every attention score of a head, so it only enters the pooled value.

    Heads of tasks with fewer classes are padded to the largest; padded logits are ``-inf``.

    Args:
        models: depth-1 classifiers of one width and head count.
    """

    def __init__(self, models: Sequence[AttentiveClassifier]):
        if not models:
            raise ValueError("StackedProbes needs at least one model")
        if any(len(m.pooler.blocks) for m in models):
            raise ValueError("StackedProbes stacks depth-1 probes only")
        first = models[0]
        self.dim = first.head.in_features
        self.num_heads = first.pooler.xattn.num_heads
        self.classes = [m.head.out_features for m in models]
        width = max(self.classes)
        self.params: dict[str, torch.Tensor] = {}
        states = [m.state_dict() for m in models]
        for name in states[0]:
            stacked = [state[name] for state in states]
            if name.startswith("head."):
                stacked = [F.pad(t, (0, 0) * (t.ndim - 1) + (0, width - t.shape[0])) for t in stacked]
            self.params[name] = torch.stack(stacked).detach().clone().requires_grad_(True)
        mask = torch.zeros(len(models), width)
        for s, c in enumerate(self.classes):
            mask[s, c:] = -math.inf
        self.mask = mask

    def to(self, device: torch.device) -> StackedProbes:
        """Moves the parameters (kept as leaves) and the class mask to ``device``."""
        self.params = {k: v.detach().to(device).requires_grad_(True) for k, v in self.params.items()}
        self.mask = self.mask.to(device)
        return self

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        """``x [B, K, D]`` (shared by every probe) -> logits ``[S, B, max classes]``."""
        p = self.params
        s, (b, _, d), h = len(self.classes), x.shape, self.num_heads
        dh = d // h
        xn = F.layer_norm(x, (d,), eps=1e-6)  # once for all probes; each probe's gain and bias follow
        gain, shift = p["pooler.norm_x.weight"], p["pooler.norm_x.bias"]
        query = p["pooler.query"][:, 0]  # [S, D]
        q = torch.einsum("sd,sed->se", query, p["pooler.xattn.q.weight"]) + p["pooler.xattn.q.bias"]
        wk = p["pooler.xattn.k.weight"].view(s, h, dh, d)
        q_in_x = torch.einsum("she,shed->shd", q.view(s, h, dh), wk) * dh**-0.5
        attn = torch.einsum("bkd,shd->sbhk", xn, q_in_x * gain[:, None]).softmax(-1)
        pooled = torch.einsum("sbhk,bkd->sbhd", attn, xn) * gain[:, None, None] + shift[:, None, None]
        wv = p["pooler.xattn.v.weight"].view(s, h, dh, d)
        v = torch.einsum("sbhd,shed->sbhe", pooled, wv).reshape(s, b, d) + p["pooler.xattn.v.bias"][:, None]
        out = _linear(v, p["pooler.xattn.proj.weight"], p["pooler.xattn.proj.bias"])
        q1 = query[:, None] + out
        hidden = F.layer_norm(q1, (d,), eps=1e-6) * p["pooler.norm_q.weight"][:, None]
        hidden = hidden + p["pooler.norm_q.bias"][:, None]
        hidden = F.gelu(_linear(hidden, p["pooler.mlp.fc1.weight"], p["pooler.mlp.fc1.bias"]))
        q2 = q1 + _linear(hidden, p["pooler.mlp.fc2.weight"], p["pooler.mlp.fc2.bias"])
        logits = _linear(q2, p["head.weight"], p["head.bias"])
        return logits + self.mask[:, None]

    def unstack(self, index: int) -> AttentiveClassifier:
        """Probe ``index`` as an :class:`AttentiveClassifier` (on the CPU)."""
        c = self.classes[index]
        model = AttentiveClassifier(self.dim, c, self.num_heads, depth=1)
        state = {k: v[index].detach().cpu() for k, v in self.params.items()}
        state["head.weight"], state["head.bias"] = state["head.weight"][:c], state["head.bias"][:c]
        model.load_state_dict(state)
        return model


class _StackedAdamW:
    """AdamW over stacked parameters, with one learning rate per stacked probe.

    ``torch.optim.AdamW`` holds one learning rate per parameter *tensor*; here a tensor holds S probes
    with different learning rates. Same update as torch's (decoupled decay, bias-corrected moments).
    """

    def __init__(self, params: dict[str, torch.Tensor], lrs: torch.Tensor, weight_decay: float):
        self.params = params
        self.lrs = lrs
        # Decay weight matrices only: biases, LayerNorm gains and the query are offsets and scales.
        self.decay = {k: v.ndim >= 3 and not k.endswith("query") for k, v in params.items()}
        self.weight_decay = weight_decay
        self.m = {k: torch.zeros_like(v) for k, v in params.items()}
        self.v = {k: torch.zeros_like(v) for k, v in params.items()}
        self.t = 0

    @torch.no_grad()
    def step(self, grads: dict[str, torch.Tensor], scale: float, betas: tuple[float, float] = (0.9, 0.999)) -> None:
        self.t += 1
        b1, b2 = betas
        for k, p in self.params.items():
            g = grads[k]
            self.m[k].mul_(b1).add_(g, alpha=1 - b1)
            self.v[k].mul_(b2).addcmul_(g, g, value=1 - b2)
            lr = (self.lrs * scale).view(-1, *([1] * (p.ndim - 1)))
            if self.decay[k] and self.weight_decay:
                p.mul_(1 - lr * self.weight_decay)
            denom = (self.v[k] / (1 - b2**self.t)).sqrt_().add_(1e-8)
            p.sub_(lr / (1 - b1**self.t) * self.m[k] / denom)


# ----------------------------------------------------------------------------- the probe


def _as_clips(tokens: torch.Tensor, name: str) -> torch.Tensor:
    """``[N, K, D]`` (one view) or ``[N, C, K, D]`` (C clips) -> ``[N, C, K, D]`` (a view, no copy)."""
    if tokens.ndim == 3:
        return tokens.unsqueeze(1)
    if tokens.ndim == 4:
        return tokens
    raise ValueError(f"attentive probe {name}: expected tokens [N, K, D] or [N, C, K, D], got {tuple(tokens.shape)}")


def _cosine(step: int, total: int) -> float:
    # Cosine decay to zero over the whole run, no warmup: the linear probe's schedule.
    return 0.5 * (1.0 + math.cos(math.pi * step / total))


def _batches(total: int, batch_size: int, epochs: int, seed: int) -> list[torch.Tensor]:
    """The mini-batch indices of every step: one order per epoch, drawn from ``seed``."""
    gen = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(epochs):
        order = torch.randperm(total, generator=gen)
        out += [order[start : start + batch_size] for start in range(0, total, batch_size)]
    return out


def _train_stacked(
    probes: StackedProbes,
    lrs: torch.Tensor,
    flat: torch.Tensor,
    targets: torch.Tensor,
    batches: list[torch.Tensor],
    mean: torch.Tensor,
    std: torch.Tensor,
    weight_decay: float,
    device: torch.device,
    after_step: Callable[[int], None] | None = None,
) -> None:
    """Trains every stacked probe on the same batches; ``targets [S, N]`` holds each probe's labels.

    ``after_step(steps_done)`` runs after every optimizer step (the caller scores the probes there).
    """
    opt = _StackedAdamW(probes.params, lrs.to(device), weight_decay)
    names = list(probes.params)
    for step, idx in enumerate(batches):
        xb = (flat[idx].to(device).float() - mean) / std
        yb = targets[:, idx].to(device)
        logits = probes(xb)
        # Summed over probes: independent parameters, so each probe gets exactly its own gradient.
        loss = F.cross_entropy(logits.flatten(0, 1), yb.flatten(), reduction="sum") / xb.shape[0]
        grads = torch.autograd.grad(loss, [probes.params[k] for k in names])
        opt.step(dict(zip(names, grads, strict=True)), _cosine(step, len(batches)))
        if after_step is not None:
            after_step(step + 1)


def _train_modules(
    models: list[nn.Module],
    lrs: Sequence[float],
    flat: torch.Tensor,
    targets: torch.Tensor,
    batches: list[torch.Tensor],
    mean: torch.Tensor,
    std: torch.Tensor,
    weight_decay: float,
    device: torch.device,
    after_step: Callable[[int], None] | None = None,
) -> None:
    """The plain form (any depth): one module per probe, torch's AdamW, the same batches and schedule."""
    groups = []
    for model, lr in zip(models, lrs, strict=True):
        decay = [p for n, p in model.named_parameters() if p.ndim >= 2 and not n.endswith("query")]
        rest = [p for n, p in model.named_parameters() if not (p.ndim >= 2 and not n.endswith("query"))]
        groups.append({"params": decay, "lr": lr, "base_lr": lr, "weight_decay": weight_decay})
        groups.append({"params": rest, "lr": lr, "base_lr": lr, "weight_decay": 0.0})
    opt = torch.optim.AdamW(groups)
    for step, idx in enumerate(batches):
        xb = (flat[idx].to(device).float() - mean) / std
        yb = targets[:, idx].to(device)
        for g in opt.param_groups:
            g["lr"] = g["base_lr"] * _cosine(step, len(batches))
        loss = sum(F.cross_entropy(m(xb), yb[s]) for s, m in enumerate(models))
        opt.zero_grad(set_to_none=True)
        loss.backward()  # type: ignore[union-attr]
        opt.step()
        if after_step is not None:
            after_step(step + 1)


@torch.no_grad()
def _val_probs(
    forward: Callable[[torch.Tensor], torch.Tensor],
    tokens: torch.Tensor,
    mean: torch.Tensor,
    std: torch.Tensor,
    device: torch.device,
) -> torch.Tensor:
    """Class probabilities ``[S, N, classes]`` of ``tokens [N, C, K, D]``, averaged over the C clips."""
    n, c = tokens.shape[:2]
    per = max(1, _PREDICT_CHUNK // c)
    out = []
    for start in range(0, n, per):
        x = tokens[start : start + per]
        logits = forward((x.to(device).float().flatten(0, 1) - mean) / std)  # [S, chunk * C, classes]
        probs = logits.float().softmax(-1)
        out.append(probs.unflatten(1, (x.shape[0], c)).mean(2))
    return torch.cat(out, dim=1)


def attentive_probes(
    train_tokens: torch.Tensor,
    train_labels: dict[str, torch.Tensor],
    val_tokens: torch.Tensor,
    val_labels: dict[str, torch.Tensor],
    num_classes: dict[str, int],
    lrs: Sequence[float] = DEFAULT_LRS,
    epochs: int = 20,
    batch_size: int = 128,
    weight_decay: float = 1e-4,
    seed: int = 0,
    depth: int = 1,
    num_heads: int | None = None,
    mlp_ratio: float = 4.0,
    device: torch.device | str | None = None,
    eval_every: int = 0,
) -> dict[str, dict]:
    """Attentive probes for several tasks on the same tokens, each swept over ``lrs``.

    Every (task, lr) probe is an independent :class:`AttentiveClassifier`; they share only the
    mini-batch order (and, within a task, the initialization), so this is exactly a set of separate runs.
    Depth-1 probes are trained stacked (:class:`StackedProbes`), deeper ones one module each.

    Args:
        train_tokens: ``[N, K, D]`` tokens, or ``[N, C, K, D]`` for C clips per video (every clip is a
            training sample with its video's label). float16 is fine: batches are converted to float32.
        train_labels: ``{task: int [N]}`` (tasks not in ``num_classes`` are ignored).
        val_tokens, val_labels: the same for the reporting split; with clips, the probabilities of a
            video's clips are averaged before the argmax.
        num_classes: ``{task: classes}``: the tasks to probe.
        lrs: the learning rates of the sweep.
        epochs: passes over the training samples.
        batch_size: samples (clips) per mini-batch.
        weight_decay: AdamW weight decay on the weight matrices.
        seed: drives the initialization and the mini-batch order.
        depth, num_heads, mlp_ratio: the probe's shape (:class:`AttentivePooler`).
        device: where to train; defaults to the device of ``train_tokens``.
        eval_every: also score the probes on val after every ``eval_every``-th epoch and report, per
            learning rate, the best of those scores (DINO's "max accuracy so far" over the epochs of the
            probe's schedule; optimistic by that choice as the sweep is by its lrs). 0: after the last
            epoch only.

    Returns:
        ``{task: {"best_acc", "best_lr", "best_epoch", "accs_per_lr": {lr: acc}, "epoch_per_lr": {lr:
        epoch}, "curves": {lr: {epoch: acc}}}}``, accuracies as fractions in [0, 1]; ``best_acc`` is the
        best *validation* accuracy over the sweep (and over the scored epochs), as for the linear probe.
    """
    train = _as_clips(train_tokens, "train")
    val = _as_clips(val_tokens, "val")
    tasks = list(num_classes)
    if not tasks:
        return {}
    for task in tasks:
        ytr, yva = train_labels.get(task), val_labels.get(task)
        if ytr is None or yva is None:
            raise ValueError(f"attentive probe: task {task!r} needs train and val labels")
        if ytr.shape != (train.shape[0],) or yva.shape != (val.shape[0],):
            raise ValueError(
                f"attentive probe {task}: {tuple(train_tokens.shape)} train tokens for labels {tuple(ytr.shape)}, "
                f"{tuple(val_tokens.shape)} val tokens for labels {tuple(yva.shape)}: one label per sample"
            )
        check_labels(ytr, num_classes[task], f"{task} train labels")
        check_labels(yva, num_classes[task], f"{task} val labels")
    if train.shape[0] == 0 or val.shape[0] == 0:
        raise ValueError("attentive probe: no samples")
    if train.shape[-1] != val.shape[-1]:
        raise ValueError(f"attentive probe: train width {train.shape[-1]} != val width {val.shape[-1]}")
    if not lrs:
        raise ValueError("attentive probe needs at least one learning rate in lrs")
    scored_epochs = score_epochs(epochs, eval_every)  # validates both before any work
    dev = torch.device(device) if device is not None else train_tokens.device
    dim = train.shape[-1]
    heads = default_heads(dim) if num_heads is None else num_heads
    n, clips = train.shape[:2]
    flat = train.reshape(n * clips, *train.shape[2:])  # a view: every clip is one sample
    mean, std = standardization_stats(flat.reshape(-1, dim))
    mean, std = mean.to(dev), std.to(dev)
    batches = _batches(flat.shape[0], batch_size, epochs, seed)

    pairs = [(task, float(lr)) for task in tasks for lr in lrs]
    with torch.random.fork_rng(devices=[]):
        bases = {}
        for task in tasks:
            torch.manual_seed(seed)
            bases[task] = AttentiveClassifier(dim, num_classes[task], heads, depth, mlp_ratio)
    targets = torch.stack([train_labels[task].long().repeat_interleave(clips) for task, _ in pairs])
    val_y = {task: val_labels[task].long() for task in tasks}
    steps_per_epoch = math.ceil(flat.shape[0] / batch_size)
    scored_at = {e * steps_per_epoch: e for e in scored_epochs}
    # curves[pair index][epoch] = validation accuracy of that probe after that epoch
    curves: list[dict[int, float]] = [{} for _ in pairs]

    def scorer(
        forward: Callable[[torch.Tensor], torch.Tensor], first: int, classes: list[int], modules: list[nn.Module]
    ) -> Callable[[int], None]:
        """Scores probes ``first, first + 1, ...`` on val at the chosen epochs (an ``after_step`` hook)."""

        def score(steps_done: int) -> None:
            epoch = scored_at.get(steps_done)
            if epoch is None:
                return
            for m in modules:
                m.eval()
            p = _val_probs(forward, val, mean, std, dev)
            for m in modules:
                m.train()
            for s, c in enumerate(classes):
                pred = p[s, :, :c].argmax(-1).cpu()
                curves[first + s][epoch] = float((pred == val_y[pairs[first + s][0]]).float().mean())

        return score

    with torch.enable_grad(), single_cpu_thread(dev):
        if depth == 1:
            # Groups of probes small enough that their activations stay bounded (see _STACK_ELEMENTS).
            per_probe = batch_size * heads * (dim + train.shape[2]) + batch_size * 4 * dim
            group = max(1, _STACK_ELEMENTS // per_probe)
            for start in range(0, len(pairs), group):
                chunk = pairs[start : start + group]
                stacked = StackedProbes([bases[task] for task, _ in chunk]).to(dev)
                lr_t = torch.tensor([lr for _, lr in chunk])
                rows = targets[start : start + group]
                hook = scorer(stacked, start, stacked.classes, [])
                _train_stacked(stacked, lr_t, flat, rows, batches, mean, std, weight_decay, dev, hook)
        else:
            for t, task in enumerate(tasks):
                models = [copy.deepcopy(bases[task]).to(dev) for _ in lrs]
                rows = targets[t * len(lrs) : (t + 1) * len(lrs)]
                hook = scorer(
                    lambda x, ms=models: torch.stack([m(x) for m in ms]), t * len(lrs),
                    [num_classes[task]] * len(lrs), models,  # type: ignore[arg-type]
                )
                _train_modules(models, list(lrs), flat, rows, batches, mean, std, weight_decay, dev, hook)
    out: dict[str, dict] = {}
    for (task, lr), curve in zip(pairs, curves, strict=True):
        res = out.setdefault(task, {"accs_per_lr": {}, "epoch_per_lr": {}, "curves": {}})
        best_epoch = max(curve, key=lambda e: (curve[e], e))  # ties: the later epoch
        res["accs_per_lr"][lr] = curve[best_epoch]
        res["epoch_per_lr"][lr] = best_epoch
        res["curves"][lr] = dict(curve)
    for res in out.values():
        accs = res["accs_per_lr"]
        res["best_lr"] = max(accs, key=lambda lr: accs[lr])
        res["best_acc"] = accs[res["best_lr"]]
        res["best_epoch"] = res["epoch_per_lr"][res["best_lr"]]
    return out


def score_epochs(epochs: int, eval_every: int) -> list[int]:
    """The epochs after which the attentive probes are scored on val: every ``eval_every``-th and the last.

    ``eval_every=0`` scores the last epoch only (the probe's accuracy after its full schedule).
    """
    if epochs < 1:
        raise ValueError(f"attentive probe: epochs={epochs} must be >= 1")
    if eval_every < 0:
        raise ValueError(f"attentive probe: eval_every={eval_every} must be >= 0 (0: the last epoch only)")
    chosen = set(range(eval_every, epochs, eval_every)) if eval_every else set()
    return sorted(chosen | {epochs})


def attentive_probe(
    train_tokens: torch.Tensor,
    train_y: torch.Tensor,
    val_tokens: torch.Tensor,
    val_y: torch.Tensor,
    num_classes: int,
    lrs: Sequence[float] = DEFAULT_LRS,
    epochs: int = 20,
    batch_size: int = 128,
    weight_decay: float = 1e-4,
    seed: int = 0,
    depth: int = 1,
    num_heads: int | None = None,
    mlp_ratio: float = 4.0,
    device: torch.device | str | None = None,
    eval_every: int = 0,
) -> dict:
    """Attentive classification probe of one task; see :func:`attentive_probes` for the arguments.

    Returns:
        ``{"best_acc", "best_lr", "best_epoch", "accs_per_lr", "epoch_per_lr", "curves"}`` as there.
    """
    res = attentive_probes(
        train_tokens, {"task": train_y}, val_tokens, {"task": val_y}, {"task": num_classes},
        lrs=lrs, epochs=epochs, batch_size=batch_size, weight_decay=weight_decay, seed=seed, depth=depth,
        num_heads=num_heads, mlp_ratio=mlp_ratio, device=device, eval_every=eval_every,
    )
    return res["task"]
