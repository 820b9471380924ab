"""SALT's student: a frozen teacher (never trained, in every checkpoint), its width, its targets, bad teachers."""

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file

from openjepa.checkpoints import load_checkpoint, save_encoder
from openjepa.config import ConfigError, load_config
from openjepa.errors import CheckpointError
from openjepa.methods import build_method
from openjepa.methods.salt import SALT
from openjepa.methods.teachers import FrozenTeacher
from openjepa.models.vit import VisionTransformer
from openjepa.train.loop import train

CONFIGS = Path(__file__).resolve().parents[2] / "configs"
TINY = [
    "model.arch=vit_pico", "model.patch_size=8", "model.pred_dim=48", "model.pred_depth=2", "data.image_size=32",
    "data.train_size=16", "data.batch_size=4", "data.num_workers=0", "mask.min_keep=2", "data.num_frames=4",
    "data.frame_step=1", "model.tubelet_size=2", "data.sprites.length=8",
]
RUN = [
    "optim.warmup_epochs=1", "train.epochs=1", "train.log_every=2", "train.ckpt_every=100", "train.rankme_every=0",
    "train.progress=false", "train.tensorboard=false", "eval.after_pretrain=false",
]


def _teacher(tmp: Path, name: str = "teacher", seed: int = 7, **arch) -> Path:
    """A random encoder exported as a teacher: by default two blocks on the student's 2x4x4 grid of 2x8x8
    tubelets; ``arch`` changes its constructor arguments (width, input size, patch, tubelet)."""
    kwargs = {"img_size": 32, "patch_size": 8, "num_frames": 4, "tubelet_size": 2, "embed_dim": 96, "depth": 2,
              "num_heads": 3, **arch}
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        weights, _ = save_encoder(VisionTransformer(**kwargs), tmp / f"{name}.safetensors", {"source": "test"})
    return weights


def _cfg(teacher: Path | str, *extra: str):
    return load_config(CONFIGS / "salt" / "demo.yaml", [*TINY, f"teacher.checkpoint={teacher}", *extra])


def _clip_batch(b=2):
    g = torch.Generator().manual_seed(0)
    masks = {"ctx_idx": torch.arange(8).repeat(b, 1), "tgt_idx": torch.arange(9, 14).repeat(b, 1, 1)}
    return {"video": torch.randn(b, 3, 4, 32, 32, generator=g), "masks": [masks, masks]}


def test_frozen_teacher_gets_no_gradient_and_is_not_optimized(tmp_path):
    method = build_method(_cfg(_teacher(tmp_path)), 10).train()
    assert isinstance(method.teacher, FrozenTeacher)
    assert not method.teacher.model.training  # train() keeps the teacher in eval mode
    h = method.teacher(_clip_batch()["video"])
    assert not h.is_inference() and not h.requires_grad  # an ordinary tensor: usable next to autograd
    loss, _ = method(_clip_batch(), 0)
    loss.backward()
    assert all(p.grad is None and not p.requires_grad for p in method.teacher.parameters())
    assert method.encoder.blocks[0].attn.qkv.weight.grad.abs().sum() > 0
    optimized = {id(p) for g in method.param_groups() for p in g["params"]}
    assert not optimized & {id(p) for p in method.teacher.parameters()}
    assert any(k.startswith("teacher.model.") for k in method.state_dict())
    assert method.encoder_for_eval() is method.encoder and method.encoder_prefix() == "encoder."


def test_teacher_weights_do_not_change_over_a_run_and_are_in_the_checkpoint(tmp_path):
    path = _teacher(tmp_path)
    result = train(_cfg(path, *RUN, "train.max_steps=2"), tmp_path / "run")
    assert result.step == 2
    state = load_checkpoint(tmp_path / "run")["model"]
    exported = load_file(str(path))
    for key, value in exported.items():
        assert torch.equal(state[f"teacher.model.{key}"], value), key  # bitwise
    init = build_method(_cfg(path, *RUN), 10).state_dict()
    assert not torch.equal(state["encoder.blocks.0.attn.qkv.weight"], init["encoder.blocks.0.attn.qkv.weight"])


def test_predictor_outputs_the_teachers_width(tmp_path):
    wide = _teacher(tmp_path, name="wide", embed_dim=144, depth=1)  # wider than the 96-wide student
    method = build_method(_cfg(wide), 10)
    assert method.teacher.embed_dim == 144 and method.encoder.embed_dim == 96
    assert method.predictor.out_dim == 144
    batch = _clip_batch()
    m = batch["masks"][0]
    assert method.predict(batch["video"], m).shape == (2, 1, 5, 144)
    loss, _ = method(batch, 0)
    assert torch.isfinite(loss)


@pytest.mark.parametrize("norm", [True, False])
def test_targets_are_the_teachers_final_tokens_at_the_targets(tmp_path, norm):
    method = build_method(_cfg(_teacher(tmp_path), f"teacher.layer_norm_targets={norm}"), 10).eval()
    batch = _clip_batch()
    tgt = batch["masks"][0]["tgt_idx"]
    with torch.no_grad():
        h = method.teacher.model(batch["video"])  # the full clip
        want = F.layer_norm(h, h.shape[-1:]) if norm else h
        torch.testing.assert_close(method.targets(batch["video"], tgt), want[:, tgt[0, 0]].unsqueeze(1))


def test_a_resumed_student_keeps_the_teacher_it_started_with(tmp_path):
    first = build_method(_cfg(_teacher(tmp_path)), 10)
    _teacher(tmp_path, seed=8)  # the teacher file moved on (e.g. its run was extended)
    resumed = build_method(_cfg(tmp_path / "teacher.safetensors"), 10)
    assert not torch.equal(resumed.teacher.model.blocks[0].mlp.fc1.weight, first.teacher.model.blocks[0].mlp.fc1.weight)
    resumed.load_state_dict(first.state_dict())  # what resuming from the student's checkpoint does
    for a, b in zip(first.teacher.parameters(), resumed.teacher.parameters()):
        assert torch.equal(a, b)


# ---------------------------------------------------------------------------------------------- bad input


def test_missing_teacher_names_the_key_and_how_to_make_one(tmp_path):
    with pytest.raises(ConfigError, match=r"teacher.checkpoint=.*nope.*no teacher there.*demo-teacher.yaml"):
        build_method(_cfg(tmp_path / "nope"), 10)
    with pytest.raises(ConfigError, match=r"teacher.checkpoint=.*nope.safetensors"):
        build_method(_cfg(tmp_path / "nope.safetensors"), 10)


def test_corrupt_teacher_names_the_key_and_the_file(tmp_path):
    bad = tmp_path / "teacher.pt"
    bad.write_bytes(b"not a checkpoint at all" * 10)
    with pytest.raises(CheckpointError, match=r"teacher.checkpoint=.*teacher.pt: cannot read the teacher.*corrupt"):
        build_method(_cfg(bad), 10)
    weights = _teacher(tmp_path)
    weights.write_bytes(weights.read_bytes()[:100])  # a truncated export
    with pytest.raises(CheckpointError, match=r"teacher.checkpoint=.*teacher.safetensors"):
        build_method(_cfg(weights), 10)


@pytest.mark.parametrize(
    "arch, shown",
    [
        ({"img_size": 64}, r"grid 2x8x8 .*student's grid 2x4x4"),  # another resolution
        ({"tubelet_size": 4}, r"grid 1x4x4 \(4x8x8 tubelets.*student's grid 2x4x4 \(2x8x8 tubelets"),
        ({"patch_size": 16, "img_size": 64}, r"grid 2x4x4 \(2x16x16 tubelets.*grid 2x4x4 \(2x8x8"),  # same grid
        ({"num_frames": 1}, r"grid 4x4 \(8x8 patches, 32x32 px images\).*student's grid 2x4x4"),
    ],
)
def test_teacher_of_another_grid_or_tubelet_is_a_config_error_naming_both(tmp_path, arch, shown):
    with pytest.raises(ConfigError, match=r"teacher.checkpoint=.*teacher's " + shown + r".*data.image_size"):
        build_method(_cfg(_teacher(tmp_path, **arch)), 10)


def test_salt_needs_a_frozen_teacher_with_a_checkpoint(tmp_path):
    with pytest.raises(ConfigError, match=r"teacher.kind=frozen.*method=vjepa"):
        SALT.check_config(_cfg(_teacher(tmp_path), "teacher.kind=ema"))
    cfg = load_config(CONFIGS / "salt" / "demo.yaml", TINY)
    cfg.teacher.checkpoint = None
    with pytest.raises(ConfigError, match=r"needs teacher.checkpoint=PATH"):
        build_method(cfg, 10)
