"""Official I-JEPA / V-JEPA / V-JEPA 2 checkpoints: openjepa.load_encoder gives the tokens their models give.

Nothing is downloaded. Each format is rebuilt here from the facts of its public code, written as plain
functions over a state dict with the official parameter names (independent of openjepa's model code):

- facebookresearch/ijepa ``src/models/vision_transformer.py`` + ``src/train.py``: Conv2d patches; a stored
  2-D sin-cos ``pos_embed`` whose first half encodes the column (``np.meshgrid(grid_w, grid_h)``, then
  ``grid[0]`` for the first half) and second half the row, each ``[sin | cos]`` with frequencies
  ``1 / 10000 ** (j / (d/2))``; qkv as one Linear reshaped ``(B, N, 3, heads, head_dim)``; softmax
  attention scaled by ``head_dim ** -0.5``; exact GELU MLP; pre-norm LayerNorms with eps 1e-6; no class
  token. Saved as ``{"encoder", "predictor", "target_encoder", "opt", "scaler", "epoch", "loss",
  "batch_size", "world_size", "lr"}`` with every state dict behind DDP's ``module.``.
- facebookresearch/jepa ``src/models/vision_transformer.py``, ``src/models/utils/pos_embs.py``,
  ``app/vjepa/train.py``: Conv3d tubelets ``(t, p, p)``; a stored 3-D table in (time, row, column) raster
  order whose channels are ``[time | row | column]`` codes (``uniform_power``: ``ceil(D/6)*2`` each, cut to
  D); the same blocks; state dicts behind ``module.backbone.`` (DDP + multi-mask wrapper); the predictor
  always holds ``predictor_pos_embed``.
- facebookresearch/vjepa2 ``src/models/utils/modules.py`` (``RoPEAttention``, ``rotate_queries_or_keys``),
  ``app/vjepa/train.py``, ``src/hub/backbones.py``: no table; q and k rotated per head in three segments of
  ``2 * ((head_dim // 3) // 2)`` channels (time, row, column; rest untouched), frequency vector tiled
  (``repeat``) across the segment, adjacent channels paired; integer coordinates from the raster index
  with the input's own grid; state dicts behind ``module.backbone.``; the predictor has no table.
"""

import argparse
import json
import math

import pytest
import torch
import torch.nn.functional as F

import openjepa
from openjepa.checkpoints import read_encoder
from openjepa.checkpoints.cli import add_convert, add_export
from openjepa.errors import CheckpointError

# ----------------------------------------------------------------------------------------------------
# Reference models, as the official code computes them


def sincos_1d(dim: int, pos: torch.Tensor) -> torch.Tensor:
    omega = 1.0 / 10000 ** (torch.arange(dim // 2, dtype=torch.float64) / (dim / 2))
    angles = pos.double().reshape(-1, 1) * omega
    return torch.cat([angles.sin(), angles.cos()], dim=1)


def ijepa_table(dim: int, side: int) -> torch.Tensor:
    rows, cols = torch.meshgrid(torch.arange(side), torch.arange(side), indexing="ij")
    return torch.cat([sincos_1d(dim // 2, cols), sincos_1d(dim // 2, rows)], dim=1).float()  # column first


def vjepa_table(dim: int, depth: int, side: int) -> torch.Tensor:
    t, rows, cols = torch.meshgrid(torch.arange(depth), torch.arange(side), torch.arange(side), indexing="ij")
    each = math.ceil(dim / 6) * 2  # uniform_power=True, V-JEPA's training default
    return torch.cat([sincos_1d(each, t), sincos_1d(each, rows), sincos_1d(each, cols)], dim=1)[:, :dim].float()


def vjepa2_rotate(x: torch.Tensor, coords: torch.Tensor) -> torch.Tensor:
    """V-JEPA 2's rotation of ``x: [B, heads, N, hd]`` by ``coords: [B, N, 3]`` (its tiled frequencies)."""
    seg = 2 * ((x.shape[-1] // 3) // 2)
    parts = []
    for axis in range(3):
        part = x[..., axis * seg : (axis + 1) * seg]
        omega = 1.0 / 10000 ** (torch.arange(seg // 2, dtype=torch.float32) / (seg / 2))
        angles = coords[:, None, :, axis, None] * omega  # [B, 1, N, seg/2]
        cos, sin = angles.cos().repeat(1, 1, 1, 2), angles.sin().repeat(1, 1, 1, 2)  # tiled, not per pair
        partner = torch.stack([-part[..., 1::2], part[..., 0::2]], dim=-1).flatten(-2)
        parts.append(part * cos + partner * sin)
    return torch.cat([*parts, x[..., 3 * seg :]], dim=-1)


def reference_tokens(sd: dict, x: torch.Tensor, heads: int, keep: torch.Tensor | None = None) -> torch.Tensor:
    """The official ViT forward for an unprefixed encoder state dict (table if it has one, else V-JEPA 2 RoPE)."""
    stem, bias = sd["patch_embed.proj.weight"], sd["patch_embed.proj.bias"]
    if stem.ndim == 4:
        fmap = F.conv2d(x, stem, bias, stride=stem.shape[-1])
        grid = (1, *fmap.shape[-2:])
    else:
        fmap = F.conv3d(x, stem, bias, stride=tuple(stem.shape[-3:]))
        grid = tuple(fmap.shape[-3:])
    tokens = fmap.flatten(2).transpose(1, 2)
    b, n, dim = tokens.shape
    if "pos_embed" in sd:
        tokens = tokens + sd["pos_embed"]
    index = torch.arange(n).expand(b, -1) if keep is None else keep
    tokens = torch.stack([tokens[i, index[i]] for i in range(b)])
    per_frame = grid[1] * grid[2]
    coords = torch.stack([index // per_frame, (index % per_frame) // grid[2], index % grid[2]], -1).float()
    hd = dim // heads
    depth = 1 + max(int(k.split(".")[1]) for k in sd if k.startswith("blocks."))
    for i in range(depth):
        p = f"blocks.{i}."
        h = F.layer_norm(tokens, (dim,), sd[p + "norm1.weight"], sd[p + "norm1.bias"], eps=1e-6)
        qkv = F.linear(h, sd[p + "attn.qkv.weight"], sd.get(p + "attn.qkv.bias"))
        q, k, v = qkv.reshape(b, -1, 3, heads, hd).permute(2, 0, 3, 1, 4)
        if "pos_embed" not in sd:
            q, k = vjepa2_rotate(q, coords), vjepa2_rotate(k, coords)
        attn = ((q @ k.transpose(-2, -1)) * hd**-0.5).softmax(dim=-1)
        out = (attn @ v).transpose(1, 2).reshape(b, -1, dim)
        tokens = tokens + F.linear(out, sd[p + "attn.proj.weight"], sd[p + "attn.proj.bias"])
        h = F.layer_norm(tokens, (dim,), sd[p + "norm2.weight"], sd[p + "norm2.bias"], eps=1e-6)
        h = F.gelu(F.linear(h, sd[p + "mlp.fc1.weight"], sd[p + "mlp.fc1.bias"]))
        tokens = tokens + F.linear(h, sd[p + "mlp.fc2.weight"], sd[p + "mlp.fc2.bias"])
    return F.layer_norm(tokens, (dim,), sd["norm.weight"], sd["norm.bias"], eps=1e-6)


def random_encoder(dim: int, depth: int, stem: tuple[int, ...], table: torch.Tensor | None, mlp: int = 0) -> dict:
    """An encoder state dict in the official layout with random, non-trivial values."""
    mlp = mlp or 4 * dim
    sd = {"patch_embed.proj.weight": torch.randn(dim, 3, *stem) / math.sqrt(3 * math.prod(stem)),
          "patch_embed.proj.bias": 0.1 * torch.randn(dim)}
    if table is not None:
        sd["pos_embed"] = table.unsqueeze(0)
    shapes = {"norm1": (dim,), "attn.qkv": (3 * dim, dim), "attn.proj": (dim, dim), "norm2": (dim,),
              "mlp.fc1": (mlp, dim), "mlp.fc2": (dim, mlp)}
    for i in range(depth):
        for name, shape in shapes.items():
            if len(shape) == 1:
                sd[f"blocks.{i}.{name}.weight"] = 1 + 0.2 * torch.randn(shape)
            else:
                sd[f"blocks.{i}.{name}.weight"] = 2 * torch.randn(shape) / math.sqrt(shape[1])
            sd[f"blocks.{i}.{name}.bias"] = 0.1 * torch.randn(shape[0])
    sd["norm.weight"], sd["norm.bias"] = 1 + 0.2 * torch.randn(dim), 0.1 * torch.randn(dim)
    return sd


def official_file(tmp_path, name, encoder, target, prefix, predictor_table=True, **extra):
    """A checkpoint as the official training scripts save it (optimizer state included)."""
    predictor = {"predictor_embed.weight": torch.randn(16, 8), "mask_tokens.0": torch.zeros(1, 1, 16)}
    if predictor_table:
        predictor["predictor_pos_embed"] = torch.randn(1, 4, 16)
    state = {
        "encoder": {prefix + k: v for k, v in encoder.items()},
        "predictor": {prefix + k: v for k, v in predictor.items()},
        "target_encoder": {prefix + k: v for k, v in target.items()},
        "opt": {"state": {0: {"step": torch.tensor(3.0), "exp_avg": torch.zeros(4)}},
                "param_groups": [{"lr": 1e-3, "betas": (0.9, 0.999), "weight_decay": 0.04, "params": [0]}]},
        "scaler": None, "epoch": 3, "loss": 0.25, "batch_size": 8, "world_size": 1, "lr": 1e-3,
    }
    state.update(extra)
    path = tmp_path / name
    torch.save(state, path)
    return path


# ----------------------------------------------------------------------------------------------------
# Equality with the official models


@pytest.fixture(scope="module")
def ijepa(tmp_path_factory):
    torch.manual_seed(0)
    dim, side = 32, 4
    enc, tgt = (random_encoder(dim, 2, (4, 4), ijepa_table(dim, side)) for _ in range(2))
    path = official_file(tmp_path_factory.mktemp("ijepa"), "IN1K-vit.tiny.pth.tar", enc, tgt, "module.")
    return path, {"encoder": enc, "target": tgt}


@pytest.mark.parametrize("which", ["target", "encoder"])
def test_ijepa_tokens_equal_the_official_model(ijepa, which):
    path, sds = ijepa
    loaded = read_encoder(path, which=which, num_heads=2)
    assert loaded.source == "ijepa" and loaded.meta["epoch"] == 3
    assert loaded.meta["checkpoint_key"] == {"target": "target_encoder", "encoder": "encoder"}[which]
    enc = loaded.encoder
    cfg = enc.config()
    inferred = (cfg["embed_dim"], cfg["depth"], cfg["patch_size"], cfg["img_size"], cfg["pos"], cfg["qkv_bias"])
    assert inferred == (32, 2, 4, [16, 16], "stored", True)
    torch.manual_seed(1)
    x, keep = torch.randn(2, 3, 16, 16), torch.stack([torch.randperm(16)[:9] for _ in range(2)])
    with torch.no_grad():
        torch.testing.assert_close(enc(x), reference_tokens(sds[which], x, 2), rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(enc(x, keep=keep), reference_tokens(sds[which], x, 2, keep), rtol=1e-5, atol=1e-5)
        other = sds["encoder" if which == "target" else "target"]
        assert (enc(x) - reference_tokens(other, x, 2)).abs().max() > 0.1


@pytest.fixture(scope="module")
def vjepa(tmp_path_factory):
    torch.manual_seed(0)
    dim = 48
    enc, tgt = (random_encoder(dim, 2, (2, 4, 4), vjepa_table(dim, 2, 4)) for _ in range(2))
    path = official_file(tmp_path_factory.mktemp("jepa"), "vitl16.pth.tar", enc, tgt, "module.backbone.")
    return path, {"encoder": enc, "target": tgt}


@pytest.mark.parametrize("which", ["target", "encoder"])
def test_vjepa_tokens_equal_the_official_model(vjepa, which):
    path, sds = vjepa
    loaded = read_encoder(path, which=which, num_heads=2)
    assert loaded.source == "jepa"
    enc = loaded.encoder
    # The clip length and image size come from the stored table (32 rows: 2 x 4 x 4, not 8 x 2 x 2).
    assert (enc.num_frames, enc.tubelet_size, enc.img_size, enc.grid_size) == (4, 2, (16, 16), (2, 4, 4))
    torch.manual_seed(1)
    x, keep = torch.randn(2, 3, 4, 16, 16), torch.stack([torch.randperm(32)[:11] for _ in range(2)])
    with torch.no_grad():
        torch.testing.assert_close(enc(x), reference_tokens(sds[which], x, 2), rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(enc(x, keep=keep), reference_tokens(sds[which], x, 2, keep), rtol=1e-5, atol=1e-5)


@pytest.fixture(scope="module")
def vjepa2(tmp_path_factory):
    torch.manual_seed(0)
    dim = 192  # ViT-tiny width: 3 heads of 64 channels by default, V-JEPA 2's head size (20+20+20+4)
    enc, tgt = (random_encoder(dim, 1, (2, 4, 4), None) for _ in range(2))
    path = official_file(
        tmp_path_factory.mktemp("vjepa2"), "vitl.pt", enc, tgt, "module.backbone.", predictor_table=False
    )
    return path, {"encoder": enc, "target": tgt}


@pytest.mark.parametrize("which", ["target", "encoder"])
def test_vjepa2_tokens_equal_the_official_model(vjepa2, which):
    path, sds = vjepa2
    loaded = read_encoder(path, which=which)
    assert loaded.source == "vjepa2" and loaded.meta["num_heads_from"] == "vjepa2 default for width 192"
    enc = loaded.encoder
    assert (enc.pos, enc.num_heads, enc.tubelet_size, enc.patch_size) == ("rope_vjepa2", 3, 2, 4)
    torch.manual_seed(1)
    # Rotary weights fit any grid: a square clip and a non-square one (rows and columns told apart).
    for x in (torch.randn(2, 3, 4, 16, 16), torch.randn(2, 3, 6, 16, 24)):
        n = math.prod(enc.patch_embed.grid(x.shape[2:]))
        keep = torch.stack([torch.randperm(n)[:13] for _ in range(2)])
        with torch.no_grad():
            torch.testing.assert_close(enc(x), reference_tokens(sds[which], x, 3), rtol=1e-5, atol=1e-5)
            expected = reference_tokens(sds[which], x, 3, keep)
            torch.testing.assert_close(enc(x, keep=keep), expected, rtol=1e-5, atol=1e-5)


def test_vjepa2_image_encoder_and_unused_table(tmp_path):
    # A rotary image encoder (Conv2d stem), saved with a leftover table beside a predictor without one.
    torch.manual_seed(0)
    sd = random_encoder(192, 1, (4, 4), None)
    with_table = {**sd, "pos_embed": torch.randn(1, 16, 192)}
    path = official_file(tmp_path, "img.pt", with_table, with_table, "module.backbone.", predictor_table=False)
    loaded = read_encoder(path)
    assert loaded.source == "vjepa2" and "pos_embed" not in loaded.encoder.state_dict()
    x = torch.randn(2, 3, 16, 20)
    with torch.no_grad():
        torch.testing.assert_close(loaded.encoder(x), reference_tokens(sd, x, 3), rtol=1e-5, atol=1e-5)
    # Saved alone, without the predictor that tells, the table looks used: format= says otherwise.
    torch.save(with_table, tmp_path / "alone.pt")
    assert read_encoder(tmp_path / "alone.pt").source == "ijepa"
    forced = read_encoder(tmp_path / "alone.pt", format="vjepa2")
    with torch.no_grad():
        torch.testing.assert_close(forced.encoder(x), reference_tokens(sd, x, 3), rtol=1e-5, atol=1e-5)
    one_line_error(tmp_path / "alone.pt", "format='jpeg' is not a known format", format="jpeg")


def test_a_bare_encoder_state_dict_loads(tmp_path):
    # One encoder's state dict saved on its own, here without qkv biases (read from the weights too).
    torch.manual_seed(0)
    sd = random_encoder(32, 1, (4, 4), ijepa_table(32, 4))
    del sd["blocks.0.attn.qkv.bias"]
    torch.save({"module." + k: v for k, v in sd.items()}, tmp_path / "encoder.pt")
    enc = openjepa.load_encoder(tmp_path / "encoder.pt", num_heads=4)
    assert enc.blocks[0].attn.qkv.bias is None
    x = torch.randn(1, 3, 16, 16)
    with torch.no_grad():
        torch.testing.assert_close(enc(x), reference_tokens(sd, x, 4), rtol=1e-5, atol=1e-5)


def test_giant_mlp_width_is_inferred_exactly(tmp_path):
    # ViT-g's MLP ratio 48/11 must rebuild fc1 with exactly 6144 units from a 1408 width (here scaled down
    # to keep the test small: width 88 -> 384 units is the same ratio).
    torch.manual_seed(0)
    sd = random_encoder(88, 1, (4, 4), ijepa_table(88, 2), mlp=384)
    torch.save({"target_encoder": sd, "encoder": sd}, tmp_path / "g.pt")
    enc = openjepa.load_encoder(tmp_path / "g.pt", num_heads=2)
    assert enc.blocks[0].mlp.fc1.out_features == 384
    x = torch.randn(1, 3, 8, 8)
    with torch.no_grad():
        torch.testing.assert_close(enc(x), reference_tokens(sd, x, 2), rtol=1e-5, atol=1e-5)


# ----------------------------------------------------------------------------------------------------
# Errors: one line, naming the file and what to do


def one_line_error(path, match, **kwargs):
    with pytest.raises(CheckpointError, match=match) as info:
        openjepa.load_encoder(path, **kwargs)
    message = str(info.value)
    assert "\n" not in message and str(path) in message
    return message


def test_unknown_dict_names_the_known_formats(tmp_path):
    torch.save({"model": {"w": torch.zeros(2)}, "step": 3}, tmp_path / "other.pt")
    message = one_line_error(tmp_path / "other.pt", "neither an openjepa checkpoint nor a known official format")
    assert "facebookresearch/ijepa" in message and "vjepa2" in message and "model, step" in message
    torch.save([torch.zeros(2)], tmp_path / "list.pt")
    one_line_error(tmp_path / "list.pt", "a list")


def test_missing_target_encoder_lists_the_keys(tmp_path):
    torch.manual_seed(0)
    sd = random_encoder(32, 1, (4, 4), ijepa_table(32, 4))
    torch.save({"encoder": {"module." + k: v for k, v in sd.items()}, "epoch": 1}, tmp_path / "ctx-only.pt")
    message = one_line_error(tmp_path / "ctx-only.pt", "no 'target_encoder'", num_heads=2)
    assert "its keys: encoder, epoch" in message and "which='encoder'" in message
    assert openjepa.load_encoder(tmp_path / "ctx-only.pt", which="encoder", num_heads=2) is not None


def test_heads_that_cannot_be_guessed(ijepa):
    path, _ = ijepa
    one_line_error(path, "pass num_heads=N")


def test_unsupported_architectures(tmp_path):
    torch.manual_seed(0)
    sd = random_encoder(192, 1, (2, 4, 4), None)
    swiglu = {**sd, "blocks.0.mlp.fc3.weight": torch.zeros(192, 768), "blocks.0.mlp.fc3.bias": torch.zeros(192)}
    torch.save({"target_encoder": swiglu}, tmp_path / "silu.pt")
    one_line_error(tmp_path / "silu.pt", "SwiGLU")
    torch.save({"target_encoder": {**sd, "cls_token": torch.zeros(1, 1, 192)}}, tmp_path / "cls.pt")
    one_line_error(tmp_path / "cls.pt", "cls_token")


def test_grid_overrides_must_fit_the_table(vjepa):
    path, _ = vjepa
    one_line_error(path, "num_frames=8", num_heads=2, num_frames=8)
    enc = openjepa.load_encoder(path, num_heads=2, num_frames=4)  # consistent: accepted
    assert enc.grid_size == (2, 4, 4)


# ----------------------------------------------------------------------------------------------------
# `openjepa convert` and `openjepa export`


def run_command(register, argv):
    parser = argparse.ArgumentParser()
    register(parser.add_subparsers())
    args = parser.parse_args(argv)
    return args.handler(args)


def test_convert_writes_the_export_format(ijepa, tmp_path, capsys):
    path, sds = ijepa
    out = tmp_path / "ijepa-ctx.safetensors"
    argv = ["convert", str(path), "--out", str(out), "--which", "encoder", "--num-heads", "2"]
    assert run_command(add_convert, argv) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["format"] == "ijepa" and report["kwargs"]["num_heads"] == 2
    description = json.loads(out.with_suffix(".json").read_text())
    assert description["source"] == "ijepa" and description["which"] == "encoder" and description["epoch"] == 3
    loaded = read_encoder(out)
    assert loaded.source == "openjepa-export"
    x = torch.randn(2, 3, 16, 16)
    with torch.no_grad():
        torch.testing.assert_close(loaded.encoder(x), reference_tokens(sds["encoder"], x, 2), rtol=1e-5, atol=1e-5)


def test_convert_rotary_checkpoint_and_export(vjepa2, tmp_path, capsys):
    path, sds = vjepa2
    out = tmp_path / "vjepa2.safetensors"
    run_command(add_convert, ["convert", str(path), "--out", str(out), "--num-frames", "16", "--img-size", "64"])
    assert json.loads(capsys.readouterr().out)["kwargs"]["pos"] == "rope_vjepa2"
    enc = openjepa.load_encoder(out)
    assert enc.grid_size == (8, 16, 16)
    x = torch.randn(1, 3, 4, 16, 16)
    with torch.no_grad():
        torch.testing.assert_close(enc(x), reference_tokens(sds["target"], x, 3), rtol=1e-5, atol=1e-5)
    # `export` reads the same files (target encoder, default heads).
    exported = tmp_path / "exported.safetensors"
    assert run_command(add_export, ["export", str(path), "--out", str(exported)]) == 0
    assert json.loads(capsys.readouterr().out)["weights"] == str(exported)
    with torch.no_grad():
        torch.testing.assert_close(openjepa.load_encoder(exported)(x), enc(x))


def test_convert_refuses_another_suffix(ijepa, tmp_path):
    path, _ = ijepa
    with pytest.raises(ValueError, match=r"\.safetensors"):
        run_command(add_convert, ["convert", str(path), "--out", str(tmp_path / "x.pt"), "--num-heads", "2"])
