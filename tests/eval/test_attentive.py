"""The attentive probe: exact fast attention, stacked == separate probes, reads what average pooling hides,
reports validation accuracy, averages clips."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F

from openjepa.eval.attentive import (
    AttentiveClassifier,
    QueryCrossAttention,
    StackedProbes,
    _batches,
    _train_modules,
    _train_stacked,
    _val_probs,
    attentive_probe,
    attentive_probes,
    default_heads,
    score_epochs,
)
from openjepa.eval.probes import linear_probe


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    # Small ops: extra OpenMP threads only add contention on a shared CPU (see probes.single_cpu_thread).
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _marker_tokens(n: int, seed: int, dim: int = 32, k: int = 9) -> tuple[torch.Tensor, torch.Tensor]:
    """Tokens whose *mean* is the same for every sample, while the label sits in one token's position.

    Each sample holds one marker token and four tokens of each of two fillers, all plus a fixed vector per
    position; the label is whether the marker is in the first half of the sequence. The multiset of
    contents and the sum of positions never change, so the mean over tokens carries no label information
    (up to the small noise); attending to the marker reads its position.
    """
    g = torch.Generator().manual_seed(1000)
    marker, filler_a, filler_b = torch.randn(3, dim, generator=g) * 2
    positions = torch.randn(k, dim, generator=g)
    g = torch.Generator().manual_seed(seed)
    first_half = torch.randint(2, (n,), generator=g)
    x = torch.empty(n, k, dim)
    for i in range(n):
        slot = int(torch.randint(0, k // 2, (1,), generator=g)) + (0 if first_half[i] else k // 2 + 1)
        others = [p for p in range(k) if p != slot]
        order = torch.randperm(k - 1, generator=g)
        contents = [filler_a if j < (k - 1) // 2 else filler_b for j in range(k - 1)]
        x[i, slot] = marker
        for j, p in enumerate(others):
            x[i, p] = contents[int(order[j])]
    x = x + positions + 0.05 * torch.randn(n, k, dim, generator=g)
    return x, first_half


def test_query_attention_equals_textbook_multi_head_attention():
    torch.manual_seed(0)
    attn = QueryCrossAttention(48, 3)
    torch.nn.init.normal_(attn.v.bias)
    query, x = torch.randn(2, 48), torch.randn(5, 7, 48)
    q = attn.q(query).view(1, 2, 3, 16).transpose(1, 2).expand(5, -1, -1, -1)
    k = F.linear(x, attn.k.weight).view(5, 7, 3, 16).transpose(1, 2)
    v = attn.v(x).view(5, 7, 3, 16).transpose(1, 2)
    expected = attn.proj(F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(5, 2, 48))
    torch.testing.assert_close(attn(query, x), expected, rtol=1e-5, atol=1e-5)


def test_default_heads_divide_the_width():
    for dim in (32, 60, 96, 192, 384, 768, 1024):
        heads = default_heads(dim)
        assert dim % heads == 0 and (dim // heads >= 32 or heads == 1)
    assert default_heads(96) == 3 and default_heads(1024) == 16


def test_stacked_probes_equal_separate_modules_and_mask_padded_classes():
    torch.manual_seed(0)
    models = [AttentiveClassifier(32, c) for c in (2, 5)]
    for m in models:  # move away from the zero / unit init so every parameter matters
        for p in m.parameters():
            p.data.add_(0.1 * torch.randn_like(p))
    stacked = StackedProbes(models)
    x = torch.randn(6, 9, 32)
    out = stacked(x)
    assert out.shape == (2, 6, 5)
    torch.testing.assert_close(out[0, :, :2], models[0](x), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(out[1], models[1](x), rtol=1e-5, atol=1e-5)
    assert torch.isinf(out[0, :, 2:]).all()
    back = stacked.unstack(0)
    torch.testing.assert_close(back(x), models[0](x))


def test_stacked_training_equals_training_each_module_with_torch_adamw():
    x, y = _marker_tokens(64, seed=3)
    torch.manual_seed(0)
    base = AttentiveClassifier(32, 2)
    lrs = [1e-3, 1e-2]
    mean, std = torch.zeros(32), torch.ones(32)
    batches = _batches(64, 16, 2, seed=0)
    targets = y.repeat(2, 1)
    stacked = StackedProbes([base, base])
    _train_stacked(stacked, torch.tensor(lrs), x, targets, batches, mean, std, 1e-2, torch.device("cpu"))
    modules = [copy.deepcopy(base) for _ in lrs]
    _train_modules(modules, lrs, x, targets, batches, mean, std, 1e-2, torch.device("cpu"))
    for s, module in enumerate(modules):
        for name, p in module.state_dict().items():
            torch.testing.assert_close(stacked.params[name][s].detach(), p, rtol=1e-4, atol=1e-5, msg=name)


def test_attentive_probe_reads_what_average_pooling_cannot():
    xtr, ytr = _marker_tokens(512, seed=0)
    xva, yva = _marker_tokens(256, seed=1)
    linear = linear_probe(xtr.mean(1), ytr, xva.mean(1), yva, num_classes=2, epochs=30)
    attentive = attentive_probe(xtr.half(), ytr, xva.half(), yva, num_classes=2, epochs=30, batch_size=64)
    assert linear["best_acc"] < 0.65  # chance is 0.5: the mean carries no label
    assert attentive["best_acc"] >= 0.9
    assert set(attentive["accs_per_lr"]) == {1e-3, 3e-3, 1e-2, 3e-2}
    assert attentive["best_acc"] == max(attentive["accs_per_lr"].values())


def test_deeper_probe_runs_the_plain_path_and_learns_too():
    xtr, ytr = _marker_tokens(256, seed=0)
    xva, yva = _marker_tokens(128, seed=1)
    res = attentive_probe(xtr, ytr, xva, yva, num_classes=2, lrs=(3e-3,), epochs=20, batch_size=64, depth=2)
    assert res["best_acc"] >= 0.8


def test_reports_validation_accuracy_random_val_labels_give_chance():
    xtr, ytr = _marker_tokens(512, seed=0)
    xva, _ = _marker_tokens(400, seed=1)
    random_val = torch.randint(2, (400,), generator=torch.Generator().manual_seed(5))
    res = attentive_probe(xtr, ytr, xva, random_val, num_classes=2, epochs=30, batch_size=64)
    # The train labels are learnable (previous test), but what is reported is val: chance, up to the max
    # over four lrs of 400 samples (one standard error is 2.5 points).
    assert 0.38 <= res["best_acc"] <= 0.62


def test_several_tasks_match_single_task_runs_and_are_deterministic():
    xtr, ytr = _marker_tokens(128, seed=0)
    xva, yva = _marker_tokens(64, seed=1)
    other_tr, other_va = 1 - ytr, 1 - yva
    kwargs = {"lrs": (1e-3, 1e-2), "epochs": 3, "batch_size": 32, "seed": 4}
    both = attentive_probes(xtr, {"a": ytr, "b": other_tr}, xva, {"a": yva, "b": other_va}, {"a": 2, "b": 2}, **kwargs)
    alone = attentive_probe(xtr, ytr, xva, yva, num_classes=2, **kwargs)
    assert both["a"]["accs_per_lr"] == pytest.approx(alone["accs_per_lr"], abs=1e-6)
    assert both == attentive_probes(xtr, {"a": ytr, "b": other_tr}, xva, {"a": yva, "b": other_va}, {"a": 2, "b": 2},
                                    **kwargs)


def test_clip_probabilities_are_averaged_over_a_videos_clips():
    # A "model" whose logits are the first two channels of the first token: easy to predict by hand.
    tokens = torch.randn(3, 4, 5, 8)  # 3 videos, 4 clips, 5 tokens, width 8
    probs = _val_probs(lambda x: x[None, :, 0, :2], tokens, torch.zeros(8), torch.ones(8), torch.device("cpu"))
    expected = tokens[:, :, 0, :2].softmax(-1).mean(1)
    torch.testing.assert_close(probs[0], expected)


def test_multi_clip_training_and_evaluation():
    # Every clip is a noisy view of the video's tokens: training uses each clip as a sample, evaluation
    # averages the probabilities of four clips, which must beat a single clip.
    xtr, ytr = _marker_tokens(256, seed=0)
    xva, yva = _marker_tokens(128, seed=1)
    g = torch.Generator().manual_seed(9)
    clips_tr = torch.stack([xtr + 0.7 * torch.randn(xtr.shape, generator=g) for _ in range(2)], dim=1)
    clips_va = torch.stack([xva + 0.7 * torch.randn(xva.shape, generator=g) for _ in range(4)], dim=1)
    kwargs = {"num_classes": 2, "lrs": (3e-3,), "epochs": 15, "batch_size": 64}
    multi = attentive_probe(clips_tr, ytr, clips_va, yva, **kwargs)
    single = attentive_probe(clips_tr, ytr, clips_va[:, :1], yva, **kwargs)
    assert multi["best_acc"] > single["best_acc"]
    assert multi["best_acc"] >= 0.8


def test_bad_inputs_are_refused_with_the_shapes():
    x, y = _marker_tokens(16, seed=0)
    with pytest.raises(ValueError, match="one label per sample"):
        attentive_probe(x, y[:10], x, y, num_classes=2)
    with pytest.raises(ValueError, match="num_classes=1"):
        attentive_probe(x, y, x, y, num_classes=1)
    with pytest.raises(ValueError, match=r"\[N, K, D\]"):
        attentive_probe(x[0], y, x, y, num_classes=2)


def test_score_epochs_every_nth_and_the_last():
    assert score_epochs(20, 0) == [20]
    assert score_epochs(150, 50) == [50, 100, 150]
    assert score_epochs(25, 10) == [10, 20, 25]
    assert score_epochs(5, 10) == [5]
    with pytest.raises(ValueError, match="eval_every=-1"):
        score_epochs(10, -1)
    with pytest.raises(ValueError, match="epochs=0"):
        score_epochs(0, 0)


@pytest.mark.parametrize("depth", [1, 2])
def test_scoring_every_few_epochs_reports_the_best_epoch_and_leaves_training_unchanged(depth):
    xtr, ytr = _marker_tokens(128, seed=0)
    xva, yva = _marker_tokens(96, seed=1)
    kwargs = {"num_classes": 2, "lrs": (1e-3, 3e-2), "epochs": 6, "batch_size": 32, "seed": 3, "depth": depth}
    last = attentive_probe(xtr, ytr, xva, yva, **kwargs)
    scored = attentive_probe(xtr, ytr, xva, yva, eval_every=2, **kwargs)
    for lr in kwargs["lrs"]:
        curve = scored["curves"][lr]
        assert sorted(curve) == [2, 4, 6]
        # Scoring on val in the middle of training does not change the training: the last score is the
        # probe's accuracy after the full schedule, as without the option.
        assert curve[6] == pytest.approx(last["accs_per_lr"][lr], abs=1e-6)
        assert last["curves"][lr] == {6: last["accs_per_lr"][lr]}
        assert scored["accs_per_lr"][lr] == max(curve.values())
        assert curve[scored["epoch_per_lr"][lr]] == scored["accs_per_lr"][lr]
    assert scored["best_acc"] == max(scored["accs_per_lr"].values()) >= last["best_acc"]
    assert scored["best_epoch"] == scored["epoch_per_lr"][scored["best_lr"]]


def test_probe_settings_refuse_a_negative_eval_every_naming_the_key():
    from openjepa.config import Config
    from openjepa.errors import ConfigError
    from openjepa.eval.report import ProbeSettings

    cfg = Config()
    cfg.eval.attentive_eval_every = -5
    with pytest.raises(ConfigError, match="eval.attentive_eval_every=-5"):
        ProbeSettings.from_config(cfg)
    cfg.eval.attentive_eval_every, cfg.eval.attentive_epochs = 10, 0
    with pytest.raises(ConfigError, match="eval.attentive_epochs=0"):
        ProbeSettings.from_config(cfg)
    cfg.eval.attentive_epochs = 40
    assert ProbeSettings.from_config(cfg).attentive_eval_every == 10
