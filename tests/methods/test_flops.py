"""FLOPs accounting: every method against a hand count, the run's cumulative count, train.flops_budget, resume,
a SALT student counting its teacher's run, and ``openjepa flops``."""

import json
import math
import statistics
from pathlib import Path

import pytest
import torch

from openjepa.checkpoints import load_checkpoint, save_encoder
from openjepa.cli import main
from openjepa.config import load_config
from openjepa.data.pipeline import PretrainPipeline
from openjepa.methods import build_method, method_class
from openjepa.methods.cli import count_flops
from openjepa.methods.flops import total
from openjepa.models.vit import VisionTransformer
from openjepa.train.logger import read_metrics
from openjepa.train.loop import train

CONFIGS = Path(__file__).resolve().parents[2] / "configs"
# The hand counts below are of the linear patch embedding (the image demo config uses the conv stem).
TINY = [
    "model.arch=vit_pico", "model.patch_size=8", "model.stem=linear", "model.pred_dim=48", "model.pred_depth=2",
    "data.image_size=32", "data.train_size=16", "data.batch_size=4", "data.num_workers=0", "mask.min_keep=2",
    "decoder.dim=32", "decoder.depth=1", "decoder.heads=4",
]
VIDEO = ["data.num_frames=4", "data.frame_step=1", "model.tubelet_size=2", "data.sprites.length=8"]
RUN = [
    "optim.warmup_epochs=1", "train.epochs=2", "train.log_every=3", "train.ckpt_every=100", "train.rankme_every=0",
    "train.progress=false", "train.tensorboard=false", "eval.after_pretrain=false",
]


# ---------------------------------------------------------------------------------------------- hand counts


def vit_params(d: int, depth: int, pixels: int) -> int:
    """A ViT with qkv biases and MLP ratio 4: patch embedding, ``depth`` blocks, final LayerNorm."""
    block = 2 * 2 * d + (3 * d * d + 3 * d) + (d * d + d) + (4 * d * d + 4 * d) + (4 * d * d + d)
    return pixels * d + d + depth * block + 2 * d


def narrow_params(d_in: int, d: int, depth: int, out: int, mask_tokens: int) -> int:
    """The predictor / decoder: embedding, mask tokens, blocks, LayerNorm, output projection."""
    block = 2 * 2 * d + (3 * d * d + 3 * d) + (d * d + d) + (4 * d * d + 4 * d) + (4 * d * d + d)
    return d_in * d + d + mask_tokens * d + depth * block + 2 * d + d * out + out


def _video_batch(b=2):
    """Two generators on a 2x4x4 grid of 2x8x8 tubelets: (Kc, T, Kt) = (8, 1, 5) and (6, 1, 10)."""
    return {
        "video": torch.zeros(b, 3, 4, 32, 32),
        "masks": [
            {"ctx_idx": torch.zeros(b, 8, dtype=torch.long), "tgt_idx": torch.zeros(b, 1, 5, dtype=torch.long)},
            {"ctx_idx": torch.zeros(b, 6, dtype=torch.long), "tgt_idx": torch.zeros(b, 1, 10, dtype=torch.long)},
        ],
    }


def test_vjepa_against_a_hand_count():
    method = build_method(load_config(CONFIGS / "vjepa" / "demo.yaml", [*TINY, *VIDEO]), 10)
    n_enc = vit_params(96, 6, 3 * 2 * 8 * 8)
    n_pred = narrow_params(96, 48, 2, 96, mask_tokens=2)
    assert sum(p.numel() for p in method.encoder.parameters()) == n_enc
    assert sum(p.numel() for p in method.predictor.parameters()) == n_pred
    b = 2
    assert method.flops(_video_batch(b)) == {
        "teacher": 2 * n_enc * b * 32,  # the EMA teacher: a forward on all 32 tokens
        "student": 6 * n_enc * b * (8 + 6),  # the context of each generator
        "predictor": 6 * n_pred * b * ((8 + 5) + (6 + 10)),  # context + targets, per generator
    }


def test_ijepa_counts_one_predictor_sequence_per_target_block():
    method = build_method(load_config(CONFIGS / "ijepa" / "demo.yaml", TINY), 10)
    n_enc = vit_params(96, 6, 3 * 8 * 8)
    n_pred = narrow_params(96, 48, 2, 96, mask_tokens=1)
    b, kc, t, kt = 3, 6, 4, 2
    batch = {"image": torch.zeros(b, 3, 32, 32), "masks": [
        {"ctx_idx": torch.zeros(b, kc, dtype=torch.long), "tgt_idx": torch.zeros(b, t, kt, dtype=torch.long)}
    ]}
    assert method.flops(batch) == {
        "teacher": 2 * n_enc * b * 16,
        "student": 6 * n_enc * b * kc,
        "predictor": 6 * n_pred * b * t * (kc + kt),
    }


def test_vpixel_against_a_hand_count():
    method = build_method(load_config(CONFIGS / "vpixel" / "demo.yaml", [*TINY, *VIDEO]), 10)
    n_enc = vit_params(96, 6, 3 * 2 * 8 * 8)
    n_dec = narrow_params(96, 32, 1, 3 * 2 * 8 * 8, mask_tokens=2)
    assert sum(p.numel() for p in method.decoder.parameters()) == n_dec
    b = 2
    assert method.flops(_video_batch(b)) == {
        "student": 6 * n_enc * b * (8 + 6),
        "decoder": 6 * n_dec * b * ((8 + 5) + (6 + 10)),  # one sequence per generator: context + its targets
    }


def test_salt_counts_a_forward_of_its_own_teacher(tmp_path):
    teacher = VisionTransformer(img_size=32, patch_size=8, num_frames=4, embed_dim=144, depth=1, num_heads=3)
    path, _ = save_encoder(teacher, tmp_path / "t.safetensors", {})
    cfg = load_config(CONFIGS / "salt" / "demo.yaml", [*TINY, *VIDEO, f"teacher.checkpoint={path}"])
    method = build_method(cfg, 10)
    n_teacher = vit_params(144, 1, 3 * 2 * 8 * 8)
    n_pred = narrow_params(96, 48, 2, 144, mask_tokens=2)  # predicts the teacher's width
    parts = method.flops(_video_batch(2))
    assert parts["teacher"] == 2 * n_teacher * 2 * 32
    assert parts["predictor"] == 6 * n_pred * 2 * 29
    assert method.prior_flops() is None  # an export that does not say what trained it


def test_default_count_of_an_unmasked_method():
    cfg = load_config(CONFIGS / "clip" / "demo.yaml", [*TINY, "text.dim=24", "clip.dim=16"])
    method = build_method(cfg, 10)
    n_enc = vit_params(96, 6, 3 * 8 * 8)
    heads = sum(p.numel() for n, p in method.named_parameters() if not n.startswith("encoder."))
    b = 5
    assert method.flops({"image": torch.zeros(b, 3, 32, 32)}) == {
        "student": 6 * n_enc * b * 16,  # the full image
        "heads": 6 * heads * b,  # projections and logit scale: once per sample
    }


# ---------------------------------------------------------------------------------------------- in a run


def _expected_cumulative(cfg, steps: int) -> list[float]:
    """The cumulative FLOPs after each step, from the run's own pipeline (the masks the run will see)."""
    method = build_method(cfg, 10)
    pipe = PretrainPipeline(cfg, method_class(cfg.method).data_needs(cfg))
    out, acc = [], 0.0
    for batch in pipe.loader(0, steps):
        acc += total(method.flops(batch))
        out.append(acc)
    return out


def test_budget_stops_the_run_and_resume_continues_the_count(tmp_path, capfd):
    cfg = load_config(CONFIGS / "vpixel" / "demo.yaml", [*TINY, *VIDEO, *RUN])  # 4 steps per epoch, 8 in all
    cum = _expected_cumulative(cfg, 8)
    assert len(set(b - a for a, b in zip([0.0, *cum], cum))) > 1  # random mask sizes: steps cost differently
    budget = (cum[2] + cum[3]) / 2  # reached during step 4
    out = tmp_path / "run"
    budgeted = load_config(CONFIGS / "vpixel" / "demo.yaml", [*TINY, *VIDEO, *RUN, f"train.flops_budget={budget}"])
    assert train(budgeted, out).step == 4
    assert load_checkpoint(out)["step"] == 4 and load_checkpoint(out)["flops"] == {"run": cum[3], "prior": 0.0}
    records = read_metrics(out / "metrics.jsonl")
    assert [r["step"] for r in records] == [3, 4]  # step 4 is logged although log_every=3: the run's last step
    assert records[0]["flops"] == cum[2] and records[1]["flops"] == records[1]["flops_total"] == cum[3]
    assert "FLOPs budget reached after step 4" in capfd.readouterr().err

    # Resuming with the same budget does nothing; with none, the count continues where it stopped.
    assert train(budgeted, out, resume=True).step == 4
    assert "FLOPs budget reached after step 4" in capfd.readouterr().err
    assert train(cfg, out, resume=True).step == 8
    assert load_checkpoint(out)["flops"] == {"run": cum[7], "prior": 0.0}
    records = read_metrics(out / "metrics.jsonl")
    assert [(r["step"], r["flops"]) for r in records] == [(3, cum[2]), (4, cum[3]), (6, cum[5]), (8, cum[7])]

    # A SALT student of that teacher counts the teacher's run, and a budget covers both stages.
    student = [*TINY, *VIDEO, *RUN, f"teacher.checkpoint={out}", "train.max_steps=2", "train.log_every=1"]
    s_cfg = load_config(CONFIGS / "salt" / "demo.yaml", student)
    s_cum = _expected_cumulative(s_cfg, 2)
    assert train(s_cfg, tmp_path / "student").step == 2
    records = read_metrics(tmp_path / "student" / "metrics.jsonl")
    assert [(r["flops"], r["flops_total"]) for r in records] == [(c, cum[7] + c) for c in s_cum]
    assert load_checkpoint(tmp_path / "student")["flops"] == {"run": s_cum[1], "prior": cum[7]}
    spent = load_config(CONFIGS / "salt" / "demo.yaml", [*student, f"train.flops_budget={cum[7]}"])
    assert train(spent, tmp_path / "spent").step == 0  # the teacher already used the whole budget
    assert "FLOPs budget reached after step 0" in capfd.readouterr().err


# ---------------------------------------------------------------------------------------------- the command


def test_flops_command_averages_the_pipeline_steps(tmp_path, capsys):
    over = [*TINY, *VIDEO, *RUN]
    cfg = load_config(CONFIGS / "vpixel" / "demo.yaml", over)
    cum = _expected_cumulative(cfg, 3)
    report = count_flops(load_config(CONFIGS / "vpixel" / "demo.yaml", over), steps=3)
    assert report.step_total == pytest.approx(cum[2] / 3, rel=1e-12)
    assert report.run_steps == 8 and report.run_total == pytest.approx(8 * cum[2] / 3, rel=1e-12)
    assert set(report.per_step) == {"student", "decoder"}
    # Masks differ per step, so the mean comes with its standard error over the steps measured.
    steps = [cum[0], cum[1] - cum[0], cum[2] - cum[1]]
    assert report.step_sem == pytest.approx(statistics.stdev(steps) / math.sqrt(3), rel=1e-9)
    assert report.step_sem > 0
    doubled = count_flops(load_config(CONFIGS / "vpixel" / "demo.yaml", over), steps=3, world_size=2)
    assert doubled.global_batch == 8 and doubled.steps_per_epoch == 2

    assert main(["flops", str(CONFIGS / "vpixel" / "demo.yaml"), *over, "--batches", "3"]) == 0
    text = capsys.readouterr().out
    for word in ("teacher", "student", "predictor", "decoder", "total", "run: 8 steps"):
        assert word in text
    assert main(["flops", str(CONFIGS / "vpixel" / "demo.yaml"), *over, "--batches", "3", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["step_total"] == pytest.approx(cum[2] / 3, rel=1e-12) and data["method"] == "vpixel"


# ---------------------------------------------------------------------------------------------- shipped configs


def test_demo_compare_configs_plan_the_ijepa_demos_training_flops():
    """`make demo-compare` compares TC-JEPA and CLIP with the I-JEPA demo at matched training FLOPs: their
    schedules must plan the same compute (within the noise of 32 sampled steps) and their budget cap must be
    the I-JEPA demo's. Changing the I-JEPA demo without re-matching the other two fails here."""
    demo = load_config(CONFIGS / "ijepa" / "demo.yaml")
    report = count_flops(demo, steps=32)
    ijepa, demo_steps = report.run_total, report.run_steps
    for name in ("tcjepa", "clip"):
        cfg = load_config(CONFIGS / name / "demo.yaml")
        assert cfg.train.flops_budget == pytest.approx(ijepa, rel=0.02), name
        assert count_flops(cfg, steps=32).run_total == pytest.approx(ijepa, rel=0.03), name
        # The reference rows are the I-JEPA demo's: the same ceiling (steps and batch) read from the cache.
        assert cfg.eval.ceiling_steps == demo_steps and cfg.data.batch_size == demo.data.batch_size, name
